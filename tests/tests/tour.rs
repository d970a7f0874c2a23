//! The README's tour script, run end to end against a live API, worker and receiver, so the
//! commands the README quotes cannot drift from the API.

use std::time::Duration;

use common::signing::hub_signature;
use integration_tests::{Receiver, TestEnv};

#[tokio::test]
async fn the_tour_script_runs_against_the_real_service() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let _worker = env.start_worker().await;
    let receiver = Receiver::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/tour.sh");

    let output = tokio::process::Command::new("bash")
        .arg(script)
        .env("HOOKLINE_URL", &api.url)
        .env("RECEIVER_URL", receiver.url(""))
        .env("RECEIVER_SECRET", "tour-secret")
        .env("TOUR_WAIT", "20")
        .env_remove("API_KEY")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .expect("the tour finishes within two minutes")
        .expect("bash runs");

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tour failed\n{stdout}\n{stderr}");
    let received = receiver.received();
    assert!(
        !received.is_empty(),
        "the tour delivered nothing:\n{stdout}"
    );
    let signed: Vec<_> = received
        .iter()
        .filter(|r| r.header("x-hub-signature-256").is_some())
        .collect();
    assert!(!signed.is_empty(), "no signed delivery arrived:\n{stdout}");
    for request in signed {
        assert_eq!(
            request.header("x-hub-signature-256"),
            Some(hub_signature("tour-secret", &request.body).as_str()),
            "a delivery of the tour is signed with its secret"
        );
    }
}
