//! Handling one job: load, attempt, record, then acknowledge, retry or end it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{AckKind, Message};
use chrono::Utc;
use common::ids::DeliveryId;
use common::job::DeliveryJob;
use common::subscription_cache::SubscriptionCache;
use entity::delivery_attempt::AttemptOutcome;
use sea_orm::DatabaseConnection;
use tracing::Instrument;

use crate::attempt;
use crate::in_flight::InFlight;
use crate::schedule::RetrySchedule;
use crate::store::{self, AttemptRecord, AttemptRecorder, DeliveryLoader, Recorded, StoreError};

/// How soon a job comes back when the database could not be reached.
const TRANSIENT_RETRY: Duration = Duration::from_secs(5);
/// How soon a job comes back when its subscription already has as many attempts in flight
/// as it may. No attempt is made or counted.
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// What every job handler shares.
pub struct Context {
    pub database: DatabaseConnection,
    pub deliveries: DeliveryLoader,
    pub recorder: AttemptRecorder,
    pub subscriptions: SubscriptionCache,
    pub http: reqwest::Client,
    pub timeout: Duration,
    pub schedule: RetrySchedule,
    pub allow_private_targets: bool,
    /// Attempts in flight per subscription, capped.
    pub in_flight: Arc<InFlight>,
    /// How often a handler tells JetStream it is still working on its job.
    pub progress_interval: Duration,
}

/// What to tell JetStream about a job.
#[derive(Debug, PartialEq, Eq)]
enum Disposition {
    /// Done: delivered, finally failed after recording, or nothing left to do.
    Ack,
    /// Deliver the job again after this delay.
    Retry(Duration),
    /// Remove the job: it can never succeed.
    Terminate,
}

impl Context {
    pub fn in_flight_limit(&self) -> usize {
        self.in_flight.limit()
    }
}

pub async fn handle(context: &Context, message: Message) {
    let job: DeliveryJob = match serde_json::from_slice(&message.payload) {
        Ok(job) => job,
        Err(err) => {
            tracing::error!(subject = %message.subject, cause = %err, "unreadable job; dropped");
            finish(&message, Disposition::Terminate).await;
            return;
        }
    };
    let span = tracing::info_span!(
        "delivery",
        delivery_id = %job.delivery_id,
        subscription_id = %job.subscription_id,
        attempt = tracing::field::Empty,
    );

    let work = process(context, job).instrument(span.clone());
    tokio::pin!(work);
    let mut progress = tokio::time::interval(context.progress_interval);
    progress.tick().await;
    let disposition = loop {
        tokio::select! {
            disposition = &mut work => break disposition,
            _ = progress.tick() => {
                // Restarts the ack wait, so a slow attempt is not handed to a second worker.
                if let Err(err) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!(parent: &span, cause = %err, "cannot report progress");
                }
            }
        }
    };
    let disposition = disposition.unwrap_or_else(|err| {
        tracing::warn!(parent: &span, cause = %err, "database unavailable; job will be retried");
        Disposition::Retry(TRANSIENT_RETRY)
    });
    finish(&message, disposition).instrument(span).await;
}

async fn finish(message: &Message, disposition: Disposition) {
    let kind = match disposition {
        Disposition::Ack => AckKind::Ack,
        Disposition::Retry(delay) => AckKind::Nak(Some(delay)),
        Disposition::Terminate => AckKind::Term,
    };
    // If this is lost the job is redelivered, and the delivery row tells the next
    // handler the attempt was already made.
    if let Err(err) = message.ack_with(kind).await {
        tracing::warn!(cause = %err, "cannot acknowledge job");
    }
}

async fn process(context: &Context, job: DeliveryJob) -> Result<Disposition, StoreError> {
    let Some(delivery) = context.deliveries.load(job.delivery_id).await? else {
        tracing::debug!("delivery no longer exists; dropping job");
        return Ok(Disposition::Ack);
    };
    if delivery.status.is_final() {
        tracing::debug!(status = delivery.status.as_str(), "delivery already final");
        return Ok(Disposition::Ack);
    }
    let Some(subscription) = context.subscriptions.get(job.subscription_id).await? else {
        tracing::info!("subscription deleted; dropping job");
        return Ok(Disposition::Ack);
    };
    if !subscription.enabled {
        store::skipped(&context.database, job.delivery_id).await?;
        tracing::info!("subscription disabled; delivery skipped");
        return Ok(Disposition::Ack);
    }

    let Some(_slot) = context.in_flight.try_enter(job.subscription_id) else {
        tracing::debug!("subscription at its in-flight cap; job deferred");
        return Ok(Disposition::Retry(BUSY_RETRY));
    };

    let attempt_number = delivery.attempt_count + 1;
    tracing::Span::current().record("attempt", attempt_number);
    let delivery_id = DeliveryId(delivery.id).to_string();
    let attempted_at = Utc::now();
    let report = attempt::send(
        &context.http,
        attempt::Request {
            subscription: &subscription,
            delivery_id: &delivery_id,
            event_type: delivery.event_type.as_deref(),
            payload: delivery.payload.into(),
        },
        context.timeout,
        context.allow_private_targets,
    )
    .await;

    let (outcome, retry_in) = if report.succeeded() {
        (AttemptOutcome::Success, None)
    } else {
        match context
            .schedule
            .delay_after(attempt_number, report.retry_after)
        {
            Some(delay) => (AttemptOutcome::FailedAttempt, Some(delay)),
            None => (AttemptOutcome::Failure, None),
        }
    };
    let next_attempt_at = retry_in.and_then(|delay| {
        let delay = chrono::Duration::from_std(delay).ok()?;
        Utc::now().checked_add_signed(delay)
    });
    let recorded = context
        .recorder
        .record(AttemptRecord {
            delivery_id: job.delivery_id,
            subscription_id: job.subscription_id,
            target_url: subscription.target_url.clone(),
            attempt_number,
            attempted_at,
            outcome,
            status_code: report.status_code,
            error: report.error.clone(),
            duration_ms: i64::try_from(report.duration.as_millis()).unwrap_or(i64::MAX),
            next_attempt_at,
        })
        .await?;
    if recorded == Recorded::AlreadyRecorded {
        tracing::warn!("attempt already recorded by another worker; dropping this copy");
        return Ok(Disposition::Ack);
    }

    let duration_ms = report.duration.as_millis();
    match (outcome, retry_in) {
        (AttemptOutcome::Success, _) => {
            tracing::info!(status_code = report.status_code, duration_ms, "delivered");
            Ok(Disposition::Ack)
        }
        (AttemptOutcome::FailedAttempt, Some(delay)) => {
            tracing::info!(
                status_code = report.status_code,
                error = report.error.as_deref(),
                retry_in_ms = delay.as_millis(),
                "attempt failed; retry scheduled"
            );
            Ok(Disposition::Retry(delay))
        }
        _ => {
            tracing::warn!(
                status_code = report.status_code,
                error = report.error.as_deref(),
                "last attempt failed; delivery failed"
            );
            // Recorded as failed above; terminating takes the job out of the stream.
            Ok(Disposition::Terminate)
        }
    }
}
