//! Faults against real processes: the `api` and `worker` binaries, a nats-server and a
//! PostgreSQL cluster of the test's own, and a target that fails a share of requests on
//! purpose. While clients keep sending, the test crashes or stops each piece in turn, then
//! checks that every accepted webhook reached a final state with a consistent attempt log.
//! A second test measures how much a slow target slows deliveries to healthy ones.

// The figures (counts, recovery times, throughput) are what a person reads these tests for,
// so they print them.
#![allow(clippy::print_stdout)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use entity::delivery::{self, DeliveryStatus};
use integration_tests::cluster::load::{self, Answer, Load, LoadConfig, Try};
use integration_tests::cluster::report::{Fault, Probe, Report, Sweep, wait_until_final};
use integration_tests::cluster::{
    self, FlakyTarget, Mode, Postgres, RELIABLE_PREFIX, Stack, StopMode,
};
use integration_tests::{Receiver, Reply, TestApi, TestEnv, TestWorker};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, EntityTrait,
    PaginatorTrait, QueryFilter, Statement, TransactionTrait,
};
use serde_json::{Value, json};
use uuid::Uuid;

/// The tests of this file load the machine; one at a time keeps their figures apart.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Share of requests the target answers with `500` outside any fault.
const FAIL_FRACTION: f64 = 0.25;
/// One attempt plus one per entry: four attempts in about five seconds.
const RETRY_SCHEDULE: &str = "1s,1s,2s";
const ATTEMPTS: i32 = 4;
const DELIVERY_TIMEOUT: &str = "1s";
const JOB_ACK_WAIT: &str = "3s";

/// Twelve clients starting a webhook every 150 ms each: up to 80 a second.
const CLIENTS: usize = 12;
const SEND_INTERVAL: Duration = Duration::from_millis(150);
const MAX_WEBHOOKS: usize = 4000;
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

/// How long NATS and PostgreSQL stay down. While they are, an ingest request takes about
/// 9 s (NATS) or 5 s (PostgreSQL) to be refused, and clients may first be stuck for as long
/// in requests sent before the outage; 12 s leaves room for some requests to be sent and
/// refused entirely inside it.
const OUTAGE: Duration = Duration::from_secs(12);
const API_OUTAGE: Duration = Duration::from_secs(1);
/// How long the target hangs, and then how long it closes connections.
const TARGET_FAULT: Duration = Duration::from_secs(3);
/// Load between two faults, once the system has recovered from the first.
const SETTLE: Duration = Duration::from_secs(3);
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// Sends a probe (retrying until accepted) to the reliable path of the target, and waits
/// until the target has answered it with 2xx.
async fn probe(stack: &Stack, target: &FlakyTarget, subscription: &str, label: &str) -> Probe {
    let since = Instant::now();
    let url = stack.ingest_url(subscription);
    let key = format!("probe-{label}");
    let body = format!(r#"{{"probe":"{label}"}}"#).into_bytes();
    let deadline = since + RECOVERY_LIMIT;
    let (delivery_id, accepted_after) = loop {
        let answer = load::ingest(&stack.http, &url, body.clone(), Some(&key)).await;
        if let Answer::Accepted(id) = answer {
            break (id, since.elapsed());
        }
        assert!(
            Instant::now() < deadline,
            "after {label}, ingest did not accept a webhook within {RECOVERY_LIMIT:?}; \
             last answer {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let delivered = cluster::poll_until(deadline.saturating_duration_since(Instant::now()), || {
        let delivered = target.delivered(&delivery_id.to_string()).is_some();
        async move { delivered }
    })
    .await;
    assert!(
        delivered,
        "after {label}, probe {delivery_id} was accepted but not delivered within \
         {RECOVERY_LIMIT:?}"
    );
    Probe {
        delivery_id,
        accepted_after,
        delivered_after: since.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_webhook_reaches_a_final_state_through_crashes_and_outages() {
    let _heavy = HEAVY.lock().await;
    let run_started = Instant::now();
    let mut stack = Stack::start(&[
        ("RETRY_SCHEDULE", RETRY_SCHEDULE),
        ("DELIVERY_TIMEOUT", DELIVERY_TIMEOUT),
        ("JOB_ACK_WAIT", JOB_ACK_WAIT),
        ("DELIVERY_CONCURRENCY", "16"),
        ("SHUTDOWN_GRACE", "2s"),
    ])
    .await;
    let target = FlakyTarget::start(FAIL_FRACTION).await;
    let main = stack.create_subscription(&target.url("/hooks")).await;
    let probes = stack
        .create_subscription(&target.url(&format!("{RELIABLE_PREFIX}/probe")))
        .await;
    let first = probe(&stack, &target, &probes, "start").await;

    let load = Load::start(
        stack.ingest_url(&main),
        LoadConfig {
            clients: CLIENTS,
            interval: SEND_INTERVAL,
            max_webhooks: MAX_WEBHOOKS,
            give_up_after: GIVE_UP_AFTER,
            retry_pause: Duration::from_millis(100),
            key_prefix: "faults".to_owned(),
        },
    );
    let warmed_up = cluster::poll_until(Duration::from_secs(30), || {
        let accepted = load.accepted();
        async move { accepted >= 100 }
    })
    .await;
    assert!(
        warmed_up,
        "the load did not get going: {:?}",
        load.tries().last()
    );

    let faults = run_faults(&mut stack, &target, &probes, &load).await;
    let after_faults = load.accepted();
    // The load goes on for a while after the last fault.
    tokio::time::sleep(SETTLE).await;
    let tries = load.stop(GIVE_UP_AFTER + Duration::from_secs(20)).await;
    assert!(
        load_accepted(&tries) > after_faults,
        "the load stopped before the faults were over"
    );

    let database = common::database::connect(&stack.postgres.url(), 5)
        .await
        .expect("connect to the test's PostgreSQL");
    let mut accepted: HashSet<Uuid> = accepted_ids(&tries);
    accepted.insert(first.delivery_id);
    accepted.extend(faults.iter().map(|fault| fault.probe.delivery_id));
    let drain_started = Instant::now();
    let unfinished = wait_until_final(&database, Some(&accepted), DRAIN_LIMIT).await;
    let drained_after = drain_started.elapsed();
    assert!(
        unfinished.is_empty(),
        "{} accepted webhooks are not final {DRAIN_LIMIT:?} after the load stopped, such as \
         {:?}",
        unfinished.len(),
        unfinished.iter().take(5).collect::<Vec<_>>()
    );

    let sweep = sweep(&stack).await;
    let stranded = if sweep.as_ref().is_some_and(|sweep| sweep.deferred == 0) {
        wait_until_final(&database, None, Duration::from_secs(60)).await
    } else {
        Vec::new()
    };

    let report = Report::gather(&database, &accepted, &target, ATTEMPTS).await;
    print!(
        "{}",
        report.figures(&faults, &tries, sweep.as_ref(), drained_after)
    );
    println!("fault test took {:.1?}", run_started.elapsed());

    report.assert_invariants(&faults, &tries);
    assert!(
        stranded.is_empty(),
        "{} stored deliveries (sent without a 202) are still not final after the janitor's \
         sweep, such as {:?}",
        stranded.len(),
        stranded.iter().take(5).collect::<Vec<_>>()
    );
    for service in [&mut stack.api, &mut stack.worker] {
        assert!(
            service.is_running(),
            "the {} exited by itself; its log:\n{}",
            service.name(),
            service.log_tail(30)
        );
        let log = std::fs::read_to_string(service.log_path()).unwrap_or_default();
        assert!(
            !log.contains("panicked"),
            "the {} panicked; its log:\n{}",
            service.name(),
            service.log_tail(60)
        );
    }
}

fn load_accepted(tries: &[Try]) -> usize {
    tries
        .iter()
        .filter(|attempt| matches!(attempt.answer, Answer::Accepted(_)))
        .count()
}

fn accepted_ids(tries: &[Try]) -> HashSet<Uuid> {
    tries
        .iter()
        .filter_map(|attempt| match attempt.answer {
            Answer::Accepted(id) => Some(id),
            _ => None,
        })
        .collect()
}

/// Each fault in turn, with a probe after each to measure recovery and some load between
/// them. The sleeps here are the faults themselves (how long a piece stays down) and the
/// load between faults, not waits for anything to happen.
async fn run_faults(
    stack: &mut Stack,
    target: &FlakyTarget,
    probes: &str,
    load: &Load,
) -> Vec<Fault> {
    let mut faults = Vec::new();

    // A worker killed while attempts are in flight; their jobs come back after the ack wait.
    let busy = cluster::poll_until(Duration::from_secs(10), || {
        let busy = target.in_flight() > 0;
        async move { busy }
    })
    .await;
    assert!(busy, "no attempt was ever in flight at the target");
    let in_flight = target.in_flight();
    let began = Instant::now();
    stack.worker.kill();
    stack.worker.restart();
    let back = Instant::now();
    faults.push(Fault {
        name: "worker SIGKILL, restarted",
        began,
        back,
        down: None,
        ingest_refuses: false,
        in_flight: Some(in_flight),
        may_repeat_attempts: true,
        probe: probe(stack, target, probes, "worker-kill").await,
        detail: None,
    });
    tokio::time::sleep(SETTLE).await;

    // The API killed while clients keep sending; they retry until it is back.
    let began = Instant::now();
    stack.api.kill();
    let down_from = Instant::now();
    tokio::time::sleep(API_OUTAGE).await;
    let down_to = Instant::now();
    stack.api.restart();
    stack.wait_for_api().await;
    let back = Instant::now();
    faults.push(Fault {
        name: "api SIGKILL, restarted",
        began,
        back,
        down: Some((down_from, down_to)),
        ingest_refuses: false,
        in_flight: None,
        may_repeat_attempts: false,
        probe: probe(stack, target, probes, "api-kill").await,
        detail: None,
    });
    tokio::time::sleep(SETTLE).await;

    // nats-server killed and started again on its file store.
    let in_flight = target.in_flight();
    let began = Instant::now();
    stack.nats.kill();
    let down_from = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    let down_to = Instant::now();
    stack.nats.start_again().await;
    let back = Instant::now();
    faults.push(Fault {
        name: "nats-server SIGKILL, down 12 s",
        began,
        back,
        down: Some((down_from, down_to)),
        ingest_refuses: true,
        in_flight: Some(in_flight),
        may_repeat_attempts: false,
        probe: probe(stack, target, probes, "nats").await,
        detail: None,
    });
    tokio::time::sleep(SETTLE).await;

    // PostgreSQL shut down cleanly (sessions end with an error), then in a crash.
    for (mode, name, label) in [
        (
            StopMode::Fast,
            "postgres: inserts ended, stop -m fast, down 12 s",
            "postgres-fast",
        ),
        (
            StopMode::Immediate,
            "postgres crash (-m immediate), down 12 s",
            "postgres-crash",
        ),
    ] {
        let began = Instant::now();
        // A fast shutdown ends every session with an error, which only a statement in
        // flight sees; ending some inserts in flight the same way makes sure there are.
        let held = if mode == StopMode::Fast {
            Some(end_inserts_in_flight(&stack.postgres).await)
        } else {
            None
        };
        let in_flight = target.in_flight();
        stack.postgres.stop(mode).await;
        let inserts_ended = held.map(|(_, _, ended)| ended);
        let down_from = Instant::now();
        tokio::time::sleep(OUTAGE).await;
        let down_to = Instant::now();
        stack.postgres.start_again().await;
        let back = Instant::now();
        faults.push(Fault {
            name,
            began,
            back,
            down: Some((down_from, down_to)),
            ingest_refuses: true,
            in_flight: Some(in_flight),
            may_repeat_attempts: true,
            probe: probe(stack, target, probes, label).await,
            detail: inserts_ended
                .map(|ended| format!("{ended} ingest inserts in flight ended with SQLSTATE 57P01")),
        });
        tokio::time::sleep(SETTLE).await;
    }

    // The target hangs past the delivery timeout, then drops connections unanswered.
    let began = Instant::now();
    target.set_mode(Mode::Hang);
    tokio::time::sleep(TARGET_FAULT).await;
    target.set_mode(Mode::Close);
    tokio::time::sleep(TARGET_FAULT).await;
    target.set_mode(Mode::Normal);
    let back = Instant::now();
    faults.push(Fault {
        name: "target hangs 3 s, then closes 3 s",
        began,
        back,
        down: None,
        ingest_refuses: false,
        in_flight: None,
        may_repeat_attempts: false,
        probe: probe(stack, target, probes, "target").await,
        detail: None,
    });
    assert!(
        load.tries().len() > faults.len(),
        "the clients sent nothing during the faults"
    );
    faults
}

/// Ends, as a fast shutdown does (SQLSTATE 57P01), ingest inserts that are in flight. An
/// exclusive lock on the deliveries table holds inserts up until some are waiting, so there
/// is always a statement to end; the lock goes with the returned transaction.
async fn end_inserts_in_flight(
    postgres: &Postgres,
) -> (DatabaseConnection, DatabaseTransaction, i64) {
    let database = common::database::connect(&postgres.url(), 1)
        .await
        .expect("connect to the test's PostgreSQL");
    let lock = database.begin().await.expect("begin");
    lock.execute_unprepared("LOCK TABLE deliveries IN EXCLUSIVE MODE")
        .await
        .expect("lock the deliveries table");
    let count = |sql: &str| {
        let statement = Statement::from_string(DbBackend::Postgres, sql);
        let lock = &lock;
        async move {
            lock.query_one_raw(statement)
                .await
                .expect("read pg_stat_activity")
                .and_then(|row| row.try_get::<i64>("", "n").ok())
                .unwrap_or(0)
        }
    };
    const WAITING: &str = "FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                           AND query ILIKE '%INSERT INTO deliveries %'";
    let blocked = cluster::poll_until(Duration::from_secs(10), || async {
        count(&format!("SELECT count(*) AS n {WAITING}")).await > 0
    })
    .await;
    assert!(
        blocked,
        "no ingest insert waited for the lock on deliveries"
    );
    let ended = count(&format!(
        "SELECT count(*) FILTER (WHERE ended) AS n \
         FROM (SELECT pg_terminate_backend(pid) AS ended {WAITING}) AS terminated"
    ))
    .await;
    assert!(ended > 0, "no waiting insert could be ended");
    (database, lock, ended)
}

/// Runs `janitor --once` as the recovery sweep, if the binary was built, and reads what it
/// re-queued from its log.
async fn sweep(stack: &Stack) -> Option<Sweep> {
    let Some((status, output)) = stack
        .run_janitor(&[("RUST_LOG", "info"), ("RECOVERY_GRACE", "1s")])
        .await
    else {
        println!("note: no janitor binary; skipped the recovery sweep");
        return None;
    };
    assert!(
        status.is_some_and(|status| status.success()),
        "janitor --once failed ({status:?}):\n{output}"
    );
    let Some(pass) = output
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == "janitor pass done")
    else {
        println!("note: the janitor reported no pass (an old build?); no recovery sweep ran");
        return None;
    };
    Some(Sweep {
        requeued: pass["requeued"].as_u64().unwrap_or(0),
        deferred: pass["requeue_deferred"].as_u64().unwrap_or(0),
    })
}

/// Deliveries in flight at once in the isolation test's worker.
const ISOLATION_CONCURRENCY: usize = 16;
/// Healthy webhooks per measurement, spread over three healthy targets.
const HEALTHY_WEBHOOKS: usize = 600;

/// How fast healthy targets got their webhooks in one measurement.
struct Throughput {
    healthy: usize,
    slow: usize,
    /// From the worker's start to the last healthy webhook's arrival.
    elapsed: Duration,
    /// From the worker's start to every delivery, slow ones included, being final.
    all_final: Duration,
}

impl Throughput {
    fn per_second(&self) -> f64 {
        self.healthy as f64 / self.elapsed.as_secs_f64().max(0.001)
    }
}

/// A target that answers only at the delivery timeout takes worker slots from healthy
/// targets. Its fair share is one subscription's worth of `DELIVERY_CONCURRENCY`; the test
/// prints how much healthy throughput it really costs, and asserts only that every webhook
/// ends as it should.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_target_and_the_throughput_of_healthy_ones() {
    let _heavy = HEAVY.lock().await;
    let env = TestEnv::new().await;
    let api = env.start_api().await;
    let mut config = env.worker_config();
    config.concurrency = ISOLATION_CONCURRENCY;
    // The worker's default: a quarter of the slots for any one subscription.
    config.subscription_concurrency = ISOLATION_CONCURRENCY / 4;
    config.timeout = Duration::from_secs(1);
    // One attempt each, so a slow webhook holds a slot for exactly one timeout.
    config.retry_schedule = Vec::new();
    let mut healthy = Vec::new();
    for _ in 0..3 {
        let receiver = Receiver::start().await;
        let id = subscription(&api, &receiver.url("/healthy")).await;
        healthy.push((receiver, id));
    }
    let slow = Receiver::start().await;
    slow.reply_with(Reply::Hang);
    let slow_id = subscription(&api, &slow.url("/slow")).await;

    let baseline = measure(&env, &api, &config, &healthy, None).await;
    let contended = measure(&env, &api, &config, &healthy, Some((&slow, &slow_id))).await;

    let subscriptions = healthy.len() + 1;
    let share = ISOLATION_CONCURRENCY / subscriptions;
    let floor = baseline.per_second() * (1.0 - 1.0 / subscriptions as f64);
    println!();
    println!("=== isolation: DELIVERY_CONCURRENCY={ISOLATION_CONCURRENCY}, timeout 1s ===");
    println!(
        "healthy only:        {} webhooks to 3 targets in {:.2?}: {:.0}/s",
        baseline.healthy,
        baseline.elapsed,
        baseline.per_second()
    );
    println!(
        "with a slow target:  {} healthy + {} that hang to the timeout; healthy done in \
         {:.2?}: {:.0}/s ({:.0}% of healthy only); all final after {:.2?}",
        contended.healthy,
        contended.slow,
        contended.elapsed,
        contended.per_second(),
        100.0 * contended.per_second() / baseline.per_second(),
        contended.all_final
    );
    println!(
        "held to its share ({share} of {ISOLATION_CONCURRENCY} slots, 1 of {subscriptions} \
         subscriptions), the slow target would leave healthy ones at least {floor:.0}/s: {}",
        if contended.per_second() >= floor {
            "within its share"
        } else {
            "it took more than its share"
        }
    );
}

async fn subscription(api: &TestApi, url: &str) -> String {
    api.create_subscription(json!({ "target_url": url })).await["id"]
        .as_str()
        .expect("an id")
        .to_owned()
}

/// Queues healthy webhooks (and, with `slow`, one slow webhook after every three healthy
/// ones) while no worker runs, then starts a worker and times how soon the healthy targets
/// have them all. Checks that every webhook ended as it should.
async fn measure(
    env: &TestEnv,
    api: &TestApi,
    config: &worker::WorkerConfig,
    healthy: &[(Receiver, String)],
    slow: Option<(&Receiver, &String)>,
) -> Throughput {
    let mut plan: Vec<(&str, bool)> = Vec::new();
    for n in 0..HEALTHY_WEBHOOKS {
        plan.push((&healthy[n % healthy.len()].1, false));
        if let Some((_, slow_id)) = slow
            && n % 3 == 2
        {
            plan.push((slow_id, true));
        }
    }
    let mut healthy_ids = Vec::new();
    let mut slow_ids = Vec::new();
    for chunk in plan.chunks(50) {
        let sends = chunk.iter().map(|(subscription, is_slow)| async move {
            let (status, receipt) = api.ingest(subscription, b"{\"load\":true}", &[]).await;
            assert_eq!(status, 202, "{receipt}");
            (
                receipt["delivery_id"].as_str().expect("an id").to_owned(),
                *is_slow,
            )
        });
        for (id, is_slow) in futures::future::join_all(sends).await {
            if is_slow {
                slow_ids.push(id);
            } else {
                healthy_ids.push(id);
            }
        }
    }
    let before: usize = healthy
        .iter()
        .map(|(receiver, _)| receiver.received().len())
        .sum();

    let expected = healthy_ids.len();
    let worker = TestWorker::start(config.clone()).await;
    let started = Instant::now();
    let arrived = cluster::poll_until(Duration::from_secs(120), || {
        let count: usize = healthy
            .iter()
            .map(|(receiver, _)| receiver.received().len())
            .sum();
        async move { count - before >= expected }
    })
    .await;
    assert!(arrived, "healthy targets did not get every webhook");
    let last_arrival = healthy
        .iter()
        .flat_map(|(receiver, _)| receiver.received())
        .map(|request| request.at)
        .max()
        .expect("requests arrived");
    let all_final = cluster::poll_until(Duration::from_secs(120), || async {
        let open = delivery::Entity::find()
            .filter(
                delivery::Column::Status.is_in([DeliveryStatus::Queued, DeliveryStatus::Retrying]),
            )
            .count(&env.database)
            .await
            .expect("count unfinished deliveries");
        open == 0
    })
    .await;
    assert!(all_final, "deliveries still unfinished");
    let all_final = started.elapsed();
    worker.stop().await;

    for id in &healthy_ids {
        let (_, delivery) = api.get(&format!("/deliveries/{id}")).await;
        assert_eq!(delivery["status"], "delivered", "{delivery}");
        let copies: usize = healthy
            .iter()
            .map(|(receiver, _)| receiver.received_for(id).len())
            .sum();
        assert_eq!(copies, 1, "{id} arrived {copies} times");
    }
    for id in &slow_ids {
        let (_, delivery) = api.get(&format!("/deliveries/{id}")).await;
        assert_eq!(delivery["status"], "failed", "{delivery}");
        assert_eq!(delivery["attempts"][0]["error"], "timeout after 1s");
        let copies = slow.map_or(0, |(receiver, _)| receiver.received_for(id).len());
        assert_eq!(copies, 1, "{id} reached the slow target {copies} times");
    }
    Throughput {
        healthy: healthy_ids.len(),
        slow: slow_ids.len(),
        elapsed: last_arrival.saturating_duration_since(started),
        all_final,
    }
}
