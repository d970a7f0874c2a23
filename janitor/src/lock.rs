//! The PostgreSQL advisory lock that lets only one janitor at a time run a pass.

use std::time::Duration;

use sea_orm::sqlx::{self, Connection, PgConnection};

/// Arbitrary but fixed: identifies the janitor's lock among PostgreSQL advisory locks.
const JANITOR_LOCK_KEY: i64 = 0x006a_616e_6974_6f72; // "janitor"

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors from taking the lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot connect to PostgreSQL for the janitor lock")]
    Connect(#[source] sqlx::Error),
    #[error("no connection to PostgreSQL for the janitor lock within {0:?}")]
    ConnectTimeout(Duration),
    #[error("cannot take the janitor lock")]
    Query(#[source] sqlx::Error),
}

/// A held session lock and the connection it belongs to.
///
/// # Design
///
/// The lock lives on a connection of its own, opened per pass and held for the whole pass,
/// not on a pooled one: a pool closes idle or old connections by itself, and with the
/// connection would go the lock, silently, in the middle of a pass. Dropping the guard
/// without [`PassLock::release`] closes the connection, which releases the lock too.
pub struct PassLock {
    connection: PgConnection,
}

impl PassLock {
    /// Takes the lock if no other session holds it; `None` when another janitor does.
    pub async fn try_acquire(database_url: &str) -> Result<Option<Self>, LockError> {
        let mut connection =
            tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(database_url))
                .await
                .map_err(|_| LockError::ConnectTimeout(CONNECT_TIMEOUT))?
                .map_err(LockError::Connect)?;
        let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(JANITOR_LOCK_KEY)
            .fetch_one(&mut connection)
            .await
            .map_err(LockError::Query)?;
        if acquired {
            Ok(Some(Self { connection }))
        } else {
            close(connection).await;
            Ok(None)
        }
    }

    /// Releases the lock and closes its connection.
    pub async fn release(mut self) {
        let unlocked = sqlx::query_scalar::<_, bool>("SELECT pg_advisory_unlock($1)")
            .bind(JANITOR_LOCK_KEY)
            .fetch_one(&mut self.connection)
            .await;
        if let Err(err) = unlocked {
            // Closing the session below releases the lock all the same.
            tracing::debug!(cause = %err, "cannot release the janitor lock explicitly");
        }
        close(self.connection).await;
    }
}

async fn close(connection: PgConnection) {
    if let Err(err) = connection.close().await {
        tracing::debug!(cause = %err, "cannot close the janitor lock connection cleanly");
    }
}
