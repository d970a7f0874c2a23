//! A misconfigured `worker` stops at start with one line naming the variable.

use std::process::Command;

#[test]
fn bad_variables_are_named() {
    let database = ("DATABASE_URL", "postgres://127.0.0.1:1/none");
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "DATABASE_URL is required"),
        (
            &[database, ("RETRY_SCHEDULE", "10s,soon")],
            "RETRY_SCHEDULE is invalid",
        ),
        (
            &[database, ("DELIVERY_TIMEOUT", "0s")],
            "DELIVERY_TIMEOUT is invalid",
        ),
        (
            &[database, ("DELIVERY_CONCURRENCY", "0")],
            "DELIVERY_CONCURRENCY is invalid",
        ),
    ];
    for (vars, expected) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_worker"))
            .env_clear()
            .envs(vars.iter().copied())
            .output()
            .expect("run worker");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{vars:?} started");
        assert!(
            stderr.contains(expected),
            "{vars:?}: expected {expected:?} in {stderr}"
        );
    }
}
