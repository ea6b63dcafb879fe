//! `max_connections`: a listener's open client connections, counted by an RAII slot
//! taken before `accept()`; when full, the accept loop waits (no spinning) and new
//! clients wait in the kernel's backlog.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The open connections of one listener and its bound (`usize::MAX` when unset).
pub struct Open {
    count: AtomicUsize,
    max: AtomicUsize,
    /// Wakes the accept loop when a slot frees while it waits, or the bound changes.
    freed: Notify,
}

impl Default for Open {
    fn default() -> Open {
        Open {
            count: AtomicUsize::new(0),
            max: AtomicUsize::new(usize::MAX),
            freed: Notify::new(),
        }
    }
}

/// One open client connection of a listener, for exactly its life.
pub struct Slot(Arc<Open>);

impl Open {
    pub fn set_max(&self, max: Option<usize>) {
        let max = max.unwrap_or(usize::MAX);
        if self.max.swap(max, Ordering::Relaxed) != max {
            self.freed.notify_one();
        }
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// A slot if one is free: one compare-and-swap.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let max = self.max.load(Ordering::Relaxed);
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    /// Waits for a free slot.
    pub async fn take(self: &Arc<Self>) -> Slot {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a slot freed in between is not missed.
            freed.as_mut().enable();
            if let Some(slot) = self.try_take() {
                return slot;
            }
            freed.await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Only a full listener has an accept loop waiting.
        if self.0.count.fetch_sub(1, Ordering::AcqRel) >= self.0.max.load(Ordering::Relaxed) {
            self.0.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_listener_waits_until_a_slot_frees() {
        let open = Arc::new(Open::default());
        open.set_max(Some(1));
        let first = open.try_take().expect("a free slot");
        assert!(open.try_take().is_none());
        let waiting = open.take();
        tokio::pin!(waiting);
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        drop(first);
        let _second = waiting.await;
        assert_eq!(open.count(), 1);
    }

    #[tokio::test]
    async fn a_raised_bound_wakes_the_waiter() {
        let open = Arc::new(Open::default());
        open.set_max(Some(1));
        let _first = open.try_take().unwrap();
        let waiting = open.take();
        tokio::pin!(waiting);
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        open.set_max(Some(2));
        let _second = waiting.await;
    }
}
