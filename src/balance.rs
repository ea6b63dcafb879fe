//! Picking a server: smooth weighted round robin and weighted least connections over
//! the available (up, non-draining) servers of an upstream, lock-free; with
//! `max_connections_per_server`, only servers below it, and the upstream's queue when
//! every one is full.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::{Balance, ProxyVersion, ServerLimit};
use crate::error::ProxyError;
use crate::server::{Active, Queue, Server};

/// An upstream as one snapshot sees it: its servers' live state and how to choose.
pub struct Upstream {
    pub name: Arc<str>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// Each server connection starts with the client's PROXY header in this version.
    pub send_proxy: Option<ProxyVersion>,
    pub servers: Vec<Arc<Server>>,
    /// `max_connections_per_server` and `queue_timeout`; `None`: no limit, no queue.
    pub limit: Option<ServerLimit>,
    /// The upstream's queue, from the registry (the one its servers hold).
    pub queue: Arc<Queue>,
    /// The order round robin walks, nginx's smooth weighted sequence over the current
    /// weights (5,1,1 gives a a b a c a a). Rebuilt when a weight changes, so a pick is
    /// one atomic increment and a load.
    schedule: ArcSwap<Vec<u16>>,
    /// Position in the schedule (round robin) or the rotating start (least_conn ties).
    next: AtomicUsize,
}

/// How often the first waiter of a queue looks for room without being woken.
const RECHECK: Duration = Duration::from_millis(100);

/// Which servers of an upstream a request already tried; each is tried at most once.
/// A bit per server for the first 128; the servers of a larger upstream go in a list,
/// so that a request to it still ends when every server has failed.
#[derive(Default, Clone)]
pub struct Tried {
    first: u128,
    rest: Vec<usize>,
}

impl Tried {
    pub fn add(&mut self, index: usize) {
        if index < 128 {
            self.first |= 1 << index;
        } else if !self.rest.contains(&index) {
            self.rest.push(index);
        }
    }

    /// The same set without `index`, so that server may be tried once more.
    pub fn without(mut self, index: usize) -> Tried {
        if index < 128 {
            self.first &= !(1 << index);
        } else {
            self.rest.retain(|&i| i != index);
        }
        self
    }

    fn has(&self, index: usize) -> bool {
        if index < 128 {
            self.first & (1 << index) != 0
        } else {
            self.rest.contains(&index)
        }
    }
}

impl Upstream {
    pub fn new(name: Arc<str>, balance: Balance, servers: Vec<Arc<Server>>) -> Upstream {
        let schedule = ArcSwap::from_pointee(schedule(&servers));
        // The registry gives every server of an upstream the same queue.
        let queue = servers
            .first()
            .map_or_else(Default::default, |s| s.queue.clone());
        Upstream {
            name,
            balance,
            connect_timeout: crate::config::DEFAULT_CONNECT_TIMEOUT,
            response_timeout: crate::config::DEFAULT_RESPONSE_TIMEOUT,
            send_proxy: None,
            servers,
            limit: None,
            queue,
            schedule,
            next: AtomicUsize::new(0),
        }
    }

    /// Recomputes the round-robin order after a weight change.
    pub fn reweigh(&self) {
        self.schedule.store(Arc::new(schedule(&self.servers)));
    }

    /// Picks an available server not yet tried, returning its index.
    pub fn pick(&self, tried: &Tried) -> Option<usize> {
        self.pick_below(tried, None)
    }

    /// Picks a server not yet tried and counts the request on it; with a limit, only a
    /// server below it, waiting in the queue while every usable one is full.
    /// `NoServer` when none is usable, `QueueTimeout` after `queue_timeout`.
    pub async fn acquire(&self, tried: &Tried) -> Result<(usize, Active), ProxyError> {
        let Some(limit) = self.limit else {
            let index = self.pick(tried).ok_or_else(|| self.no_server())?;
            return Ok((index, Active::new(self.servers[index].clone())));
        };
        // Someone waits already: behind them, so the queue stays first come first served.
        if self.queue.len() == 0 {
            match self.try_acquire(tried, limit.max) {
                Acquired::Server(index, active) => return Ok((index, active)),
                Acquired::None => return Err(self.no_server()),
                Acquired::Full => {}
            }
        }
        self.wait(tried, limit).await
    }

    /// Waits in the queue for a server below the limit: tries when first in line,
    /// each time an `Active` of the upstream drops and it is its turn, and, first in
    /// line, every [`RECHECK`] (a server that came up or a reload that raised the
    /// limit frees room without any drop), until `queue_timeout`.
    async fn wait(&self, tried: &Tried, limit: ServerLimit) -> Result<(usize, Active), ProxyError> {
        let start = tokio::time::Instant::now();
        let deadline = start + limit.queue_timeout;
        let mut ticket = self.queue.join();
        let mut turn = ticket.first();
        let outcome = loop {
            if turn {
                match self.try_acquire(tried, limit.max) {
                    Acquired::Server(index, active) => break Ok((index, active)),
                    Acquired::None => break Err(self.no_server()),
                    Acquired::Full => ticket.again(),
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                self.queue.timeouts.fetch_add(1, Ordering::Relaxed);
                break Err(ProxyError::QueueTimeout {
                    upstream: self.name.clone(),
                    timeout: limit.queue_timeout,
                });
            }
            turn = ticket.woken(deadline.min(now + RECHECK)).await || ticket.first();
        };
        self.queue.wait.record(start.elapsed());
        drop(ticket);
        if outcome.is_ok() {
            // Room may be left (a server came up): the next in line looks too.
            self.queue.released();
        }
        outcome
    }

    /// One pass without waiting: a server below `max` with its count taken.
    fn try_acquire(&self, tried: &Tried, max: usize) -> Acquired {
        // Each failed compare-and-swap is another request's success, so a few rounds
        // settle it; past them the queue takes over.
        for _ in 0..=self.servers.len() {
            let Some(index) = self.pick_below(tried, Some(max)) else {
                break;
            };
            if let Some(active) = self.servers[index].try_acquire(max) {
                return Acquired::Server(index, active);
            }
        }
        match self.pick(tried) {
            Some(_) => Acquired::Full,
            None => Acquired::None,
        }
    }

    fn no_server(&self) -> ProxyError {
        ProxyError::NoServer(self.name.clone())
    }

    /// Picks a server not yet tried with fewer than `max` active, if given.
    fn pick_below(&self, tried: &Tried, max: Option<usize>) -> Option<usize> {
        let picked = match self.balance {
            Balance::RoundRobin => self.pick_round_robin(tried, max),
            Balance::LeastConn => self.pick_least_conn(tried, max),
        };
        picked.or_else(|| self.least_lagged(tried, max))
    }

    /// With no server available, a replica that is down for replication lag alone
    /// still answers, only with older data: the least-lagged one is used. A server
    /// down for any other reason (refused, timed out) never is.
    pub fn least_lagged(&self, tried: &Tried, max: Option<usize>) -> Option<usize> {
        (0..self.servers.len())
            .filter(|&i| !tried.has(i) && !self.servers[i].is_draining() && self.room(i, max))
            .filter_map(|i| Some((i, self.servers[i].lag()?)))
            .filter(|&(i, _)| !self.servers[i].is_up())
            .min_by_key(|&(_, lag)| lag)
            .map(|(i, _)| i)
    }

    fn usable(&self, index: usize, tried: &Tried, max: Option<usize>) -> bool {
        !tried.has(index) && self.servers[index].available() && self.room(index, max)
    }

    /// Below `max`, or no limit: without one, not even a load.
    #[inline]
    fn room(&self, index: usize, max: Option<usize>) -> bool {
        max.is_none_or(|max| self.servers[index].active() < max)
    }

    fn pick_round_robin(&self, tried: &Tried, max: Option<usize>) -> Option<usize> {
        let schedule = self.schedule.load();
        let len = schedule.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|i| schedule[(start + i) % len] as usize)
            .find(|&index| self.usable(index, tried, max))
    }

    /// The server with the fewest active connections per unit of weight; among equals,
    /// the first after a rotating start, so ties go round robin.
    fn pick_least_conn(&self, tried: &Tried, max: Option<usize>) -> Option<usize> {
        let n = self.servers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(usize, usize, u32)> = None;
        for i in 0..n {
            let index = (start + i) % n;
            if !self.usable(index, tried, max) {
                continue;
            }
            let server = &self.servers[index];
            let (active, weight) = (server.active(), server.weight().max(1));
            let better = match best {
                None => true,
                // active/weight < best_active/best_weight, without division.
                Some((_, best_active, best_weight)) => {
                    (active as u64) * (best_weight as u64) < (best_active as u64) * (weight as u64)
                }
            };
            if better {
                best = Some((index, active, weight));
            }
        }
        best.map(|(index, _, _)| index)
    }
}

/// What one pass of [`Upstream::try_acquire`] found.
enum Acquired {
    Server(usize, Active),
    /// Usable servers, every one at its limit.
    Full,
    /// No usable server at all.
    None,
}

/// nginx's smooth weighted round robin, unrolled into one full cycle of picks.
fn schedule(servers: &[Arc<Server>]) -> Vec<u16> {
    let weights: Vec<i64> = servers.iter().map(|s| s.weight() as i64).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += w;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        order.push(best as u16);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Active;

    fn upstream(balance: Balance, weights: &[u32]) -> Upstream {
        let name: Arc<str> = Arc::from("u");
        let queue = Arc::new(Queue::default());
        let servers = weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let addr = format!("127.0.0.1:{}", 9000 + i).parse().unwrap();
                Arc::new(Server::new(name.clone(), addr, *w, queue.clone()))
            })
            .collect();
        Upstream::new(name, balance, servers)
    }

    fn picks(u: &Upstream, n: usize) -> Vec<usize> {
        (0..n).map(|_| u.pick(&Tried::default()).unwrap()).collect()
    }

    #[test]
    fn smooth_weighted_order_like_nginx() {
        let u = upstream(Balance::RoundRobin, &[5, 1, 1]);
        assert_eq!(picks(&u, 7), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn round_robin_skips_down_and_draining() {
        let u = upstream(Balance::RoundRobin, &[1, 1, 1]);
        u.servers[1].set_up(false);
        u.servers[2].set_draining(true);
        assert_eq!(picks(&u, 4), vec![0, 0, 0, 0]);
        u.servers[0].set_up(false);
        assert_eq!(u.pick(&Tried::default()), None);
    }

    #[test]
    fn tried_servers_are_not_picked_again() {
        let u = upstream(Balance::RoundRobin, &[1, 1]);
        let mut tried = Tried::default();
        let first = u.pick(&tried).unwrap();
        tried.add(first);
        let second = u.pick(&tried).unwrap();
        assert_ne!(first, second);
        tried.add(second);
        assert_eq!(u.pick(&tried), None);
    }

    #[test]
    fn every_server_of_a_large_upstream_is_tried_once() {
        let u = upstream(Balance::RoundRobin, &[1; 200]);
        let mut tried = Tried::default();
        let mut seen = std::collections::HashSet::new();
        while let Some(index) = u.pick(&tried) {
            assert!(seen.insert(index), "server {index} picked twice");
            tried.add(index);
        }
        assert_eq!(seen.len(), 200);
        let tried = tried.without(150);
        assert_eq!(u.pick(&tried), Some(150));
    }

    #[test]
    fn reweigh_changes_the_order() {
        let u = upstream(Balance::RoundRobin, &[1, 1]);
        u.servers[0].set_weight(3);
        u.reweigh();
        let p = picks(&u, 8);
        assert_eq!(p.iter().filter(|&&i| i == 0).count(), 6);
    }

    #[test]
    fn least_conn_prefers_fewest_and_rotates_ties() {
        let u = upstream(Balance::LeastConn, &[1, 1, 1]);
        let mut held = Vec::new();
        for _ in 0..6 {
            let i = u.pick(&Tried::default()).unwrap();
            held.push((i, Active::new(u.servers[i].clone())));
        }
        let counts: Vec<usize> = u.servers.iter().map(|s| s.active()).collect();
        assert_eq!(counts, vec![2, 2, 2]);
        held.retain(|(i, _)| *i != 1);
        assert_eq!(picks(&u, 3), vec![1, 1, 1]);
    }

    #[test]
    fn lagging_servers_are_a_last_resort_and_dead_ones_never() {
        let u = upstream(Balance::RoundRobin, &[1, 1, 1]);
        for s in &u.servers {
            s.set_up(false);
        }
        assert_eq!(u.pick(&Tried::default()), None);
        u.servers[0].set_lag(Some(std::time::Duration::from_secs(30)));
        u.servers[2].set_lag(Some(std::time::Duration::from_secs(8)));
        assert_eq!(u.pick(&Tried::default()), Some(2));
        u.servers[1].set_up(true);
        assert_eq!(u.pick(&Tried::default()), Some(1));
    }

    #[test]
    fn least_conn_respects_weight() {
        let u = upstream(Balance::LeastConn, &[2, 1]);
        let mut held = Vec::new();
        for _ in 0..3 {
            let i = u.pick(&Tried::default()).unwrap();
            held.push(Active::new(u.servers[i].clone()));
        }
        assert_eq!(u.servers[0].active(), 2);
        assert_eq!(u.servers[1].active(), 1);
    }

    fn limited(balance: Balance, servers: usize, max: usize) -> Arc<Upstream> {
        let mut u = upstream(balance, &vec![1; servers]);
        u.limit = Some(ServerLimit {
            max,
            queue_timeout: Duration::from_secs(5),
        });
        Arc::new(u)
    }

    #[tokio::test(start_paused = true)]
    async fn both_policies_fill_each_server_to_its_limit_then_queue_and_time_out() {
        for balance in [Balance::RoundRobin, Balance::LeastConn] {
            let u = limited(balance, 2, 2);
            let mut held = Vec::new();
            for _ in 0..4 {
                held.push(u.acquire(&Tried::default()).await.unwrap());
            }
            let counts: Vec<usize> = u.servers.iter().map(|s| s.active()).collect();
            assert_eq!(counts, vec![2, 2], "{balance:?}");
            let start = tokio::time::Instant::now();
            let refused = u.acquire(&Tried::default()).await.err();
            assert!(matches!(refused, Some(ProxyError::QueueTimeout { .. })));
            assert_eq!(start.elapsed(), Duration::from_secs(5));
            assert_eq!(u.queue.timeouts.load(Ordering::Relaxed), 1);
            assert_eq!(u.queue.len(), 0);
            // Every server down: no queue, at once.
            for s in &u.servers {
                s.set_up(false);
            }
            let refused = u.acquire(&Tried::default()).await.err();
            assert!(matches!(refused, Some(ProxyError::NoServer(_))));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_request_takes_the_place_freed_and_a_newcomer_waits_behind() {
        let u = limited(Balance::LeastConn, 1, 1);
        let (_, held) = u.acquire(&Tried::default()).await.unwrap();
        let waiter = tokio::spawn({
            let u = u.clone();
            async move { u.acquire(&Tried::default()).await.map(|(i, _)| i) }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(u.queue.len(), 1);
        drop(held);
        // Woken but not yet running: a newcomer must not take its place.
        assert_eq!(u.queue.len(), 1);
        let newcomer = tokio::spawn({
            let u = u.clone();
            async move { u.acquire(&Tried::default()).await.map(|(i, _)| i) }
        });
        assert_eq!(waiter.await.unwrap().unwrap(), 0);
        // The waiter's `Active` dropped with its task: the newcomer gets the server.
        assert_eq!(newcomer.await.unwrap().unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_waiter_finds_a_server_that_came_up_without_a_drop() {
        let u = limited(Balance::RoundRobin, 2, 1);
        u.servers[1].set_up(false);
        let _held = u.acquire(&Tried::default()).await.unwrap();
        let waiter = tokio::spawn({
            let u = u.clone();
            async move { u.acquire(&Tried::default()).await.map(|(i, _)| i) }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        u.servers[1].set_up(true);
        let start = tokio::time::Instant::now();
        assert_eq!(waiter.await.unwrap().unwrap(), 1);
        assert!(start.elapsed() <= RECHECK);
    }
}
