//! phi-audit's integration tests, compile-time (ui) tests, benches and the
//! axum example, as a workspace member of their own (`phi-audit-tests`,
//! never published).
//!
//! They are here rather than in the `phi-audit` package so that the
//! facade's dev-dependencies stay small: `cargo run --example quickstart`
//! then builds the library and tokio, not axum, hyper, trybuild, proptest,
//! PostgreSQL's client and the rest. Everything runs with the README's
//! command, `cargo test --workspace --all-features`; one target with
//! `cargo test -p phi-audit-tests --test <name>`.
//!
//! This library itself holds no code: the tests use `phi_audit` directly.
