//! The environment of phi-audit's tests, in one place for every package.
//!
//! Tests that need a server (PostgreSQL, the Python reference) read its
//! address from an env var. Unset, the test skips, and says why where
//! `cargo test` shows it: the reason is written to the process's standard
//! error directly, which the test harness does not capture (it captures
//! only `print!`/`eprint!`), so it is visible without `--nocapture`.
//!
//! `PHI_AUDIT_REQUIRE_SERVERS=1` (set by `.ci/run`) turns every such skip
//! into a failure: an environment CI prepared and a test then ignored (a
//! misspelt variable, a server that is down) fails the run instead of
//! passing silently.

#![warn(missing_docs)]

use std::io::Write;

/// The variable that makes skips failures.
pub const REQUIRE_SERVERS: &str = "PHI_AUDIT_REQUIRE_SERVERS";

/// PostgreSQL for tests: `postgres://postgres@127.0.0.1:5432/test` in CI.
pub const PG_URL: &str = "PHI_AUDIT_PG_URL";

/// A python with bh-audit-logger 2.0.0 installed (the reference).
pub const REF_PYTHON: &str = "PHI_AUDIT_REF_PYTHON";

/// Whether `PHI_AUDIT_REQUIRE_SERVERS` is set to anything but empty or `0`.
pub fn servers_required() -> bool {
    std::env::var(REQUIRE_SERVERS).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The value of `var`, or `None` after a visible skip of `test` (a panic
/// when servers are required). `what` says what the variable names, for
/// the message (`"PostgreSQL URL"`).
pub fn server(var: &str, test: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ => {
            skip_required(
                test,
                &format!("{var} is not set (the {what}; .ci/run sets it)"),
            );
            None
        }
    }
}

/// Skips `test` for `reason`, visibly; panics instead when servers are
/// required. For skips a CI environment must never need.
pub fn skip_required(test: &str, reason: &str) {
    if servers_required() {
        panic!("{test}: {REQUIRE_SERVERS} is set, but the test would skip: {reason}");
    }
    skip(test, reason);
}

/// Skips `test` for `reason`, visibly, whatever the environment: for what CI
/// cannot be asked to provide (root for a tmpfs, a FIFO-less system).
pub fn skip(test: &str, reason: &str) {
    note(&format!("skipped: {test}: {reason}"));
}

/// Writes `line` where `cargo test` shows it, even for a passing test.
pub fn note(line: &str) {
    // Straight to fd 2: libtest captures `eprint!`, not this.
    let _ = std::io::stderr()
        .lock()
        .write_all(format!("{line}\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_variables_skip_or_fail_as_required() {
        let var = "PHI_AUDIT_TEST_ENV_SURELY_UNSET";
        let r = std::panic::catch_unwind(|| server(var, "probe", "nothing"));
        if servers_required() {
            let msg = r.expect_err("required: a skip is a failure");
            let msg = msg.downcast_ref::<String>().unwrap();
            assert!(msg.contains(var) && msg.contains(REQUIRE_SERVERS), "{msg}");
        } else {
            assert_eq!(r.unwrap(), None);
        }
    }

    #[test]
    fn set_variables_are_returned() {
        // PATH is set wherever tests run.
        assert!(server("PATH", "probe", "search path").is_some());
    }
}
