//! Checks on subscription fields, each failure a `422` naming the field.

use common::event_type;
use common::target::{self, TargetError};

use crate::error::ApiError;

const MAX_SECRET_LENGTH: usize = 256;
const MAX_DESCRIPTION_LENGTH: usize = 1024;
const MAX_EVENT_TYPES: usize = 64;

pub async fn target_url(raw: &str, allow_private: bool) -> Result<String, ApiError> {
    let url = target::parse_target_url(raw).map_err(target_error)?;
    if !allow_private {
        target::check_public_host(&url)
            .await
            .map_err(target_error)?;
    }
    Ok(url.to_string())
}

fn target_error(err: TargetError) -> ApiError {
    let code = match err {
        TargetError::NonPublicAddress => "non_public_target",
        TargetError::Unresolvable => "unresolvable_target",
        _ => "invalid_target_url",
    };
    ApiError::unprocessable(code, err.to_string())
}

pub fn secret(secret: &str) -> Result<(), ApiError> {
    let length = secret.chars().count();
    if length == 0 || length > MAX_SECRET_LENGTH || secret.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "invalid_secret",
            format!("secret must be 1 to {MAX_SECRET_LENGTH} characters, none of them control"),
        ));
    }
    Ok(())
}

pub fn description(description: &str) -> Result<(), ApiError> {
    // Line breaks and tabs are fine in free text; other control characters (NUL above all,
    // which PostgreSQL cannot store) are not.
    let unprintable = description
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\t'));
    if description.chars().count() > MAX_DESCRIPTION_LENGTH || unprintable {
        return Err(ApiError::unprocessable(
            "invalid_description",
            format!(
                "description is at most {MAX_DESCRIPTION_LENGTH} characters, without control \
                 characters other than line breaks and tabs"
            ),
        ));
    }
    Ok(())
}

/// Validates event types and drops repeats, keeping the first occurrence's order.
pub fn event_types(types: Vec<String>) -> Result<Vec<String>, ApiError> {
    if types.len() > MAX_EVENT_TYPES {
        return Err(ApiError::unprocessable(
            "invalid_event_types",
            format!("at most {MAX_EVENT_TYPES} event types"),
        ));
    }
    let mut unique: Vec<String> = Vec::with_capacity(types.len());
    for kind in types {
        event_type::validate(&kind)
            .map_err(|err| ApiError::unprocessable("invalid_event_types", err.to_string()))?;
        if !unique.contains(&kind) {
            unique.push(kind);
        }
    }
    Ok(unique)
}
