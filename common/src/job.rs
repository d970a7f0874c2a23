//! The message that asks a worker to make the next attempt of one delivery.

use async_nats::HeaderMap;
use async_nats::jetstream;
use serde::{Deserialize, Serialize};

use crate::ids::{DeliveryId, SubscriptionId};
use crate::jetstream::Names;

/// A delivery job. It carries ids only: the payload stays in PostgreSQL, and the attempt
/// number comes from the delivery row, so a redelivered job can never repeat or skip one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryJob {
    pub delivery_id: DeliveryId,
    pub subscription_id: SubscriptionId,
}

/// Errors from publishing a job.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot send the job to JetStream")]
    Send(#[source] jetstream::context::PublishError),
    #[error("JetStream did not acknowledge the job")]
    Ack(#[source] jetstream::context::PublishError),
}

impl DeliveryJob {
    /// The `Nats-Msg-Id` for publishing this job when `attempts_made` attempts are on record.
    /// Publishes for the same state of a delivery share an id, so JetStream drops repeats
    /// within its duplicate window; a later state gets a fresh id.
    pub fn message_id(&self, attempts_made: i32) -> String {
        format!("{}.{attempts_made}", self.delivery_id)
    }

    /// Publishes the job and waits until JetStream has stored it.
    pub async fn publish(
        &self,
        context: &jetstream::Context,
        names: &Names,
        attempts_made: i32,
    ) -> Result<(), PublishError> {
        self.publish_checked(context, names, attempts_made)
            .await
            .map(|_| ())
    }

    /// Publishes the job like [`DeliveryJob::publish`], and says whether JetStream stored
    /// it or dropped it as a repeat of a message id seen within the duplicate window.
    pub async fn publish_checked(
        &self,
        context: &jetstream::Context,
        names: &Names,
        attempts_made: i32,
    ) -> Result<Published, PublishError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            self.message_id(attempts_made),
        );
        // Serialising two UUIDs cannot fail.
        let body = serde_json::to_vec(self).unwrap_or_default();
        let ack = context
            .publish_with_headers(names.job_subject(self.delivery_id), headers, body.into())
            .await
            .map_err(PublishError::Send)?;
        let ack = ack.await.map_err(PublishError::Ack)?;
        Ok(if ack.duplicate {
            Published::Duplicate
        } else {
            Published::Stored
        })
    }
}

/// What JetStream did with a published job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    Stored,
    /// Dropped: a message with the same id reached the stream within its duplicate window,
    /// even if that message has left the stream since (acknowledged or purged).
    Duplicate,
}

/// Errors from asking the stream about a job.
#[derive(Debug, thiserror::Error)]
#[error("cannot look up the job in the stream")]
pub struct LookupError(#[source] jetstream::stream::LastRawMessageError);

/// Whether the stream still holds a delivery's job: waiting, in progress, or waiting out a
/// retry delay. Jobs leave the work-queue stream when acknowledged or terminated.
pub async fn is_in_stream(
    stream: &jetstream::stream::Stream,
    names: &Names,
    delivery_id: DeliveryId,
) -> Result<bool, LookupError> {
    match stream
        .get_last_raw_message_by_subject(&names.job_subject(delivery_id))
        .await
    {
        Ok(_) => Ok(true),
        Err(err)
            if matches!(
                err.kind(),
                jetstream::stream::LastRawMessageErrorKind::NoMessageFound
            ) =>
        {
            Ok(false)
        }
        Err(err) => Err(LookupError(err)),
    }
}
