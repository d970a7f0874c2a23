//! A run's own PostgreSQL database and NATS namespace, created empty and always removed.

use std::time::Duration;

use anyhow::Context as _;
use common::jetstream::Names;
use sea_orm::ConnectionTrait;

/// The oldest nats-server the service is known to work with. Debian ships 2.9, whose
/// JetStream lacks behaviour the service relies on; a run against it measures nothing useful.
const MIN_NATS_VERSION: (u64, u64) = (2, 10);

/// The database and namespace of one run. Dropping it without [`Environment::remove`] (an
/// error or Ctrl-C unwinding past it) still removes both, on a thread of its own.
pub struct Environment {
    /// The service's connection string for the run's database.
    pub database_url: String,
    pub names: Names,
    pub nats_url: String,
    /// What the server reported about itself, for the report.
    pub nats_version: String,
    pub postgres_version: String,
    admin_url: String,
    database_name: String,
    removed: bool,
}

impl Environment {
    pub async fn create(admin_url: &str, nats_url: &str) -> anyhow::Result<Self> {
        let nats_version = check_nats(nats_url).await?;

        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let database_name = format!("hookline_bench_{suffix}");
        let admin = common::database::connect(admin_url, 1)
            .await
            .with_context(|| format!("cannot connect to PostgreSQL at {}", redact(admin_url)))?;
        let postgres_version = admin
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SHOW server_version",
            ))
            .await
            .ok()
            .flatten()
            .and_then(|row| row.try_get::<String>("", "server_version").ok())
            .unwrap_or_default();
        // The name is ours (hex digits only), so pasting it into SQL is safe.
        admin
            .execute_unprepared(&format!("CREATE DATABASE {database_name}"))
            .await
            .context("cannot create the run's database")?;
        let _ = admin.close().await;

        let mut database_url = url::Url::parse(admin_url).context("--database-url is not a URL")?;
        database_url.set_path(&database_name);
        Ok(Self {
            database_url: database_url.to_string(),
            names: Names::new(format!("bench{}", &suffix[..16])),
            nats_url: nats_url.to_owned(),
            nats_version,
            postgres_version,
            admin_url: admin_url.to_owned(),
            database_name,
            removed: false,
        })
    }

    /// Deletes the stream and the bucket, then drops the database. Stop the services first:
    /// a running api would recreate what was deleted.
    pub async fn remove(mut self) -> anyhow::Result<()> {
        self.removed = true;
        remove(
            &self.admin_url,
            &self.nats_url,
            &self.database_name,
            &self.names,
        )
        .await
    }

    /// Counts the run's deliveries by status, to cross-check what the receiver saw.
    pub async fn delivery_statuses(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let database = common::database::connect(&self.database_url, 1).await?;
        let rows = database
            .query_all_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT status::text AS status, count(*) AS count FROM deliveries \
                 GROUP BY status ORDER BY status",
            ))
            .await?;
        let _ = database.close().await;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get::<String>("", "status")?,
                    row.try_get::<i64>("", "count")?,
                ))
            })
            .collect()
    }

    /// Jobs still in the work-queue stream; zero once every delivery is acknowledged.
    pub async fn jobs_left(&self) -> anyhow::Result<u64> {
        let client = async_nats::connect(&self.nats_url).await?;
        let jetstream = async_nats::jetstream::new(client);
        let mut stream = jetstream.get_stream(self.names.job_stream()).await?;
        Ok(stream.info().await?.state.messages)
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let (admin_url, nats_url) = (self.admin_url.clone(), self.nats_url.clone());
        let (database_name, names) = (self.database_name.clone(), self.names.clone());
        // Drop may run on a runtime thread, which cannot block on async work: clean up on a
        // thread with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(async {
                    if let Err(err) = remove(&admin_url, &nats_url, &database_name, &names).await {
                        eprintln!("bench: cleanup incomplete: {err:#}");
                    }
                }),
                Err(err) => eprintln!("bench: cannot clean up {database_name}: {err}"),
            }
        });
        let _ = cleanup.join();
    }
}

async fn remove(
    admin_url: &str,
    nats_url: &str,
    database_name: &str,
    names: &Names,
) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), async_nats::connect(nats_url)).await {
        Ok(Ok(client)) => {
            let jetstream = async_nats::jetstream::new(client);
            // Missing objects are fine: the run may have stopped before creating them.
            let _ = jetstream.delete_stream(names.job_stream()).await;
            let _ = jetstream
                .delete_key_value(names.subscription_bucket())
                .await;
        }
        Ok(Err(err)) => failures.push(format!("NATS: {err}")),
        Err(_) => failures.push("NATS: connect timed out".to_owned()),
    }
    match common::database::connect(admin_url, 1).await {
        Ok(admin) => {
            // FORCE ends sessions a killed service may have left behind.
            let drop = format!("DROP DATABASE IF EXISTS {database_name} WITH (FORCE)");
            if let Err(err) = admin.execute_unprepared(&drop).await {
                failures.push(format!("dropping {database_name}: {err}"));
            }
            let _ = admin.close().await;
        }
        Err(err) => failures.push(format!("PostgreSQL: {err}")),
    }
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "{}; remove {database_name} and namespace {} by hand",
            failures.join("; "),
            names.namespace()
        )
    }
}

/// Connects to NATS and refuses a server too old for the service.
async fn check_nats(nats_url: &str) -> anyhow::Result<String> {
    let client = tokio::time::timeout(Duration::from_secs(10), async_nats::connect(nats_url))
        .await
        .with_context(|| format!("connecting to NATS at {nats_url} timed out"))?
        .with_context(|| format!("cannot connect to NATS at {nats_url}"))?;
    let info = client.server_info();
    if !info.jetstream {
        anyhow::bail!("nats-server at {nats_url} runs without JetStream (start it with -js)");
    }
    let mut parts = info.version.split('.').map(|part| part.parse::<u64>().ok());
    let version = (parts.next().flatten(), parts.next().flatten());
    if let (Some(major), Some(minor)) = version
        && (major, minor) < MIN_NATS_VERSION
    {
        anyhow::bail!(
            "nats-server at {nats_url} is {}, older than {}.{}: JetStream there lacks \
             behaviour hookline relies on; pass --nats-url of a current server",
            info.version,
            MIN_NATS_VERSION.0,
            MIN_NATS_VERSION.1
        );
    }
    Ok(info.version)
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}
