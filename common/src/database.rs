//! Connecting to PostgreSQL.

use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

/// Opens a connection pool. Statement logging stays off: at info level it would write every
/// query, payloads included, into the service log.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    Database::connect(options(url, max_connections)).await
}

/// Opens a connection pool whose prepared statements are planned for their actual
/// parameters on every execution.
///
/// For statements that take a whole batch (a list of ids, a set of rows) the best plan
/// depends on the batch and on how big the tables have grown. PostgreSQL's cached generic
/// plan is chosen once per connection, often while the tables are still empty, and can stay
/// a sequential scan long after an index lookup has become the right choice. Planning each
/// execution costs a fraction of a millisecond per batch, not per row.
pub async fn connect_planning_each_execution(
    url: &str,
    max_connections: u32,
) -> Result<DatabaseConnection, DbErr> {
    let mut options = options(url, max_connections);
    options.map_sqlx_postgres_opts(|connection| {
        connection.options([("plan_cache_mode", "force_custom_plan")])
    });
    Database::connect(options).await
}

fn options(url: &str, max_connections: u32) -> ConnectOptions {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        // A ping on every checkout costs a round trip per query on the hot paths; checking
        // only connections idle for a while still catches ones the server dropped.
        .test_before_acquire_if_idle_for(Duration::from_secs(10))
        .sqlx_logging(false);
    options
}
