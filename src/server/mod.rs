//! Live server state (health, drain, weight, open connections, idle pool) that outlives
//! configuration snapshots, the per-upstream queue, and the registry that keys them by
//! (upstream, address) and upstream name.

mod queue;
mod rise_fall;
mod stats;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;

pub use queue::Queue;
pub use rise_fall::{Counters, Flip};
pub use stats::{Histogram, LATENCY_BUCKETS, ServerStats};

use crate::connect::{Pool, RequestBody};

/// One server of one upstream, as it lives across reloads.
pub struct Server {
    pub upstream: Arc<str>,
    pub addr: SocketAddr,
    /// Written by the health checker and by passive ejection; read on every pick.
    up: AtomicBool,
    /// Set by the admin API: no new requests or sessions, open ones run on.
    draining: AtomicBool,
    /// Without checks: its last connect on the data path failed. It stays in rotation
    /// (nothing else would bring it back) but is not counted healthy.
    failing: AtomicBool,
    /// The weight in force: the file's, or the admin API's until the file changes it.
    weight: AtomicU32,
    /// The weight the file last gave, to tell a changed file from an unchanged one.
    file_weight: AtomicU32,
    /// Requests in flight plus tcp sessions and upgraded tunnels open: what least_conn
    /// balances on. Changed only by [`Active`].
    active: AtomicUsize,
    /// The queue of its upstream, shared by all its servers: a dropped [`Active`]
    /// wakes its first waiter.
    pub queue: Arc<Queue>,
    /// The replication lag of the last check that found it over the limit, in ms;
    /// `u64::MAX` when there is none. A server down with a lag is down for lag alone.
    lag_ms: AtomicU64,
    pub stats: ServerStats,
    pub health: Mutex<Counters>,
    /// Keep-alive connections to this server waiting for their next request.
    pub idle: Pool,
    /// Wakes whoever waits on this server (a request waiting for its response) when the
    /// server is ejected: a frozen server answers nothing, and they would otherwise wait
    /// for the whole response timeout.
    ejected: tokio::sync::Notify,
}

/// What the admin API and /status call a server's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Up,
    Down,
    Draining,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::Draining => "draining",
        }
    }
}

impl Server {
    pub fn new(upstream: Arc<str>, addr: SocketAddr, weight: u32, queue: Arc<Queue>) -> Server {
        Server {
            upstream,
            addr,
            up: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            weight: AtomicU32::new(weight),
            file_weight: AtomicU32::new(weight),
            active: AtomicUsize::new(0),
            queue,
            lag_ms: AtomicU64::new(u64::MAX),
            stats: ServerStats::default(),
            health: Mutex::new(Counters::default()),
            idle: Pool::default(),
            ejected: tokio::sync::Notify::new(),
        }
    }

    /// Up and not draining: may take new requests and sessions.
    #[inline]
    pub fn available(&self) -> bool {
        self.up.load(Ordering::Relaxed) && !self.draining.load(Ordering::Relaxed)
    }

    /// What `rlb_server_up` and `/status` `healthy` say: up by its checks, or, without
    /// checks, its last connect on the data path did not fail.
    pub fn healthy(&self) -> bool {
        self.is_up() && !self.failing.load(Ordering::Relaxed)
    }

    /// A connect on the data path failed (see `failing`).
    pub(crate) fn connect_failed(&self) {
        self.failing.store(true, Ordering::Relaxed);
    }

    /// A new connection to the server opened; read first, so that the usual case
    /// writes nothing.
    pub(crate) fn connected(&self) {
        if self.failing.load(Ordering::Relaxed) {
            self.failing.store(false, Ordering::Relaxed);
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub(crate) fn set_up(&self, up: bool) {
        let was_up = self.up.swap(up, Ordering::Relaxed);
        if was_up && !up {
            self.idle.clear();
            self.ejected.notify_waiters();
        }
    }

    /// Completes when the server is next ejected (goes from up to down). Create it
    /// before the wait it guards, so that an ejection meanwhile is not missed.
    pub fn ejected(&self) -> tokio::sync::futures::Notified<'_> {
        self.ejected.notified()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub(crate) fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
    }

    pub fn lag(&self) -> Option<Duration> {
        match self.lag_ms.load(Ordering::Relaxed) {
            u64::MAX => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    pub(crate) fn set_lag(&self, lag: Option<Duration>) {
        let ms = lag.map_or(u64::MAX, |l| l.as_millis().min(u64::MAX as u128 - 1) as u64);
        self.lag_ms.store(ms, Ordering::Relaxed);
    }

    #[inline]
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    pub fn state(&self) -> State {
        if !self.is_up() {
            State::Down
        } else if self.is_draining() {
            State::Draining
        } else {
            State::Up
        }
    }

    /// Takes back a connection whose response was read in full, for the next request;
    /// a down server keeps none.
    pub fn checkin(&self, sender: SendRequest<RequestBody>) {
        if self.is_up() {
            self.idle.put(sender);
        }
    }
}

/// Counts one request, session or tunnel on a server for as long as it lives.
pub struct Active(Arc<Server>);

impl Active {
    /// Counts one more on `server`, whatever its count: for an upstream without
    /// `max_connections_per_server`.
    pub fn new(server: Arc<Server>) -> Active {
        server.active.fetch_add(1, Ordering::Relaxed);
        Active(server)
    }

    pub fn server(&self) -> &Arc<Server> {
        &self.0
    }
}

impl Server {
    /// Counts one more on the server if it has fewer than `max` now, in one
    /// compare-and-swap: a check and then an `Active::new` would let two concurrent
    /// picks both see `max - 1` and go over.
    pub fn try_acquire(self: &Arc<Server>, max: usize) -> Option<Active> {
        self.active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Active(self.clone()))
    }
}

impl Drop for Active {
    /// `SeqCst` with the queue's read of its waiters (see `queue.rs`); on x86 the
    /// decrement is a locked instruction at any ordering, and the read a plain load.
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        self.0.queue.released();
    }
}

/// All live server state, keyed by (upstream name, address). Touched only when a
/// snapshot is built, never on the request path.
#[derive(Default)]
pub struct Registry {
    servers: Mutex<HashMap<ServerKey, Arc<Server>>>,
    /// Per upstream name: its queue, which each of its servers holds too.
    queues: Mutex<HashMap<Arc<str>, Arc<Queue>>>,
}

/// (upstream name, address): a server's identity across reloads.
pub type ServerKey = (Arc<str>, SocketAddr);

impl Registry {
    /// The live state for (upstream, addr), created on first use. A weight set in the
    /// file replaces one set by the admin API only when the file changed it.
    pub fn server(&self, upstream: &Arc<str>, addr: SocketAddr, file_weight: u32) -> Arc<Server> {
        let queue = self.queue(upstream);
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        let server = servers
            .entry((upstream.clone(), addr))
            .or_insert_with(|| Arc::new(Server::new(upstream.clone(), addr, file_weight, queue)))
            .clone();
        if server.file_weight.swap(file_weight, Ordering::Relaxed) != file_weight {
            // The file changed this server: its weight and drain from the admin API end.
            server.set_weight(file_weight);
            server.set_draining(false);
        }
        server
    }

    /// Forgets servers that no snapshot uses any more; their open connections keep
    /// their own `Arc` and run on.
    /// The queue of `upstream`, created on first use.
    pub fn queue(&self, upstream: &Arc<str>) -> Arc<Queue> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.entry(upstream.clone()).or_default().clone()
    }

    /// Forgets servers that no snapshot uses any more, and the queues of upstreams
    /// left without servers; their open connections keep their own `Arc` and run on.
    pub fn retain(&self, keep: impl Fn(&Server) -> bool) {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        servers.retain(|_, s| keep(s));
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.retain(|name, _| servers.keys().any(|(upstream, _)| upstream == name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ejection_wakes_the_waiters_once() {
        let server = Server::new(
            Arc::from("u"),
            "127.0.0.1:9".parse().unwrap(),
            1,
            Arc::default(),
        );
        let ejected = server.ejected();
        tokio::pin!(ejected);
        // Not while up, nor when a down server is set down again.
        server.set_up(true);
        assert!(futures_util::poll!(ejected.as_mut()).is_pending());
        server.set_up(false);
        assert!(futures_util::poll!(ejected.as_mut()).is_ready());
        let again = server.ejected();
        tokio::pin!(again);
        server.set_up(false);
        assert!(futures_util::poll!(again.as_mut()).is_pending());
    }

    #[test]
    fn try_acquire_stops_at_the_limit_across_threads() {
        let addr = "127.0.0.1:9".parse().unwrap();
        let server = Arc::new(Server::new(Arc::from("u"), addr, 1, Arc::default()));
        let held = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        if let Some(active) = server.try_acquire(5) {
                            held.lock().unwrap().push(active);
                        }
                    }
                });
            }
        });
        assert_eq!(held.lock().unwrap().len(), 5);
        assert_eq!(server.active(), 5);
        held.lock().unwrap().pop();
        assert_eq!(server.active(), 4);
        let again = server.try_acquire(5);
        assert!(again.is_some());
        assert_eq!(server.active(), 5);
        assert!(server.try_acquire(5).is_none());
    }

    #[tokio::test]
    async fn a_dropped_active_wakes_the_first_waiter_of_its_upstream() {
        let addr = "127.0.0.1:9".parse().unwrap();
        let server = Arc::new(Server::new(Arc::from("u"), addr, 1, Arc::default()));
        let active = server.try_acquire(1).unwrap();
        assert!(server.try_acquire(1).is_none());
        let mut ticket = server.queue.join();
        drop(active);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        assert!(ticket.woken(deadline).await);
        assert!(server.try_acquire(1).is_some());
    }
}
