//! Compile-time behaviour of `#[audited]`, `record!` and
//! `#[derive(AuditError)]`: every supported shape compiles
//! (`ui-tests/pass`), and every error the macros can emit is reviewed in a
//! `.stderr` snapshot (`ui-tests/fail`). The toolchain is pinned in
//! `rust-toolchain.toml` because rustc's wording changes between releases.
//!
//! The snapshots hold with and without `--all-features`: the types they name
//! are named the same way whatever optional dependencies are in the graph.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui-tests/pass/*.rs");
    t.compile_fail("ui-tests/fail/*.rs");
}
