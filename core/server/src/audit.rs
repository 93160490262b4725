//! The audit log's intake: entries from the [`crate::auth::Guard`] are
//! batched (up to [`berth_store::acl::MAX_AUDIT_BATCH`] or 200 ms) and
//! committed as one command, so auditing costs a proposal per batch, not
//! per call. A follower hands its batches to the leader over the
//! `Membership.Audit` call (servers only).

use std::time::Duration;

use berth_store::acl::{AclCommand, AuditEntry, MAX_AUDIT_BATCH};
use berth_store::{Command, Envelope, Store};
use tokio::sync::mpsc;

use crate::auth::Caller;

/// Entries waiting at most; past that, new ones are dropped (and counted
/// in the log) rather than holding calls up.
pub const QUEUE: usize = 50_000;

/// Sends entries to the batcher.
#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::Sender<AuditEntry>,
}

impl Auditor {
    /// Starts the batcher over `store`; `forward` hands a follower's batch
    /// to the leader.
    pub fn start(store: Store, forward: Forward) -> Auditor {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, rx, forward));
        Auditor { tx }
    }

    /// An auditor that keeps nothing (in-process tests).
    pub fn none() -> Auditor {
        let (tx, _) = mpsc::channel(1);
        Auditor { tx }
    }

    /// Records that `caller` did `action` at `at_ms` with `outcome`.
    pub fn record(&self, at_ms: u64, caller: &Caller, action: &str, outcome: String) {
        let target = caller.namespace.clone();
        let e = AuditEntry {
            at_ms,
            who: caller.who(),
            action: action.to_string(),
            target,
            outcome,
        };
        if self.tx.try_send(e).is_err() {
            tracing::warn!(action, "audit queue full or closed: entry dropped");
        }
    }
}

/// How a follower hands a batch to the leader (the address of the leader
/// is looked up by the callee).
pub type Forward = std::sync::Arc<
    dyn Fn(Vec<AuditEntry>) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
        + Send
        + Sync,
>;

async fn run(store: Store, mut rx: mpsc::Receiver<AuditEntry>, forward: Forward) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::sleep(Duration::from_millis(200));
        tokio::pin!(deadline);
        while batch.len() < MAX_AUDIT_BATCH {
            tokio::select! {
                e = rx.recv() => match e {
                    Some(e) => batch.push(e),
                    None => break,
                },
                _ = &mut deadline => break,
            }
        }
        commit(&store, &forward, batch).await;
    }
}

/// Commits a batch here (leader) or at the leader, retrying a few times
/// through an election.
pub async fn commit(store: &Store, forward: &Forward, batch: Vec<AuditEntry>) {
    let n = batch.len();
    for attempt in 0..5 {
        if store.is_leader() {
            let env = Envelope {
                request_id: None,
                command: Command::Acl(AclCommand::Audit {
                    entries: batch.clone(),
                }),
                at_ms: 0,
            };
            if store.propose(env).await.is_ok() {
                return;
            }
        } else if forward(batch.clone()).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
    }
    tracing::warn!(entries = n, "audit entries could not be committed");
}
