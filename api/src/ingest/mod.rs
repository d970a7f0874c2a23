//! `POST /ingest/{subscription_id}`: accept a webhook, store it, queue it, answer `202`.
//!
//! The `202` is sent only once the delivery is committed in PostgreSQL and its job is
//! acknowledged by JetStream. If the publish fails after the commit the client gets a
//! `503`, and the delivery, still `queued`, is re-published by the janitor's recovery sweep.

mod batch;
mod body;
mod store;

use common::event_type;
use common::ids::{DeliveryId, SubscriptionId};
use common::job::DeliveryJob;
use common::signing::{self, SignatureError};
use entity::delivery::DeliveryStatus;
use poem::http::StatusCode;
use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use uuid::Uuid;

pub use batch::BatchWriter;
pub use body::WebhookBody;
use store::{NewDelivery, Stored};

use crate::error::ApiError;
use crate::state::AppState;
use crate::tags::Tag;

const MAX_IDEMPOTENCY_KEY_LENGTH: usize = 255;

/// What became of an accepted webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum AcceptedStatus {
    /// Stored and queued for delivery.
    Queued,
    /// Stored but not delivered: the subscription is disabled or does not take this event
    /// type.
    Skipped,
}

/// The receipt for an accepted webhook.
#[derive(Debug, Clone, Object)]
pub struct Accepted {
    /// Track the delivery at `GET /deliveries/{delivery_id}`.
    pub delivery_id: Uuid,
    pub subscription_id: Uuid,
    pub status: AcceptedStatus,
}

#[derive(ApiResponse)]
pub enum IngestResponse {
    /// Accepted: stored durably and, unless skipped, queued.
    #[oai(status = 202)]
    Accepted(Json<Accepted>),
}

pub struct IngestApi;

#[OpenApi(tag = "Tag::Ingest")]
impl IngestApi {
    /// Send a webhook to a subscription.
    ///
    /// When the subscription has a secret, sign the exact body:
    /// `X-Hub-Signature-256: sha256=<lowercase hex HMAC-SHA256(secret, body)>`.
    /// Give the event type in the `X-Event-Type` header or the `event_type` query parameter
    /// (the header wins). With an `Idempotency-Key`, a repeat within 24 hours returns the
    /// first receipt and queues nothing new.
    #[oai(path = "/ingest/:subscription_id", method = "post")]
    #[allow(clippy::too_many_arguments)] // one argument per documented request part
    async fn ingest(
        &self,
        state: Data<&AppState>,
        subscription_id: Path<Uuid>,
        // The header parameters are declared for the documentation; their values are read
        // from `request`, because poem-openapi drops values that are not plain ASCII and a
        // dropped event type or idempotency key would silently change the outcome.
        request: &poem::Request,
        /// The event type (UTF-8); wins over the query parameter.
        #[oai(name = "X-Event-Type")]
        _event_type_header: Header<Option<String>>,
        /// The event type, for senders that cannot set headers.
        #[oai(name = "event_type")]
        event_type_query: Query<Option<String>>,
        /// `sha256=<hex HMAC>`; required when the subscription has a secret.
        #[oai(name = "X-Hub-Signature-256")]
        signature: Header<Option<String>>,
        /// Up to 255 printable ASCII characters.
        #[oai(name = "Idempotency-Key")]
        _idempotency_key: Header<Option<String>>,
        body: WebhookBody,
    ) -> Result<IngestResponse, ApiError> {
        let subscription_id = SubscriptionId(subscription_id.0);
        let event_type = match raw_header(request, "x-event-type") {
            Some(raw) => Some(std::str::from_utf8(raw).map(str::to_owned).map_err(|_| {
                ApiError::bad_request("invalid_event_type", "X-Event-Type must be UTF-8")
            })?),
            None => event_type_query.0,
        };
        if let Some(kind) = &event_type {
            event_type::validate(kind)
                .map_err(|err| ApiError::bad_request("invalid_event_type", err.to_string()))?;
        }
        let idempotency_key = raw_header(request, "idempotency-key")
            .map(validate_idempotency_key)
            .transpose()?;

        let subscription = state
            .subscriptions
            .get(subscription_id)
            .await
            .map_err(ApiError::database)?
            .ok_or_else(ApiError::subscription_not_found)?;
        if let Some(secret) = &subscription.secret {
            let header = signature.0.as_deref().map(str::as_bytes);
            signing::verify_hub_signature(header, secret, &body.0).map_err(signature_error)?;
        }

        let status = if subscription.enabled && subscription.wants(event_type.as_deref()) {
            DeliveryStatus::Queued
        } else {
            DeliveryStatus::Skipped
        };
        let new = NewDelivery {
            id: DeliveryId::new(),
            subscription_id,
            event_type,
            payload: body.0,
            status,
            idempotency_key,
        };
        // Refuse before storing anything when the queue is known to be unreachable, so the
        // sender's retry cannot become a second copy.
        if status == DeliveryStatus::Queued && !nats_connected(&state) {
            return Err(ApiError::unavailable(
                "queue_unavailable",
                "the queue (NATS) is unavailable; nothing was stored, retry later",
            ));
        }
        let stored = store::insert(&state.database, &state.batch_writer, new).await?;

        let (delivery_id, status, publish) = match stored {
            Stored::New { id, status } => (id, status, status == DeliveryStatus::Queued),
            // The first request may have been answered 503 after its publish failed: make
            // sure the job exists before returning its receipt again.
            Stored::Repeat {
                id,
                status,
                attempt_count,
            } => {
                let unstarted = status == DeliveryStatus::Queued && attempt_count == 0;
                let queued = unstarted && job_in_stream(&state, id).await?;
                (id, first_answer(status), unstarted && !queued)
            }
        };
        if publish {
            if !nats_connected(&state) {
                return Err(queue_unavailable());
            }
            let job = DeliveryJob {
                delivery_id,
                subscription_id,
            };
            job.publish(&state.jetstream, &state.names, 0).await.map_err(|err| {
                tracing::warn!(%delivery_id, cause = %err, "cannot queue delivery; the sweep will");
                queue_unavailable()
            })?;
        }

        tracing::debug!(%delivery_id, %subscription_id, status = status.as_str(), "accepted");
        let status = match status {
            DeliveryStatus::Skipped => AcceptedStatus::Skipped,
            _ => AcceptedStatus::Queued,
        };
        Ok(IngestResponse::Accepted(Json(Accepted {
            delivery_id: delivery_id.0,
            subscription_id: subscription_id.0,
            status,
        })))
    }
}

/// The status the first response for a delivery reported: skipped ones were skipped from the
/// start, every other one started out queued.
fn first_answer(current: DeliveryStatus) -> DeliveryStatus {
    if current == DeliveryStatus::Skipped {
        current
    } else {
        DeliveryStatus::Queued
    }
}

async fn job_in_stream(state: &AppState, id: DeliveryId) -> Result<bool, ApiError> {
    common::job::is_in_stream(&state.job_stream, &state.names, id)
        .await
        .map_err(|err| {
            tracing::warn!(delivery_id = %id, cause = %err, "cannot look up job");
            queue_unavailable()
        })
}

fn nats_connected(state: &AppState) -> bool {
    state.nats.connection_state() == async_nats::connection::State::Connected
}

/// The queue was unreachable after the delivery was stored. The sweep will queue it, so the
/// webhook may still be delivered; the message says how to retry without a duplicate.
fn queue_unavailable() -> ApiError {
    ApiError::unavailable(
        "queue_unavailable",
        "the queue (NATS) is unavailable; retry later, with an Idempotency-Key to avoid a \
         duplicate: this webhook was stored and may still be delivered",
    )
}

/// The raw bytes of a header's first value.
fn raw_header<'r>(request: &'r poem::Request, name: &str) -> Option<&'r [u8]> {
    request.headers().get(name).map(|value| value.as_bytes())
}

fn validate_idempotency_key(key: &[u8]) -> Result<String, ApiError> {
    let valid = !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY_LENGTH
        && key.iter().all(u8::is_ascii_graphic);
    if valid {
        Ok(String::from_utf8_lossy(key).into_owned())
    } else {
        Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
        ))
    }
}

fn signature_error(err: SignatureError) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
        err.to_string(),
    )
}
