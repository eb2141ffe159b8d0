//! Compile-fail cases for `#[service]`'s own, spanned error messages.
//!
//! Only our macro's errors are checked (stable text); regenerate the `.stderr` files with
//! `TRYBUILD=overwrite cargo test -p plume --test macro_ui` after a toolchain change.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/fail/*.rs");
}
