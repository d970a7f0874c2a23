//! Delivery end to end: exact bytes and signatures, retries and their timing, final
//! failure, error causes, changes made mid-retry, crashes, several workers, and isolation
//! of healthy targets from a backlog of failing ones.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use common::signing::hub_signature;
use integration_tests::{Receiver, Reply, TestApi, TestEnv, TestWorker, eventually, instant};
use serde_json::{Value, json};

const SOON: Duration = Duration::from_secs(20);

async fn subscription(api: &TestApi, body: Value) -> String {
    api.create_subscription(body).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn send(api: &TestApi, subscription_id: &str, body: &[u8]) -> String {
    let (status, receipt) = api.ingest(subscription_id, body, &[]).await;
    assert_eq!(status, 202, "{receipt}");
    receipt["delivery_id"].as_str().unwrap().to_owned()
}

fn is_final(delivery: &Value) -> bool {
    matches!(
        delivery["status"].as_str(),
        Some("delivered" | "failed" | "skipped")
    )
}

fn outcomes(delivery: &Value) -> Vec<(i64, String)> {
    delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["attempt_number"].as_i64().unwrap(),
                a["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn delivers_the_exact_bytes_with_headers_both_signatures_verify() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let _worker = env.start_worker().await;
    let receiver = Receiver::start().await;
    let secret = "whsec-test-secret";
    let id = subscription(
        &api,
        json!({"target_url": receiver.url("/hook"), "secret": secret}),
    )
    .await;
    let body = br#"{ "b": [1, 2.50, "\u00e9"],   "a": null }"#;

    let signature = hub_signature(secret, body);
    let (status, receipt) = api
        .ingest(
            &id,
            body,
            &[
                ("x-hub-signature-256", &signature),
                ("x-event-type", "order.paid"),
            ],
        )
        .await;
    assert_eq!(status, 202);
    let delivery_id = receipt["delivery_id"].as_str().unwrap();
    let delivery = api.wait_for_delivery(delivery_id, SOON, is_final).await;

    assert_eq!(delivery["status"], "delivered", "{delivery}");
    assert_eq!(outcomes(&delivery), [(1, "success".to_owned())]);
    assert_eq!(delivery["attempts"][0]["status_code"], 200);
    assert_eq!(delivery["attempts"][0]["error"], Value::Null);
    let received = receiver.received_for(delivery_id);
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.path, "/hook");
    assert_eq!(request.body, body.to_vec(), "body delivered byte for byte");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert!(
        request
            .header("user-agent")
            .is_some_and(|ua| ua.starts_with("hookline/"))
    );
    assert_eq!(request.header("x-event-type"), Some("order.paid"));
    assert_eq!(
        request.header("x-hub-signature-256"),
        Some(hub_signature(secret, body).as_str())
    );

    // The Standard Webhooks signature, checked by the independent reference crate.
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, request.header(name).unwrap().parse().unwrap());
    }
    let key = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(secret)
    );
    let verifier = standardwebhooks::Webhook::new(&key).unwrap();
    verifier
        .verify(&request.body, &headers)
        .expect("standard webhooks signature verifies");
    let tampered = standardwebhooks::Webhook::new(&format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode("another secret")
    ))
    .unwrap();
    assert!(
        tampered.verify(&request.body, &headers).is_err(),
        "the check can fail"
    );
}

#[tokio::test]
async fn succeeds_after_failures_with_numbered_attempts_and_gaps_no_shorter_than_scheduled() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let _worker = env.start_worker().await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500), Reply::Status(503)]);
    let id = subscription(&api, json!({"target_url": receiver.url("/")})).await;

    let delivery_id = send(&api, &id, b"{}").await;
    let retrying = api
        .wait_for_delivery(&delivery_id, SOON, |d| d["status"] == "retrying")
        .await;
    assert!(retrying["next_attempt_at"].is_string(), "{retrying}");
    let delivery = api.wait_for_delivery(&delivery_id, SOON, is_final).await;

    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["attempt_count"], 3);
    assert_eq!(delivery["next_attempt_at"], Value::Null);
    assert_eq!(
        outcomes(&delivery),
        [
            (1, "failed_attempt".into()),
            (2, "failed_attempt".into()),
            (3, "success".into())
        ]
    );
    assert_eq!(delivery["attempts"][0]["error"], "HTTP 500");
    assert_eq!(delivery["attempts"][1]["status_code"], 503);
    let arrivals: Vec<_> = receiver
        .received_for(&delivery_id)
        .iter()
        .map(|r| r.at)
        .collect();
    assert_eq!(arrivals.len(), 3);
    assert!(
        arrivals[1] - arrivals[0] >= Duration::from_secs(1),
        "{arrivals:?}"
    );
    assert!(
        arrivals[2] - arrivals[1] >= Duration::from_secs(2),
        "{arrivals:?}"
    );
}

#[tokio::test]
async fn fails_for_good_after_one_attempt_plus_the_schedule() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let _worker = env.start_worker().await;
    let receiver = Receiver::start().await;
    receiver.reply_with(Reply::Status(500));
    let id = subscription(&api, json!({"target_url": receiver.url("/")})).await;

    let delivery_id = send(&api, &id, b"{}").await;
    let delivery = api.wait_for_delivery(&delivery_id, SOON, is_final).await;

    assert_eq!(delivery["status"], "failed");
    assert_eq!(
        outcomes(&delivery),
        [
            (1, "failed_attempt".into()),
            (2, "failed_attempt".into()),
            (3, "failure".into())
        ]
    );
    assert_eq!(receiver.received_for(&delivery_id).len(), 3);
    // The last attempt terminates the job, so it leaves the work-queue stream.
    eventually(
        Duration::from_secs(5),
        "the job to leave the stream",
        || async { (env.jobs_in_stream().await == 0).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn timeouts_refused_and_closed_connections_are_recorded_as_such() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let mut config = env.worker_config();
    config.timeout = Duration::from_secs(1);
    config.retry_schedule = vec![Duration::from_secs(1)];
    let _worker = TestWorker::start(config).await;

    let hanging = Receiver::start().await;
    hanging.reply_with(Reply::Hang);
    let closing = Receiver::start().await;
    closing.reply_with(Reply::Close);
    // A port that was just free: nothing listens there.
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();

    let mut expected = HashMap::new();
    for (url, cause) in [
        (hanging.url("/"), "timeout after 1s"),
        (closing.url("/"), "connection closed by target"),
        (format!("http://{refused}/"), "connection refused"),
    ] {
        let id = subscription(&api, json!({"target_url": url})).await;
        expected.insert(send(&api, &id, b"{}").await, cause);
    }

    for (delivery_id, cause) in expected {
        let delivery = api.wait_for_delivery(&delivery_id, SOON, is_final).await;
        assert_eq!(delivery["status"], "failed", "{delivery}");
        for attempt in delivery["attempts"].as_array().unwrap() {
            assert_eq!(attempt["error"], cause, "{delivery}");
            assert_eq!(attempt["status_code"], Value::Null);
        }
    }
}

#[tokio::test]
async fn a_changed_target_url_is_used_by_the_next_retry() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let _worker = env.start_worker().await;
    let old = Receiver::start().await;
    old.reply_with(Reply::Status(500));
    let new = Receiver::start().await;
    let id = subscription(&api, json!({"target_url": old.url("/old")})).await;

    let delivery_id = send(&api, &id, b"{}").await;
    api.wait_for_delivery(&delivery_id, SOON, |d| d["status"] == "retrying")
        .await;
    let response = api
        .http
        .patch(api.at(&format!("/subscriptions/{id}")))
        .json(&json!({"target_url": new.url("/new")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let delivery = api.wait_for_delivery(&delivery_id, SOON, is_final).await;

    assert_eq!(delivery["status"], "delivered");
    assert_eq!(old.received_for(&delivery_id).len(), 1);
    assert_eq!(new.received_for(&delivery_id).len(), 1);
    assert_eq!(delivery["attempts"][1]["target_url"], new.url("/new"));
}

#[tokio::test]
async fn deleting_the_subscription_stops_its_retries() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let _worker = env.start_worker().await;
    let receiver = Receiver::start().await;
    receiver.reply_with(Reply::Status(500));
    let id = subscription(&api, json!({"target_url": receiver.url("/")})).await;

    let delivery_id = send(&api, &id, b"{}").await;
    api.wait_for_delivery(&delivery_id, SOON, |d| d["status"] == "retrying")
        .await;
    let response = api
        .http
        .delete(api.at(&format!("/subscriptions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    // The retry was due after 1 s; once its job has left the stream nothing more can come.
    eventually(Duration::from_secs(10), "the job to be dropped", || async {
        (env.jobs_in_stream().await == 0).then_some(())
    })
    .await;
    assert_eq!(receiver.received_for(&delivery_id).len(), 1);
    let (status, _) = api.get(&format!("/deliveries/{delivery_id}")).await;
    assert_eq!(status, 404, "the delivery went with its subscription");
}

#[tokio::test]
async fn status_endpoints_order_filter_and_limit() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let _worker = env.start_worker().await;
    let receiver = Receiver::start().await;
    let id = subscription(
        &api,
        json!({"target_url": receiver.url("/"), "event_types": ["x"]}),
    )
    .await;

    let mut delivered = Vec::new();
    for _ in 0..3 {
        let (_, receipt) = api.ingest(&id, b"{}", &[("x-event-type", "x")]).await;
        delivered.push(receipt["delivery_id"].as_str().unwrap().to_owned());
    }
    let (_, skipped) = api.ingest(&id, b"{}", &[("x-event-type", "y")]).await;
    for delivery_id in &delivered {
        api.wait_for_delivery(delivery_id, SOON, is_final).await;
    }

    let (status, attempts) = api
        .get(&format!("/subscriptions/{id}/attempts?limit=2"))
        .await;
    assert_eq!(status, 200);
    let items = attempts["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(
        instant(&items[0]["attempted_at"]) >= instant(&items[1]["attempted_at"]),
        "{items:?}"
    );
    let (_, all) = api.get(&format!("/subscriptions/{id}/attempts")).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 3);

    let (_, page) = api
        .get(&format!("/subscriptions/{id}/deliveries?limit=2"))
        .await;
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            skipped["delivery_id"].as_str().unwrap(),
            delivered[2].as_str()
        ]
    );
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = api
        .get(&format!(
            "/subscriptions/{id}/deliveries?limit=2&cursor={cursor}"
        ))
        .await;
    let ids: Vec<&str> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [delivered[1].as_str(), delivered[0].as_str()]);
    assert_eq!(rest["next_cursor"], Value::Null);

    let (_, only_skipped) = api
        .get(&format!("/subscriptions/{id}/deliveries?status=skipped"))
        .await;
    assert_eq!(only_skipped["items"].as_array().unwrap().len(), 1);
    assert_eq!(only_skipped["items"][0]["status"], "skipped");

    let unknown = uuid::Uuid::now_v7();
    for path in [
        format!("/subscriptions/{unknown}/attempts"),
        format!("/subscriptions/{unknown}/deliveries"),
        format!("/deliveries/{unknown}"),
    ] {
        let (status, _) = api.get(&path).await;
        assert_eq!(status, 404, "{path}");
    }
    for query in [
        "attempts?limit=101",
        "attempts?limit=0",
        "deliveries?status=lost",
    ] {
        let (status, body) = api.get(&format!("/subscriptions/{id}/{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
    }
}

#[tokio::test]
async fn a_worker_killed_mid_delivery_is_replaced_and_the_job_finishes() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let mut config = env.worker_config();
    config.timeout = Duration::from_secs(10);
    config.ack_wait = Duration::from_secs(2);
    let first = TestWorker::start(config.clone()).await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Hang]);
    let id = subscription(&api, json!({"target_url": receiver.url("/")})).await;

    let delivery_id = send(&api, &id, b"{}").await;
    receiver.wait_for(1, SOON).await;
    first.kill();
    let _second = TestWorker::start(config).await;
    let delivery = api.wait_for_delivery(&delivery_id, SOON, is_final).await;

    assert_eq!(delivery["status"], "delivered");
    // The killed attempt was never recorded; the one that finished is attempt 1.
    assert_eq!(outcomes(&delivery), [(1, "success".into())]);
    assert_eq!(
        receiver.received_for(&delivery_id).len(),
        2,
        "one cut short, one delivered"
    );
}

#[tokio::test]
async fn a_graceful_stop_finishes_the_attempt_in_flight() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let worker = env.start_worker().await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Hang]);
    let id = subscription(&api, json!({"target_url": receiver.url("/")})).await;

    let delivery_id = send(&api, &id, b"{}").await;
    receiver.wait_for(1, SOON).await;
    worker.stop().await;

    // The hanging attempt timed out during shutdown and was recorded before the stop ended.
    let (_, delivery) = api.get(&format!("/deliveries/{delivery_id}")).await;
    assert_eq!(delivery["status"], "retrying", "{delivery}");
    assert_eq!(delivery["attempts"][0]["error"], "timeout after 2s");
}

#[tokio::test]
async fn two_workers_share_the_work_without_attempting_anything_twice() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let _one = env.start_worker().await;
    let _two = env.start_worker().await;
    let receiver = Receiver::start().await;
    let id = subscription(&api, json!({"target_url": receiver.url("/")})).await;

    let mut ids = Vec::new();
    for n in 0..200 {
        ids.push(send(&api, &id, format!("{{\"n\":{n}}}").as_bytes()).await);
    }
    receiver.wait_for(200, Duration::from_secs(30)).await;
    for delivery_id in &ids {
        api.wait_for_delivery(delivery_id, SOON, is_final).await;
    }

    let received = receiver.received();
    let mut per_delivery: HashMap<&str, usize> = HashMap::new();
    for request in &received {
        *per_delivery
            .entry(request.header("webhook-id").unwrap())
            .or_default() += 1;
    }
    assert_eq!(per_delivery.len(), 200);
    assert!(
        per_delivery.values().all(|&count| count == 1),
        "duplicates: {per_delivery:?}"
    );
}

#[tokio::test]
async fn a_backlog_waiting_to_retry_does_not_delay_a_healthy_target() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let mut config = env.worker_config();
    config.concurrency = 64;
    config.retry_schedule = vec![Duration::from_secs(600)];
    let _worker = TestWorker::start(config).await;
    let failing = Receiver::start().await;
    failing.reply_with(Reply::Status(500));
    let healthy = Receiver::start().await;
    let broken = subscription(&api, json!({"target_url": failing.url("/")})).await;
    let fine = subscription(&api, json!({"target_url": healthy.url("/")})).await;

    let mut backlog = Vec::new();
    for _ in 0..40 {
        let burst = (0..50).map(|_| api.ingest(&broken, b"{}", &[]));
        backlog.extend(futures::future::join_all(burst).await);
    }
    let refused: Vec<_> = backlog
        .iter()
        .filter(|(status, _)| *status != 202)
        .collect();
    assert!(
        refused.is_empty(),
        "{} refused, first: {:?}",
        refused.len(),
        refused.first()
    );
    failing.wait_for(2000, Duration::from_secs(120)).await;
    let consumer_info = env.worker_consumer_info().await;
    assert!(
        consumer_info.num_ack_pending >= 2000,
        "the backlog waits out its delay: {consumer_info:?}"
    );

    let started = std::time::Instant::now();
    let delivery_id = send(&api, &fine, b"{}").await;
    healthy.wait_for(1, Duration::from_secs(1)).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(1),
        "healthy delivery took {elapsed:?}"
    );
    assert_eq!(healthy.received_for(&delivery_id).len(), 1);
}

#[tokio::test]
async fn private_targets_are_refused_at_delivery_time() {
    let env = TestEnv::new().await;
    // The API lets these subscriptions in; the worker, like production, does not.
    let api = env.start_api().await;
    let mut config = env.worker_config();
    config.common.allow_private_targets = false;
    config.retry_schedule = Vec::new();
    let _worker = TestWorker::start(config).await;
    let receiver = Receiver::start().await;

    let mut expected = Vec::new();
    for url in [
        receiver.url("/"),
        format!("http://localhost:{}/", receiver.addr.port()),
    ] {
        let id = subscription(&api, json!({"target_url": url})).await;
        expected.push((
            send(&api, &id, b"{}").await,
            "target resolves to a non-public address",
        ));
    }
    for (delivery_id, cause) in expected {
        let delivery = api.wait_for_delivery(&delivery_id, SOON, is_final).await;
        assert_eq!(delivery["status"], "failed", "{delivery}");
        assert_eq!(delivery["attempts"][0]["error"], cause, "{delivery}");
    }
    assert!(
        receiver.received().is_empty(),
        "a private target was called"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let mut config = env.worker_config();
    config.retry_schedule = Vec::new();
    let _worker = TestWorker::start(config).await;
    let elsewhere = Receiver::start().await;
    let redirecting = Receiver::start().await;
    redirecting.reply_with(Reply::StatusWithHeaders(
        307,
        vec![("location".to_owned(), elsewhere.url("/"))],
    ));
    let id = subscription(&api, json!({"target_url": redirecting.url("/")})).await;

    let delivery_id = send(&api, &id, b"{}").await;
    let delivery = api.wait_for_delivery(&delivery_id, SOON, is_final).await;

    assert_eq!(delivery["status"], "failed");
    assert_eq!(delivery["attempts"][0]["error"], "HTTP 307");
    assert!(elsewhere.received().is_empty(), "the redirect was followed");
}

#[tokio::test]
async fn retry_after_postpones_the_next_attempt() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let _worker = env.start_worker().await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::StatusWithHeaders(
        429,
        vec![("retry-after".into(), "3".into())],
    )]);
    let id = subscription(&api, json!({"target_url": receiver.url("/")})).await;

    let delivery_id = send(&api, &id, b"{}").await;
    let delivery = api.wait_for_delivery(&delivery_id, SOON, is_final).await;

    assert_eq!(delivery["status"], "delivered");
    let arrivals: Vec<_> = receiver
        .received_for(&delivery_id)
        .iter()
        .map(|r| r.at)
        .collect();
    assert_eq!(arrivals.len(), 2);
    // The schedule says 1 s; the target asked for 3 s.
    assert!(
        arrivals[1] - arrivals[0] >= Duration::from_secs(3),
        "{arrivals:?}"
    );
}

#[tokio::test]
async fn an_attempt_slower_than_the_ack_wait_is_not_handed_to_another_worker() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let mut config = env.worker_config();
    config.ack_wait = Duration::from_secs(1);
    config.timeout = Duration::from_secs(6);
    let _one = TestWorker::start(config.clone()).await;
    let _two = TestWorker::start(config).await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::After(Duration::from_secs(3), 200)]);
    let id = subscription(&api, json!({"target_url": receiver.url("/")})).await;

    let delivery_id = send(&api, &id, b"{}").await;
    let delivery = api.wait_for_delivery(&delivery_id, SOON, is_final).await;

    assert_eq!(delivery["status"], "delivered");
    assert_eq!(
        receiver.received_for(&delivery_id).len(),
        1,
        "the job was redelivered mid-attempt"
    );
}

#[tokio::test]
async fn the_consumer_avoids_the_known_jetstream_traps() {
    let env = TestEnv::new().await;
    let _worker = env.start_worker().await;

    let config = env.worker_consumer_info().await.config;

    assert!(
        config.backoff.is_empty(),
        "backoff would add to every NAK delay"
    );
    assert_eq!(
        config.max_ack_pending, -1,
        "jobs waiting to retry must not hold slots"
    );
    assert_eq!(config.max_deliver, -1, "the worker ends jobs itself");
    assert_eq!(config.ack_wait, env.worker_config().ack_wait);
}
