//! Writing an accepted webhook, and its idempotency key, in one transaction.

use bytes::Bytes;
use chrono::Utc;
use common::ids::{DeliveryId, SubscriptionId};
use entity::delivery::{self, DeliveryStatus};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, Statement,
    TransactionTrait,
};

use super::batch::BatchWriter;
use crate::error::{self, ApiError};

pub struct NewDelivery {
    pub id: DeliveryId,
    pub subscription_id: SubscriptionId,
    pub event_type: Option<String>,
    pub payload: Bytes,
    pub status: DeliveryStatus,
    pub idempotency_key: Option<String>,
}

pub enum Stored {
    New {
        id: DeliveryId,
        status: DeliveryStatus,
    },
    /// The idempotency key was used within the last day; nothing new was stored.
    Repeat {
        id: DeliveryId,
        status: DeliveryStatus,
        attempt_count: i32,
    },
}

/// Claims the key for this delivery unless a claim younger than a day exists. Concurrent
/// claims of one key serialise on the primary key, so exactly one of them wins.
const CLAIM_KEY: &str = r#"
INSERT INTO idempotency_keys (subscription_id, key, delivery_id, created_at)
VALUES ($1, $2, $3, now())
ON CONFLICT (subscription_id, key) DO UPDATE
    SET delivery_id = EXCLUDED.delivery_id, created_at = EXCLUDED.created_at
    WHERE idempotency_keys.created_at < now() - interval '24 hours'
RETURNING delivery_id
"#;

const CLAIMED_BY: &str =
    "SELECT delivery_id FROM idempotency_keys WHERE subscription_id = $1 AND key = $2";

/// Stores a delivery. Without an idempotency key it goes through the batch writer; with one,
/// in a transaction of its own that also claims the key.
pub async fn insert(
    database: &DatabaseConnection,
    batch: &BatchWriter,
    new: NewDelivery,
) -> Result<Stored, ApiError> {
    let now = Utc::now();
    let row = delivery::Model {
        id: new.id.0,
        subscription_id: new.subscription_id.0,
        event_type: new.event_type,
        payload: new.payload.to_vec(),
        status: new.status,
        attempt_count: 0,
        next_attempt_at: None,
        created_at: now,
        updated_at: now,
    };
    let Some(key) = &new.idempotency_key else {
        batch.insert(row).await?;
        return Ok(Stored::New {
            id: new.id,
            status: new.status,
        });
    };

    let transaction = database.begin().await.map_err(ApiError::database)?;
    // A subscription deleted since it was read from the cache fails the foreign key.
    delivery::Entity::insert(delivery::ActiveModel::from(row).reset_all())
        .exec_without_returning(&transaction)
        .await
        .map_err(|err| {
            if error::is_foreign_key_violation(&err) {
                ApiError::subscription_not_found()
            } else {
                ApiError::database(err)
            }
        })?;

    let claim = Statement::from_sql_and_values(
        DbBackend::Postgres,
        CLAIM_KEY,
        [
            new.subscription_id.0.into(),
            key.clone().into(),
            new.id.0.into(),
        ],
    );
    let claimed = transaction
        .query_one_raw(claim)
        .await
        .map_err(ApiError::database)?;
    if claimed.is_none() {
        transaction.rollback().await.map_err(ApiError::database)?;
        return earlier_delivery(database, new.subscription_id, key).await;
    }

    transaction.commit().await.map_err(ApiError::database)?;
    Ok(Stored::New {
        id: new.id,
        status: new.status,
    })
}

async fn earlier_delivery(
    database: &DatabaseConnection,
    subscription_id: SubscriptionId,
    key: &str,
) -> Result<Stored, ApiError> {
    let lookup = Statement::from_sql_and_values(
        DbBackend::Postgres,
        CLAIMED_BY,
        [subscription_id.0.into(), key.to_owned().into()],
    );
    let row = database
        .query_one_raw(lookup)
        .await
        .map_err(ApiError::database)?;
    let delivery_id: uuid::Uuid = row
        .ok_or_else(conflict_vanished)?
        .try_get("", "delivery_id")
        .map_err(ApiError::database)?;
    let earlier = delivery::Entity::find_by_id(delivery_id)
        .one(database)
        .await
        .map_err(ApiError::database)?
        .ok_or_else(conflict_vanished)?;
    Ok(Stored::Repeat {
        id: DeliveryId(earlier.id),
        status: earlier.status,
        attempt_count: earlier.attempt_count,
    })
}

/// The claim that blocked ours was removed before we could read it (its delivery expired
/// or its subscription was deleted). Rare enough that asking the client to retry is fine.
fn conflict_vanished() -> ApiError {
    ApiError::new(
        poem::http::StatusCode::CONFLICT,
        "idempotency_conflict",
        "a request with this Idempotency-Key was being processed; retry",
    )
}
