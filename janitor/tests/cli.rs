//! The `janitor` binary: a bad setting stops it with one line naming the variable, and
//! `janitor --once` runs one pass against real PostgreSQL and NATS, its exit code saying
//! whether the pass worked.
//!
//! Uses `TEST_DATABASE_URL` and `TEST_NATS_URL` like the integration tests.

use std::process::{Command, Output};

use sea_orm::ConnectionTrait;

fn janitor(arguments: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_janitor"))
        .args(arguments)
        .env_clear()
        .envs(vars.iter().copied())
        .output()
        .expect("run janitor")
}

#[test]
fn bad_variables_are_named_on_one_line() {
    let database = ("DATABASE_URL", "postgres://127.0.0.1:1/none");
    let cases: [(&[(&str, &str)], &str); 9] = [
        (&[], "DATABASE_URL is required"),
        (
            &[database, ("JANITOR_INTERVAL", "0s")],
            "JANITOR_INTERVAL is invalid",
        ),
        (
            &[database, ("LOG_RETENTION", "soon")],
            "LOG_RETENTION is invalid",
        ),
        (
            &[database, ("PAYLOAD_RETENTION", "72")],
            "PAYLOAD_RETENTION is invalid",
        ),
        (
            &[database, ("RECOVERY_GRACE", "200years")],
            "RECOVERY_GRACE is invalid",
        ),
        (
            &[database, ("JANITOR_BATCH_SIZE", "0")],
            "JANITOR_BATCH_SIZE is invalid",
        ),
        (
            &[database, ("JANITOR_BATCH_SIZE", "lots")],
            "JANITOR_BATCH_SIZE is invalid",
        ),
        (
            &[database, ("NATS_NAMESPACE", "a.b")],
            "NATS_NAMESPACE is invalid",
        ),
        (&[database, ("LOG_FORMAT", "xml")], "LOG_FORMAT is invalid"),
    ];
    for (vars, expected) in cases {
        let output = janitor(&[], vars);

        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{vars:?} started");
        assert!(
            stderr.contains(expected),
            "{vars:?}: expected {expected:?} in {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{vars:?}: {stderr}");
    }
}

#[test]
fn unknown_arguments_are_refused() {
    let output = janitor(&["--twice"], &[]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("usage: janitor [--once]"), "{stderr}");
}

/// A database of its own, dropped at the end, so the test never touches another's tables.
struct ScratchDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    async fn create() -> Self {
        let admin_url = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let name = format!("hookline_janitor_{}", uuid::Uuid::new_v4().simple());
        let admin = common::database::connect(&admin_url, 1)
            .await
            .expect("connect as admin");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        admin.close().await.ok();
        let mut url = url::Url::parse(&admin_url).expect("TEST_DATABASE_URL is a URL");
        url.set_path(&name);
        Self {
            admin_url,
            name,
            url: url.to_string(),
        }
    }

    async fn drop(self) {
        let admin = common::database::connect(&self.admin_url, 1)
            .await
            .expect("connect");
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        admin
            .execute_unprepared(&drop)
            .await
            .expect("drop database");
        admin.close().await.ok();
    }
}

#[tokio::test]
async fn once_runs_a_pass_and_exits_with_its_outcome() {
    let nats_url =
        std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let namespace = format!("t{}", uuid::Uuid::new_v4().simple());
    let database = ScratchDatabase::create().await;
    let vars = [
        ("DATABASE_URL", database.url.as_str()),
        ("NATS_URL", nats_url.as_str()),
        ("NATS_NAMESPACE", namespace.as_str()),
        ("LOG_FORMAT", "json"),
    ];

    // No tables yet: the api has not migrated this database, and the janitor never does.
    let missing_tables = janitor(&["--once"], &vars);
    {
        use migration::MigratorTrait;
        let connection = common::database::connect(&database.url, 1).await.unwrap();
        migration::Migrator::up(&connection, None)
            .await
            .expect("migrate");
        connection.close().await.ok();
    }
    let migrated = janitor(&["--once"], &vars);

    let client = async_nats::connect(&nats_url).await.unwrap();
    let _ = async_nats::jetstream::new(client)
        .delete_stream(format!("{namespace}_deliveries"))
        .await;
    database.drop().await;
    let logs = |output: &Output| {
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        format!("stdout: {stdout}\nstderr: {stderr}")
    };
    assert!(
        !missing_tables.status.success(),
        "{}",
        logs(&missing_tables)
    );
    assert!(
        logs(&missing_tables).contains("delivery_attempts"),
        "the failure names what was missing: {}",
        logs(&missing_tables)
    );
    assert!(migrated.status.success(), "{}", logs(&migrated));
    assert!(
        logs(&migrated).contains("janitor pass done"),
        "{}",
        logs(&migrated)
    );
    assert!(
        !logs(&migrated).contains("janitor ready"),
        "--once does not loop"
    );
}
