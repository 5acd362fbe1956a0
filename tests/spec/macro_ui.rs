//! C1 and the macro's diagnostics: every misuse is a compile error with a
//! helpful message on the offending token; every accepted form works.
//!
//! The `.stderr` snapshots depend on the compiler; `rust-toolchain.toml`
//! pins the one they were written with. After changing a message, rerun with
//! `TRYBUILD=overwrite` and read every changed snapshot.

#[test]
fn misuse_of_the_macro_is_a_compile_error_with_a_clear_message() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/fail/*.rs");
}

#[test]
fn every_accepted_form_compiles_and_runs() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui/pass/*.rs");
}
