//! Compile-time behaviour of `#[audited]`: every supported shape compiles
//! (`ui-tests/pass`), and every error the macro can emit is reviewed in a
//! `.stderr` snapshot (`ui-tests/fail`). The toolchain is pinned in
//! `rust-toolchain.toml` because rustc's wording changes between releases.
//!
//! The snapshots are taken with the README's test command
//! (`cargo test --workspace --all-features`): rustc words type paths
//! differently when optional dependencies are in the graph (`Text` becomes
//! `phi_audit::Text` once the `postgres` feature brings in another `Text`).

#[test]
#[cfg_attr(
    not(feature = "postgres"),
    ignore = "ui snapshots are taken with --all-features, the README's test command"
)]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui-tests/pass/*.rs");
    t.compile_fail("ui-tests/fail/*.rs");
}
