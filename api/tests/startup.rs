//! A misconfigured `api` stops at start with one line naming the variable.

use std::process::Command;

fn start_with(vars: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_api"))
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .expect("run api");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_variables_are_named() {
    let database = ("DATABASE_URL", "postgres://127.0.0.1:1/none");
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[], "DATABASE_URL is required"),
        (&[database, ("API_ADDR", "nowhere")], "API_ADDR is invalid"),
        (
            &[database, ("ALLOW_PRIVATE_TARGETS", "maybe")],
            "ALLOW_PRIVATE_TARGETS is invalid",
        ),
        (
            &[database, ("MAX_PAYLOAD_BYTES", "-1")],
            "MAX_PAYLOAD_BYTES is invalid",
        ),
        (
            &[database, ("NATS_NAMESPACE", "a.b")],
            "NATS_NAMESPACE is invalid",
        ),
    ];
    for (vars, expected) in cases {
        let (succeeded, stderr) = start_with(vars);
        assert!(!succeeded, "{vars:?} started");
        assert!(
            stderr.contains(expected),
            "{vars:?}: expected {expected:?} in {stderr}"
        );
    }
}
