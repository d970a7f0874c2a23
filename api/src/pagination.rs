//! Cursor paging over UUIDv7-keyed tables, newest first.
//!
//! The cursor is the id of the last item of the previous page. Ids are time-ordered, so
//! "ids below the cursor, descending" is a stable walk through the table by index, and
//! rows inserted meanwhile never shift a page.

use uuid::Uuid;

use crate::error::ApiError;

pub fn parse_cursor(cursor: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    cursor
        .map(|raw| {
            Uuid::parse_str(raw).map_err(|_| {
                ApiError::bad_request("invalid_cursor", "cursor must be a next_cursor value")
            })
        })
        .transpose()
}

/// Given up to `limit + 1` rows, returns the page and the cursor of the next one.
pub fn split_page<T>(
    mut rows: Vec<T>,
    limit: u64,
    id: impl Fn(&T) -> Uuid,
) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(|row| id(row).to_string());
        (rows, next)
    } else {
        (rows, None)
    }
}
