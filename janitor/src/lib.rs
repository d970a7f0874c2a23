//! The janitor: deletes old attempt logs, finished deliveries and idempotency keys, and
//! re-queues unfinished deliveries whose job JetStream no longer holds.

pub mod config;
mod lock;
mod recovery;
mod retention;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use chrono::{DateTime, TimeDelta, Utc};
use common::jetstream::{self as js, Names};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};
use tokio::sync::Mutex;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

pub use config::JanitorConfig;
pub use lock::LockError;
pub use recovery::SweepError;

use lock::PassLock;
use recovery::{Cursor, Sweep, Swept};

/// How long the API honours an `Idempotency-Key`. Older keys no longer change what the API
/// does, so they are deleted at exactly this age.
const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// Connections in the janitor's pool: a pass runs its statements one at a time. The lock
/// has a connection of its own.
const DATABASE_CONNECTIONS: u32 = 1;

/// Why the janitor could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot connect to PostgreSQL")]
    Database(#[source] DbErr),
    #[error(transparent)]
    Nats(#[from] js::SetupError),
}

/// Why a pass failed. What the pass committed before the failure stays done; the next pass
/// carries on from there.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot read the database clock")]
    Clock(#[source] DbErr),
    #[error("cannot delete expired rows from {table}")]
    Delete {
        table: &'static str,
        #[source]
        source: DbErr,
    },
    #[error("cannot open the job stream for the recovery sweep")]
    Stream(#[source] js::SetupError),
    #[error(transparent)]
    Sweep(#[from] SweepError),
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// False when another janitor held the lock, so this one did nothing.
    pub ran: bool,
    /// True when shutdown stopped the pass between two statements; the counts cover the
    /// work done until then.
    pub interrupted: bool,
    /// Attempt log rows deleted for their age. Attempts that went with their delivery are
    /// not counted.
    pub attempts_deleted: u64,
    /// Finished deliveries deleted, payloads included.
    pub deliveries_deleted: u64,
    /// Idempotency keys deleted for their age. Keys that went with their delivery are not
    /// counted.
    pub idempotency_keys_deleted: u64,
    /// Unfinished deliveries whose job the recovery sweep looked for.
    pub recovery_checked: u64,
    /// Jobs the recovery sweep published again.
    pub requeued: u64,
    /// Jobs the recovery sweep found missing but could not publish again yet: JetStream
    /// dropped them as repeats of a message id used within its duplicate window, which
    /// happens when a job is purged within minutes of its publication. A later pass, once
    /// the window has passed, re-queues them.
    pub requeue_deferred: u64,
    /// Wall time of the pass, lock included.
    pub duration: Duration,
}

/// A connected janitor, ready to run passes.
pub struct Janitor {
    config: JanitorConfig,
    database: DatabaseConnection,
    jetstream: jetstream::Context,
    names: Names,
    /// Where the next recovery sweep starts, so that a backlog longer than one sweep's
    /// limit is covered over several passes instead of re-checking its oldest part.
    cursor: Mutex<Option<Cursor>>,
}

impl Janitor {
    /// Connects to PostgreSQL and NATS and makes sure the job stream exists. Applies no
    /// migrations: that is the API's job, and a pass fails until the tables exist.
    pub async fn connect(config: &JanitorConfig) -> Result<Self, StartError> {
        let database = common::database::connect(&config.common.database_url, DATABASE_CONNECTIONS)
            .await
            .map_err(StartError::Database)?;
        let client = js::connect(&config.common.nats_url).await?;
        let jetstream = js::context(client);
        let names = Names::new(config.common.nats_namespace.clone());
        js::ensure_job_stream(&jetstream, &names).await?;
        Ok(Self {
            config: config.clone(),
            database,
            jetstream,
            names,
            cursor: Mutex::new(None),
        })
    }

    /// Runs one whole pass and logs what it did, or why it failed with what it had done by
    /// then. When another janitor holds the lock, does nothing and says so in the report.
    pub async fn run_once(&self) -> Result<PassReport, PassError> {
        self.pass(&CancellationToken::new()).await
    }

    /// Runs a pass at start and then every interval until `shutdown` is cancelled. A pass
    /// in progress then stops after its current statement. A failed pass (the database or
    /// NATS unavailable) is tried again at the next interval.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(
            interval_ms = millis(self.config.interval),
            log_retention_ms = millis(self.config.log_retention),
            payload_retention_ms = millis(self.config.payload_retention),
            recovery_grace_ms = millis(self.config.recovery_grace),
            batch_size = self.config.batch_size,
            "janitor ready"
        );
        let mut ticks = tokio::time::interval(self.config.interval);
        // After a pass that overran the interval, the next one starts at once and the
        // schedule continues from there, rather than several passes running back to back.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            // A failed pass has logged why; the next interval tries again.
            let _ = self.pass(&shutdown).await;
        }
        tracing::info!("janitor stopped");
    }

    async fn pass(&self, stop: &CancellationToken) -> Result<PassReport, PassError> {
        let started = Instant::now();
        let mut report = PassReport::default();
        let result = self.pass_under_lock(&mut report, stop).await;
        report.duration = started.elapsed();

        match &result {
            Err(err) => tracing::warn!(
                attempts = report.attempts_deleted,
                deliveries = report.deliveries_deleted,
                idempotency_keys = report.idempotency_keys_deleted,
                requeued = report.requeued,
                requeue_deferred = report.requeue_deferred,
                recovery_checked = report.recovery_checked,
                duration_ms = millis(report.duration),
                cause = %error_chain(err),
                "janitor pass failed"
            ),
            Ok(()) if !report.ran => {
                tracing::info!("another janitor is running a pass; skipped this one");
            }
            Ok(()) => tracing::info!(
                attempts = report.attempts_deleted,
                deliveries = report.deliveries_deleted,
                idempotency_keys = report.idempotency_keys_deleted,
                requeued = report.requeued,
                requeue_deferred = report.requeue_deferred,
                recovery_checked = report.recovery_checked,
                interrupted = report.interrupted,
                duration_ms = millis(report.duration),
                "janitor pass done"
            ),
        }
        result.map(|()| report)
    }

    /// Takes the lock, does the work, and releases the lock whatever the outcome.
    async fn pass_under_lock(
        &self,
        report: &mut PassReport,
        stop: &CancellationToken,
    ) -> Result<(), PassError> {
        let Some(lock) = PassLock::try_acquire(&self.config.common.database_url).await? else {
            return Ok(());
        };
        report.ran = true;
        let result = self.work(report, stop).await;
        lock.release().await;
        result
    }

    /// The work of a pass, counted into `report` as it goes, so that a pass that fails or
    /// is interrupted still reports what it did.
    async fn work(
        &self,
        report: &mut PassReport,
        stop: &CancellationToken,
    ) -> Result<(), PassError> {
        let now = self.database_now().await.map_err(PassError::Clock)?;

        // Attempts and keys first, so fewer rows are left to cascade from deliveries.
        let expiries = [
            (
                retention::ATTEMPTS,
                self.config.log_retention,
                &mut report.attempts_deleted,
            ),
            (
                retention::IDEMPOTENCY_KEYS,
                IDEMPOTENCY_WINDOW,
                &mut report.idempotency_keys_deleted,
            ),
            (
                retention::FINISHED_DELIVERIES,
                self.config.payload_retention,
                &mut report.deliveries_deleted,
            ),
        ];
        let batch_size = self.config.batch_size;
        for (expiry, age, deleted) in expiries {
            let cutoff = cutoff(now, age);
            let run = retention::delete_expired(
                &self.database,
                expiry,
                cutoff,
                batch_size,
                deleted,
                stop,
            )
            .await
            .map_err(|source| PassError::Delete {
                table: expiry.table,
                source,
            })?;
            if run == Run::Stopped {
                report.interrupted = true;
                return Ok(());
            }
        }

        // Set up again on every pass, so that a stream deleted since start is recreated and
        // the jobs it lost can be re-queued into it.
        let stream = js::ensure_job_stream(&self.jetstream, &self.names)
            .await
            .map_err(PassError::Stream)?;
        let sweep = Sweep {
            database: &self.database,
            jetstream: &self.jetstream,
            stream: &stream,
            names: &self.names,
            cutoff: cutoff(now, self.config.recovery_grace),
            limit: self.config.recovery_limit,
        };
        let mut cursor = self.cursor.lock().await;
        let mut swept = Swept::default();
        let result = sweep.run(&mut cursor, &mut swept, stop).await;
        report.recovery_checked = swept.checked;
        report.requeued = swept.requeued;
        report.requeue_deferred = swept.deferred;
        if result? == Run::Stopped {
            report.interrupted = true;
        }
        Ok(())
    }

    /// The database's clock. Cutoffs are computed from it because the API stamps and
    /// compares idempotency keys with it, and because it is the one clock every janitor,
    /// API and worker host shares.
    async fn database_now(&self) -> Result<DateTime<Utc>, DbErr> {
        let statement = Statement::from_string(DbBackend::Postgres, "SELECT now() AS now");
        let row = self
            .database
            .query_one_raw(statement)
            .await?
            .ok_or_else(|| DbErr::RecordNotFound("SELECT now() returned no row".to_owned()))?;
        row.try_get("", "now")
    }
}

/// How a run of delete batches or a sweep ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    /// Nothing left to do.
    Finished,
    /// Shutdown was requested; the rest waits for the next pass.
    Stopped,
}

/// The moment `age` before `now`.
fn cutoff(now: DateTime<Utc>, age: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(age)
        .ok()
        .and_then(|age| now.checked_sub_signed(age))
        // Only for ages beyond what the configuration accepts; then nothing is old enough.
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// An error and its causes on one line, joined with ": ".
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}
