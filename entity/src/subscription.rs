//! A subscriber's endpoint: where webhooks go and how they are signed.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "subscriptions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub target_url: String,
    /// HMAC key for outgoing and incoming signatures; never leaves the service.
    pub secret: Option<String>,
    /// Event types this subscription receives; empty means every event.
    pub event_types: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    /// Incremented on every update so that cache writers can tell newer from older.
    pub version: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::delivery::Entity")]
    Delivery,
}

impl Related<super::delivery::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Delivery.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
