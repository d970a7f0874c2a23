//! Logging set-up from `RUST_LOG` and `LOG_FORMAT`.

use tracing_subscriber::EnvFilter;

use crate::config::{self, ConfigError};

/// Installs the global subscriber. `LOG_FORMAT` is `json` (default) or `pretty`; `RUST_LOG`
/// is a tracing filter, default `info`.
pub fn init() -> Result<(), ConfigError> {
    let filter = match config::optional("RUST_LOG")? {
        Some(directives) => {
            EnvFilter::try_new(&directives).map_err(|err| ConfigError::Invalid {
                name: "RUST_LOG",
                reason: err.to_string(),
            })?
        }
        None => EnvFilter::new("info"),
    };
    let format = config::string_or("LOG_FORMAT", "json")?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format.as_str() {
        "json" => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        "pretty" => builder.init(),
        other => {
            return Err(ConfigError::Invalid {
                name: "LOG_FORMAT",
                reason: format!("expected json or pretty, got {other:?}"),
            });
        }
    }
    Ok(())
}
