//! Compile-time behaviour of `#[audited]`: every supported shape compiles
//! (`ui-tests/pass`), and every error the macro can emit is reviewed in a
//! `.stderr` snapshot (`ui-tests/fail`). The toolchain is pinned in
//! `rust-toolchain.toml` because rustc's wording changes between releases.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui-tests/pass/*.rs");
    t.compile_fail("ui-tests/fail/*.rs");
}
