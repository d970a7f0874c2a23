//! Writing what an attempt did: its log row and the delivery's new state, together.

use chrono::{DateTime, Utc};
use common::ids::{DeliveryId, SubscriptionId};
use entity::delivery::{self, DeliveryStatus};
use entity::delivery_attempt::{self, AttemptOutcome};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, TransactionTrait,
};
use uuid::Uuid;

/// One finished attempt and what it means for the delivery.
pub struct AttemptRecord {
    pub delivery_id: DeliveryId,
    pub subscription_id: SubscriptionId,
    pub target_url: String,
    pub attempt_number: i32,
    pub attempted_at: DateTime<Utc>,
    pub outcome: AttemptOutcome,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Whether the record was written.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    Written,
    /// Another worker recorded this attempt first; its job is the live one.
    AlreadyRecorded,
}

/// Records the attempt. The delivery row is updated only if it still shows the previous
/// attempt count, so two workers holding copies of one job cannot both record attempt `n`.
pub async fn attempt(
    database: &DatabaseConnection,
    record: AttemptRecord,
) -> Result<Recorded, DbErr> {
    let status = match record.outcome {
        AttemptOutcome::Success => DeliveryStatus::Delivered,
        AttemptOutcome::FailedAttempt => DeliveryStatus::Retrying,
        AttemptOutcome::Failure => DeliveryStatus::Failed,
    };
    let transaction = database.begin().await?;

    let updated = delivery::Entity::update_many()
        .col_expr(delivery::Column::Status, Expr::value(status))
        .col_expr(
            delivery::Column::AttemptCount,
            Expr::value(record.attempt_number),
        )
        .col_expr(
            delivery::Column::NextAttemptAt,
            Expr::value(record.next_attempt_at),
        )
        .col_expr(delivery::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(delivery::Column::Id.eq(record.delivery_id.0))
        .filter(delivery::Column::AttemptCount.eq(record.attempt_number - 1))
        .filter(delivery::Column::Status.is_in([DeliveryStatus::Queued, DeliveryStatus::Retrying]))
        .exec(&transaction)
        .await?;
    if updated.rows_affected == 0 {
        transaction.rollback().await?;
        return Ok(Recorded::AlreadyRecorded);
    }

    let row = delivery_attempt::ActiveModel {
        id: ActiveValue::Set(Uuid::now_v7()),
        delivery_id: ActiveValue::Set(record.delivery_id.0),
        subscription_id: ActiveValue::Set(record.subscription_id.0),
        target_url: ActiveValue::Set(record.target_url),
        attempt_number: ActiveValue::Set(record.attempt_number),
        attempted_at: ActiveValue::Set(record.attempted_at),
        outcome: ActiveValue::Set(record.outcome),
        status_code: ActiveValue::Set(record.status_code.map(i32::from)),
        error: ActiveValue::Set(record.error),
        duration_ms: ActiveValue::Set(record.duration_ms),
    };
    delivery_attempt::Entity::insert(row)
        .exec_without_returning(&transaction)
        .await?;
    transaction.commit().await?;
    Ok(Recorded::Written)
}

/// Marks a delivery `skipped` because its subscription was disabled before an attempt.
pub async fn skipped(database: &DatabaseConnection, delivery_id: DeliveryId) -> Result<(), DbErr> {
    delivery::Entity::update_many()
        .col_expr(
            delivery::Column::Status,
            Expr::value(DeliveryStatus::Skipped),
        )
        .col_expr(
            delivery::Column::NextAttemptAt,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(delivery::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(delivery::Column::Id.eq(delivery_id.0))
        .filter(delivery::Column::Status.is_in([DeliveryStatus::Queued, DeliveryStatus::Retrying]))
        .exec(database)
        .await?;
    Ok(())
}
