//! The cluster's event stream (`berth events`, `GET /v1/events`): task
//! changes and the store's notices (nodes up, down and drained,
//! deployments started and ended, preemptions, plugin rollouts, quota
//! refusals), kept for a while and sent to watchers live.
//!
//! Every server derives the same entries from the same applied log, so
//! an event's id, `INDEX.SEQ` (the raft index whose apply produced it and
//! its place there), means the same thing on any server: a watcher that
//! reconnects elsewhere resumes where it stopped. The history is bounded
//! ([`KEEP`] entries); a watcher resuming from before it is told how much
//! it missed. An entry is converted to its message only when sent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use berth_model::task::{Task, TaskState};
use berth_proto as pb;
use berth_store::{Event, Store};
use tokio::sync::broadcast;

/// Events kept for watchers that resume.
pub const KEEP: usize = 10_000;

/// An event's place in the log: (raft index, sequence within the apply).
pub type Key = (u64, u32);

/// One kept event.
#[derive(Debug)]
pub struct Entry {
    /// Its place, the id's two numbers.
    pub key: Key,
    /// When this server saw it (ms since the Unix epoch).
    pub at_ms: u64,
    /// task | node | deployment | preemption | plugin | quota
    pub kind: &'static str,
    /// The task, node, app or plugin.
    pub subject: String,
    /// The app's namespace ("" for cluster-wide events).
    pub namespace: String,
    /// What happened.
    pub action: String,
    /// One line for people.
    pub message: String,
    /// The task, for task events.
    pub task: Option<Box<Task>>,
}

impl Entry {
    /// Whether a watcher that did not ask for `all` gets it: everything
    /// but task changes, and tasks that failed.
    pub fn notable(&self) -> bool {
        match &self.task {
            Some(t) => t.state == TaskState::Failed,
            None => true,
        }
    }

    /// The message sent to watchers.
    pub fn to_proto(&self) -> pb::ClusterEvent {
        pb::ClusterEvent {
            id: id_of(self.key),
            at_ms: self.at_ms,
            kind: self.kind.into(),
            subject: self.subject.clone(),
            namespace: self.namespace.clone(),
            action: self.action.clone(),
            message: self.message.clone(),
            task: self.task.as_deref().map(crate::convert::task),
        }
    }
}

/// `INDEX.SEQ`.
pub fn id_of(k: Key) -> String {
    format!("{}.{}", k.0, k.1)
}

/// Parses an event id; an error names the field.
pub fn parse_id(s: &str) -> Result<Key, String> {
    let bad = || format!("since: {s:?} is not an event id (INDEX.SEQ)");
    let (i, q) = s.split_once('.').ok_or_else(bad)?;
    Ok((i.parse().map_err(|_| bad())?, q.parse().map_err(|_| bad())?))
}

#[derive(Default)]
struct Ring {
    kept: VecDeque<Arc<Entry>>,
    /// The newest key dropped from the front (none dropped: (0, 0)).
    dropped: Key,
    /// The newest key seen.
    last: Key,
}

/// The kept events and the live feed.
pub struct EventLog {
    ring: Mutex<Ring>,
    live: broadcast::Sender<Arc<Entry>>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventLog")
    }
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            ring: Mutex::default(),
            live: broadcast::channel(4096).0,
        }
    }
}

/// Where a watcher starts: the kept events after its point, whether some
/// it asked for are gone, and the live feed from there.
pub struct Start {
    /// Kept events after the resume point, oldest first.
    pub backlog: Vec<Arc<Entry>>,
    /// Events after the resume point that are no longer kept (the newest
    /// dropped key), if any.
    pub lost: Option<Key>,
    /// What comes next.
    pub live: broadcast::Receiver<Arc<Entry>>,
}

impl EventLog {
    /// Follows `store`'s applies for as long as it runs.
    pub fn start(store: Store) -> Arc<EventLog> {
        let log = Arc::new(EventLog::default());
        let l = log.clone();
        tokio::spawn(async move {
            loop {
                let mut sub = store.subscribe();
                while let Some(batch) = sub.recv().await {
                    l.take(&store, batch.index, &batch.events);
                }
                if store.is_closed() {
                    return;
                }
                // Fell behind: pick up from the next batch (what fell
                // between is lost to the history, not to the state).
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
        log
    }

    /// Records the events of the apply at `index`.
    pub fn take(&self, store: &Store, index: u64, events: &[Event]) {
        let interesting = events
            .iter()
            .any(|e| matches!(e, Event::TaskUpdated(_) | Event::Notice(_)));
        if !interesting {
            return;
        }
        let at_ms = berth_store::command::now_ms();
        let mut out = Vec::new();
        {
            let state = store.read();
            let mut seq = 0u32;
            for e in events {
                let entry = match e {
                    Event::TaskUpdated(t) => Entry {
                        key: (index, seq),
                        at_ms,
                        kind: "task",
                        subject: t.id.clone(),
                        namespace: state
                            .apps
                            .get(&t.app)
                            .map(|a| a.spec.namespace.clone())
                            .unwrap_or_default(),
                        action: t.state.as_str().into(),
                        message: t.message.clone(),
                        task: Some(t.clone()),
                    },
                    Event::Notice(n) => Entry {
                        key: (index, seq),
                        at_ms,
                        kind: n.kind,
                        subject: n.subject.clone(),
                        namespace: n.namespace.clone(),
                        action: n.action.clone(),
                        message: n.message.clone(),
                        task: None,
                    },
                    _ => continue,
                };
                seq += 1;
                out.push(Arc::new(entry));
            }
        }
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        for e in out {
            if e.key <= ring.last {
                continue; // replayed after a restart of the subscription
            }
            ring.last = e.key;
            ring.kept.push_back(e.clone());
            if ring.kept.len() > KEEP
                && let Some(old) = ring.kept.pop_front()
            {
                ring.dropped = old.key;
            }
            let _ = self.live.send(e);
        }
    }

    /// A watcher's start after `since` (none: everything kept; `now`:
    /// only what comes next).
    pub fn watch(&self, since: Option<Key>, now: bool) -> Start {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let live = self.live.subscribe();
        let from = if now {
            ring.last
        } else {
            since.unwrap_or((0, 0))
        };
        Start {
            backlog: after(&ring, from),
            lost: (since.is_some() && from < ring.dropped).then_some(ring.dropped),
            live,
        }
    }

    /// The kept events after `from` and whether some after it are gone
    /// (for a watcher that fell behind the live feed).
    pub fn since(&self, from: Key) -> (Vec<Arc<Entry>>, Option<Key>) {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        (
            after(&ring, from),
            (from < ring.dropped).then_some(ring.dropped),
        )
    }
}

fn after(ring: &Ring, from: Key) -> Vec<Arc<Entry>> {
    let start = ring.kept.partition_point(|e| e.key <= from);
    ring.kept.range(start..).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_bad_ones_name_the_field() {
        assert_eq!(parse_id(&id_of((42, 3))), Ok((42, 3)));
        for bad in ["", "42", "x.1", "1.-1", "1.2.3"] {
            assert!(parse_id(bad).unwrap_err().starts_with("since:"), "{bad}");
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_and_says_what_was_lost() {
        let mut ring = Ring::default();
        for i in 1..=(KEEP as u64 + 5) {
            let e = Arc::new(Entry {
                key: (i, 0),
                at_ms: 0,
                kind: "node",
                subject: String::new(),
                namespace: String::new(),
                action: String::new(),
                message: String::new(),
                task: None,
            });
            ring.last = e.key;
            ring.kept.push_back(e);
            if ring.kept.len() > KEEP {
                ring.dropped = ring.kept.pop_front().unwrap().key;
            }
        }
        assert_eq!(ring.dropped, (5, 0));
        assert_eq!(after(&ring, (0, 0)).len(), KEEP);
        assert_eq!(after(&ring, (KEEP as u64, 0)).len(), 5);
        assert!(after(&ring, ring.last).is_empty());
    }
}
