//! Ingestion: signatures, event types, idempotency, and every way to get it wrong.

use common::signing::hub_signature;
use entity::delivery;
use integration_tests::{TestApi, TestEnv};
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::{Value, json};

async fn stored_deliveries(env: &TestEnv) -> u64 {
    delivery::Entity::find().count(&env.database).await.unwrap()
}

async fn subscription(api: &TestApi, body: Value) -> String {
    api.create_subscription(body).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_signed_webhook_is_stored_and_queued() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let id = subscription(
        &api,
        json!({"target_url": "http://127.0.0.1:9/", "secret": "k"}),
    )
    .await;
    let body = br#"{"order": 1,  "note": "spaces kept"}"#;

    let signature = hub_signature("k", body);
    let (status, receipt) = api
        .ingest(&id, body, &[("x-hub-signature-256", &signature)])
        .await;

    assert_eq!(status, 202, "{receipt}");
    assert_eq!(receipt["status"], "queued");
    assert_eq!(receipt["subscription_id"], id.as_str());
    let delivery_id = uuid::Uuid::parse_str(receipt["delivery_id"].as_str().unwrap()).unwrap();
    let row = delivery::Entity::find_by_id(delivery_id)
        .one(&env.database)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.payload, body.to_vec(), "the exact bytes are stored");
    assert_eq!(env.jobs_in_stream().await, 1);
}

#[tokio::test]
async fn missing_malformed_and_wrong_signatures_are_refused_and_nothing_is_stored() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let id = subscription(
        &api,
        json!({"target_url": "http://127.0.0.1:9/", "secret": "k"}),
    )
    .await;
    let body = br#"{"a":1}"#;

    let wrong_key = hub_signature("other", body);
    let other_body = hub_signature("k", b"{}");
    let uppercase_prefix = hub_signature("k", body).replace("sha256=", "SHA256=");
    let cases: [&[(&str, &str)]; 6] = [
        &[],
        &[("x-hub-signature-256", "")],
        &[("x-hub-signature-256", "sha256=abc")],
        &[("x-hub-signature-256", &uppercase_prefix)],
        &[("x-hub-signature-256", &wrong_key)],
        &[("x-hub-signature-256", &other_body)],
    ];
    for headers in cases {
        let (status, answer) = api.ingest(&id, body, headers).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (401, Some("invalid_signature")),
            "{headers:?}"
        );
    }
    assert_eq!(stored_deliveries(&env).await, 0);
    assert_eq!(env.jobs_in_stream().await, 0);
}

#[tokio::test]
async fn event_types_filter_by_header_or_query_and_the_header_wins() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let id = subscription(
        &api,
        json!({"target_url": "http://127.0.0.1:9/", "event_types": ["order.created"]}),
    )
    .await;
    let path = |query: &str| format!("/ingest/{id}{query}");
    let send = |query: String, header: Option<&'static str>| {
        let mut request = api
            .http
            .post(api.at(&query))
            .header("content-type", "application/json")
            .body("{}");
        if let Some(kind) = header {
            request = request.header("x-event-type", kind);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };

    let cases = [
        (path(""), Some("order.created"), "queued"),
        (path("?event_type=order.created"), None, "queued"),
        (
            path("?event_type=order.deleted"),
            Some("order.created"),
            "queued",
        ),
        (
            path("?event_type=order.created"),
            Some("order.deleted"),
            "skipped",
        ),
        (path(""), Some("order.deleted"), "skipped"),
        (path(""), None, "skipped"),
    ];
    for (query, header, expected) in cases {
        let (status, receipt) = send(query.clone(), header).await;
        assert_eq!(
            (status, receipt["status"].as_str()),
            (202, Some(expected)),
            "{query} {header:?}"
        );
    }
    let (status, body) = send(path("?event_type="), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_event_type"))
    );
    let (status, body) = send(path("?event_type=a%20b"), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_event_type"))
    );
    assert_eq!(
        env.jobs_in_stream().await,
        3,
        "only queued webhooks are published"
    );
    assert_eq!(
        stored_deliveries(&env).await,
        6,
        "skipped webhooks are recorded too"
    );
}

#[tokio::test]
async fn a_disabled_subscription_records_webhooks_as_skipped() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let id = subscription(
        &api,
        json!({"target_url": "http://127.0.0.1:9/", "enabled": false}),
    )
    .await;

    let (status, receipt) = api.ingest(&id, b"[1,2,3]", &[]).await;

    assert_eq!((status, receipt["status"].as_str()), (202, Some("skipped")));
    let (_, delivery) = api
        .get(&format!(
            "/deliveries/{}",
            receipt["delivery_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(delivery["status"], "skipped");
    assert_eq!(env.jobs_in_stream().await, 0);
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_receipt() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let id = subscription(&api, json!({"target_url": "http://127.0.0.1:9/"})).await;
    let other = subscription(&api, json!({"target_url": "http://127.0.0.1:9/"})).await;

    let (_, first) = api
        .ingest(&id, b"{}", &[("idempotency-key", "order-1")])
        .await;
    let (status, again) = api
        .ingest(&id, b"{\"x\":2}", &[("idempotency-key", "order-1")])
        .await;
    let (_, fresh) = api
        .ingest(&id, b"{}", &[("idempotency-key", "order-2")])
        .await;
    let (_, elsewhere) = api
        .ingest(&other, b"{}", &[("idempotency-key", "order-1")])
        .await;

    assert_eq!(status, 202);
    assert_eq!(again, first);
    assert_ne!(fresh["delivery_id"], first["delivery_id"]);
    assert_ne!(
        elsewhere["delivery_id"], first["delivery_id"],
        "keys are per subscription"
    );
    assert_eq!(stored_deliveries(&env).await, 3);
    assert_eq!(env.jobs_in_stream().await, 3);

    let concurrent = futures::future::join_all(
        (0..10).map(|_| api.ingest(&id, b"{}", &[("idempotency-key", "burst")])),
    )
    .await;
    let ids: std::collections::HashSet<String> = concurrent
        .iter()
        .map(|(_, r)| r["delivery_id"].to_string())
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "concurrent repeats share one delivery: {concurrent:?}"
    );
    assert_eq!(stored_deliveries(&env).await, 4);

    let (status, body) = api
        .ingest(&id, b"{}", &[("idempotency-key", "has space")])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_idempotency_key"))
    );
}

#[tokio::test]
async fn bad_requests_get_their_documented_errors_and_store_nothing() {
    let env = TestEnv::new().await;
    let mut config = env.api_config();
    config.max_payload_bytes = 1024;
    let api = TestApi::start(config).await;
    let id = subscription(&api, json!({"target_url": "http://127.0.0.1:9/"})).await;

    // Deeper than the parser allows, yet within the size limit.
    let nested = format!("{}{}", "[".repeat(500), "]".repeat(500));
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(2000));
    let cases: Vec<(Vec<u8>, &str, u16, &str)> = vec![
        (
            b"not json".to_vec(),
            "application/json",
            400,
            "invalid_json",
        ),
        (b"".to_vec(), "application/json", 400, "invalid_json"),
        (
            b"{\"a\":1".to_vec(),
            "application/json",
            400,
            "invalid_json",
        ),
        (
            b"{\"a\":\"\xff\"}".to_vec(),
            "application/json",
            400,
            "invalid_json",
        ),
        (nested.into_bytes(), "application/json", 400, "invalid_json"),
        (
            huge.into_bytes(),
            "application/json",
            413,
            "payload_too_large",
        ),
        (b"{}".to_vec(), "text/plain", 415, "unsupported_media_type"),
        (
            b"{}".to_vec(),
            "application/x-www-form-urlencoded",
            415,
            "unsupported_media_type",
        ),
    ];
    for (body, content_type, status, code) in cases {
        let response = api
            .http
            .post(api.at(&format!("/ingest/{id}")))
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let got = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        let shown = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        assert_eq!(
            (got, answer["error"].as_str()),
            (status, Some(code)),
            "{shown}: {answer}"
        );
    }
    let response = api
        .http
        .post(api.at(&format!("/ingest/{id}")))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415, "no content type");

    let (status, answer) = api.ingest("not-a-uuid", b"{}", &[]).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_id"))
    );
    let (status, answer) = api.ingest("1' OR '1'='1", b"{}", &[]).await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = api
        .ingest(&uuid::Uuid::now_v7().to_string(), b"{}", &[])
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("subscription_not_found"))
    );
    assert_eq!(stored_deliveries(&env).await, 0);

    let (status, _) = api.ingest(&id, b"\"just a string\"", &[]).await;
    assert_eq!(status, 202, "any JSON value is a webhook");
}
