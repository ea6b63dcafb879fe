//! The per-upstream FIFO queue of requests and tcp sessions waiting for a server below
//! `max_connections_per_server`, woken when an [`Active`](super::Active) of the
//! upstream drops.
//!
//! A dropped `Active` wakes the waiter at the front, which then asks the balancer
//! again (the freed slot may not suit it: the server may be down now, or tried). A
//! woken waiter stays counted in `waiting` until it has a server or leaves, so that a
//! request arriving meanwhile queues behind it instead of taking the slot.
//!
//! Lost wake-ups: a waiter joins (`waiting` + 1) and then tries once more; a drop
//! lowers the active count and then reads `waiting`. Both sides are `SeqCst`, so at
//! least one of them sees the other (the store-then-load pattern needs it).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::stats::Histogram;

/// The waiters of one upstream, kept in the server registry by upstream name so that
/// a reload neither empties it nor resets its counters.
#[derive(Default)]
pub struct Queue {
    /// Queued plus woken and not yet settled: what a dropped `Active` reads, the one
    /// atomic load it costs when nobody waits.
    waiting: AtomicUsize,
    /// Locked only by waiters and by a drop that found `waiting` above 0.
    waiters: Mutex<VecDeque<(u64, oneshot::Sender<()>)>>,
    next_id: AtomicU64,
    /// How long each queued request waited, served or timed out.
    pub wait: Histogram,
    /// Requests and sessions refused after `queue_timeout`.
    pub timeouts: AtomicU64,
}

impl Queue {
    /// Requests and sessions waiting (or woken and about to take a server).
    pub fn len(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Called by every dropped `Active` of the upstream, after its count went down,
    /// and by a waiter that got a server, in case room is left: wakes the first waiter.
    #[inline]
    pub fn released(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.wake_one();
        }
    }

    /// Wakes the first waiter still there; one whose ticket is gone is skipped.
    fn wake_one(&self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((_, wake)) = waiters.pop_front() {
            if wake.send(()).is_ok() {
                return;
            }
        }
    }

    /// Takes a place at the back. The ticket leaves the queue when dropped.
    pub fn join(&self) -> Ticket<'_> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut ticket = Ticket {
            queue: self,
            id: 0,
            wake: None,
        };
        ticket.enter(false);
        ticket
    }
}

/// One waiter's place in its queue.
pub struct Ticket<'q> {
    queue: &'q Queue,
    id: u64,
    /// `None` while not in the deque (woken, before it goes back to the front).
    wake: Option<oneshot::Receiver<()>>,
}

impl Ticket<'_> {
    /// Enters the deque (at the front for a woken waiter whose server was taken);
    /// true when it is first, so nobody else will be woken before it.
    fn enter(&mut self, front: bool) -> bool {
        let (send, receive) = oneshot::channel();
        self.id = self.queue.next_id.fetch_add(1, Ordering::Relaxed);
        self.wake = Some(receive);
        let mut waiters = self.queue.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if front {
            waiters.push_front((self.id, send));
        } else {
            waiters.push_back((self.id, send));
        }
        waiters.front().is_some_and(|(id, _)| *id == self.id)
    }

    /// True when no one is ahead: it should try for a server now, since the wake it
    /// waits for may have gone out just before it entered.
    pub fn first(&self) -> bool {
        let waiters = self.queue.waiters.lock().unwrap_or_else(|e| e.into_inner());
        waiters.front().is_some_and(|(id, _)| *id == self.id)
    }

    /// Waits until an `Active` of the upstream drops and it is this waiter's turn;
    /// false at `deadline`.
    pub async fn woken(&mut self, deadline: Instant) -> bool {
        let Some(wake) = self.wake.as_mut() else {
            return true;
        };
        tokio::select! {
            biased;
            woken = wake => {
                self.wake = None;
                woken.is_ok()
            }
            () = tokio::time::sleep_until(deadline) => false,
        }
    }

    /// Found no room: a woken waiter goes back to the front; one still in the deque
    /// (it looked because it is first) keeps its place.
    pub fn again(&mut self) {
        if self.wake.is_none() {
            self.enter(true);
        }
    }
}

impl Drop for Ticket<'_> {
    /// Leaves the deque; a wake that came and was not used goes to the next waiter.
    fn drop(&mut self) {
        let mut unused = false;
        if let Some(mut wake) = self.wake.take() {
            let mut waiters = self.queue.waiters.lock().unwrap_or_else(|e| e.into_inner());
            waiters.retain(|(id, _)| *id != self.id);
            drop(waiters);
            unused = wake.try_recv().is_ok();
        }
        self.queue.waiting.fetch_sub(1, Ordering::SeqCst);
        if unused {
            self.queue.released();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn waiters_are_woken_in_order_and_a_timed_out_one_is_skipped() {
        let queue = Queue::default();
        let mut first = queue.join();
        let mut second = queue.join();
        let mut third = queue.join();
        assert!(first.first() && !second.first());
        assert_eq!(queue.len(), 3);
        let soon = Instant::now() + Duration::from_secs(1);
        // The first gives up: the wake goes to the second.
        assert!(!first.woken(soon).await);
        drop(first);
        assert_eq!(queue.len(), 2);
        queue.released();
        let later = Instant::now() + Duration::from_secs(1);
        assert!(second.woken(later).await);
        assert!(!third.woken(later).await);
        // Still counted until it settles, so newcomers queue behind it.
        assert_eq!(queue.len(), 2);
        drop(second);
        assert_eq!(queue.len(), 1);
        drop(third);
        assert_eq!(queue.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_not_used_goes_to_the_next_waiter() {
        let queue = Queue::default();
        let first = queue.join();
        let mut second = queue.join();
        // The first is woken but leaves (timed out at the same moment).
        queue.released();
        drop(first);
        assert!(second.woken(Instant::now() + Duration::from_secs(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_whose_server_was_taken_goes_back_to_the_front() {
        let queue = Queue::default();
        let mut first = queue.join();
        let second = queue.join();
        queue.released();
        assert!(first.woken(Instant::now()).await);
        first.again();
        assert!(first.first());
        first.again();
        assert_eq!(queue.waiters.lock().unwrap().len(), 2, "one place each");
        drop(second);
        queue.released();
        assert!(first.woken(Instant::now()).await);
    }
}
