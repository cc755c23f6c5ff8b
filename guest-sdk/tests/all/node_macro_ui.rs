//! `#[node]` misuse is a spanned compile error; each case's expected message is in
//! `tests/ui/fail/*.stderr` (`TRYBUILD=overwrite` rewrites them).

#[test]
fn node_macro_misuse_is_a_spanned_compile_error() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
