//! What a fault run did, and whether it kept the promises: the faults with their recovery
//! times, the final state of PostgreSQL and what the target saw, printed as figures and
//! checked against the invariants.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use entity::delivery::{self, DeliveryStatus};
use entity::delivery_attempt::{self, AttemptOutcome};
use sea_orm::{DatabaseConnection, EntityTrait, QuerySelect};
use uuid::Uuid;

use super::FlakyTarget;
use super::load::{self, Answer, Try};

/// `println!` into a string.
macro_rules! say {
    ($out:expr) => {
        $out.push('\n')
    };
    ($out:expr, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

/// A webhook sent once a fault was over, and how long it took to get through.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    pub delivery_id: Uuid,
    /// From the end of the fault to the probe's `202`.
    pub accepted_after: Duration,
    /// From the end of the fault to the probe's arrival at the target.
    pub delivered_after: Duration,
}

/// One fault as it happened.
pub struct Fault {
    pub name: &'static str,
    pub began: Instant,
    /// When the broken piece was running normally again.
    pub back: Instant,
    /// A stretch during which the broken piece was certainly down.
    pub down: Option<(Instant, Instant)>,
    /// Whether the piece is a dependency of ingest, so that every ingest request sent and
    /// answered while it was down must be refused with `503`.
    pub ingest_refuses: bool,
    /// Requests in flight at the target when the fault began.
    pub in_flight: Option<usize>,
    /// Whether the fault can make the target see a webhook twice: an attempt that reached
    /// the target but could not be recorded is made again.
    pub may_repeat_attempts: bool,
    pub probe: Probe,
    /// Anything else worth printing about it.
    pub detail: Option<String>,
}

/// Waits until every delivery (of `only`, when given) is in a final state; returns the ones
/// still unfinished when `within` runs out.
pub async fn wait_until_final(
    database: &DatabaseConnection,
    only: Option<&HashSet<Uuid>>,
    within: Duration,
) -> Vec<(Uuid, DeliveryStatus)> {
    let deadline = Instant::now() + within;
    loop {
        let rows: Vec<(Uuid, DeliveryStatus)> = delivery::Entity::find()
            .select_only()
            .columns([delivery::Column::Id, delivery::Column::Status])
            .into_tuple()
            .all(database)
            .await
            .expect("read delivery states");
        let present: HashSet<Uuid> = rows.iter().map(|(id, _)| *id).collect();
        let mut unfinished: Vec<(Uuid, DeliveryStatus)> = rows
            .into_iter()
            .filter(|(id, status)| !status.is_final() && only.is_none_or(|only| only.contains(id)))
            .collect();
        // An accepted webhook missing from the table is as unfinished as it gets.
        if let Some(only) = only {
            unfinished.extend(
                only.iter()
                    .filter(|id| !present.contains(id))
                    .map(|id| (*id, DeliveryStatus::Queued)),
            );
        }
        if unfinished.is_empty() || Instant::now() >= deadline {
            return unfinished;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the janitor's recovery sweep did.
pub struct Sweep {
    pub requeued: u64,
    pub deferred: u64,
}

/// What the database and the target say after the run.
pub struct Report {
    accepted: usize,
    delivered: usize,
    failed: usize,
    /// Accepted webhooks missing from PostgreSQL or not final.
    lost: Vec<Uuid>,
    /// Deliveries whose attempt log does not match their state.
    inconsistent: Vec<String>,
    /// Delivered webhooks the target never answered with 2xx, or not with the stored bytes.
    undelivered: Vec<Uuid>,
    /// Webhook ids the target answered with 2xx more than once, with the first such answer.
    repeated: Vec<(String, Instant)>,
    /// Stored deliveries the sender never got a `202` for, by final status.
    unacknowledged: HashMap<&'static str, usize>,
    /// Webhook numbers stored more than once (a sender retried without an idempotency key
    /// after a lost answer).
    stored_twice: usize,
}

impl Report {
    /// Reads every delivery and attempt, and compares them with the webhooks `accepted`
    /// (answered `202`) and with what the target answered. A delivery that failed must have
    /// made `max_attempts` attempts.
    pub async fn gather(
        database: &DatabaseConnection,
        accepted: &HashSet<Uuid>,
        target: &FlakyTarget,
        max_attempts: i32,
    ) -> Self {
        let deliveries = delivery::Entity::find()
            .all(database)
            .await
            .expect("read deliveries");
        let attempts = delivery_attempt::Entity::find()
            .all(database)
            .await
            .expect("read attempts");
        let mut attempts_of: HashMap<Uuid, Vec<delivery_attempt::Model>> = HashMap::new();
        for attempt in attempts {
            attempts_of
                .entry(attempt.delivery_id)
                .or_default()
                .push(attempt);
        }
        let successes = target.successes();
        let stored: HashMap<Uuid, &delivery::Model> =
            deliveries.iter().map(|row| (row.id, row)).collect();

        let lost = accepted
            .iter()
            .filter(|id| stored.get(id).is_none_or(|row| !row.status.is_final()))
            .copied()
            .collect();
        let inconsistent = deliveries
            .iter()
            .filter_map(|row| {
                let attempts = attempts_of.remove(&row.id).unwrap_or_default();
                attempt_log_problem(row, attempts, max_attempts)
                    .map(|problem| format!("{}: {problem}", row.id))
            })
            .collect();
        let undelivered = deliveries
            .iter()
            .filter(|row| row.status == DeliveryStatus::Delivered)
            .filter(|row| {
                successes
                    .get(&row.id.to_string())
                    .is_none_or(|hits| !hits.iter().any(|hit| hit.body == row.payload))
            })
            .map(|row| row.id)
            .collect();
        let mut repeated: Vec<(String, Instant)> = successes
            .iter()
            .filter(|(_, hits)| hits.len() > 1)
            .filter_map(|(id, hits)| Some((id.clone(), hits.iter().map(|hit| hit.at).min()?)))
            .collect();
        repeated.sort_by_key(|(_, at)| *at);

        let mut unacknowledged: HashMap<&'static str, usize> = HashMap::new();
        for row in deliveries.iter().filter(|row| !accepted.contains(&row.id)) {
            *unacknowledged.entry(row.status.as_str()).or_default() += 1;
        }
        let mut per_number: HashMap<usize, usize> = HashMap::new();
        for number in deliveries
            .iter()
            .filter_map(|row| load::number_of(&row.payload))
        {
            *per_number.entry(number).or_default() += 1;
        }

        Self {
            accepted: accepted.len(),
            delivered: count(&deliveries, accepted, DeliveryStatus::Delivered),
            failed: count(&deliveries, accepted, DeliveryStatus::Failed),
            lost,
            inconsistent,
            undelivered,
            repeated,
            unacknowledged,
            stored_twice: per_number.values().filter(|&&copies| copies > 1).count(),
        }
    }

    /// The figures for a person: counts, duplicates, ingest answers, and each fault's
    /// recovery.
    pub fn figures(
        &self,
        faults: &[Fault],
        tries: &[Try],
        sweep: Option<&Sweep>,
        drained: Duration,
    ) -> String {
        let mut out = String::new();
        let webhooks: HashSet<usize> = tries.iter().map(|attempt| attempt.number).collect();
        say!(out);
        say!(out, "=== faults: figures ===");
        say!(
            out,
            "webhooks sent {} in {} requests; accepted (202) {} incl. probes",
            webhooks.len(),
            tries.len(),
            self.accepted
        );
        say!(
            out,
            "  delivered {}, failed {}, lost {} (must be 0)",
            self.delivered,
            self.failed,
            self.lost.len()
        );
        say!(
            out,
            "  duplicate deliveries at the target (same webhook-id answered 2xx twice): {}",
            self.repeated.len()
        );
        let mut around: Vec<(&str, usize)> = Vec::new();
        for (_, at) in &self.repeated {
            let name = crash_around(*at, faults).map_or("away from any crash", |fault| fault.name);
            match around.iter_mut().find(|(seen, _)| *seen == name) {
                Some((_, count)) => *count += 1,
                None => around.push((name, 1)),
            }
        }
        for (name, count) in around {
            say!(out, "    {count} around \"{name}\"");
        }
        say!(
            out,
            "  stored without a 202 (503 after commit, or answer lost): {:?}",
            self.unacknowledged
        );
        say!(
            out,
            "  webhooks stored twice (a sender retried without an idempotency key): {}",
            self.stored_twice
        );
        say!(
            out,
            "  drained (all accepted final) {drained:.1?} after the load stopped"
        );
        match sweep {
            Some(sweep) => say!(
                out,
                "  janitor sweep: re-queued {}, deferred {}",
                sweep.requeued,
                sweep.deferred
            ),
            None => say!(out, "  janitor sweep: not run"),
        }

        say!(
            out,
            "ingest answers: {}",
            histogram(tries.iter().map(|attempt| &attempt.answer))
        );

        say!(
            out,
            "{:<48} {:>7} {:>9} {:>12} {:>10} {:>16}",
            "fault",
            "lasted",
            "in flight",
            "ingest back",
            "probe 202",
            "probe delivered"
        );
        for fault in faults {
            let first_accepted = tries
                .iter()
                .filter(|attempt| attempt.started >= fault.back)
                .filter(|attempt| matches!(attempt.answer, Answer::Accepted(_)))
                .map(|attempt| attempt.finished)
                .min()
                .map(|at| format!("{:.2?}", at.saturating_duration_since(fault.back)));
            say!(
                out,
                "{:<48} {:>7} {:>9} {:>12} {:>10} {:>16}",
                fault.name,
                format!("{:.1?}", fault.back - fault.began),
                fault.in_flight.map_or("-".to_owned(), |n| n.to_string()),
                first_accepted.unwrap_or_else(|| "-".to_owned()),
                format!("{:.2?}", fault.probe.accepted_after),
                format!("{:.2?}", fault.probe.delivered_after),
            );
            if let Some(detail) = &fault.detail {
                say!(out, "    {detail}");
            }
            if let Some((from, to)) = fault.down {
                let started: Vec<&Try> = tries
                    .iter()
                    .filter(|t| t.started >= from && t.started <= to)
                    .collect();
                let inside = started.iter().filter(|t| t.finished <= to).count();
                let slowest = started.iter().map(|t| t.finished - t.started).max();
                say!(
                    out,
                    "    while down {:.1?}: {} requests sent, {inside} answered before it \
                     ended, slowest {:.2?}; {}",
                    to - from,
                    started.len(),
                    slowest.unwrap_or_default(),
                    histogram(started.iter().map(|t| &t.answer))
                );
            }
        }
        out
    }

    /// Panics with the evidence unless: nothing accepted was lost, every attempt log
    /// matches its delivery, the target got every delivered webhook, duplicates happened
    /// only around crashes and outages, and ingest answered only `202` or `503` (and `503`
    /// to everything sent and answered while a dependency was down).
    pub fn assert_invariants(&self, faults: &[Fault], tries: &[Try]) {
        let violations = self.violations(faults, tries);
        assert!(
            violations.is_empty(),
            "broken invariants ({}):\n- {}",
            violations.len(),
            violations.join("\n- ")
        );
    }

    /// Every broken invariant, described with examples.
    fn violations(&self, faults: &[Fault], tries: &[Try]) -> Vec<String> {
        let mut violations = Vec::new();
        let some = |count: usize| count.min(5);
        if !self.lost.is_empty() {
            violations.push(format!(
                "{} accepted webhooks lost, such as {:?}",
                self.lost.len(),
                &self.lost[..some(self.lost.len())]
            ));
        }
        if !self.inconsistent.is_empty() {
            violations.push(format!(
                "{} attempt logs do not match their delivery: {:?}",
                self.inconsistent.len(),
                &self.inconsistent[..some(self.inconsistent.len())]
            ));
        }
        if !self.undelivered.is_empty() {
            violations.push(format!(
                "{} deliveries are recorded as delivered but the target never answered their \
                 exact bytes with 2xx, such as {:?}",
                self.undelivered.len(),
                &self.undelivered[..some(self.undelivered.len())]
            ));
        }

        let unexplained: Vec<String> = self
            .repeated
            .iter()
            .filter(|(_, at)| crash_around(*at, faults).is_none())
            .map(|(id, at)| format!("{id} first answered {}", describe_time(*at, faults)))
            .collect();
        if !unexplained.is_empty() {
            violations.push(format!(
                "webhooks delivered twice away from any crash or outage: {unexplained:?}"
            ));
        }

        let unexpected: Vec<String> = tries
            .iter()
            .filter(|attempt| {
                matches!(&attempt.answer, Answer::Refused { status, .. } if *status != 503)
            })
            .map(|attempt| {
                format!(
                    "{:?} {}",
                    attempt.answer,
                    describe_time(attempt.finished, faults)
                )
            })
            .collect();
        if !unexpected.is_empty() {
            violations.push(format!(
                "ingest answered other than 202 or 503 {} times, such as {:?}",
                unexpected.len(),
                &unexpected[..some(unexpected.len())]
            ));
        }

        for fault in faults.iter().filter(|fault| fault.ingest_refuses) {
            let Some((from, to)) = fault.down else {
                continue;
            };
            let inside: Vec<&Try> = tries.iter().filter(|t| t.within(from, to)).collect();
            let not_refused: Vec<&Answer> = inside
                .iter()
                .map(|attempt| &attempt.answer)
                .filter(|answer| !matches!(answer, Answer::Refused { status: 503, .. }))
                .collect();
            if inside.is_empty() {
                violations.push(format!(
                    "no ingest request was sent and answered while \"{}\" lasted: does \
                     ingest hang?",
                    fault.name
                ));
            } else if !not_refused.is_empty() {
                violations.push(format!(
                    "while \"{}\" lasted, ingest answered other than 503: {not_refused:?}",
                    fault.name
                ));
            }
        }
        violations
    }
}

/// How many answers of each kind, such as `202 x10, 503 database_unavailable x2`.
pub fn histogram<'a>(answers: impl Iterator<Item = &'a Answer>) -> String {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for answer in answers {
        let key = match answer {
            Answer::Accepted(_) => "202".to_owned(),
            Answer::Refused { status, code } => format!("{status} {code}"),
            Answer::Unreachable(kind) => format!("no answer ({kind})"),
        };
        *counts.entry(key).or_default() += 1;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort();
    let parts: Vec<String> = counts
        .into_iter()
        .map(|(answer, count)| format!("{answer} x{count}"))
        .collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

fn count(deliveries: &[delivery::Model], among: &HashSet<Uuid>, status: DeliveryStatus) -> usize {
    deliveries
        .iter()
        .filter(|row| row.status == status && among.contains(&row.id))
        .count()
}

/// What is wrong with a delivery's attempt log, if anything: attempts must be numbered
/// 1..=attempt_count, every one but the last a failed attempt, and the last one must match
/// the delivery's final state.
fn attempt_log_problem(
    row: &delivery::Model,
    mut attempts: Vec<delivery_attempt::Model>,
    max_attempts: i32,
) -> Option<String> {
    attempts.sort_by_key(|attempt| attempt.attempt_number);
    let numbers: Vec<i32> = attempts
        .iter()
        .map(|attempt| attempt.attempt_number)
        .collect();
    if numbers != (1..=row.attempt_count).collect::<Vec<_>>() {
        return Some(format!(
            "attempts numbered {numbers:?}, attempt_count {}",
            row.attempt_count
        ));
    }
    let (last, earlier) = match attempts.split_last() {
        Some(split) => split,
        None if row.status == DeliveryStatus::Skipped => return None,
        None => return Some(format!("{} with no attempt", row.status.as_str())),
    };
    if let Some(early) = earlier
        .iter()
        .find(|attempt| attempt.outcome != AttemptOutcome::FailedAttempt)
    {
        return Some(format!(
            "attempt {} is {:?} but not the last",
            early.attempt_number, early.outcome
        ));
    }
    if earlier
        .iter()
        .chain([last])
        .any(|attempt| (attempt.outcome == AttemptOutcome::Success) == attempt.error.is_some())
    {
        return Some("an attempt's error does not match its outcome".to_owned());
    }
    let consistent = match row.status {
        DeliveryStatus::Delivered => {
            last.outcome == AttemptOutcome::Success
                && last
                    .status_code
                    .is_some_and(|code| (200..300).contains(&code))
        }
        DeliveryStatus::Failed => {
            last.outcome == AttemptOutcome::Failure && row.attempt_count == max_attempts
        }
        DeliveryStatus::Queued | DeliveryStatus::Retrying => {
            return Some(format!("still {}", row.status.as_str()));
        }
        DeliveryStatus::Skipped => false,
    };
    (!consistent).then(|| {
        format!(
            "{} after {} attempts, the last {:?}",
            row.status.as_str(),
            row.attempt_count,
            last.outcome
        )
    })
}

/// The fault that can explain a webhook first answered at `at` being attempted again: one
/// that may repeat attempts, from shortly before it began (an attempt already in flight)
/// until shortly after it ended (a record that could not be written yet).
fn crash_around(at: Instant, faults: &[Fault]) -> Option<&Fault> {
    faults.iter().find(|fault| {
        fault.may_repeat_attempts
            && at + Duration::from_secs(2) >= fault.began
            && at <= fault.back + Duration::from_secs(5)
    })
}

/// `at` relative to the nearest fault, for reading failures and figures.
pub fn describe_time(at: Instant, faults: &[Fault]) -> String {
    let nearest = faults.iter().min_by_key(|fault| {
        if at < fault.began {
            fault.began - at
        } else if at > fault.back {
            at - fault.back
        } else {
            Duration::ZERO
        }
    });
    match nearest {
        Some(fault) if at < fault.began => {
            format!("{:.2?} before \"{}\"", fault.began - at, fault.name)
        }
        Some(fault) if at > fault.back => {
            format!("{:.2?} after \"{}\" ended", at - fault.back, fault.name)
        }
        Some(fault) => format!("during \"{}\"", fault.name),
        None => "before any fault".to_owned(),
    }
}
