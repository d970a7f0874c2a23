//! Writing what attempts did: their log rows and their deliveries' new states, together.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use common::batch::{BatchLimits, Batcher};
use common::ids::{DeliveryId, SubscriptionId};
use entity::delivery::{self, DeliveryStatus};
use entity::delivery_attempt::AttemptOutcome;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
    RuntimeErr, Statement,
};
use uuid::Uuid;

use super::StoreError;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Written,
    /// Another worker recorded this attempt first; its job is the live one.
    AlreadyRecorded,
}

/// Moves each delivery to its new state and logs its attempt, in one statement and so one
/// transaction. A delivery is updated only if it still shows the previous attempt count and
/// is unfinished, so two workers holding copies of one job cannot both record attempt `n`;
/// an attempt row is written only for a delivery that was updated. The batch travels as one
/// JSON parameter, so one prepared statement serves every batch size.
const RECORD_ATTEMPTS: &str = r#"
WITH attempt AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb) AS attempt (
        id uuid, delivery_id uuid, subscription_id uuid, target_url text,
        attempt_number integer, attempted_at timestamptz, outcome text, status text,
        status_code integer, error text, duration_ms bigint, next_attempt_at timestamptz
    )
),
moved AS (
    UPDATE deliveries
    SET status = attempt.status,
        attempt_count = attempt.attempt_number,
        next_attempt_at = attempt.next_attempt_at,
        updated_at = clock_timestamp()
    FROM attempt
    WHERE deliveries.id = attempt.delivery_id
      AND deliveries.attempt_count = attempt.attempt_number - 1
      AND deliveries.status IN ('queued', 'retrying')
    RETURNING deliveries.id
)
INSERT INTO delivery_attempts (
    id, delivery_id, subscription_id, target_url, attempt_number, attempted_at, outcome,
    status_code, error, duration_ms
)
SELECT attempt.id, attempt.delivery_id, attempt.subscription_id, attempt.target_url,
       attempt.attempt_number, attempt.attempted_at, attempt.outcome, attempt.status_code,
       attempt.error, attempt.duration_ms
FROM attempt JOIN moved ON moved.id = attempt.delivery_id
RETURNING delivery_id
"#;

type Outcome = Result<Recorded, StoreError>;

/// Records finished attempts; concurrent records share one statement and one commit.
#[derive(Clone)]
pub struct AttemptRecorder {
    batcher: Batcher<AttemptRecord, Outcome>,
}

impl AttemptRecorder {
    /// `max_batch` bounds the attempts in one statement; the jobs in flight bound it anyway.
    pub fn start(database: DatabaseConnection, max_batch: usize) -> Self {
        let limits = BatchLimits {
            max_batch,
            queue_capacity: max_batch.max(1) * 2,
        };
        let batcher = Batcher::start(limits, move |records| {
            let database = database.clone();
            async move { record(&database, records).await }
        });
        Self { batcher }
    }

    pub async fn record(&self, record: AttemptRecord) -> Outcome {
        self.batcher.submit(record).await?
    }
}

async fn record(database: &DatabaseConnection, records: Vec<AttemptRecord>) -> Vec<Outcome> {
    // Two copies of one job finishing together: one statement would try to log the same
    // attempt twice and fail as a whole, so only the first copy goes in.
    let mut seen = HashSet::new();
    let first_copy: Vec<bool> = records
        .iter()
        .map(|record| seen.insert(record.delivery_id))
        .collect();
    let unique: Vec<&AttemptRecord> = records
        .iter()
        .zip(&first_copy)
        .filter_map(|(record, first)| first.then_some(record))
        .collect();

    let mut failed = HashMap::new();
    let written = match write(database, &unique).await {
        Ok(written) => written,
        // Refused because of one record's values: the others' attempts were made and must be
        // recorded, so write them one at a time and fail only the culprit.
        Err(err) if unique.len() > 1 && refused_for_its_values(&err) => {
            let mut written = HashSet::new();
            for record in &unique {
                match write(database, std::slice::from_ref(record)).await {
                    Ok(ids) => written.extend(ids),
                    Err(err) => {
                        failed.insert(record.delivery_id, StoreError::from(err));
                    }
                }
            }
            written
        }
        Err(err) => {
            let failure = StoreError::from(err);
            return records.iter().map(|_| Err(failure.clone())).collect();
        }
    };

    records
        .iter()
        .zip(first_copy)
        .map(|(record, first)| {
            if let (true, Some(err)) = (first, failed.get(&record.delivery_id)) {
                Err(err.clone())
            } else if first && written.contains(&record.delivery_id.0) {
                Ok(Recorded::Written)
            } else {
                Ok(Recorded::AlreadyRecorded)
            }
        })
        .collect()
}

/// Runs the recording statement; returns the deliveries whose attempt was written.
async fn write(
    database: &DatabaseConnection,
    records: &[&AttemptRecord],
) -> Result<HashSet<Uuid>, DbErr> {
    let rows = records.iter().map(|record| record.to_json()).collect();
    let statement = Statement::from_sql_and_values(
        DbBackend::Postgres,
        RECORD_ATTEMPTS,
        [serde_json::Value::Array(rows).into()],
    );
    let rows = database.query_all_raw(statement).await?;
    Ok(rows
        .iter()
        .filter_map(|row| row.try_get::<Uuid>("", "delivery_id").ok())
        .collect())
}

/// Whether PostgreSQL refused the statement over a value it holds (SQLSTATE classes 22, data
/// exception, and 23, integrity constraint), as opposed to being unreachable.
fn refused_for_its_values(err: &DbErr) -> bool {
    let (DbErr::Exec(RuntimeErr::SqlxError(inner)) | DbErr::Query(RuntimeErr::SqlxError(inner))) =
        err
    else {
        return false;
    };
    match inner.as_ref() {
        sea_orm::sqlx::Error::Database(database) => database
            .code()
            .is_some_and(|code| code.starts_with("22") || code.starts_with("23")),
        _ => false,
    }
}

impl AttemptRecord {
    fn to_json(&self) -> serde_json::Value {
        let status = match self.outcome {
            AttemptOutcome::Success => DeliveryStatus::Delivered,
            AttemptOutcome::FailedAttempt => DeliveryStatus::Retrying,
            AttemptOutcome::Failure => DeliveryStatus::Failed,
        };
        serde_json::json!({
            // Minted from the start time: the attempt log lists attempts by when they began.
            "id": Uuid::new_v7(uuid_timestamp(self.attempted_at)),
            "delivery_id": self.delivery_id.0,
            "subscription_id": self.subscription_id.0,
            "target_url": without_nul(&self.target_url),
            "attempt_number": self.attempt_number,
            "attempted_at": self.attempted_at,
            "outcome": self.outcome,
            "status": status.as_str(),
            "status_code": self.status_code,
            "error": self.error.as_deref().map(without_nul),
            "duration_ms": self.duration_ms,
            "next_attempt_at": self.next_attempt_at,
        })
    }
}

/// PostgreSQL text cannot hold NUL, and error texts quote what other programs said.
fn without_nul(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

fn uuid_timestamp(at: DateTime<Utc>) -> uuid::Timestamp {
    let seconds = u64::try_from(at.timestamp()).unwrap_or(0);
    uuid::Timestamp::from_unix(uuid::NoContext, seconds, at.timestamp_subsec_nanos())
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
