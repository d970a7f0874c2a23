//! Reading configuration from environment variables.
//!
//! Every reader names the variable in its error, so a bad deployment stops at start with one
//! line that says what to fix.

use std::str::FromStr;
use std::time::Duration;

/// A configuration variable that is missing or cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is required but not set")]
    Missing { name: &'static str },
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Settings every binary reads.
#[derive(Clone)]
pub struct CommonConfig {
    /// PostgreSQL connection string (`DATABASE_URL`, required).
    pub database_url: String,
    /// NATS server (`NATS_URL`, default `nats://127.0.0.1:4222`).
    pub nats_url: String,
    /// Prefix of every stream, consumer and KV bucket name (`NATS_NAMESPACE`, default
    /// `webhooks`), so several deployments or test runs can share one server.
    pub nats_namespace: String,
    /// Allow targets on loopback, private, link-local and other non-public addresses
    /// (`ALLOW_PRIVATE_TARGETS`, default false). Turning it on lets anyone who can create a
    /// subscription make the service call into its own network.
    pub allow_private_targets: bool,
}

impl CommonConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let nats_namespace = string_or("NATS_NAMESPACE", "webhooks")?;
        validate_namespace(&nats_namespace)?;
        Ok(Self {
            database_url: required("DATABASE_URL")?,
            nats_url: string_or("NATS_URL", "nats://127.0.0.1:4222")?,
            nats_namespace,
            allow_private_targets: parse_or("ALLOW_PRIVATE_TARGETS", false, parse_bool)?,
        })
    }
}

impl std::fmt::Debug for CommonConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URLs may carry passwords, so they stay out of debug output and logs.
        f.debug_struct("CommonConfig")
            .field("nats_namespace", &self.nats_namespace)
            .field("allow_private_targets", &self.allow_private_targets)
            .finish_non_exhaustive()
    }
}

fn validate_namespace(namespace: &str) -> Result<(), ConfigError> {
    // The namespace becomes part of stream names and subjects, which allow only these.
    let valid = !namespace.is_empty()
        && namespace.len() <= 64
        && namespace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            name: "NATS_NAMESPACE",
            reason: "use 1 to 64 letters, digits, '-' or '_'".to_owned(),
        })
    }
}

/// The value of a variable that must be set and non-empty.
pub fn required(name: &'static str) -> Result<String, ConfigError> {
    match read(name)? {
        Some(value) => Ok(value),
        None => Err(ConfigError::Missing { name }),
    }
}

/// The value of a variable, or `default` when it is unset or empty.
pub fn string_or(name: &'static str, default: &str) -> Result<String, ConfigError> {
    Ok(read(name)?.unwrap_or_else(|| default.to_owned()))
}

/// The value of a variable that may be absent.
pub fn optional(name: &'static str) -> Result<Option<String>, ConfigError> {
    read(name)
}

/// Parses a variable with `parse`, or returns `default` when it is unset or empty.
pub fn parse_or<T>(
    name: &'static str,
    default: T,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    match read(name)? {
        Some(value) => parse(&value).map_err(|reason| ConfigError::Invalid { name, reason }),
        None => Ok(default),
    }
}

fn read(name: &'static str) -> Result<Option<String>, ConfigError> {
    match std::env::var(name) {
        Ok(value) if value.trim().is_empty() => Ok(None),
        Ok(value) => Ok(Some(value.trim().to_owned())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::Invalid {
            name,
            reason: "not valid UTF-8".to_owned(),
        }),
    }
}

/// `true`/`false`, also accepting `1`/`0`, `yes`/`no` and `on`/`off`.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("expected true or false, got {value:?}")),
    }
}

/// Longest duration accepted anywhere: far beyond any sensible setting, and well inside
/// what timestamps can represent when added to now.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// A humantime duration such as `10s`, `1m30s` or `72h`. Zero is refused: every duration
/// the service reads is a period or a limit for which zero makes no sense.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(value)
        .map_err(|err| format!("expected a duration such as 10s, 1m30s or 72h: {err}"))?;
    if duration.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    if duration > MAX_DURATION {
        return Err("must be at most 100 years".to_owned());
    }
    Ok(duration)
}

/// A comma-separated list of durations, such as `10s,30s,1m`. An empty list is allowed
/// only as the literal `none`, which means a single attempt with no retries.
pub fn parse_schedule(value: &str) -> Result<Vec<Duration>, String> {
    if value.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let schedule = value
        .split(',')
        .map(|part| parse_duration(part.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    if schedule.len() > 50 {
        return Err("at most 50 retries".to_owned());
    }
    Ok(schedule)
}

/// A number in `min..=max`.
pub fn parse_in_range<T>(value: &str, min: T, max: T) -> Result<T, String>
where
    T: FromStr + PartialOrd + std::fmt::Display,
{
    let number: T = value
        .parse()
        .map_err(|_| format!("expected a number, got {value:?}"))?;
    if number < min || number > max {
        return Err(format!("must be between {min} and {max}"));
    }
    Ok(number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn schedules_parse_in_order() {
        let schedule = parse_schedule("10s, 30s,1m,5m,15m").unwrap();
        let seconds: Vec<u64> = schedule.iter().map(Duration::as_secs).collect();
        assert_eq!(seconds, [10, 30, 60, 300, 900]);
        assert_eq!(parse_schedule("none").unwrap(), Vec::<Duration>::new());
    }

    #[test]
    fn bad_durations_are_refused() {
        for bad in [
            "",
            "0s",
            "ten seconds",
            "10",
            "-5s",
            "1s,,2s",
            "100000000years",
        ] {
            assert!(parse_schedule(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn namespaces_are_limited_to_subject_safe_characters() {
        assert!(validate_namespace("webhooks-test_1").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>"] {
            assert!(
                validate_namespace(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    proptest! {
        #[test]
        fn duration_parsing_never_panics(input in ".{0,40}") {
            let _ = parse_duration(&input);
            let _ = parse_schedule(&input);
        }

        #[test]
        fn whole_seconds_round_trip(seconds in 1u64..1_000_000) {
            prop_assert_eq!(parse_duration(&format!("{seconds}s")).unwrap().as_secs(), seconds);
        }
    }
}
