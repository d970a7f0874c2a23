//! `janitor [--once]`: runs passes every `JANITOR_INTERVAL` until SIGTERM or SIGINT, or with
//! `--once` a single pass, exiting non-zero if it failed.

use anyhow::bail;
use janitor::{Janitor, JanitorConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let once = once_flag()?;
    common::telemetry::init()?;
    let config = JanitorConfig::from_env()?;
    let janitor = Janitor::connect(&config).await?;

    if once {
        janitor.run_once().await?;
    } else {
        janitor.run(common::shutdown::on_signal()).await;
    }
    Ok(())
}

fn once_flag() -> anyhow::Result<bool> {
    let mut once = false;
    for argument in std::env::args_os().skip(1) {
        match argument.to_str() {
            Some("--once") => once = true,
            _ => bail!("unexpected argument {argument:?}; usage: janitor [--once]"),
        }
    }
    Ok(once)
}
