//! Loading the deliveries that jobs refer to, many with one query.

use std::collections::HashMap;

use common::batch::{BatchLimits, Batcher};
use common::ids::DeliveryId;
use entity::delivery;
use sea_orm::sea_query::{Expr, ExprTrait, PgFunc};
use sea_orm::{DatabaseConnection, EntityTrait, QueryFilter};
use uuid::Uuid;

use super::StoreError;

/// Result for one job: the delivery, or `None` when it no longer exists.
type Loaded = Result<Option<delivery::Model>, StoreError>;

/// Loads deliveries by id; concurrent loads share one `SELECT ... WHERE id = ANY(...)`.
#[derive(Clone)]
pub struct DeliveryLoader {
    batcher: Batcher<DeliveryId, Loaded>,
}

impl DeliveryLoader {
    /// `max_batch` bounds the ids in one query; the jobs in flight bound it anyway.
    pub fn start(database: DatabaseConnection, max_batch: usize) -> Self {
        let limits = BatchLimits {
            max_batch,
            queue_capacity: max_batch.max(1) * 2,
        };
        let batcher = Batcher::start(limits, move |ids| {
            let database = database.clone();
            async move { load(&database, ids).await }
        });
        Self { batcher }
    }

    pub async fn load(&self, id: DeliveryId) -> Loaded {
        self.batcher.submit(id).await?
    }
}

async fn load(database: &DatabaseConnection, ids: Vec<DeliveryId>) -> Vec<Loaded> {
    // `= ANY($1)` keeps one statement text, and one prepared statement, for every batch size.
    let id_array: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let rows = delivery::Entity::find()
        .filter(Expr::col(delivery::Column::Id).eq(PgFunc::any(id_array)))
        .all(database)
        .await;
    match rows {
        Ok(rows) => {
            let by_id: HashMap<Uuid, delivery::Model> =
                rows.into_iter().map(|row| (row.id, row)).collect();
            // Cloned, not removed: two copies of one job in a batch both need the row.
            ids.iter().map(|id| Ok(by_id.get(&id.0).cloned())).collect()
        }
        Err(err) => {
            let failure = StoreError::from(err);
            ids.iter().map(|_| Err(failure.clone())).collect()
        }
    }
}
