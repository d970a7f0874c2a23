//! The log of one HTTP attempt to deliver a webhook.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum AttemptOutcome {
    #[sea_orm(string_value = "success")]
    Success,
    /// Failed, and another attempt will follow.
    #[sea_orm(string_value = "failed_attempt")]
    FailedAttempt,
    /// Failed, and it was the last attempt.
    #[sea_orm(string_value = "failure")]
    Failure,
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "delivery_attempts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub delivery_id: Uuid,
    pub subscription_id: Uuid,
    pub target_url: String,
    /// 1 for the first attempt.
    pub attempt_number: i32,
    pub attempted_at: DateTimeUtc,
    pub outcome: AttemptOutcome,
    /// None when no response arrived (timeout, refused connection).
    pub status_code: Option<i32>,
    /// A short readable cause; None on success.
    pub error: Option<String>,
    pub duration_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::delivery::Entity",
        from = "Column::DeliveryId",
        to = "super::delivery::Column::Id",
        on_delete = "Cascade"
    )]
    Delivery,
}

impl Related<super::delivery::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Delivery.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
