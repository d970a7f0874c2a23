//! What happened to deliveries: one delivery's history, a subscription's recent attempts
//! and deliveries.

use chrono::{DateTime, Utc};
use entity::delivery::{self, DeliveryStatus};
use entity::delivery_attempt::{self, AttemptOutcome};
use entity::subscription;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::auth::ApiKey;
use crate::error::ApiError;
use crate::pagination;
use crate::state::AppState;
use crate::tags::Tag;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for its first attempt.
    Queued,
    /// An attempt failed and another is scheduled at `next_attempt_at`.
    Retrying,
    /// A target answered 2xx.
    Delivered,
    /// Every attempt failed.
    Failed,
    /// Never sent: the subscription was disabled or does not take this event type.
    Skipped,
}

impl From<DeliveryStatus> for Status {
    fn from(status: DeliveryStatus) -> Self {
        match status {
            DeliveryStatus::Queued => Self::Queued,
            DeliveryStatus::Retrying => Self::Retrying,
            DeliveryStatus::Delivered => Self::Delivered,
            DeliveryStatus::Failed => Self::Failed,
            DeliveryStatus::Skipped => Self::Skipped,
        }
    }
}

impl From<Status> for DeliveryStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Queued => Self::Queued,
            Status::Retrying => Self::Retrying,
            Status::Delivered => Self::Delivered,
            Status::Failed => Self::Failed,
            Status::Skipped => Self::Skipped,
        }
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum Outcome {
    /// The target answered 2xx.
    Success,
    /// Failed; another attempt follows.
    FailedAttempt,
    /// Failed, and it was the last attempt.
    Failure,
}

impl From<AttemptOutcome> for Outcome {
    fn from(outcome: AttemptOutcome) -> Self {
        match outcome {
            AttemptOutcome::Success => Self::Success,
            AttemptOutcome::FailedAttempt => Self::FailedAttempt,
            AttemptOutcome::Failure => Self::Failure,
        }
    }
}

/// One HTTP attempt.
#[derive(Debug, Clone, Object)]
pub struct Attempt {
    pub id: Uuid,
    pub delivery_id: Uuid,
    pub subscription_id: Uuid,
    /// The URL this attempt was sent to.
    pub target_url: String,
    /// 1 for the first attempt.
    pub attempt_number: i32,
    pub attempted_at: DateTime<Utc>,
    pub outcome: Outcome,
    /// The target's HTTP status; `null` when no response arrived.
    pub status_code: Option<i32>,
    /// Why it failed, such as `timeout after 10s`, `connection refused` or `HTTP 500`;
    /// `null` on success.
    pub error: Option<String>,
    pub duration_ms: i64,
}

impl From<delivery_attempt::Model> for Attempt {
    fn from(row: delivery_attempt::Model) -> Self {
        Self {
            id: row.id,
            delivery_id: row.delivery_id,
            subscription_id: row.subscription_id,
            target_url: row.target_url,
            attempt_number: row.attempt_number,
            attempted_at: row.attempted_at,
            outcome: row.outcome.into(),
            status_code: row.status_code,
            error: row.error,
            duration_ms: row.duration_ms,
        }
    }
}

/// A delivery without its attempts.
#[derive(Debug, Clone, Object)]
pub struct DeliverySummary {
    pub id: Uuid,
    pub subscription_id: Uuid,
    pub event_type: Option<String>,
    pub status: Status,
    /// Attempts made so far.
    pub attempt_count: i32,
    /// When the next attempt is due; `null` when none is scheduled.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A delivery with every attempt, oldest first.
#[derive(Debug, Clone, Object)]
pub struct Delivery {
    #[oai(flatten)]
    pub delivery: DeliverySummary,
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, Object)]
pub struct AttemptList {
    /// Newest first.
    pub items: Vec<Attempt>,
}

#[derive(Debug, Object)]
pub struct DeliveryPage {
    /// Newest first.
    pub items: Vec<DeliverySummary>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

pub struct DeliveriesApi;

#[OpenApi(tag = "Tag::Deliveries")]
impl DeliveriesApi {
    /// One delivery and its attempts.
    #[oai(path = "/deliveries/:id", method = "get")]
    async fn get(
        &self,
        state: Data<&AppState>,
        _auth: ApiKey,
        id: Path<Uuid>,
    ) -> Result<Json<Delivery>, ApiError> {
        let row = delivery::Entity::find_by_id(id.0)
            .select_only()
            .columns(summary_columns())
            .into_model::<DeliveryRow>()
            .one(&state.database)
            .await
            .map_err(ApiError::database)?
            .ok_or_else(|| ApiError::not_found("delivery_not_found", "no delivery has this id"))?;
        let attempts = delivery_attempt::Entity::find()
            .filter(delivery_attempt::Column::DeliveryId.eq(id.0))
            .order_by_asc(delivery_attempt::Column::AttemptNumber)
            .all(&state.database)
            .await
            .map_err(ApiError::database)?;
        Ok(Json(Delivery {
            delivery: row.into(),
            attempts: attempts.into_iter().map(Attempt::from).collect(),
        }))
    }

    /// A subscription's most recent attempts, newest first.
    #[oai(path = "/subscriptions/:id/attempts", method = "get")]
    async fn attempts(
        &self,
        state: Data<&AppState>,
        _auth: ApiKey,
        id: Path<Uuid>,
        /// How many, 1 to 100.
        #[oai(
            default = "default_attempt_limit",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        limit: Query<u64>,
    ) -> Result<Json<AttemptList>, ApiError> {
        require_subscription(&state, id.0).await?;
        let rows = delivery_attempt::Entity::find()
            .filter(delivery_attempt::Column::SubscriptionId.eq(id.0))
            // Attempts are recorded when they end, so their ids follow completion order;
            // "recent" means by start time, with the id only breaking ties.
            .order_by_desc(delivery_attempt::Column::AttemptedAt)
            .order_by_desc(delivery_attempt::Column::Id)
            .limit(limit.0)
            .all(&state.database)
            .await
            .map_err(ApiError::database)?;
        Ok(Json(AttemptList {
            items: rows.into_iter().map(Attempt::from).collect(),
        }))
    }

    /// A subscription's deliveries, newest first, optionally of one status.
    #[oai(path = "/subscriptions/:id/deliveries", method = "get")]
    async fn deliveries(
        &self,
        state: Data<&AppState>,
        _auth: ApiKey,
        id: Path<Uuid>,
        /// Only deliveries in this status.
        status: Query<Option<Status>>,
        /// Page size, 1 to 200.
        #[oai(
            default = "default_page_size",
            validator(minimum(value = "1"), maximum(value = "200"))
        )]
        limit: Query<u64>,
        /// `next_cursor` from the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<DeliveryPage>, ApiError> {
        let cursor = pagination::parse_cursor(cursor.0.as_deref())?;
        require_subscription(&state, id.0).await?;

        let mut query = delivery::Entity::find()
            .select_only()
            .columns(summary_columns())
            .filter(delivery::Column::SubscriptionId.eq(id.0));
        if let Some(status) = status.0 {
            query = query.filter(delivery::Column::Status.eq(DeliveryStatus::from(status)));
        }
        if let Some(cursor) = cursor {
            query = query.filter(delivery::Column::Id.lt(cursor));
        }
        let rows = query
            .order_by_desc(delivery::Column::Id)
            .limit(limit.0 + 1)
            .into_model::<DeliveryRow>()
            .all(&state.database)
            .await
            .map_err(ApiError::database)?;

        let (rows, next_cursor) = pagination::split_page(rows, limit.0, |row| row.id);
        Ok(Json(DeliveryPage {
            items: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        }))
    }
}

/// A delivery row without its payload, which listings never need.
#[derive(Debug, sea_orm::FromQueryResult)]
struct DeliveryRow {
    id: Uuid,
    subscription_id: Uuid,
    event_type: Option<String>,
    status: DeliveryStatus,
    attempt_count: i32,
    next_attempt_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

fn summary_columns() -> [delivery::Column; 8] {
    use delivery::Column;
    [
        Column::Id,
        Column::SubscriptionId,
        Column::EventType,
        Column::Status,
        Column::AttemptCount,
        Column::NextAttemptAt,
        Column::CreatedAt,
        Column::UpdatedAt,
    ]
}

impl From<DeliveryRow> for DeliverySummary {
    fn from(row: DeliveryRow) -> Self {
        Self {
            id: row.id,
            subscription_id: row.subscription_id,
            event_type: row.event_type,
            status: row.status.into(),
            attempt_count: row.attempt_count,
            next_attempt_at: row.next_attempt_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

async fn require_subscription(state: &AppState, id: Uuid) -> Result<(), ApiError> {
    let count = subscription::Entity::find_by_id(id)
        .count(&state.database)
        .await
        .map_err(ApiError::database)?;
    if count == 0 {
        Err(ApiError::subscription_not_found())
    } else {
        Ok(())
    }
}

fn default_attempt_limit() -> u64 {
    20
}

fn default_page_size() -> u64 {
    50
}
