//! Group commit for ingestion: webhooks arriving together are written by one statement.
//!
//! Each commit waits for a disk flush, so one transaction per request caps ingestion at the
//! disk's flush rate. Here a batch of queued rows becomes one multi-row `INSERT`, atomic on
//! its own, and every request in it is answered from that one commit.

use common::batch::{BatchLimits, Batcher};
use entity::delivery;
use sea_orm::{DatabaseConnection, EntityTrait};

use crate::error::{self, ApiError};

const LIMITS: BatchLimits = BatchLimits {
    // While one batch waits for its flush the next ones fill.
    runners: 4,
    // 9 columns a row keeps a statement far below PostgreSQL's 65,535 parameters.
    max_batch: 500,
    queue_capacity: 8192,
};

/// Inserts deliveries in shared statements.
#[derive(Clone)]
pub struct BatchWriter {
    batcher: Batcher<delivery::ActiveModel, Result<(), ApiError>>,
}

impl BatchWriter {
    /// Starts the writer tasks; they stop when the last clone of the writer is dropped.
    pub fn start(database: DatabaseConnection) -> Self {
        let batcher = Batcher::start(LIMITS, move |rows| {
            let database = database.clone();
            async move { write(&database, rows).await }
        });
        Self { batcher }
    }

    /// Inserts one delivery; returns once its batch is committed.
    pub async fn insert(&self, row: delivery::ActiveModel) -> Result<(), ApiError> {
        self.batcher.submit(row).await.map_err(|_| stopped())?
    }
}

fn stopped() -> ApiError {
    ApiError::unavailable("shutting_down", "the service is shutting down; retry")
}

async fn write(
    database: &DatabaseConnection,
    rows: Vec<delivery::ActiveModel>,
) -> Vec<Result<(), ApiError>> {
    let result = delivery::Entity::insert_many(rows.iter().cloned())
        .exec_without_returning(database)
        .await;
    match result {
        Ok(_) => rows.iter().map(|_| Ok(())).collect(),
        // One row names a subscription deleted since it was read from the cache, and that
        // failed the whole statement: insert the rows one by one so only it fails.
        Err(err) if error::is_foreign_key_violation(&err) => {
            let mut results = Vec::with_capacity(rows.len());
            for row in rows {
                let result = delivery::Entity::insert(row)
                    .exec_without_returning(database)
                    .await
                    .map(|_| ())
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
