//! The worker's configuration, read once at start.

use std::time::Duration;

use common::config::{self, CommonConfig, ConfigError};

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub common: CommonConfig,
    /// Deliveries in flight at once in this process (`DELIVERY_CONCURRENCY`, default 256).
    pub concurrency: usize,
    /// Deliveries in flight at once to one subscription (`SUBSCRIPTION_CONCURRENCY`,
    /// default a quarter of `DELIVERY_CONCURRENCY`, at least 1). Jobs beyond it wait a
    /// second and come back, so a slow target keeps at most this share of the slots.
    pub subscription_concurrency: usize,
    /// Limit on one attempt, from connecting to reading the response
    /// (`DELIVERY_TIMEOUT`, default 10s).
    pub timeout: Duration,
    /// Delay before each retry (`RETRY_SCHEDULE`, default `10s,30s,1m,5m,15m`); a delivery
    /// gets one attempt plus one per entry.
    pub retry_schedule: Vec<Duration>,
    /// How long JetStream waits for word from a worker before handing its job to another
    /// (`JOB_ACK_WAIT`, default 30s). Workers report progress while they work, so this
    /// only bounds how soon the jobs of a crashed worker are picked up again.
    pub ack_wait: Duration,
    /// How long shutdown waits for attempts in flight (`SHUTDOWN_GRACE`, default 15s).
    /// Jobs still running then are redelivered by JetStream.
    pub shutdown_grace: Duration,
    /// Connections in the PostgreSQL pool (`DATABASE_MAX_CONNECTIONS`, default 20).
    pub database_max_connections: u32,
}

impl WorkerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let default_schedule = [10, 30, 60, 300, 900].map(Duration::from_secs).to_vec();
        // Most of an attempt's time is waiting on the target and the database, so a worker
        // on two cores keeps up with ingest at full load only with a few hundred in flight.
        let concurrency = config::parse_or("DELIVERY_CONCURRENCY", 256, |value| {
            config::parse_in_range(value, 1, 10_000)
        })?;
        Ok(Self {
            common: CommonConfig::from_env()?,
            concurrency,
            subscription_concurrency: config::parse_or(
                "SUBSCRIPTION_CONCURRENCY",
                (concurrency / 4).max(1),
                |value| config::parse_in_range(value, 1, concurrency),
            )?,
            timeout: config::parse_or(
                "DELIVERY_TIMEOUT",
                Duration::from_secs(10),
                config::parse_duration,
            )?,
            retry_schedule: config::parse_or(
                "RETRY_SCHEDULE",
                default_schedule,
                config::parse_schedule,
            )?,
            ack_wait: config::parse_or(
                "JOB_ACK_WAIT",
                Duration::from_secs(30),
                config::parse_duration,
            )?,
            shutdown_grace: config::parse_or(
                "SHUTDOWN_GRACE",
                Duration::from_secs(15),
                config::parse_duration,
            )?,
            database_max_connections: config::parse_or("DATABASE_MAX_CONNECTIONS", 20, |value| {
                config::parse_in_range(value, 1, 1000)
            })?,
        })
    }
}
