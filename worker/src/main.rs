use worker::{Worker, WorkerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init()?;
    let config = WorkerConfig::from_env()?;
    let worker = Worker::connect(&config).await?;
    worker.run(common::shutdown::on_signal()).await;
    Ok(())
}
