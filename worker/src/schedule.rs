//! When the next attempt happens.

use std::time::Duration;

use rand::Rng;

/// The longest a target's `Retry-After` may postpone an attempt.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// Decides what follows a failed attempt.
#[derive(Clone, Debug)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

impl RetrySchedule {
    pub fn new(delays: Vec<Duration>) -> Self {
        Self { delays }
    }

    /// The wait after failed attempt `attempt` (1-based), or `None` when it was the last.
    /// A target's `Retry-After` may lengthen the wait, never shorten it. A little jitter is
    /// added, so retries of deliveries that failed together do not arrive together.
    pub fn delay_after(&self, attempt: i32, retry_after: Option<Duration>) -> Option<Duration> {
        let index = usize::try_from(attempt).ok()?.checked_sub(1)?;
        let scheduled = *self.delays.get(index)?;
        let base = scheduled
            .max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER))
            .min(common::config::MAX_DURATION);
        Some(base + jitter(base))
    }
}

/// Up to 2% of the delay, at most 200 ms.
fn jitter(delay: Duration) -> Duration {
    let ceiling = (delay / 50).min(Duration::from_millis(200));
    if ceiling.is_zero() {
        return Duration::ZERO;
    }
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(200);
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> RetrySchedule {
        RetrySchedule::new(vec![Duration::from_secs(10), Duration::from_secs(30)])
    }

    #[test]
    fn delays_follow_the_schedule_and_are_never_early() {
        let schedule = schedule();
        for _ in 0..100 {
            let first = schedule.delay_after(1, None).unwrap();
            assert!(first >= Duration::from_secs(10) && first <= Duration::from_millis(10_200));
            let second = schedule.delay_after(2, None).unwrap();
            assert!(second >= Duration::from_secs(30) && second <= Duration::from_millis(30_200));
        }
        assert_eq!(schedule.delay_after(3, None), None);
        assert_eq!(schedule.delay_after(0, None), None);
    }

    #[test]
    fn retry_after_postpones_but_never_advances() {
        let schedule = schedule();
        let later = schedule
            .delay_after(1, Some(Duration::from_secs(120)))
            .unwrap();
        assert!(later >= Duration::from_secs(120));
        let sooner = schedule
            .delay_after(1, Some(Duration::from_secs(1)))
            .unwrap();
        assert!(sooner >= Duration::from_secs(10));
        let capped = schedule
            .delay_after(1, Some(Duration::from_secs(86_400)))
            .unwrap();
        assert!(capped <= MAX_RETRY_AFTER + Duration::from_millis(200));
    }
}
