//! Turning raw timings into figures: latency percentiles, delivery completeness, and how
//! late each retry came.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use uuid::Uuid;

use crate::receiver::Arrival;

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn from_micros(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        let at = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
        Some(Self {
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            p99_9_ms: at(0.999),
            max_ms: histogram.max() as f64 / 1000.0,
        })
    }
}

/// A histogram of microseconds: up to ten minutes with three significant digits; longer
/// values saturate.
pub fn micros_histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy the crate's rules (low >= 1, high >= 2 * low,
    // precision <= 5), so construction cannot fail.
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds"))
}

/// What reached the receiver, for the deliveries one load run had accepted.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeliveryStats {
    /// Accepted deliveries answered 200 at least once.
    pub delivered: u64,
    /// First successful arrivals while the load ran, per second of load.
    pub per_second_during_load: f64,
    /// All deliveries over the time from the start of the load to the last arrival.
    pub per_second_overall: f64,
    /// From the `202` reaching the client to the first successful arrival.
    pub latency: Option<Latency>,
    /// Deliveries that reached the receiver before their `202` reached the client; their
    /// latency counts as zero.
    pub arrived_before_accepted: u64,
    /// From the end of the load to the last first-successful arrival.
    pub drain_seconds: f64,
    /// Accepted but never answered 200 within the drain timeout. Must be zero.
    pub not_delivered: u64,
    /// Answered 200 more than once. At-least-once delivery allows it, but it should be rare.
    pub delivered_twice: u64,
    /// Every request the receiver got for these deliveries, failed attempts included.
    pub attempts: u64,
    /// Deliveries with more attempts than the receiver's failures call for.
    pub extra_attempts: u64,
}

pub fn delivery_stats(
    accepted: &[(Uuid, Instant)],
    arrivals: &HashMap<Uuid, Vec<Arrival>>,
    load: (Instant, Instant),
    expected_attempts: usize,
) -> DeliveryStats {
    let (load_start, load_end) = load;
    let mut latency = micros_histogram();
    let mut stats = DeliveryStats::default();
    let mut last_arrival = load_start;
    let mut during_load = 0u64;

    for (id, accepted_at) in accepted {
        let attempts = arrivals.get(id).map(Vec::as_slice).unwrap_or_default();
        stats.attempts += attempts.len() as u64;
        if attempts.len() > expected_attempts {
            stats.extra_attempts += 1;
        }
        let successes = attempts
            .iter()
            .filter(|arrival| arrival.succeeded())
            .count();
        if successes > 1 {
            stats.delivered_twice += 1;
        }
        let Some(first) = attempts.iter().find(|arrival| arrival.succeeded()) else {
            stats.not_delivered += 1;
            continue;
        };
        stats.delivered += 1;
        last_arrival = last_arrival.max(first.at);
        if first.at <= load_end {
            during_load += 1;
        }
        if first.at < *accepted_at {
            stats.arrived_before_accepted += 1;
        }
        let micros = first.at.saturating_duration_since(*accepted_at).as_micros();
        latency.saturating_record(u64::try_from(micros).unwrap_or(u64::MAX).max(1));
    }

    let load_seconds = (load_end - load_start).as_secs_f64();
    if load_seconds > 0.0 {
        stats.per_second_during_load = during_load as f64 / load_seconds;
    }
    let overall = (last_arrival - load_start).as_secs_f64();
    if overall > 0.0 {
        stats.per_second_overall = stats.delivered as f64 / overall;
    }
    stats.drain_seconds = last_arrival
        .saturating_duration_since(load_end)
        .as_secs_f64();
    stats.latency = Latency::from_micros(&latency);
    stats
}

/// How late the `retry`-th retry came, over all deliveries.
#[derive(Clone, Debug, Serialize)]
pub struct RetryLateness {
    /// 1 for the first retry (the second attempt).
    pub retry: usize,
    pub scheduled_ms: f64,
    /// The most jitter the worker adds on purpose: 2% of the delay, at most 200 ms.
    pub jitter_allowance_ms: f64,
    pub count: u64,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Retries that came before their scheduled delay had passed. Must be zero.
    pub early: u64,
}

/// Lateness of each retry: the gap between an attempt's arrival and the one before, minus
/// the delay the schedule sets for it. The gap also holds the failed attempt's answer, its
/// recording and the re-fetch, which is what the figure is for.
pub fn retry_lateness(
    accepted: &[(Uuid, Instant)],
    arrivals: &HashMap<Uuid, Vec<Arrival>>,
    schedule: &[Duration],
) -> Vec<RetryLateness> {
    let mut by_retry: Vec<Vec<i64>> = vec![Vec::new(); schedule.len()];
    for (id, _) in accepted {
        let Some(attempts) = arrivals.get(id) else {
            continue;
        };
        for (retry, pair) in attempts.windows(2).enumerate() {
            let Some(scheduled) = schedule.get(retry) else {
                break;
            };
            let gap = i64::try_from((pair[1].at - pair[0].at).as_micros()).unwrap_or(i64::MAX);
            let scheduled = i64::try_from(scheduled.as_micros()).unwrap_or(i64::MAX);
            by_retry[retry].push(gap - scheduled);
        }
    }

    by_retry
        .into_iter()
        .zip(schedule)
        .enumerate()
        .filter(|(_, (lateness, _))| !lateness.is_empty())
        .map(|(index, (mut lateness, scheduled))| {
            lateness.sort_unstable();
            let at = |quantile: f64| {
                let rank = (quantile * lateness.len() as f64).ceil() as usize;
                lateness[rank.clamp(1, lateness.len()) - 1] as f64 / 1000.0
            };
            let jitter = (*scheduled / 50).min(Duration::from_millis(200));
            RetryLateness {
                retry: index + 1,
                scheduled_ms: scheduled.as_secs_f64() * 1000.0,
                jitter_allowance_ms: jitter.as_secs_f64() * 1000.0,
                count: lateness.len() as u64,
                min_ms: at(0.0),
                p50_ms: at(0.5),
                p99_ms: at(0.99),
                max_ms: at(1.0),
                early: lateness.iter().filter(|micros| **micros < 0).count() as u64,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(at: Instant, status: u16) -> Arrival {
        Arrival { at, status }
    }

    #[test]
    fn lateness_is_the_gap_minus_the_scheduled_delay() {
        let start = Instant::now();
        let id = Uuid::new_v4();
        let ms = Duration::from_millis;
        let attempts = vec![
            arrival(start, 500),
            arrival(start + ms(1_030), 500),
            arrival(start + ms(1_030 + 1_990), 200),
        ];
        let arrivals = HashMap::from([(id, attempts)]);
        let schedule = [ms(1_000), ms(2_000)];

        let lateness = retry_lateness(&[(id, start)], &arrivals, &schedule);

        assert_eq!(lateness.len(), 2);
        assert_eq!(lateness[0].p50_ms, 30.0);
        assert_eq!(lateness[0].early, 0);
        assert_eq!(lateness[1].min_ms, -10.0);
        assert_eq!(lateness[1].early, 1);
    }

    #[test]
    fn deliveries_are_counted_once_and_duplicates_apart() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let (once, twice, never) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let arrivals = HashMap::from([
            (once, vec![arrival(start + ms(5), 200)]),
            (
                twice,
                vec![arrival(start + ms(6), 200), arrival(start + ms(40), 200)],
            ),
        ]);
        let accepted = [(once, start), (twice, start), (never, start)];

        let stats = delivery_stats(&accepted, &arrivals, (start, start + ms(10)), 1);

        assert_eq!(stats.delivered, 2);
        assert_eq!(stats.not_delivered, 1);
        assert_eq!(stats.delivered_twice, 1);
        assert_eq!(stats.extra_attempts, 1);
        assert_eq!(stats.attempts, 3);
    }
}
