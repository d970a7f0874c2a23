//! The worker's reads and writes of deliveries, batched across the jobs in flight: one query
//! loads the deliveries many jobs need, one statement records many finished attempts.

mod load;
mod record;

use std::sync::Arc;

use common::batch::Unanswered;
use sea_orm::DbErr;

pub use load::DeliveryLoader;
pub use record::{AttemptRecord, AttemptRecorder, Recorded, skipped};

/// Why a read or write did not happen. Every job in a failed batch gets the same error,
/// hence the shared cause.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(Arc<DbErr>),
    #[error(transparent)]
    Stopped(#[from] Unanswered),
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        Self::Database(Arc::new(err))
    }
}
