//! Command-line options, parsed and checked once at start.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Serialize;

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The fixed-concurrency scenario, then the fixed-rate one, each on fresh services.
    Load,
    /// A fixed number of requests in flight (closed loop).
    Concurrency,
    /// A fixed offered rate, whatever the latency (open loop).
    Rate,
    /// A receiver that fails the first attempts: how punctual the retries are.
    RetryTiming,
}

/// Benchmarks hookline on 127.0.0.1: ingestion throughput and latency, delivery latency
/// and completeness, retry punctuality, and the services' CPU and memory.
///
/// By default it starts the api and worker binaries itself, each run on a database and a
/// NATS namespace of its own that are removed at the end.
#[derive(Debug, Parser, Serialize)]
#[command(version)]
pub struct Options {
    /// What to measure.
    #[arg(long, value_enum, default_value = "load")]
    pub mode: Mode,

    /// Subscriptions to spread the load over; every second one has a secret, so half the
    /// requests go through signature checking.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub subscriptions: u32,

    /// Requests in flight at once in the fixed-concurrency scenario.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,

    /// Offered requests per second in the fixed-rate scenario [default: 1000, or 50 in
    /// retry-timing mode].
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// How long each scenario sends requests.
    #[arg(long, default_value = "20s", value_parser = parse_positive_duration)]
    #[serde(with = "humantime_serde")]
    pub duration: Duration,

    /// Size of every webhook body in bytes (a JSON object padded to exactly this size).
    #[arg(long, default_value_t = 1024, value_parser = parse_body_size)]
    pub body_size: usize,

    /// Load sent before measuring, to open connections and fill caches; not counted.
    /// `0s` turns it off.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub warmup: Duration,

    /// Longest wait, after the load stops, for every accepted webhook to reach the receiver.
    #[arg(long, default_value = "120s", value_parser = parse_positive_duration)]
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,

    /// Extra wait after the drain, so that late duplicate deliveries are counted too.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    #[serde(with = "humantime_serde")]
    pub settle: Duration,

    /// Most requests one scenario sends, whatever the duration.
    #[arg(long, default_value_t = 2_000_000)]
    pub max_requests: u64,

    /// Limit on one ingest request; a request that takes longer counts as a timeout.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,

    /// Most requests in flight in the fixed-rate scenario. When reached, sending waits, and
    /// the wait shows up in the latencies (they are measured from the planned send time).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,

    /// In retry-timing mode, attempts per delivery the receiver answers with 500.
    #[arg(long, default_value_t = 2)]
    pub fail_first: u32,

    /// In retry-timing mode, the worker's `RETRY_SCHEDULE`.
    #[arg(long, default_value = "1s,2s", value_parser = parse_schedule)]
    pub retry_schedule: RetrySchedule,

    /// PostgreSQL server, used only to create and drop each run's own database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    #[serde(skip)]
    pub database_url: String,

    /// NATS server with JetStream (2.10 or newer).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,

    /// The api binary to start.
    #[arg(long, default_value = "target/release/api")]
    pub api_bin: PathBuf,

    /// The worker binary to start.
    #[arg(long, default_value = "target/release/worker")]
    pub worker_bin: PathBuf,

    /// Use an api that is already running (it must allow private targets) instead of
    /// starting one; no worker, database or namespace is started, and no CPU or memory
    /// figures are taken.
    #[arg(long)]
    #[serde(serialize_with = "serialize_url")]
    pub external_url: Option<url::Url>,

    /// Bearer token for the management endpoints of an external api.
    #[arg(long, env = "BENCH_API_KEY", hide_env_values = true)]
    #[serde(skip)]
    pub api_key: Option<String>,

    /// Extra `NAME=VALUE` variables for the started api and worker, such as
    /// `DATABASE_MAX_CONNECTIONS=40`. Repeatable.
    #[arg(long = "service-env", value_parser = parse_env_pair)]
    pub service_env: Vec<(String, String)>,

    /// Where to write the figures as JSON.
    #[arg(long, default_value = "target/bench/latest.json")]
    pub json_out: PathBuf,

    /// Where the started services write their logs.
    #[arg(long, default_value = "target/bench/logs")]
    pub log_dir: PathBuf,

    /// Record CPU profiles of the api and worker with `perf record` into this directory
    /// while the load runs.
    #[arg(long)]
    pub perf_dir: Option<PathBuf>,

    /// How long the profiles cover, from the start of the load [default: the duration].
    #[arg(long, value_parser = parse_positive_duration)]
    #[serde(with = "humantime_serde::option")]
    pub perf_duration: Option<Duration>,
}

impl Options {
    /// The offered rate, with the default that suits the mode.
    pub fn rate(&self) -> f64 {
        match (self.rate, self.mode) {
            (Some(rate), _) => rate,
            (None, Mode::RetryTiming) => 50.0,
            (None, _) => 1000.0,
        }
    }

    /// Checks what one option alone cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.mode == Mode::RetryTiming {
            if self.fail_first == 0 {
                anyhow::bail!("--fail-first must be at least 1 in retry-timing mode");
            }
            if self.retry_schedule.0.is_empty() {
                anyhow::bail!("--retry-schedule needs at least one delay in retry-timing mode");
            }
            if self.external_url.is_some() {
                // The schedule is a worker setting; an external deployment has its own.
                anyhow::bail!("retry-timing mode starts its own worker; drop --external-url");
            }
        }
        Ok(())
    }
}

fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value)
        .map_err(|err| format!("expected a duration such as 20s: {err}"))
}

fn parse_positive_duration(value: &str) -> Result<Duration, String> {
    let duration = parse_duration(value)?;
    if duration.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(duration)
}

/// The worker's retry delays, as `RETRY_SCHEDULE` takes them.
#[derive(Clone, Debug)]
pub struct RetrySchedule(pub Vec<Duration>);

impl std::fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let delays: Vec<String> = self
            .0
            .iter()
            .map(|delay| humantime::format_duration(*delay).to_string())
            .collect();
        f.write_str(&delays.join(","))
    }
}

impl Serialize for RetrySchedule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

fn parse_schedule(value: &str) -> Result<RetrySchedule, String> {
    common::config::parse_schedule(value).map(RetrySchedule)
}

fn parse_rate(value: &str) -> Result<f64, String> {
    let rate: f64 = value
        .parse()
        .map_err(|_| format!("expected requests per second, got {value:?}"))?;
    if !(rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0) {
        return Err("must be above 0 and at most 1000000".to_owned());
    }
    Ok(rate)
}

/// The smallest body that still holds the JSON frame the padding goes into.
pub const MIN_BODY_SIZE: usize = 64;

fn parse_body_size(value: &str) -> Result<usize, String> {
    common::config::parse_in_range(value, MIN_BODY_SIZE, 1024 * 1024)
}

fn parse_env_pair(value: &str) -> Result<(String, String), String> {
    let (name, value) = value
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {value:?}"))?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("{name:?} is not a variable name"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

fn serialize_url<S: serde::Serializer>(
    url: &Option<url::Url>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => serializer.serialize_str(url.as_str()),
        None => serializer.serialize_none(),
    }
}

/// Durations written as humantime text (`20s`), so the JSON reads like the command line.
mod humantime_serde {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*duration))
    }

    pub mod option {
        use std::time::Duration;

        use serde::Serializer;

        pub fn serialize<S: Serializer>(
            duration: &Option<Duration>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match duration {
                Some(duration) => super::serialize(duration, serializer),
                None => serializer.serialize_none(),
            }
        }
    }
}
