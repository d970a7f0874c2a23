//! The subscriptions API, its errors, authentication, health probes and the cache.

use std::time::Duration;

use common::ids::SubscriptionId;
use common::subscription_cache::CachedSubscription;
use integration_tests::{TestApi, TestEnv, eventually, instant};
use serde_json::{Value, json};

async fn cached(env: &TestEnv, id: &str) -> Option<CachedSubscription> {
    let raw = env.subscription_bucket().await.get(id).await.unwrap()?;
    Some(serde_json::from_slice(&raw).unwrap())
}

#[tokio::test]
async fn create_get_list_update_delete() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;

    let response = api
        .http
        .post(api.at("/subscriptions"))
        .json(&json!({
            "target_url": "http://127.0.0.1:9/hook",
            "secret": "s3cret",
            "event_types": ["order.created", "order.created", "order.paid"],
            "description": "orders",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/subscriptions/{id}"));
    assert_eq!(created["target_url"], "http://127.0.0.1:9/hook");
    assert_eq!(
        created["event_types"],
        json!(["order.created", "order.paid"])
    );
    assert_eq!(created["enabled"], true);
    assert_eq!(created["has_secret"], true);
    assert!(created.get("secret").is_none(), "secret leaked: {created}");
    assert!(!created.to_string().contains("s3cret"));
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);

    let (status, fetched) = api.get(&location).await;
    assert_eq!(status, 200);
    assert_eq!(fetched, created);

    let response = api
        .http
        .patch(api.at(&location))
        .json(&json!({"secret": null, "enabled": false, "description": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["has_secret"], false);
    assert_eq!(updated["enabled"], false);
    assert_eq!(updated["description"], Value::Null);
    assert_eq!(
        updated["target_url"], created["target_url"],
        "absent fields stay"
    );
    assert!(instant(&updated["updated_at"]) > instant(&created["updated_at"]));

    let response = api.http.delete(api.at(&location)).send().await.unwrap();
    assert_eq!(response.status(), 204);
    let (status, body) = api.get(&location).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "subscription_not_found");
    let response = api.http.delete(api.at(&location)).send().await.unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn listing_is_newest_first_and_pages_with_a_cursor() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let created = api
            .create_subscription(json!({"target_url": format!("http://127.0.0.1:9/{n}")}))
            .await;
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();

    let (status, first) = api.get("/subscriptions?limit=2").await;
    assert_eq!(status, 200);
    let page_ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(page_ids(&first), ids[0..2]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = api
        .get(&format!("/subscriptions?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(page_ids(&second), ids[2..4]);
    let cursor = second["next_cursor"].as_str().unwrap();
    let (_, third) = api
        .get(&format!("/subscriptions?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(page_ids(&third), ids[4..5]);
    assert_eq!(third["next_cursor"], Value::Null);

    let (_, all) = api.get("/subscriptions").await;
    assert_eq!(page_ids(&all), ids, "default limit covers all five");

    for bad in ["limit=0", "limit=201", "limit=x", "cursor=nope"] {
        let (status, body) = api.get(&format!("/subscriptions?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"].is_string() && body["message"].is_string(),
            "{bad}: {body}"
        );
    }
}

#[tokio::test]
async fn invalid_input_gets_a_json_error_with_the_right_status() {
    let env = TestEnv::new().await;
    let mut config = env.api_config();
    config.common.allow_private_targets = false;
    let api = TestApi::start(config).await;

    let post = |body: String| {
        api.http
            .post(api.at("/subscriptions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".to_owned(), 400, "invalid_body"),
        ("{}".to_owned(), 400, "invalid_body"),
        (r#"{"target_url": ["x"]}"#.to_owned(), 400, "invalid_body"),
        (
            r#"{"target_url": "not a url"}"#.to_owned(),
            422,
            "invalid_target_url",
        ),
        (
            r#"{"target_url": "ftp://example.com/"}"#.to_owned(),
            422,
            "invalid_target_url",
        ),
        (
            r#"{"target_url": "https://u:p@example.com/"}"#.to_owned(),
            422,
            "invalid_target_url",
        ),
        (
            r#"{"target_url": "http://127.0.0.1/"}"#.to_owned(),
            422,
            "non_public_target",
        ),
        (
            r#"{"target_url": "http://0x7f000001/"}"#.to_owned(),
            422,
            "non_public_target",
        ),
        (
            r#"{"target_url": "http://169.254.169.254/"}"#.to_owned(),
            422,
            "non_public_target",
        ),
        (
            r#"{"target_url": "http://[::ffff:127.0.0.1]/"}"#.to_owned(),
            422,
            "non_public_target",
        ),
        (
            r#"{"target_url": "http://localhost:8080/"}"#.to_owned(),
            422,
            "non_public_target",
        ),
        (
            r#"{"target_url": "http://93.184.216.34/", "event_types": [""]}"#.to_owned(),
            422,
            "invalid_event_types",
        ),
        (
            r#"{"target_url": "http://93.184.216.34/", "secret": ""}"#.to_owned(),
            422,
            "invalid_secret",
        ),
        (
            format!(
                r#"{{"target_url": "http://93.184.216.34/", "description": "{}"}}"#,
                "d".repeat(1025)
            ),
            422,
            "invalid_description",
        ),
        (
            format!(
                r#"{{"target_url": "http://93.184.216.34/{}"}}"#,
                "p".repeat(2100)
            ),
            422,
            "invalid_target_url",
        ),
    ];
    for (body, status, code) in cases {
        let response = post(body.clone()).await.unwrap();
        let got = response.status().as_u16();
        let json: Value = response.json().await.unwrap();
        assert_eq!(
            (got, json["error"].as_str()),
            (status, Some(code)),
            "{body}: {json}"
        );
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    let response =
        post(r#"{"target_url": "http://93.184.216.34/", "secret": 12345678}"#.to_owned())
            .await
            .unwrap();
    let text = response.text().await.unwrap();
    assert!(
        !text.contains("12345678"),
        "a value sent as the secret is echoed: {text}"
    );

    let (status, body) = api.get("/subscriptions/not-a-uuid").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_id")),
        "{body}"
    );
    let (status, body) = api
        .get(&format!("/subscriptions/{}", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("subscription_not_found"))
    );
    let (status, body) = api.get("/no/such/route").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));

    let created = api
        .create_subscription(json!({"target_url": "http://93.184.216.34/"}))
        .await;
    let id = created["id"].as_str().unwrap();
    let response = api
        .http
        .patch(api.at(&format!("/subscriptions/{id}")))
        .json(&json!({"target_url": "http://10.0.0.1/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let response = api
        .http
        .patch(api.at(&format!("/subscriptions/{}", uuid::Uuid::now_v7())))
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn api_key_protects_everything_but_ingest_health_and_docs() {
    let env = TestEnv::new().await;
    let mut config = env.api_config();
    config.api_key = Some("k3y".to_owned());
    let api = TestApi::start(config).await;

    for path in [
        "/subscriptions",
        "/deliveries/00000000-0000-0000-0000-000000000000",
    ] {
        let (status, body) = api.get(path).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthorized")),
            "{path}"
        );
        let response = api
            .http
            .get(api.at(path))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path} with a wrong key");
    }
    let response = api
        .http
        .get(api.at("/subscriptions"))
        .bearer_auth("k3y")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    for path in ["/health", "/ready", "/openapi.json", "/docs/"] {
        let (status, _) = api.get(path).await;
        assert_eq!(status, 200, "{path} must stay public");
    }
    let (status, body) = api
        .ingest(&uuid::Uuid::now_v7().to_string(), b"{}", &[])
        .await;
    assert_eq!(
        status, 404,
        "ingest is public and reaches the handler: {body}"
    );
}

#[tokio::test]
async fn health_ready_and_the_openapi_spec() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;

    let (status, body) = api.get("/health").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = api.get("/ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["database"], "ok");
    assert_eq!(body["nats"], "ok");

    let (status, spec) = api.get("/openapi.json").await;
    assert_eq!(status, 200);
    let paths = spec["paths"].as_object().unwrap();
    for path in [
        "/subscriptions",
        "/subscriptions/{id}",
        "/ingest/{subscription_id}",
        "/deliveries/{id}",
        "/subscriptions/{id}/attempts",
        "/subscriptions/{id}/deliveries",
        "/health",
        "/ready",
    ] {
        assert!(paths.contains_key(path), "spec lacks {path}");
    }
    let create = &spec["paths"]["/subscriptions"]["post"]["responses"];
    for status in ["201", "400", "422"] {
        assert!(
            create.get(status).is_some(),
            "POST /subscriptions documents no {status}"
        );
    }
    let response = api.http.get(api.at("/docs/")).send().await.unwrap();
    assert!(response.text().await.unwrap().contains("swagger"));
}

#[tokio::test]
async fn the_cache_follows_every_write() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let created = api
        .create_subscription(json!({"target_url": "http://127.0.0.1:9/a", "secret": "one"}))
        .await;
    let id = created["id"].as_str().unwrap();

    let entry = cached(&env, id)
        .await
        .expect("created subscription is cached");
    assert_eq!(entry.target_url, "http://127.0.0.1:9/a");
    assert_eq!(entry.secret.as_deref(), Some("one"));

    let response = api
        .http
        .patch(api.at(&format!("/subscriptions/{id}")))
        .json(&json!({"target_url": "http://127.0.0.1:9/b", "secret": "two"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let entry = cached(&env, id)
        .await
        .expect("updated subscription is cached");
    assert_eq!(entry.target_url, "http://127.0.0.1:9/b");
    assert_eq!(entry.secret.as_deref(), Some("two"));
    assert_eq!(entry.version, 2);

    // A reader that finds no key goes to the database and fills the key in.
    env.subscription_bucket().await.delete(id).await.unwrap();
    let cache = env.subscription_cache().await;
    let subscription_id = SubscriptionId(uuid::Uuid::parse_str(id).unwrap());
    let read = cache.get(subscription_id).await.unwrap().unwrap();
    assert_eq!(read.target_url, "http://127.0.0.1:9/b");
    assert!(cached(&env, id).await.is_some(), "a miss refills the key");

    // An older version never replaces a newer one.
    let mut stale = read.clone();
    stale.version = 1;
    stale.target_url = "http://127.0.0.1:9/stale".to_owned();
    cache.store(&stale).await.unwrap();
    assert_eq!(
        cached(&env, id).await.unwrap().target_url,
        "http://127.0.0.1:9/b"
    );

    let response = api
        .http
        .delete(api.at(&format!("/subscriptions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(cached(&env, id).await.is_none(), "delete removes the key");
}

#[tokio::test]
async fn reads_fall_back_to_the_database_when_nats_is_unreachable() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let created = api
        .create_subscription(json!({"target_url": "http://127.0.0.1:9/a"}))
        .await;
    let id = SubscriptionId(uuid::Uuid::parse_str(created["id"].as_str().unwrap()).unwrap());

    let cache = env.subscription_cache().await;
    // Closing the client makes every KV call fail at once, as an unreachable server would.
    env.jetstream.client().drain().await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(10), cache.get(id))
        .await
        .unwrap();
    assert_eq!(read.unwrap().unwrap().target_url, "http://127.0.0.1:9/a");
}

#[tokio::test]
async fn each_process_keeps_a_copy_of_the_bucket_that_follows_every_change() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    // Another process's view: its own client, its own copy.
    let elsewhere = env.subscription_cache().await;

    let created = api
        .create_subscription(json!({"target_url": "http://127.0.0.1:9/a"}))
        .await;
    let id = SubscriptionId(uuid::Uuid::parse_str(created["id"].as_str().unwrap()).unwrap());
    eventually(
        Duration::from_secs(5),
        "the new subscription in the copy",
        || async { elsewhere.mirrored(id).filter(|held| held.version == 1) },
    )
    .await;

    let response = api
        .http
        .patch(api.at(&format!("/subscriptions/{id}")))
        .json(&json!({"target_url": "http://127.0.0.1:9/b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let held = eventually(Duration::from_secs(5), "the update in the copy", || async {
        elsewhere.mirrored(id).filter(|held| held.version == 2)
    })
    .await;
    assert_eq!(held.target_url, "http://127.0.0.1:9/b");

    let response = api
        .http
        .delete(api.at(&format!("/subscriptions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    eventually(
        Duration::from_secs(5),
        "the deletion in the copy",
        || async { elsewhere.mirrored(id).is_none().then_some(()) },
    )
    .await;
    assert!(elsewhere.get(id).await.unwrap().is_none());
}
