//! Subscriptions, deliveries, their attempt log and idempotency keys.
//!
//! Written as SQL because the partial indexes and checks matter more here than portability;
//! the README's schema section explains which query each index serves.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
CREATE TABLE subscriptions (
    id          uuid PRIMARY KEY,
    target_url  text NOT NULL,
    secret      text,
    event_types text[] NOT NULL DEFAULT '{}',
    description text,
    enabled     boolean NOT NULL DEFAULT true,
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE deliveries (
    id              uuid PRIMARY KEY,
    subscription_id uuid NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    event_type      text,
    payload         bytea NOT NULL,
    status          text NOT NULL
        CHECK (status IN ('queued', 'retrying', 'delivered', 'failed', 'skipped')),
    attempt_count   integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- A subscription's deliveries, newest first (ids are UUIDv7, so id order is time order).
CREATE INDEX deliveries_by_subscription ON deliveries (subscription_id, id DESC);
-- The same, filtered by status.
CREATE INDEX deliveries_by_subscription_status ON deliveries (subscription_id, status, id DESC);
-- The recovery sweep: unfinished deliveries that have not moved for a while.
CREATE INDEX deliveries_unfinished_by_age ON deliveries (updated_at)
    WHERE status IN ('queued', 'retrying');
-- Payload retention: finished deliveries by age.
CREATE INDEX deliveries_finished_by_age ON deliveries (updated_at)
    WHERE status IN ('delivered', 'failed', 'skipped');

CREATE TABLE delivery_attempts (
    id              uuid PRIMARY KEY,
    delivery_id     uuid NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    -- The delivery's subscription, copied so its recent attempts need no join. No foreign
    -- key: the delivery's already cascades, and a second check per attempt costs a lookup
    -- and a lock on the subscription's row that every worker would share.
    subscription_id uuid NOT NULL,
    target_url      text NOT NULL,
    attempt_number  integer NOT NULL CHECK (attempt_number >= 1),
    attempted_at    timestamptz NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('success', 'failed_attempt', 'failure')),
    status_code     integer,
    error           text,
    duration_ms     bigint NOT NULL,
    UNIQUE (delivery_id, attempt_number)
);

-- A subscription's recent attempts, newest first.
CREATE INDEX delivery_attempts_by_subscription
    ON delivery_attempts (subscription_id, attempted_at DESC, id DESC);
-- Log retention.
CREATE INDEX delivery_attempts_by_time ON delivery_attempts (attempted_at);

CREATE TABLE idempotency_keys (
    subscription_id uuid NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    key             text NOT NULL,
    delivery_id     uuid NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, key)
);

CREATE INDEX idempotency_keys_by_delivery ON idempotency_keys (delivery_id);
CREATE INDEX idempotency_keys_by_time ON idempotency_keys (created_at);
"#;

const DOWN: &str = r#"
DROP TABLE idempotency_keys;
DROP TABLE delivery_attempts;
DROP TABLE deliveries;
DROP TABLE subscriptions;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DOWN).await?;
        Ok(())
    }
}
