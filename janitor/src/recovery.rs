//! The recovery sweep: re-publishes the job of an unfinished delivery that JetStream lost.

use async_nats::jetstream::{self, stream::Stream};
use chrono::{DateTime, Utc};
use common::ids::{DeliveryId, SubscriptionId};
use common::jetstream::Names;
use common::job::{self, DeliveryJob, LookupError, PublishError, Published};
use sea_orm::{DatabaseConnection, DbBackend, DbErr, FromQueryResult, Statement};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::Run;

/// Unfinished deliveries untouched since before `$1`, oldest first, starting after the
/// position `($2, $3)` where the previous sweep stopped. Served by the partial index
/// `deliveries_unfinished_by_age`; the statuses are literals so the planner can match it.
const CANDIDATES: &str = r#"
SELECT id, subscription_id, attempt_count, updated_at
FROM deliveries
WHERE status IN ('queued', 'retrying')
  AND updated_at < $1
  AND updated_at >= $2
  AND (updated_at > $2 OR id > $3)
ORDER BY updated_at, id
LIMIT $4
"#;

/// Whether a delivery is still exactly as the sweep listed it.
const UNCHANGED: &str = r#"
SELECT id, subscription_id, attempt_count, updated_at
FROM deliveries
WHERE id = $1
  AND status IN ('queued', 'retrying')
  AND attempt_count = $2
  AND updated_at = $3
"#;

/// Errors that end a sweep. The sweep stops at the first one: NATS or the database is then
/// likely down for every other delivery too, and each request would wait out its timeout.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("cannot list unfinished deliveries")]
    List(#[source] DbErr),
    #[error("cannot look up the job of delivery {delivery_id}")]
    Lookup {
        delivery_id: DeliveryId,
        #[source]
        source: LookupError,
    },
    #[error("cannot re-read delivery {delivery_id}")]
    Recheck {
        delivery_id: DeliveryId,
        #[source]
        source: DbErr,
    },
    #[error("cannot re-publish the job of delivery {delivery_id}")]
    Publish {
        delivery_id: DeliveryId,
        #[source]
        source: PublishError,
    },
}

/// Where the previous sweep stopped: the age and id of the last delivery it checked.
#[derive(Clone, Copy, Debug)]
pub struct Cursor {
    updated_at: DateTime<Utc>,
    id: Uuid,
}

#[derive(Debug, FromQueryResult)]
struct Candidate {
    id: Uuid,
    subscription_id: Uuid,
    attempt_count: i32,
    updated_at: DateTime<Utc>,
}

/// What one sweep did, counted as it goes.
#[derive(Debug, Default)]
pub struct Swept {
    /// Unfinished deliveries whose job the sweep looked for.
    pub checked: u64,
    /// Jobs published again.
    pub requeued: u64,
    /// Jobs published again but dropped by JetStream as repeats (`Outcome::Deferred`).
    pub deferred: u64,
}

/// What the sweep needs from the janitor.
pub struct Sweep<'a> {
    pub database: &'a DatabaseConnection,
    pub jetstream: &'a jetstream::Context,
    pub stream: &'a Stream,
    pub names: &'a Names,
    /// Only deliveries untouched since before this moment are considered.
    pub cutoff: DateTime<Utc>,
    pub limit: u32,
}

impl Sweep<'_> {
    /// Checks up to `limit` unfinished deliveries, oldest first from `cursor`, and
    /// re-publishes each job the stream no longer holds. Moves `cursor` to where the next
    /// sweep should start: after the last delivery checked, or back to the oldest once the
    /// sweep reached the end of the list.
    pub async fn run(
        &self,
        cursor: &mut Option<Cursor>,
        swept: &mut Swept,
        stop: &CancellationToken,
    ) -> Result<Run, SweepError> {
        // No delivery predates 1970, so the epoch stands in for "from the oldest".
        let (after_time, after_id) = match *cursor {
            Some(position) => (position.updated_at, position.id),
            None => (DateTime::<Utc>::UNIX_EPOCH, Uuid::nil()),
        };
        let list = Statement::from_sql_and_values(
            DbBackend::Postgres,
            CANDIDATES,
            [
                self.cutoff.into(),
                after_time.into(),
                after_id.into(),
                i64::from(self.limit).into(),
            ],
        );
        let candidates = Candidate::find_by_statement(list)
            .all(self.database)
            .await
            .map_err(SweepError::List)?;
        let reached_end = candidates.len() < self.limit as usize;

        for candidate in &candidates {
            if stop.is_cancelled() {
                return Ok(Run::Stopped);
            }
            let span = tracing::info_span!(
                "recover",
                delivery_id = %candidate.id,
                subscription_id = %candidate.subscription_id,
                attempts_made = candidate.attempt_count,
            );
            match self.recover(candidate).instrument(span).await? {
                Outcome::Requeued => swept.requeued += 1,
                Outcome::Deferred => swept.deferred += 1,
                Outcome::InStream | Outcome::MovedOn => {}
            }
            swept.checked += 1;
            *cursor = Some(Cursor {
                updated_at: candidate.updated_at,
                id: candidate.id,
            });
        }
        if reached_end {
            *cursor = None;
        }
        Ok(Run::Finished)
    }

    /// Re-publishes one delivery's job if the stream lacks it.
    async fn recover(&self, candidate: &Candidate) -> Result<Outcome, SweepError> {
        let delivery_id = DeliveryId(candidate.id);

        // A job waiting, in progress or waiting out a retry delay is still in the
        // work-queue stream: it leaves only when a worker acknowledges or ends it.
        let in_stream = job::is_in_stream(self.stream, self.names, delivery_id)
            .await
            .map_err(|source| SweepError::Lookup {
                delivery_id,
                source,
            })?;
        if in_stream {
            return Ok(Outcome::InStream);
        }

        // A worker records an attempt before it acknowledges the job, so a job that left
        // the stream after the listing above shows up here as a changed row. Without this
        // check the sweep would queue a second job for a delivery that has one running.
        let recheck = Statement::from_sql_and_values(
            DbBackend::Postgres,
            UNCHANGED,
            [
                candidate.id.into(),
                candidate.attempt_count.into(),
                candidate.updated_at.into(),
            ],
        );
        let unchanged = Candidate::find_by_statement(recheck)
            .one(self.database)
            .await
            .map_err(|source| SweepError::Recheck {
                delivery_id,
                source,
            })?;
        if unchanged.is_none() {
            tracing::debug!("delivery moved on during the sweep; left alone");
            return Ok(Outcome::MovedOn);
        }

        // The message id is the one any publish for this state of the delivery carries, so
        // JetStream drops this publish if another one for the same state got there first.
        let job = DeliveryJob {
            delivery_id,
            subscription_id: SubscriptionId(candidate.subscription_id),
        };
        let published = job
            .publish_checked(self.jetstream, self.names, candidate.attempt_count)
            .await
            .map_err(|source| SweepError::Publish {
                delivery_id,
                source,
            })?;
        match published {
            Published::Stored => {
                tracing::info!("job was missing from the stream; re-queued");
                Ok(Outcome::Requeued)
            }
            Published::Duplicate => {
                tracing::info!(
                    "job missing from the stream, but its message id was used within the \
                     duplicate window; a later pass re-queues it"
                );
                Ok(Outcome::Deferred)
            }
        }
    }
}

/// What the sweep did about one delivery.
#[derive(Debug)]
enum Outcome {
    /// The stream holds its job: nothing to do.
    InStream,
    /// The delivery changed or went away after it was listed: a worker took it further.
    MovedOn,
    /// Its job is back in the stream.
    Requeued,
    /// JetStream dropped the new job as a repeat: the same message id reached the stream
    /// within its duplicate window (the lost job was purged soon after it was published).
    /// Publishing under another id could let the sweep queue a second job for one state of
    /// the delivery, so the sweep waits for the window to pass and tries again.
    Deferred,
}
