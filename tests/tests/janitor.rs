//! The janitor against real PostgreSQL and NATS: retention by age, unfinished deliveries
//! kept, lost jobs re-queued exactly once, retry delays respected, concurrent janitors,
//! batched deletion of a large backlog, and the loop across failures and shutdown.

use std::time::Duration;

use common::ids::DeliveryId;
use integration_tests::{Receiver, Reply, TestApi, TestEnv, TestWorker, eventually};
use janitor::{Janitor, JanitorConfig, PassReport};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::json;
use uuid::Uuid;

const SOON: Duration = Duration::from_secs(20);

fn janitor_config(env: &TestEnv) -> JanitorConfig {
    JanitorConfig {
        common: env.common_config(),
        interval: Duration::from_secs(3600),
        log_retention: Duration::from_secs(72 * 3600),
        payload_retention: Duration::from_secs(72 * 3600),
        recovery_grace: Duration::from_secs(60),
        batch_size: 5000,
        recovery_limit: 10_000,
    }
}

async fn janitor(config: &JanitorConfig) -> Janitor {
    Janitor::connect(config).await.expect("janitor connects")
}

async fn pass(janitor: &Janitor) -> PassReport {
    let report = janitor.run_once().await.expect("janitor pass");
    assert!(report.ran, "the pass did not run: {report:?}");
    report
}

async fn execute(env: &TestEnv, sql: &str) -> u64 {
    let result = env.database.execute_unprepared(sql).await;
    result
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .rows_affected()
}

async fn count(env: &TestEnv, sql: &str) -> i64 {
    let statement = Statement::from_string(DbBackend::Postgres, sql);
    let row = env.database.query_one_raw(statement).await;
    let row = row
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .expect("a row");
    row.try_get_by_index(0).unwrap()
}

/// Ids of the deliveries left, sorted.
async fn delivery_ids(env: &TestEnv) -> Vec<Uuid> {
    let statement =
        Statement::from_string(DbBackend::Postgres, "SELECT id FROM deliveries ORDER BY id");
    let rows = env.database.query_all_raw(statement).await.unwrap();
    rows.iter()
        .map(|row| row.try_get_by_index(0).unwrap())
        .collect()
}

async fn insert_subscription(env: &TestEnv) -> Uuid {
    let id = Uuid::now_v7();
    execute(
        env,
        &format!(
            "INSERT INTO subscriptions (id, target_url) VALUES ('{id}', 'http://127.0.0.1:9/')"
        ),
    )
    .await;
    id
}

/// Inserts a delivery last changed `age` ago (a PostgreSQL interval such as `100 hours`).
async fn insert_delivery(
    env: &TestEnv,
    subscription_id: Uuid,
    status: &str,
    attempt_count: i32,
    age: &str,
) -> Uuid {
    let id = Uuid::now_v7();
    execute(
        env,
        &format!(
            "INSERT INTO deliveries \
                (id, subscription_id, payload, status, attempt_count, created_at, updated_at) \
             VALUES ('{id}', '{subscription_id}', convert_to('{{\"n\":1}}', 'UTF8'), \
                '{status}', {attempt_count}, now() - interval '{age}', now() - interval '{age}')"
        ),
    )
    .await;
    id
}

async fn insert_attempt(env: &TestEnv, delivery_id: Uuid, number: i32, age: &str) -> Uuid {
    let id = Uuid::now_v7();
    execute(
        env,
        &format!(
            "INSERT INTO delivery_attempts \
                (id, delivery_id, subscription_id, target_url, attempt_number, attempted_at, \
                 outcome, duration_ms) \
             SELECT '{id}', id, subscription_id, 'http://127.0.0.1:9/', {number}, \
                now() - interval '{age}', 'failed_attempt', 5 \
             FROM deliveries WHERE id = '{delivery_id}'"
        ),
    )
    .await;
    id
}

async fn insert_key(env: &TestEnv, delivery_id: Uuid, key: &str, age: &str) {
    execute(
        env,
        &format!(
            "INSERT INTO idempotency_keys (subscription_id, key, delivery_id, created_at) \
             SELECT subscription_id, '{key}', id, now() - interval '{age}' \
             FROM deliveries WHERE id = '{delivery_id}'"
        ),
    )
    .await;
}

/// Inserts `rows` deliveries that failed 100 hours ago, in one statement.
async fn insert_finished_backlog(env: &TestEnv, subscription_id: Uuid, rows: u64) {
    let sql = format!(
        "INSERT INTO deliveries (id, subscription_id, payload, status, updated_at) \
         SELECT gen_random_uuid(), '{subscription_id}', convert_to(repeat('x', 200), 'UTF8'), \
            'failed', now() - interval '100 hours' \
         FROM generate_series(1, {rows})"
    );
    assert_eq!(execute(env, &sql).await, rows);
}

async fn backdate(env: &TestEnv, delivery_id: &str, age: &str) {
    let sql = format!(
        "UPDATE deliveries SET updated_at = now() - interval '{age}' WHERE id = '{delivery_id}'"
    );
    assert_eq!(execute(env, &sql).await, 1, "{delivery_id} not found");
}

async fn job_in_stream(env: &TestEnv, delivery_id: Uuid) -> bool {
    let stream = env
        .jetstream
        .get_stream(env.names().job_stream())
        .await
        .unwrap();
    common::job::is_in_stream(&stream, &env.names(), DeliveryId(delivery_id))
        .await
        .unwrap()
}

async fn subscription_to(api: &TestApi, receiver: &Receiver) -> Uuid {
    let created = api
        .create_subscription(json!({"target_url": receiver.url("/hook")}))
        .await;
    created["id"].as_str().unwrap().parse().unwrap()
}

/// Waits until `delivery_id` is delivered and the stream holds no job at all, so that no
/// further request for it can still be on its way.
async fn wait_until_delivered_and_drained(env: &TestEnv, api: &TestApi, delivery_id: Uuid) {
    let delivery_id = delivery_id.to_string();
    api.wait_for_delivery(&delivery_id, SOON, |d| d["status"] == "delivered")
        .await;
    eventually(SOON, "the job stream to drain", || async {
        (env.jobs_in_stream().await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn rows_past_retention_go_and_younger_rows_stay() {
    let env = TestEnv::new().await;
    let subscription = insert_subscription(&env).await;
    // Finished long ago, with attempts as old.
    let old_delivered = insert_delivery(&env, subscription, "delivered", 1, "100 hours").await;
    insert_attempt(&env, old_delivered, 1, "100 hours").await;
    let old_failed = insert_delivery(&env, subscription, "failed", 2, "80 hours").await;
    insert_attempt(&env, old_failed, 1, "90 hours").await;
    insert_attempt(&env, old_failed, 2, "80 hours").await;
    let old_skipped = insert_delivery(&env, subscription, "skipped", 0, "73 hours").await;
    // Finished just inside retention; its first attempt is just outside.
    let recent = insert_delivery(&env, subscription, "delivered", 2, "71 hours").await;
    insert_attempt(&env, recent, 1, "73 hours").await;
    let recent_success = insert_attempt(&env, recent, 2, "71 hours").await;
    let fresh = insert_delivery(&env, subscription, "delivered", 1, "1 hour").await;
    let fresh_attempt = insert_attempt(&env, fresh, 1, "1 hour").await;
    insert_key(&env, fresh, "expired-key", "25 hours").await;
    insert_key(&env, fresh, "live-key", "23 hours").await;
    // Young, but goes with its delivery; cascaded rows are not counted.
    insert_key(&env, old_delivered, "cascaded-key", "1 hour").await;
    let janitor = janitor(&janitor_config(&env)).await;

    let report = pass(&janitor).await;

    assert_eq!(
        (
            report.attempts_deleted,
            report.deliveries_deleted,
            report.idempotency_keys_deleted,
            report.requeued
        ),
        (4, 3, 1, 0),
        "{report:?}"
    );
    let mut kept = vec![recent, fresh];
    kept.sort();
    assert_eq!(
        delivery_ids(&env).await,
        kept,
        "{old_failed} {old_skipped} should be gone"
    );
    let attempts = count(
        &env,
        &format!(
            "SELECT count(*) FROM delivery_attempts \
             WHERE id IN ('{recent_success}', '{fresh_attempt}')"
        ),
    )
    .await;
    assert_eq!(attempts, 2, "the attempts inside retention stay");
    assert_eq!(
        count(&env, "SELECT count(*) FROM delivery_attempts").await,
        2
    );
    let keys = count(
        &env,
        "SELECT count(*) FROM idempotency_keys WHERE key = 'live-key'",
    )
    .await;
    assert_eq!(keys, 1, "the key inside its day stays");
    assert_eq!(
        count(&env, "SELECT count(*) FROM idempotency_keys").await,
        1
    );

    let again = pass(&janitor).await;
    assert_eq!(
        (
            again.attempts_deleted,
            again.deliveries_deleted,
            again.idempotency_keys_deleted
        ),
        (0, 0, 0),
        "a second pass finds nothing left: {again:?}"
    );
}

#[tokio::test]
async fn payload_retention_is_separate_and_takes_the_attempts_along() {
    let env = TestEnv::new().await;
    let subscription = insert_subscription(&env).await;
    let older = insert_delivery(&env, subscription, "failed", 1, "30 hours").await;
    insert_attempt(&env, older, 1, "30 hours").await;
    let younger = insert_delivery(&env, subscription, "delivered", 1, "20 hours").await;
    insert_attempt(&env, younger, 1, "20 hours").await;
    let mut config = janitor_config(&env);
    config.payload_retention = Duration::from_secs(24 * 3600);
    let janitor = janitor(&config).await;

    let report = pass(&janitor).await;

    assert_eq!(
        (report.attempts_deleted, report.deliveries_deleted),
        (0, 1),
        "{report:?}"
    );
    assert_eq!(delivery_ids(&env).await, [younger]);
    let attempts = count(&env, "SELECT count(*) FROM delivery_attempts").await;
    assert_eq!(attempts, 1, "the deleted delivery's attempt went with it");
}

#[tokio::test]
async fn unfinished_deliveries_are_never_deleted_however_old() {
    let env = TestEnv::new().await;
    let subscription = insert_subscription(&env).await;
    let queued = insert_delivery(&env, subscription, "queued", 0, "1000 hours").await;
    let retrying = insert_delivery(&env, subscription, "retrying", 1, "1000 hours").await;
    insert_attempt(&env, retrying, 1, "1000 hours").await;
    insert_key(&env, queued, "young-key", "1 hour").await;
    let finished = insert_delivery(&env, subscription, "delivered", 1, "1000 hours").await;
    let mut config = janitor_config(&env);
    config.log_retention = Duration::from_secs(1);
    config.payload_retention = Duration::from_secs(1);
    let janitor = janitor(&config).await;

    let report = pass(&janitor).await;

    assert_eq!(
        report.deliveries_deleted, 1,
        "only {finished} goes: {report:?}"
    );
    let mut kept = vec![queued, retrying];
    kept.sort();
    assert_eq!(delivery_ids(&env).await, kept);
    let intact = count(
        &env,
        &format!(
            "SELECT count(*) FROM deliveries \
             WHERE id IN ('{queued}', '{retrying}') \
               AND payload = convert_to('{{\"n\":1}}', 'UTF8') \
               AND status IN ('queued', 'retrying')"
        ),
    )
    .await;
    assert_eq!(intact, 2, "payloads and statuses untouched");
    let keys = count(&env, "SELECT count(*) FROM idempotency_keys").await;
    assert_eq!(keys, 1, "the key of an unfinished delivery stays");
    // Nothing holds their jobs, so the sweep re-queues both.
    assert_eq!(report.requeued, 2, "{report:?}");
}

#[tokio::test]
async fn a_delivery_whose_publish_was_lost_is_requeued_and_delivered_once() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let receiver = Receiver::start().await;
    let subscription = subscription_to(&api, &receiver).await;
    // Committed but never published, as when NATS failed right after the commit.
    let stranded = insert_delivery(&env, subscription, "queued", 0, "10 minutes").await;
    let janitor = janitor(&janitor_config(&env)).await;

    let first = pass(&janitor).await;
    let second = pass(&janitor).await;

    assert_eq!(
        (first.recovery_checked, first.requeued),
        (1, 1),
        "{first:?}"
    );
    assert!(
        job_in_stream(&env, stranded).await,
        "the job is back in the stream"
    );
    assert_eq!(
        (
            second.recovery_checked,
            second.requeued,
            second.requeue_deferred
        ),
        (1, 0, 0),
        "the job is found in the stream, not published again: {second:?}"
    );
    assert_eq!(env.jobs_in_stream().await, 1);

    let _worker = env.start_worker().await;
    wait_until_delivered_and_drained(&env, &api, stranded).await;
    let after = pass(&janitor).await;

    assert_eq!(
        after.requeued, 0,
        "a delivered delivery is left alone: {after:?}"
    );
    let received = receiver.received_for(&stranded.to_string());
    assert_eq!(received.len(), 1, "delivered exactly once: {received:?}");
    assert_eq!(received[0].body, br#"{"n":1}"#);
}

/// Ingests one webhook and returns its delivery id.
async fn ingest(api: &TestApi, subscription: Uuid) -> Uuid {
    let (status, receipt) = api
        .ingest(&subscription.to_string(), br#"{"a":1}"#, &[])
        .await;
    assert_eq!(status, 202, "{receipt}");
    receipt["delivery_id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn jobs_lost_with_a_deleted_stream_are_requeued_into_a_new_one_and_delivered_once() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let receiver = Receiver::start().await;
    let subscription = subscription_to(&api, &receiver).await;
    let delivery_id = ingest(&api, subscription).await;
    env.jetstream
        .delete_stream(env.names().job_stream())
        .await
        .unwrap();
    backdate(&env, &delivery_id.to_string(), "10 minutes").await;
    let janitor = janitor(&janitor_config(&env)).await;

    let report = pass(&janitor).await;

    assert_eq!(
        (report.requeued, report.requeue_deferred),
        (1, 0),
        "{report:?}"
    );
    assert!(
        job_in_stream(&env, delivery_id).await,
        "the job is in the new stream"
    );
    let _worker = env.start_worker().await;
    wait_until_delivered_and_drained(&env, &api, delivery_id).await;
    let received = receiver.received_for(&delivery_id.to_string());
    assert_eq!(received.len(), 1, "delivered exactly once: {received:?}");
}

#[tokio::test]
async fn a_job_purged_within_the_duplicate_window_is_deferred_not_counted() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let receiver = Receiver::start().await;
    let subscription = subscription_to(&api, &receiver).await;
    let delivery_id = ingest(&api, subscription).await;
    let stream = env
        .jetstream
        .get_stream(env.names().job_stream())
        .await
        .unwrap();
    stream.purge().await.unwrap();
    assert!(
        !job_in_stream(&env, delivery_id).await,
        "the purge removed the job"
    );
    backdate(&env, &delivery_id.to_string(), "10 minutes").await;
    let janitor = janitor(&janitor_config(&env)).await;

    let report = pass(&janitor).await;

    // JetStream still remembers the API's message id for this state of the delivery, so it
    // drops the sweep's publish; the report must not claim a re-queue that did not happen.
    assert_eq!(
        (report.requeued, report.requeue_deferred),
        (0, 1),
        "{report:?}"
    );
    assert_eq!(env.jobs_in_stream().await, 0);
}

#[tokio::test]
async fn deliveries_inside_the_grace_period_are_left_to_the_api() {
    let env = TestEnv::new().await;
    let subscription = insert_subscription(&env).await;
    let recent = insert_delivery(&env, subscription, "queued", 0, "1 second").await;
    let janitor = janitor(&janitor_config(&env)).await;

    let report = pass(&janitor).await;

    assert_eq!(
        (report.recovery_checked, report.requeued),
        (0, 0),
        "{report:?}"
    );
    assert!(!job_in_stream(&env, recent).await, "nothing was published");

    backdate(&env, &recent.to_string(), "2 minutes").await;
    let report = pass(&janitor).await;

    assert_eq!(
        report.requeued, 1,
        "past the grace period it is re-queued: {report:?}"
    );
}

#[tokio::test]
async fn a_job_waiting_out_a_retry_delay_is_not_republished() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let receiver = Receiver::start().await;
    receiver.reply_with(Reply::Status(500));
    let mut config = env.worker_config();
    config.retry_schedule = vec![Duration::from_secs(600)];
    let _worker = TestWorker::start(config).await;
    let subscription = subscription_to(&api, &receiver).await;
    let (status, receipt) = api
        .ingest(&subscription.to_string(), br#"{"a":1}"#, &[])
        .await;
    assert_eq!(status, 202, "{receipt}");
    let delivery_id = receipt["delivery_id"].as_str().unwrap().to_owned();
    api.wait_for_delivery(&delivery_id, SOON, |d| d["status"] == "retrying")
        .await;
    // As if the retry delay had been running for a long time.
    backdate(&env, &delivery_id, "10 minutes").await;
    let janitor = janitor(&janitor_config(&env)).await;

    let report = pass(&janitor).await;

    assert_eq!(
        (report.recovery_checked, report.requeued),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(
        env.jobs_in_stream().await,
        1,
        "still the one job, waiting out its delay"
    );
    let received = receiver.received_for(&delivery_id);
    assert_eq!(received.len(), 1, "no early second attempt: {received:?}");
}

#[tokio::test]
async fn the_sweep_is_bounded_and_resumes_where_it_stopped() {
    let env = TestEnv::new().await;
    let subscription = insert_subscription(&env).await;
    let mut stranded = Vec::new();
    for minutes in [50, 40, 30, 20, 10] {
        let age = format!("{minutes} minutes");
        stranded.push(insert_delivery(&env, subscription, "queued", 0, &age).await);
    }
    let mut config = janitor_config(&env);
    config.recovery_limit = 3;
    let janitor = janitor(&config).await;

    let first = pass(&janitor).await;

    assert_eq!(
        (first.recovery_checked, first.requeued),
        (3, 3),
        "{first:?}"
    );
    for (index, id) in stranded.iter().enumerate() {
        assert_eq!(
            job_in_stream(&env, *id).await,
            index < 3,
            "oldest first; #{index}"
        );
    }

    let second = pass(&janitor).await;

    assert_eq!(
        (second.recovery_checked, second.requeued),
        (2, 2),
        "{second:?}"
    );
    assert_eq!(env.jobs_in_stream().await, 5);
}

#[tokio::test]
async fn two_janitors_at_once_neither_double_count_nor_double_publish() {
    let env = TestEnv::new().await;
    let subscription = insert_subscription(&env).await;
    let finished = 3000;
    insert_finished_backlog(&env, subscription, finished).await;
    let mut stranded = Vec::new();
    for _ in 0..20 {
        stranded.push(insert_delivery(&env, subscription, "queued", 0, "10 minutes").await);
    }
    let mut config = janitor_config(&env);
    // Many short batches, so the two passes overlap.
    config.batch_size = 50;
    let first = janitor(&config).await;
    let second = janitor(&config).await;

    let (a, b) = tokio::join!(first.run_once(), second.run_once());

    let (a, b) = (a.expect("first janitor"), b.expect("second janitor"));
    // Whether the other one skipped or ran once the first had finished, one janitor did
    // all the work and the other none: the passes never overlapped.
    let (idle, busy) = if a.deliveries_deleted < b.deliveries_deleted {
        (a, b)
    } else {
        (b, a)
    };
    let work = |r: &PassReport| (r.deliveries_deleted, r.requeued, r.requeue_deferred);
    assert_eq!(work(&busy), (finished, 20, 0), "{busy:?} {idle:?}");
    assert_eq!(work(&idle), (0, 0, 0), "{idle:?} {busy:?}");
    assert_eq!(env.jobs_in_stream().await, 20);
    for id in stranded {
        assert!(job_in_stream(&env, id).await, "{id} was re-queued");
    }
}

#[tokio::test]
async fn a_large_backlog_goes_in_batches_while_the_api_answers() {
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let subscription = insert_subscription(&env).await;
    let backlog: u64 = 40_000;
    insert_finished_backlog(&env, subscription, backlog).await;
    let kept = insert_delivery(&env, subscription, "delivered", 1, "1 hour").await;
    let mut config = janitor_config(&env);
    config.batch_size = 200;
    let janitor = janitor(&config).await;

    let running = tokio::spawn(async move { janitor.run_once().await });
    let mut seen = Vec::new();
    loop {
        // Bounded, so a hung API fails the test instead of stalling it.
        let health = tokio::time::timeout(Duration::from_secs(2), api.get("/health")).await;
        assert_eq!(health.expect("GET /health answers within 2 s").0, 200);
        let path = format!("/deliveries/{kept}");
        let read = tokio::time::timeout(Duration::from_secs(2), api.get(&path)).await;
        assert_eq!(read.expect("GET /deliveries answers within 2 s").0, 200);
        seen.push(count(&env, "SELECT count(*) FROM deliveries").await);
        if running.is_finished() {
            break;
        }
    }
    let report = running.await.unwrap().expect("janitor pass");

    assert_eq!(report.deliveries_deleted, backlog, "{report:?}");
    assert_eq!(delivery_ids(&env).await, [kept]);
    let partial = seen
        .iter()
        .filter(|&&left| 1 < left && left < backlog as i64 + 1)
        .count();
    assert!(
        partial > 0,
        "no batch boundary was ever visible; counts seen: {seen:?}"
    );
}

#[tokio::test]
async fn the_loop_outlives_a_failed_pass_and_stops_on_shutdown() {
    let env = TestEnv::new().await;
    let subscription = insert_subscription(&env).await;
    let finished = insert_delivery(&env, subscription, "delivered", 1, "1 hour").await;
    let old_attempt = insert_attempt(&env, finished, 1, "100 hours").await;
    let stranded = insert_delivery(&env, subscription, "queued", 0, "10 minutes").await;
    // Passes fail at the idempotency key step until the table is back, after the attempt
    // step has visibly run and before the sweep can.
    execute(
        &env,
        "ALTER TABLE idempotency_keys RENAME TO idempotency_keys_away",
    )
    .await;
    let mut config = janitor_config(&env);
    config.interval = Duration::from_millis(200);
    let janitor = janitor(&config).await;
    let shutdown = tokio_util::sync::CancellationToken::new();

    let running = tokio::spawn(janitor.run(shutdown.clone()));

    let attempt_gone = format!("SELECT count(*) FROM delivery_attempts WHERE id = '{old_attempt}'");
    eventually(SOON, "the first pass to delete the old attempt", || async {
        (count(&env, &attempt_gone).await == 0).then_some(())
    })
    .await;
    assert!(
        !job_in_stream(&env, stranded).await,
        "the failed pass never reached the sweep"
    );
    execute(
        &env,
        "ALTER TABLE idempotency_keys_away RENAME TO idempotency_keys",
    )
    .await;
    eventually(
        SOON,
        "a later pass to re-queue the stranded delivery",
        || async { job_in_stream(&env, stranded).await.then_some(()) },
    )
    .await;
    assert!(!running.is_finished(), "the loop ended before shutdown");
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), running).await;
    stopped
        .expect("the janitor stops within 10 s of shutdown")
        .expect("janitor task");
}

#[tokio::test]
async fn shutdown_stops_a_pass_between_batches() {
    let env = TestEnv::new().await;
    let subscription = insert_subscription(&env).await;
    let backlog = 50_000;
    insert_finished_backlog(&env, subscription, backlog).await;
    let mut config = janitor_config(&env);
    config.batch_size = 50;
    let janitor = janitor(&config).await;
    let shutdown = tokio_util::sync::CancellationToken::new();

    let running = tokio::spawn(janitor.run(shutdown.clone()));
    eventually(SOON, "the first batches to go", || async {
        let left = count(&env, "SELECT count(*) FROM deliveries").await;
        (left < backlog as i64).then_some(())
    })
    .await;
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(5), running).await;

    stopped
        .expect("the janitor stops within 5 s")
        .expect("janitor task");
    let left = count(&env, "SELECT count(*) FROM deliveries").await;
    assert!(left > 0, "the pass ran to the end instead of stopping");
}
