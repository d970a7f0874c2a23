//! Event type names, as subscriptions list them and webhooks carry them.

/// Longest event type accepted.
pub const MAX_EVENT_TYPE_LENGTH: usize = 128;

/// Why an event type was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventTypeError {
    #[error("an event type must not be empty")]
    Empty,
    #[error("an event type is at most {MAX_EVENT_TYPE_LENGTH} characters")]
    TooLong,
    #[error("an event type must not contain spaces or control characters")]
    InvalidCharacter,
}

/// Checks an event type such as `order.created` or `invoice:paid`: 1 to 128 characters,
/// none of them white space or control characters.
pub fn validate(event_type: &str) -> Result<(), EventTypeError> {
    if event_type.is_empty() {
        return Err(EventTypeError::Empty);
    }
    if event_type.chars().count() > MAX_EVENT_TYPE_LENGTH {
        return Err(EventTypeError::TooLong);
    }
    if event_type
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(EventTypeError::InvalidCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ordinary_names_pass_and_odd_ones_do_not() {
        for good in ["order.created", "invoice:paid", "a", "ünïcödé-ok"] {
            assert_eq!(validate(good), Ok(()), "{good:?}");
        }
        assert_eq!(validate(""), Err(EventTypeError::Empty));
        assert_eq!(validate("a b"), Err(EventTypeError::InvalidCharacter));
        assert_eq!(validate("a\nb"), Err(EventTypeError::InvalidCharacter));
        assert_eq!(validate("a\u{0}"), Err(EventTypeError::InvalidCharacter));
        assert_eq!(validate(&"x".repeat(129)), Err(EventTypeError::TooLong));
    }

    proptest! {
        #[test]
        fn validation_never_panics_and_accepted_names_are_clean(input in "\\PC{0,200}") {
            if validate(&input).is_ok() {
                prop_assert!(!input.is_empty());
                prop_assert!(!input.chars().any(char::is_whitespace));
            }
        }
    }
}
