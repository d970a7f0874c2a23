//! The worker's batched recording of attempts, against the real PostgreSQL.

use chrono::{TimeZone, Utc};
use common::ids::{DeliveryId, SubscriptionId};
use entity::delivery_attempt::AttemptOutcome;
use integration_tests::TestEnv;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use worker::store::{AttemptRecord, AttemptRecorder, Recorded, StoreError};

fn record(
    delivery: DeliveryId,
    subscription: SubscriptionId,
    outcome: AttemptOutcome,
) -> AttemptRecord {
    AttemptRecord {
        delivery_id: delivery,
        subscription_id: subscription,
        target_url: "http://127.0.0.1:9/hook".to_owned(),
        attempt_number: 1,
        attempted_at: Utc::now(),
        outcome,
        status_code: Some(500),
        error: None,
        duration_ms: 3,
        next_attempt_at: None,
    }
}

async fn execute(env: &TestEnv, sql: String) {
    env.database
        .execute_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .expect("statement runs");
}

async fn state_of(env: &TestEnv, delivery: DeliveryId) -> (String, i32, i64) {
    let row = env
        .database
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT d.status, d.attempt_count, \
                 (SELECT count(*) FROM delivery_attempts a WHERE a.delivery_id = d.id) AS logged \
                 FROM deliveries d WHERE d.id = '{}'",
                delivery.0
            ),
        ))
        .await
        .expect("query runs")
        .expect("delivery exists");
    (
        row.try_get("", "status").expect("status"),
        row.try_get("", "attempt_count").expect("attempt_count"),
        row.try_get("", "logged").expect("logged"),
    )
}

#[tokio::test]
async fn a_shared_batch_records_each_attempt_once_and_fails_only_a_bad_record() {
    let env = TestEnv::new().await;
    let subscription = SubscriptionId::new();
    let deliveries: Vec<DeliveryId> = (0..3).map(|_| DeliveryId::new()).collect();
    execute(
        &env,
        format!(
            "INSERT INTO subscriptions (id, target_url) VALUES ('{}', 'http://127.0.0.1:9/hook')",
            subscription.0
        ),
    )
    .await;
    for delivery in &deliveries {
        execute(
            &env,
            format!(
                "INSERT INTO deliveries (id, subscription_id, payload, status) \
                 VALUES ('{}', '{}', '\\x7b7d', 'queued')",
                delivery.0, subscription.0
            ),
        )
        .await;
    }
    let recorder = AttemptRecorder::start(env.database.clone(), 16);

    let delivered = record(deliveries[0], subscription, AttemptOutcome::Success);
    let second_copy = record(deliveries[0], subscription, AttemptOutcome::Success);
    let mut retrying = record(deliveries[1], subscription, AttemptOutcome::FailedAttempt);
    retrying.error = Some("network error: peer said \0 and hung up".to_owned());
    // Before 4713 BC, outside what PostgreSQL's timestamps can hold: the statement is refused.
    let mut unstorable = record(deliveries[2], subscription, AttemptOutcome::Success);
    unstorable.attempted_at = Utc
        .with_ymd_and_hms(-5000, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid chrono date");
    let results = futures::future::join_all([
        recorder.record(delivered),
        recorder.record(second_copy),
        recorder.record(retrying),
        recorder.record(unstorable),
    ])
    .await;

    let copies: Vec<_> = results[..2]
        .iter()
        .map(|result| result.as_ref().expect("recorded").to_owned())
        .collect();
    assert!(
        copies.contains(&Recorded::Written) && copies.contains(&Recorded::AlreadyRecorded),
        "exactly one copy of one attempt is written: {copies:?}"
    );
    assert_eq!(
        results[2].as_ref().ok(),
        Some(&Recorded::Written),
        "{:?}",
        results[2]
    );
    assert!(
        matches!(results[3], Err(StoreError::Database(_))),
        "{:?}",
        results[3]
    );
    assert_eq!(
        state_of(&env, deliveries[0]).await,
        ("delivered".to_owned(), 1, 1)
    );
    assert_eq!(
        state_of(&env, deliveries[1]).await,
        ("retrying".to_owned(), 1, 1)
    );
    assert_eq!(
        state_of(&env, deliveries[2]).await,
        ("queued".to_owned(), 0, 0)
    );

    let again = recorder
        .record(record(deliveries[0], subscription, AttemptOutcome::Success))
        .await
        .expect("recorded");
    assert_eq!(
        again,
        Recorded::AlreadyRecorded,
        "a finished delivery takes no more attempts"
    );
}
