//! Retention and recovery.
