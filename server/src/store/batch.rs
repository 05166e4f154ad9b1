//! Group commit for heartbeats.
//!
//! Handlers hand each heartbeat to a [`HeartbeatWriter`] and wait. A writer task takes whatever
//! is queued (up to `max_batch`), writes it with one [`Store::record_heartbeats`] transaction,
//! and only then answers every waiting handler. One commit (and one fsync) thus serves many
//! requests, and a heartbeat is acknowledged only after it is durable.
//!
//! With several writers (PostgreSQL), heartbeats are sharded by service name: each service
//! always goes to the same writer, so concurrent transactions touch disjoint service rows and
//! never wait on each other's row locks, while their commits overlap (and PostgreSQL flushes
//! them together).

use std::sync::Arc;

use std::hash::{BuildHasher, RandomState};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{HeartbeatOutcome, NewHeartbeat, Store, StoreError};

/// Capacity of each writer's queue; a full queue pushes back on handlers.
const QUEUE_CAPACITY: usize = 8_192;

struct Pending {
    heartbeat: NewHeartbeat,
    reply: oneshot::Sender<Result<HeartbeatOutcome, WriteError>>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("the heartbeat writer is shutting down")]
    ShuttingDown,
    #[error("database unavailable: {0}")]
    Store(String),
}

#[derive(Clone)]
pub struct HeartbeatWriter {
    shards: Arc<[mpsc::Sender<Pending>]>,
    hasher: RandomState,
}

impl HeartbeatWriter {
    /// Starts `writers` writer tasks on `tracker`. They finish what is queued and stop when
    /// `shutdown` is cancelled.
    pub fn spawn(
        store: Arc<dyn Store>,
        writers: usize,
        max_batch: usize,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let shards: Vec<_> = (0..writers.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
                tracker.spawn(writer_loop(
                    store.clone(),
                    rx,
                    max_batch.max(1),
                    shutdown.clone(),
                ));
                tx
            })
            .collect();
        Self {
            shards: shards.into(),
            hasher: RandomState::new(),
        }
    }

    /// Queues one heartbeat and waits until its batch is committed.
    pub async fn record(&self, heartbeat: NewHeartbeat) -> Result<HeartbeatOutcome, WriteError> {
        let (reply, wait) = oneshot::channel();
        let shard = (self.hasher.hash_one(&heartbeat.name_key) % self.shards.len() as u64) as usize;
        self.shards[shard]
            .send(Pending { heartbeat, reply })
            .await
            .map_err(|_| WriteError::ShuttingDown)?;
        wait.await.map_err(|_| WriteError::ShuttingDown)?
    }
}

async fn writer_loop(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<Pending>,
    max_batch: usize,
    shutdown: CancellationToken,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(max_batch);
    loop {
        let first = tokio::select! {
            biased;
            item = rx.recv() => item,
            () = shutdown.cancelled() => {
                // Stop accepting, then drain what is already queued.
                rx.close();
                rx.recv().await
            }
        };
        let Some(first) = first else { return };
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let inputs: Vec<NewHeartbeat> = batch.iter().map(|p| p.heartbeat.clone()).collect();
        metrics::histogram!("medic_heartbeat_batch_size").record(inputs.len() as f64);
        let span = tracing::info_span!("heartbeat_batch", size = inputs.len());
        let written = tracing::Instrument::instrument(store.record_heartbeats(&inputs), span);
        match written.await {
            Ok(outcomes) if outcomes.len() == batch.len() => {
                for (p, o) in batch.drain(..).zip(outcomes) {
                    let _ = p.reply.send(Ok(o));
                }
            }
            Ok(_) => fail_all(&mut batch, "store returned a wrong number of outcomes"),
            Err(e) => fail_all(&mut batch, &store_error_text(&e)),
        }
    }
}

fn store_error_text(e: &StoreError) -> String {
    e.to_string()
}

fn fail_all(batch: &mut Vec<Pending>, why: &str) {
    tracing::warn!(error = why, size = batch.len(), "heartbeat batch failed");
    for p in batch.drain(..) {
        let _ = p.reply.send(Err(WriteError::Store(why.to_owned())));
    }
}
