//! One scenario from start to finish: fresh services, subscriptions, warm-up, the measured
//! load, the wait for every delivery, and the figures.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use uuid::Uuid;

use crate::analysis::{self, Latency};
use crate::environment::Environment;
use crate::load::{self, LoadResult, Plan, Target};
use crate::options::Options;
use crate::processes::{self, ChildProcess, ServiceSettings, Services};
use crate::receiver::Receiver;
use crate::report::{Checks, IngestStats, ScenarioReport};
use crate::resources::{self, CpuSnapshot};

/// How often the drain wait looks at the receiver.
const DRAIN_POLL: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    FixedConcurrency(u32),
    FixedRate(f64),
    /// A fixed rate against a receiver that fails the first attempts.
    RetryTiming(f64),
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::FixedConcurrency(_) => "fixed-concurrency",
            Self::FixedRate(_) => "fixed-rate",
            Self::RetryTiming(_) => "retry-timing",
        }
    }

    fn load(self) -> String {
        match self {
            Self::FixedConcurrency(concurrency) => format!("c={concurrency}"),
            Self::FixedRate(rate) | Self::RetryTiming(rate) => format!("{rate}/s"),
        }
    }
}

/// Runs one scenario. Whatever happens, the services are stopped and the database and
/// namespace removed before this returns (or, on a panic or Ctrl-C, when it unwinds).
pub async fn run(options: &Options, kind: Kind) -> anyhow::Result<ScenarioReport> {
    let fail_first = match kind {
        Kind::RetryTiming(_) => options.fail_first,
        _ => 0,
    };
    let receiver = Receiver::start(fail_first).await?;

    if let Some(url) = &options.external_url {
        let api_url = url.as_str().trim_end_matches('/').to_owned();
        let mut report = measure(options, kind, &receiver, &api_url, None).await?;
        report.checks.receiver_unidentified = receiver.unidentified();
        return Ok(report);
    }

    eprintln!("bench: {}: starting api and worker", kind.name());
    let environment = Environment::create(&options.database_url, &options.nats_url).await?;
    let settings = ServiceSettings {
        api_bin: &options.api_bin,
        worker_bin: &options.worker_bin,
        log_dir: &options.log_dir,
        scenario: kind.name(),
        retry_schedule: matches!(kind, Kind::RetryTiming(_))
            .then(|| options.retry_schedule.to_string()),
        extra_env: &options.service_env,
    };
    let services = match Services::start(&settings, &environment).await {
        Ok(services) => services,
        Err(err) => {
            if let Err(cleanup) = environment.remove().await {
                eprintln!("bench: {cleanup:#}");
            }
            return Err(err);
        }
    };

    let owned = Owned {
        services: &services,
        environment: &environment,
    };
    let measured = measure(options, kind, &receiver, &services.api_url, Some(owned)).await;

    let (api_log, worker_log) = (
        services.api.log_path.clone(),
        services.worker.log_path.clone(),
    );
    let (api_stop, worker_stop) = services.stop().await;
    let removed = environment.remove().await;
    let mut report = measured?;
    removed?;

    report.checks.receiver_unidentified = receiver.unidentified();
    report.checks.api_stop = api_stop;
    report.checks.worker_stop = worker_stop;
    // Read after the stop, so that warnings logged while shutting down count too.
    report.checks.api_log = Some(processes::summarize_log(&api_log));
    report.checks.worker_log = Some(processes::summarize_log(&worker_log));
    Ok(report)
}

/// What the bench started itself, and can therefore look into.
#[derive(Clone, Copy)]
struct Owned<'a> {
    services: &'a Services,
    environment: &'a Environment,
}

async fn measure(
    options: &Options,
    kind: Kind,
    receiver: &Receiver,
    api_url: &str,
    owned: Option<Owned<'_>>,
) -> anyhow::Result<ScenarioReport> {
    let pool_size = match kind {
        Kind::FixedConcurrency(concurrency) => concurrency as usize,
        // Connections beyond what is idle at once are opened on demand.
        _ => 256,
    };
    let client = load::client(pool_size, options.request_timeout)?;
    let api_key = options.api_key.as_deref();
    let targets = load::create_targets(
        &client,
        api_url,
        api_key,
        (0..options.subscriptions).map(|index| receiver.url(index)),
        options.body_size,
    )
    .await?;
    let targets = Arc::new(targets);

    let outcome = measure_load(options, kind, receiver, &client, &targets, owned).await;
    if owned.is_none() {
        load::delete_targets(&client, api_url, api_key, &targets).await;
    }
    outcome
}

async fn measure_load(
    options: &Options,
    kind: Kind,
    receiver: &Receiver,
    client: &reqwest::Client,
    targets: &Arc<Vec<Target>>,
    owned: Option<Owned<'_>>,
) -> anyhow::Result<ScenarioReport> {
    if !options.warmup.is_zero() {
        warm_up(options, receiver, client, targets).await;
    }

    let profiles = match (&options.perf_dir, owned) {
        (Some(directory), Some(owned)) => {
            let duration = options.perf_duration.unwrap_or(options.duration);
            start_profiles(directory, kind.name(), owned.services, duration)?
        }
        _ => Vec::new(),
    };

    let pids = owned.map(|owned| (owned.services.api.pid, owned.services.worker.pid));
    let snapshot = || pids.map(|(api, worker)| CpuSnapshot::take(api, worker));
    let load_start = snapshot();

    eprintln!(
        "bench: {} {}: sending for {:?}",
        kind.name(),
        kind.load(),
        options.duration
    );
    let plan = Plan {
        client,
        targets,
        duration: options.duration,
        max_requests: options.max_requests,
    };
    let result = match kind {
        Kind::FixedConcurrency(concurrency) => load::fixed_concurrency(&plan, concurrency).await,
        Kind::FixedRate(rate) | Kind::RetryTiming(rate) => {
            load::fixed_rate(&plan, rate, options.max_in_flight).await
        }
    };
    let load_end = snapshot();

    let ids: Vec<Uuid> = result.accepted.iter().map(|(id, _)| *id).collect();
    eprintln!(
        "bench: waiting up to {:?} for {} deliveries",
        options.drain_timeout,
        ids.len()
    );
    wait_for_deliveries(receiver, &ids, result.ended + options.drain_timeout).await;
    let drained = snapshot();
    tokio::time::sleep(options.settle).await;

    let arrivals = receiver.snapshot();
    let expected_attempts = match kind {
        Kind::RetryTiming(_) => {
            let most = options.retry_schedule.0.len() + 1;
            (options.fail_first as usize + 1).min(most)
        }
        _ => 1,
    };
    let delivery = analysis::delivery_stats(
        &result.accepted,
        &arrivals,
        (result.started, result.ended),
        expected_attempts,
    );
    let retries = match kind {
        Kind::RetryTiming(_) => {
            analysis::retry_lateness(&result.accepted, &arrivals, &options.retry_schedule.0)
        }
        _ => Vec::new(),
    };

    let load_seconds = (result.ended - result.started).as_secs_f64();
    let resources = match (pids, load_start, load_end, drained) {
        (Some((api, worker)), Some(start), Some(end), Some(drained)) => Some(resources::usage(
            [&start, &end, &drained],
            load_seconds,
            api,
            worker,
        )),
        _ => None,
    };

    let mut checks = Checks::default();
    if let Some(owned) = owned {
        checks.delivery_statuses = owned
            .environment
            .delivery_statuses()
            .await
            .unwrap_or_default();
        checks.jobs_left = owned.environment.jobs_left().await.ok();
    }
    finish_profiles(profiles).await;

    let offered = match kind {
        Kind::FixedConcurrency(_) => None,
        Kind::FixedRate(rate) | Kind::RetryTiming(rate) => Some(rate),
    };
    Ok(ScenarioReport {
        name: kind.name().to_owned(),
        load: kind.load(),
        nats_version: owned.map(|owned| owned.environment.nats_version.clone()),
        postgres_version: owned.map(|owned| owned.environment.postgres_version.clone()),
        ingest: ingest_stats(&result, offered),
        delivery,
        retries,
        resources,
        checks,
    })
}

fn ingest_stats(result: &LoadResult, offered: Option<f64>) -> IngestStats {
    let seconds = (result.ended - result.started).as_secs_f64();
    let per_second = |count: u64| {
        if seconds > 0.0 {
            count as f64 / seconds
        } else {
            0.0
        }
    };
    let answered: u64 = result.outcomes.values().sum();
    IngestStats {
        seconds,
        requests: result.requests,
        accepted: result.accepted_count(),
        accepted_per_second: per_second(result.accepted_count()),
        requests_per_second: per_second(answered),
        offered_per_second: offered,
        max_send_lag_ms: offered.map(|_| result.max_send_lag_ms),
        latency: Latency::from_micros(&result.latency_us),
        errors: result
            .outcomes
            .iter()
            .filter(|(outcome, _)| !outcome.starts_with("202"))
            .map(|(outcome, count)| (outcome.clone(), *count))
            .collect(),
    }
}

/// Sends unmeasured load, waits until it is delivered, and forgets it.
async fn warm_up(
    options: &Options,
    receiver: &Receiver,
    client: &reqwest::Client,
    targets: &Arc<Vec<Target>>,
) {
    eprintln!("bench: warming up for {:?}", options.warmup);
    let plan = Plan {
        client,
        targets,
        duration: options.warmup,
        max_requests: options.max_requests,
    };
    let result = load::fixed_concurrency(&plan, options.concurrency.min(16)).await;
    let ids: Vec<Uuid> = result.accepted.iter().map(|(id, _)| *id).collect();
    let left = wait_for_deliveries(receiver, &ids, result.ended + options.drain_timeout).await;
    if left > 0 {
        eprintln!("bench: {left} warm-up deliveries never arrived; measuring anyway");
    }
    receiver.clear();
}

/// Waits until every id was answered 200 or the deadline passes; returns how many were not.
async fn wait_for_deliveries(receiver: &Receiver, ids: &[Uuid], deadline: Instant) -> usize {
    loop {
        let left = receiver.undelivered(ids);
        if left == 0 || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// Starts `perf record` on the api, the worker and the whole machine for `duration`.
fn start_profiles(
    directory: &std::path::Path,
    scenario: &str,
    services: &Services,
    duration: Duration,
) -> anyhow::Result<Vec<ChildProcess>> {
    std::fs::create_dir_all(directory)
        .with_context(|| format!("cannot create {}", directory.display()))?;
    // perf finds `sleep`, its timer, through PATH.
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned());
    let env = [("PATH".to_owned(), path)];
    let seconds = format!("{:.3}", duration.as_secs_f64());
    let api = services.api.pid.to_string();
    let worker = services.worker.pid.to_string();
    // cpu-clock works where hardware counters are not exposed (most VMs). The services get
    // DWARF call graphs, because the release build keeps no frame pointers; the whole
    // machine gets flat samples, to show where the CPU went between processes.
    let targets: [(&str, &[&str]); 3] = [
        ("api", &["--call-graph", "dwarf,16384", "-p", &api]),
        ("worker", &["--call-graph", "dwarf,16384", "-p", &worker]),
        ("system", &["-a"]),
    ];
    targets
        .into_iter()
        .map(|(name, target)| {
            let output: PathBuf = directory.join(format!("{scenario}-{name}.perf.data"));
            let output = output.display().to_string();
            let mut args = vec!["record", "-e", "cpu-clock", "-F", "499", "-o", &output];
            args.extend_from_slice(target);
            args.extend_from_slice(&["--", "sleep", &seconds]);
            let log = directory.join(format!("{scenario}-{name}.perf.log"));
            ChildProcess::spawn(&format!("perf-{name}"), "perf".as_ref(), &args, &env, log)
        })
        .collect()
}

/// Waits for the profilers to finish writing, stopping any that take far too long.
async fn finish_profiles(mut profiles: Vec<ChildProcess>) {
    if profiles.is_empty() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && profiles.iter_mut().any(|perf| perf.exited().is_none()) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for perf in &profiles {
        eprintln!("bench: profile log in {}", perf.log_path.display());
    }
    // Dropping stops any still running (SIGTERM makes perf write what it has).
    let _ = tokio::task::spawn_blocking(move || drop(profiles)).await;
}
