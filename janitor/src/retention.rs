//! Deleting expired rows in bounded batches, so a large backlog never holds a long lock.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};
use tokio_util::sync::CancellationToken;

use crate::Run;

/// One kind of expired row and the statement that deletes a batch of them.
///
/// Every statement takes the cutoff as `$1` and the batch size as `$2`. The inner query
/// walks the index named in its comment in age order, so each batch reads only the rows it
/// deletes. Statuses are literals, not parameters, so the planner can match the partial
/// indexes on deliveries.
#[derive(Clone, Copy, Debug)]
pub struct Expiry {
    pub table: &'static str,
    sql: &'static str,
}

/// Attempt log rows, by `attempted_at` (index `delivery_attempts_by_time`).
pub const ATTEMPTS: Expiry = Expiry {
    table: "delivery_attempts",
    sql: r#"
DELETE FROM delivery_attempts
WHERE id IN (
    SELECT id FROM delivery_attempts
    WHERE attempted_at < $1
    ORDER BY attempted_at
    LIMIT $2
)
"#,
};

/// Idempotency keys past the API's one-day window (index `idempotency_keys_by_time`).
pub const IDEMPOTENCY_KEYS: Expiry = Expiry {
    table: "idempotency_keys",
    sql: r#"
DELETE FROM idempotency_keys
WHERE (subscription_id, key) IN (
    SELECT subscription_id, key FROM idempotency_keys
    WHERE created_at < $1
    ORDER BY created_at
    LIMIT $2
)
AND created_at < $1
"#,
};

/// Finished deliveries with their payloads, by `updated_at` (index
/// `deliveries_finished_by_age`). Attempts and idempotency keys follow by cascade.
///
/// The outer conditions repeat the inner ones because PostgreSQL re-checks them against
/// the newest version of a row that changed while the statement waited for it: a delivery
/// that is not final at the moment of deletion survives, whatever the inner query saw.
pub const FINISHED_DELIVERIES: Expiry = Expiry {
    table: "deliveries",
    sql: r#"
DELETE FROM deliveries
WHERE id IN (
    SELECT id FROM deliveries
    WHERE status IN ('delivered', 'failed', 'skipped') AND updated_at < $1
    ORDER BY updated_at
    LIMIT $2
)
AND status IN ('delivered', 'failed', 'skipped') AND updated_at < $1
"#,
};

/// Deletes rows older than `cutoff` one batch at a time, each batch its own statement and
/// so its own transaction, until a batch comes back short or `stop` is cancelled. Counts
/// into `deleted` as it goes, so batches committed before an error are still counted.
pub async fn delete_expired(
    database: &DatabaseConnection,
    expiry: Expiry,
    cutoff: DateTime<Utc>,
    batch_size: u32,
    deleted: &mut u64,
    stop: &CancellationToken,
) -> Result<Run, DbErr> {
    loop {
        if stop.is_cancelled() {
            return Ok(Run::Stopped);
        }
        let statement = Statement::from_sql_and_values(
            DbBackend::Postgres,
            expiry.sql,
            [cutoff.into(), i64::from(batch_size).into()],
        );
        let batch = database.execute_raw(statement).await?.rows_affected();
        *deleted += batch;
        tracing::debug!(table = expiry.table, deleted = batch, "deleted a batch");
        if batch < u64::from(batch_size) {
            return Ok(Run::Finished);
        }
    }
}

#[cfg(test)]
mod tests {
    use entity::delivery::DeliveryStatus;
    use sea_orm::Iterable;

    use super::*;

    #[test]
    fn only_final_statuses_are_deleted() {
        for status in DeliveryStatus::iter() {
            let quoted = format!("'{}'", status.as_str());
            assert_eq!(
                FINISHED_DELIVERIES.sql.contains(&quoted),
                status.is_final(),
                "{quoted} in the delete statement"
            );
        }
    }
}
