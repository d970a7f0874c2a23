//! SeaORM entities for the service's tables, one module per table.

pub mod delivery;
pub mod delivery_attempt;
pub mod idempotency_key;
pub mod subscription;
