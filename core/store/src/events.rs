//! What each apply changed, delivered to every subscriber in order.
//!
//! One apply's events travel as one shared [`Batch`]; a subscriber's queue
//! grows with the batches it has not read (a 10,000-task apply is one
//! batch, not 10,000 slots of a fixed ring). Only a subscriber that falls
//! more than [`MAX_QUEUED`] events behind is dropped: its [`Subscription`]
//! ends, and it resynchronizes from the state. Batches are published while
//! the state's write lock is still held, so a subscriber that drains its
//! queue under the read lock has seen exactly the changes in that state.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::state::Event;

/// The most events a subscriber may leave unread before it is dropped.
pub const MAX_QUEUED: usize = 1 << 21;

/// The events of one apply (or of a snapshot install).
#[derive(Debug, Default)]
pub struct Batch {
    /// The log index the state reached with this batch.
    pub index: u64,
    /// True when the whole state was replaced (a snapshot was installed):
    /// subscribers rebuild what they derive from the state.
    pub reset: bool,
    /// What changed, in apply order.
    pub events: Vec<Event>,
}

struct Sub {
    tx: mpsc::UnboundedSender<Arc<Batch>>,
    queued: Arc<AtomicUsize>,
}

/// Delivers batches to subscribers.
#[derive(Default)]
pub(crate) struct Hub {
    subs: Mutex<Vec<Sub>>,
}

/// A subscriber's end: batches in apply order. `None` from
/// [`Subscription::recv`] means the store stopped or this subscriber fell
/// too far behind; subscribe again and resynchronize from the state.
pub struct Subscription {
    rx: mpsc::UnboundedReceiver<Arc<Batch>>,
    queued: Arc<AtomicUsize>,
}

fn weight(b: &Batch) -> usize {
    b.events.len() + 1
}

impl Hub {
    pub(crate) fn subscribe(&self) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        self.subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Sub {
                tx,
                queued: queued.clone(),
            });
        Subscription { rx, queued }
    }

    /// Sends a batch to every subscriber; drops those gone or too far behind.
    pub(crate) fn publish(&self, batch: Batch) {
        let batch = Arc::new(batch);
        let w = weight(&batch);
        let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        subs.retain(|s| {
            let q = s.queued.fetch_add(w, Ordering::AcqRel) + w;
            if q > MAX_QUEUED {
                tracing::warn!(queued = q, "event subscriber fell behind; dropping it");
                return false;
            }
            s.tx.send(batch.clone()).is_ok()
        });
    }
}

impl Subscription {
    /// The next batch, waiting for one.
    pub async fn recv(&mut self) -> Option<Arc<Batch>> {
        let b = self.rx.recv().await?;
        self.queued.fetch_sub(weight(&b), Ordering::AcqRel);
        Some(b)
    }

    /// The next batch if one is queued. `Err(())` when the subscription
    /// has ended.
    #[allow(clippy::result_unit_err)]
    pub fn try_recv(&mut self) -> Result<Option<Arc<Batch>>, ()> {
        match self.rx.try_recv() {
            Ok(b) => {
                self.queued.fetch_sub(weight(&b), Ordering::AcqRel);
                Ok(Some(b))
            }
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_big_batch_reaches_every_subscriber() {
        let hub = Hub::default();
        let mut a = hub.subscribe();
        let mut b = hub.subscribe();
        let events = (0..50_000)
            .map(|i| Event::AppChanged(format!("app{i}")))
            .collect();
        hub.publish(Batch {
            index: 7,
            reset: false,
            events,
        });
        for s in [&mut a, &mut b] {
            let got = s.recv().await.unwrap();
            assert_eq!((got.index, got.events.len()), (7, 50_000));
            assert!(matches!(s.try_recv(), Ok(None)));
        }
    }

    #[tokio::test]
    async fn a_subscriber_too_far_behind_is_dropped() {
        let hub = Hub::default();
        let mut slow = hub.subscribe();
        for i in 0..3 {
            let events = (0..MAX_QUEUED / 2)
                .map(|_| Event::AppChanged(String::new()))
                .collect();
            hub.publish(Batch {
                index: i,
                reset: false,
                events,
            });
        }
        assert!(slow.recv().await.is_some());
        assert!(slow.recv().await.is_none(), "dropped after the third batch");
    }
}
