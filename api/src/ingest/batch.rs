//! Group commit for ingestion: webhooks arriving together are written by one statement.
//!
//! Each commit waits for a disk flush, so one transaction per request caps ingestion at the
//! disk's flush rate. Here requests queue their rows and a few writer tasks each take
//! whatever has queued up, insert it with one multi-row `INSERT` (atomic on its own), and
//! answer every request in it. Under light load a batch holds one row and costs what a
//! lone insert would; under heavy load batches grow and the flushes are shared.

use std::sync::Arc;

use entity::delivery;
use sea_orm::{DatabaseConnection, EntityTrait};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::error::{self, ApiError};

/// Rows per statement; 9 columns each keeps far below PostgreSQL's 65,535 parameters.
const MAX_BATCH: usize = 500;
/// Concurrent batches: while one waits for its flush the next one fills.
const WRITERS: usize = 4;
/// Rows waiting for a writer before new requests wait to queue theirs.
const QUEUE_CAPACITY: usize = 8192;

struct Pending {
    row: delivery::ActiveModel,
    reply: oneshot::Sender<Result<(), ApiError>>,
}

/// Inserts deliveries in shared statements.
#[derive(Clone)]
pub struct BatchWriter {
    queue: mpsc::Sender<Pending>,
}

impl BatchWriter {
    /// Starts the writer tasks; they stop when the last clone of the writer is dropped.
    pub fn start(database: DatabaseConnection) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..WRITERS {
            tokio::spawn(write_batches(receiver.clone(), database.clone()));
        }
        Self { queue }
    }

    /// Inserts one delivery; returns once its batch is committed.
    pub async fn insert(&self, row: delivery::ActiveModel) -> Result<(), ApiError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { row, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> ApiError {
    ApiError::unavailable("shutting_down", "the service is shutting down; retry")
}

async fn write_batches(
    receiver: Arc<Mutex<mpsc::Receiver<Pending>>>,
    database: DatabaseConnection,
) {
    loop {
        let batch = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(pending) => batch.push(pending),
                    Err(_) => break,
                }
            }
            batch
        };
        write(&database, batch).await;
    }
}

async fn write(database: &DatabaseConnection, batch: Vec<Pending>) {
    let rows = batch.iter().map(|pending| pending.row.clone());
    let result = delivery::Entity::insert_many(rows)
        .exec_without_returning(database)
        .await;
    match result {
        Ok(_) => {
            for pending in batch {
                let _ = pending.reply.send(Ok(()));
            }
        }
        // One row names a subscription deleted since it was read from the cache, and that
        // failed the whole statement: insert the rows one by one so only it fails.
        Err(err) if error::is_foreign_key_violation(&err) => {
            for pending in batch {
                let result = delivery::Entity::insert(pending.row)
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
                let _ = pending.reply.send(result);
            }
        }
        Err(err) => {
            let failure = ApiError::database(err);
            for pending in batch {
                let _ = pending.reply.send(Err(failure.clone()));
            }
        }
    }
}
