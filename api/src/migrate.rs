//! Applying migrations at start, safely when several API processes start at once.

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DbErr};

/// Arbitrary but fixed: identifies the migration lock among PostgreSQL advisory locks.
const MIGRATION_LOCK_KEY: i64 = 0x686f_6f6b_6c69_6e65; // "hookline"

/// Applies pending migrations under a session advisory lock. SeaORM's migrator takes no
/// lock of its own, so two processes could otherwise run the same migration twice.
pub async fn apply(database_url: &str) -> Result<(), DbErr> {
    // One dedicated connection: a session lock belongs to the connection that took it.
    let connection = common::database::connect(database_url, 1).await?;
    connection
        .execute_unprepared(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
        .await?;
    let result = Migrator::up(&connection, None).await;
    let unlock = connection
        .execute_unprepared(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
        .await;
    connection.close().await?;
    result?;
    unlock.map(|_| ())
}
