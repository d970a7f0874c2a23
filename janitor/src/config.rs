//! The janitor's configuration, read once at start.

use std::time::Duration;

use common::config::{self, CommonConfig, ConfigError};

#[derive(Clone, Debug)]
pub struct JanitorConfig {
    pub common: CommonConfig,
    /// Time from the start of one pass to the start of the next (`JANITOR_INTERVAL`, default
    /// 5m). The first pass runs at start.
    pub interval: Duration,
    /// Age at which attempt log rows are deleted, by `attempted_at` (`LOG_RETENTION`,
    /// default 72h).
    pub log_retention: Duration,
    /// Age at which finished deliveries (delivered, failed, skipped) are deleted with their
    /// payloads, by `updated_at` (`PAYLOAD_RETENTION`, default: `LOG_RETENTION`). Their
    /// attempts and idempotency keys go with them, so a value shorter than `LOG_RETENTION`
    /// also shortens the attempt log of finished deliveries. Unfinished deliveries are kept
    /// whatever their age.
    pub payload_retention: Duration,
    /// How long an unfinished delivery must have been untouched before the recovery sweep
    /// looks for its job (`RECOVERY_GRACE`, default 1m). It keeps the sweep out of the
    /// API's window between committing a delivery and publishing its job; should the two
    /// meet anyway, both publish the same message id and JetStream keeps one job. Longer
    /// values only delay recovery.
    pub recovery_grace: Duration,
    /// Rows deleted per statement (`JANITOR_BATCH_SIZE`, default 5000, 1 to 100000). Each
    /// batch is its own short transaction: larger batches clear a backlog in fewer
    /// statements but hold their row locks longer.
    pub batch_size: u32,
    /// Most unfinished deliveries the recovery sweep checks per pass (10000; not read from
    /// the environment). Each check is one JetStream request. A sweep that reaches the limit
    /// resumes after the last delivery it checked on the next pass.
    pub recovery_limit: u32,
}

impl JanitorConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let log_retention = duration_or("LOG_RETENTION", Duration::from_secs(72 * 60 * 60))?;
        Ok(Self {
            common: CommonConfig::from_env()?,
            interval: duration_or("JANITOR_INTERVAL", Duration::from_secs(5 * 60))?,
            log_retention,
            payload_retention: duration_or("PAYLOAD_RETENTION", log_retention)?,
            recovery_grace: duration_or("RECOVERY_GRACE", Duration::from_secs(60))?,
            batch_size: config::parse_or("JANITOR_BATCH_SIZE", 5000, |value| {
                config::parse_in_range(value, 1, 100_000)
            })?,
            recovery_limit: 10_000,
        })
    }
}

fn duration_or(name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    // Bounded to 100 years, which keeps every cutoff and timer clear of overflow.
    config::parse_or(name, default, config::parse_duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_humantime_and_bounded() {
        assert_eq!(
            config::parse_duration("72h"),
            Ok(Duration::from_secs(259_200))
        );
        assert_eq!(config::parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        for bad in ["0s", "72", "soon", "200years"] {
            assert!(
                config::parse_duration(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }
}
