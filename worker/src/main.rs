use worker::{Worker, WorkerConfig};

// glibc's allocator took a fifth of the CPU time on the request and delivery paths in
// profiles (many small, short-lived allocations across threads); mimalloc halves that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init()?;
    let config = WorkerConfig::from_env()?;
    let worker = Worker::connect(&config).await?;
    worker.run(common::shutdown::on_signal()).await;
    Ok(())
}
