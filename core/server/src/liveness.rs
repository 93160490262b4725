//! Node liveness, on its own path: a heartbeat touches one small map (never
//! the state lock, never a queue behind scheduling), and its answer paces
//! the node so the servers' heartbeat load stays near a fixed rate however
//! many nodes there are (as Nomad hands each client its next TTL).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_model::node::NodeStatus;
use berth_store::{Command, Envelope, Store};

/// The default ceiling on heartbeats per second across the cluster.
pub const MAX_HEARTBEATS_PER_SECOND: u32 = 200;

#[derive(Default)]
struct Inner {
    last: HashMap<String, Instant>,
    /// Nodes registered in the state (synced by the liveness loop).
    known: HashSet<String>,
}

/// Heartbeats received by this server, and the pacing it hands out.
pub struct Liveness {
    inner: Mutex<Inner>,
    /// A node silent this long (plus its pacing) is marked down.
    pub timeout: Duration,
    /// Heartbeats per second the cluster aims at, at most.
    pub max_rate: u32,
}

impl Liveness {
    /// Liveness with a base timeout and a heartbeat-rate ceiling.
    pub fn new(timeout: Duration, max_rate: u32) -> Liveness {
        Liveness {
            inner: Mutex::new(Inner::default()),
            timeout,
            max_rate: max_rate.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long a node waits between heartbeats: enough that `nodes`
    /// nodes send at most `max_rate` a second (zero: the node's own pace).
    pub fn interval(&self) -> Duration {
        let nodes = self.lock().known.len() as u64;
        Duration::from_millis(nodes * 1000 / u64::from(self.max_rate))
    }

    /// How long a node may stay silent before it is marked down: the base
    /// timeout plus two of the intervals handed out.
    pub fn deadline(&self) -> Duration {
        self.timeout + 2 * self.interval()
    }

    /// Records a heartbeat from a node the state knows. `false`: unknown.
    pub fn beat(&self, node: &str, registered: impl FnOnce() -> bool) -> bool {
        let mut g = self.lock();
        if !g.known.contains(node) {
            drop(g);
            // A node registered moments ago: the slow path asks the state.
            if !registered() {
                return false;
            }
            g = self.lock();
            g.known.insert(node.to_string());
        }
        g.last.insert(node.to_string(), Instant::now());
        true
    }

    /// Records a registration (it counts as a heartbeat).
    pub fn registered(&self, node: &str) {
        let mut g = self.lock();
        g.known.insert(node.to_string());
        g.last.insert(node.to_string(), Instant::now());
    }

    /// On the leader: marks nodes down when their heartbeats stop, and ready
    /// again when they resume. A new leader gives every node a full deadline.
    pub async fn run(self: Arc<Self>, store: Store) {
        let mut leader_since: Option<Instant> = None;
        loop {
            tokio::time::sleep(
                (self.timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(1)),
            )
            .await;
            if store.is_closed() {
                return;
            }
            if !store.is_leader() {
                leader_since = None;
                continue;
            }
            let since = *leader_since.get_or_insert_with(Instant::now);
            let changes = self.judge(&store, since);
            for (name, status) in changes {
                tracing::info!(node = %name, status = status.as_str(), "node status changed");
                let cmd = Command::SetNodeStatus { name, status };
                if let Err(e) = store
                    .propose(Envelope {
                        at_ms: 0,
                        request_id: None,
                        command: cmd,
                    })
                    .await
                {
                    tracing::warn!(error = %e, "committing node status failed");
                }
            }
        }
    }

    /// The status changes due now; also refreshes the known nodes.
    fn judge(&self, store: &Store, since: Instant) -> Vec<(String, NodeStatus)> {
        let nodes: Vec<(String, NodeStatus)> = store
            .read()
            .nodes
            .values()
            .map(|n| (n.info.name.clone(), n.status))
            .collect();
        let deadline = self.deadline();
        let mut g = self.lock();
        g.known = nodes.iter().map(|(n, _)| n.clone()).collect();
        let Inner { last, known } = &mut *g;
        last.retain(|n, _| known.contains(n));
        nodes
            .into_iter()
            .filter_map(|(name, status)| {
                let seen = last.get(&name).copied().unwrap_or(since).max(since);
                let want = if seen.elapsed() < deadline {
                    NodeStatus::Ready
                } else {
                    NodeStatus::Down
                };
                (want != status).then_some((name, want))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_keeps_the_rate_and_unknown_nodes_are_refused() {
        let l = Liveness::new(Duration::from_secs(10), 100);
        assert_eq!(l.interval(), Duration::ZERO);
        for i in 0..5000 {
            l.registered(&format!("n{i}"));
        }
        // 5,000 nodes at 100/s: one heartbeat each every 50 s.
        assert_eq!(l.interval(), Duration::from_secs(50));
        assert_eq!(l.deadline(), Duration::from_secs(110));
        assert!(l.beat("n1", || unreachable!("known nodes skip the state")));
        assert!(!l.beat("ghost", || false));
        assert!(l.beat("new", || true));
    }
}
