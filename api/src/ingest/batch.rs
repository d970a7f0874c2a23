//! Group commit for ingestion: webhooks arriving together are written by one statement.
//!
//! Each commit waits for a disk flush, so one transaction per request caps ingestion at the
//! disk's flush rate. Here a batch of queued rows becomes one `INSERT`, atomic on its own,
//! and every request in it is answered from that one commit.

use std::sync::Arc;

use common::batch::{BatchLimits, Batcher};
use entity::delivery;
use sea_orm::sqlx::{self, PgPool};
use sea_orm::{DatabaseConnection, DbErr, RuntimeErr};
use uuid::Uuid;

use crate::error::{self, ApiError};

const LIMITS: BatchLimits = BatchLimits {
    max_batch: 500,
    queue_capacity: 8192,
};

/// New deliveries as parallel arrays, one element per row: a single statement text, and so a
/// single prepared statement, serves every batch size.
const INSERT_DELIVERIES: &str = r#"
INSERT INTO deliveries (
    id, subscription_id, event_type, payload, status, attempt_count, created_at, updated_at
)
SELECT id, subscription_id, event_type, payload, status, 0, created_at, created_at
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bytea[], $5::text[], $6::timestamptz[])
    AS new_delivery (id, subscription_id, event_type, payload, status, created_at)
"#;

/// Inserts deliveries in shared statements.
#[derive(Clone)]
pub struct BatchWriter {
    batcher: Batcher<delivery::Model, Result<(), ApiError>>,
}

impl BatchWriter {
    /// Starts the writer tasks; they stop when the last clone of the writer is dropped.
    pub fn start(database: &DatabaseConnection) -> Self {
        let pool = database.get_postgres_connection_pool().clone();
        let batcher = Batcher::start(LIMITS, move |rows| {
            let pool = pool.clone();
            async move { write(&pool, rows).await }
        });
        Self { batcher }
    }

    /// Inserts one new delivery; returns once its batch is committed. Its attempt count and
    /// next attempt time are those of a delivery never attempted, and its `updated_at` is its
    /// `created_at`.
    pub async fn insert(&self, row: delivery::Model) -> Result<(), ApiError> {
        self.batcher.submit(row).await.map_err(|_| stopped())?
    }
}

fn stopped() -> ApiError {
    ApiError::unavailable("shutting_down", "the service is shutting down; retry")
}

async fn write(pool: &PgPool, rows: Vec<delivery::Model>) -> Vec<Result<(), ApiError>> {
    match insert(pool, &rows).await {
        Ok(()) => rows.iter().map(|_| Ok(())).collect(),
        // One row names a subscription deleted since it was read from the cache, and that
        // failed the whole statement: insert the rows one by one so only it fails.
        Err(err) if error::is_foreign_key_violation(&err) => {
            let mut results = Vec::with_capacity(rows.len());
            for row in rows {
                let result = insert(pool, std::slice::from_ref(&row))
                    .await
                    .map_err(|err| {
                        if error::is_foreign_key_violation(&err) {
                            ApiError::subscription_not_found()
                        } else {
                            ApiError::database(err)
                        }
                    });
                results.push(result);
            }
            results
        }
        Err(err) => {
            let failure = ApiError::database(err);
            rows.iter().map(|_| Err(failure.clone())).collect()
        }
    }
}

async fn insert(pool: &PgPool, rows: &[delivery::Model]) -> Result<(), DbErr> {
    let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
    let subscription_ids: Vec<Uuid> = rows.iter().map(|row| row.subscription_id).collect();
    let event_types: Vec<Option<&str>> = rows.iter().map(|row| row.event_type.as_deref()).collect();
    let payloads: Vec<&[u8]> = rows.iter().map(|row| row.payload.as_slice()).collect();
    let statuses: Vec<&str> = rows.iter().map(|row| row.status.as_str()).collect();
    let created: Vec<_> = rows.iter().map(|row| row.created_at).collect();
    sqlx::query(INSERT_DELIVERIES)
        .bind(ids)
        .bind(subscription_ids)
        .bind(event_types)
        .bind(payloads)
        .bind(statuses)
        .bind(created)
        .execute(pool)
        .await
        .map_err(|err| DbErr::Exec(RuntimeErr::SqlxError(Arc::new(err))))?;
    Ok(())
}
