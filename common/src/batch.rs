//! Group execution: many concurrent callers, one database round trip.
//!
//! Each caller submits one item and waits for its own result. One runner task takes
//! whatever has queued up, hands it to one call of the batch function, and answers every
//! caller. Under light load a batch holds one item and costs what a lone call would; under
//! heavy load the items that arrive while a batch is in the database form the next one, so
//! a commit's disk flush or a query's round trip is shared.
//!
//! There is deliberately one batch in progress at a time. With several, an idle runner takes
//! each item as it arrives, batches stay small, and the database spends its time on
//! per-statement work: on the two-core benchmark machine one runner instead of three or four
//! per batcher cut PostgreSQL's CPU per webhook by a fifth and raised throughput by a quarter.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

/// How a [`Batcher`] runs.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most items handed to one call of the batch function.
    pub max_batch: usize,
    /// Items waiting for the runner before submitters wait to queue theirs.
    pub queue_capacity: usize,
}

/// The batcher's runner has stopped, or the batch function gave no answer for an item.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the batch runner stopped before answering")]
pub struct Unanswered;

struct Submitted<T, R> {
    item: T,
    reply: oneshot::Sender<R>,
}

/// Submits items to be handled in batches; cheap to clone.
pub struct Batcher<T, R> {
    queue: mpsc::Sender<Submitted<T, R>>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<T, R> Batcher<T, R>
where
    T: Send + 'static,
    R: Send + 'static,
{
    /// Starts the runner on the current Tokio runtime. `handle` receives up to `max_batch`
    /// items and returns one result per item, in the same order; an item left without a
    /// result gets [`Unanswered`]. The runner stops when the last clone of the batcher is
    /// dropped.
    pub fn start<F, Fut>(limits: BatchLimits, handle: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let (queue, receiver) = mpsc::channel(limits.queue_capacity.max(1));
        tokio::spawn(run(receiver, handle, limits.max_batch.max(1)));
        Self { queue }
    }

    /// Queues one item and waits for its batch to be handled.
    pub async fn submit(&self, item: T) -> Result<R, Unanswered> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Submitted { item, reply })
            .await
            .map_err(|_| Unanswered)?;
        answer.await.map_err(|_| Unanswered)
    }
}

async fn run<T, R, F, Fut>(
    mut receiver: mpsc::Receiver<Submitted<T, R>>,
    handle: F,
    max_batch: usize,
) where
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = Vec<R>> + Send + 'static,
    R: Send + 'static,
{
    let mut batch = Vec::with_capacity(max_batch);
    while receiver.recv_many(&mut batch, max_batch).await > 0 {
        let (items, replies): (Vec<T>, Vec<oneshot::Sender<R>>) = batch
            .drain(..)
            .map(|submitted| (submitted.item, submitted.reply))
            .unzip();
        // A task of its own, so that a batch that panics fails only its own callers (they
        // get `Unanswered`) instead of taking the one runner, and every later batch, with it.
        let results = tokio::spawn(handle(items)).await.unwrap_or_else(|err| {
            tracing::error!(cause = %err, "a batch failed without answering");
            Vec::new()
        });
        for (reply, result) in replies.into_iter().zip(results) {
            // The caller may have given up waiting; its result has nowhere to go.
            let _ = reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn every_caller_gets_the_result_for_its_own_item() {
        let batcher = Batcher::start(
            BatchLimits {
                max_batch: 8,
                queue_capacity: 16,
            },
            |items: Vec<u32>| async move { items.into_iter().map(|n| n * 10).collect() },
        );

        let calls = (0..100).map(|n| {
            let batcher = batcher.clone();
            tokio::spawn(async move { (n, batcher.submit(n).await) })
        });
        for call in futures::future::join_all(calls).await {
            let (n, result) = call.expect("caller task");
            assert_eq!(result.expect("answered"), n * 10);
        }
    }

    #[tokio::test]
    async fn concurrent_items_share_a_batch_up_to_the_limit() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = sizes.clone();
        let batcher = Batcher::start(
            BatchLimits {
                max_batch: 5,
                queue_capacity: 64,
            },
            move |items: Vec<u32>| {
                recorded.lock().expect("sizes").push(items.len());
                async move { items }
            },
        );

        let calls: Vec<_> = (0..20).map(|n| batcher.submit(n)).collect();
        futures::future::join_all(calls).await;

        let sizes = sizes.lock().expect("sizes").clone();
        assert_eq!(sizes.iter().sum::<usize>(), 20);
        assert!(sizes.iter().all(|&size| size <= 5), "{sizes:?}");
        assert!(sizes.len() < 20, "some items shared a batch: {sizes:?}");
    }

    #[tokio::test]
    async fn a_panicking_batch_fails_its_callers_and_the_next_batch_still_runs() {
        let batcher = Batcher::start(
            BatchLimits {
                max_batch: 4,
                queue_capacity: 4,
            },
            |items: Vec<u32>| async move {
                assert!(!items.contains(&13), "unlucky item");
                items
            },
        );

        assert!(matches!(batcher.submit(13).await, Err(Unanswered)));
        assert_eq!(batcher.submit(7).await.expect("answered"), 7);
    }

    #[tokio::test]
    async fn an_item_without_a_result_is_reported_unanswered() {
        let batcher = Batcher::start(
            BatchLimits {
                max_batch: 4,
                queue_capacity: 4,
            },
            |_items: Vec<u32>| async { Vec::<u32>::new() },
        );

        assert!(matches!(batcher.submit(1).await, Err(Unanswered)));
    }
}
