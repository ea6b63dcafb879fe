//! Live limit state that outlives snapshots: per listener its open connections, its
//! connections per client and its refusal counts; per listener or route the rate
//! buckets. A reload keeps all of it, so no client gets a fresh bucket.

mod clients;
mod open;
mod rate;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

pub use clients::{ClientSlot, Clients};
pub use open::{Open, Slot};
pub use rate::RateLimit;

use crate::config::{Config, Mode, Rate};
use crate::error::Refusal;

/// One listener's live limit state, kept by name across reloads.
#[derive(Default)]
pub struct ListenerState {
    pub open: Arc<Open>,
    pub clients: Arc<Clients>,
    refused: [AtomicU64; Refusal::ALL.len()],
    /// The second (since the process started) of each reason's last log line.
    logged: [AtomicU64; Refusal::ALL.len()],
}

impl ListenerState {
    /// Counts one refusal; true when it may be logged: the first of its reason in this
    /// second, so an attack does not flood the log.
    pub fn refused(&self, refusal: Refusal) -> bool {
        let i = refusal as usize;
        self.refused[i].fetch_add(1, Ordering::Relaxed);
        let now = seconds() + 1;
        self.logged[i].swap(now, Ordering::Relaxed) != now
    }

    /// Each reason with the refusals counted so far.
    pub fn refusals(&self) -> impl Iterator<Item = (Refusal, u64)> + '_ {
        Refusal::ALL
            .into_iter()
            .map(|r| (r, self.refused[r as usize].load(Ordering::Relaxed)))
    }
}

/// What one client connection holds of its listener's limits, for exactly its life.
pub struct Admitted {
    pub _open: Slot,
    /// Its place in the per-client count, when the listener has a cap.
    pub _client: Option<ClientSlot>,
    /// The client had reached its cap: an http connection answers 429 and closes.
    pub over_client_cap: bool,
}

impl Admitted {
    pub fn over_client_cap(&self) -> bool {
        self.over_client_cap
    }
}

/// Whole seconds since the first call.
fn seconds() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs()
}

/// Whose rate bucket: a listener's own, or a route's (by host and path prefix).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateKey {
    pub listener: String,
    pub route: Option<(Option<String>, Option<String>)>,
}

/// All live limit state. Its locks are taken when a snapshot is built, and once a
/// minute to prune idle buckets; never on the request path.
#[derive(Default)]
pub struct Registry {
    listeners: Mutex<HashMap<String, Arc<ListenerState>>>,
    rates: Mutex<HashMap<RateKey, Arc<RateLimit>>>,
}

impl Registry {
    /// The state of listener `name`, created on first use; `max_connections` set to
    /// the file's.
    pub fn listener(&self, name: &str, max_connections: Option<usize>) -> Arc<ListenerState> {
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let state = listeners.entry(name.to_string()).or_default().clone();
        state.open.set_max(max_connections);
        state
    }

    /// The rate bucket of `key`: the same one as before unless the file changed its
    /// quota (as an admin weight lasts until the file changes that server).
    pub fn rate(&self, key: RateKey, quota: Rate) -> Arc<RateLimit> {
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        let rate = rates
            .entry(key)
            .or_insert_with(|| Arc::new(RateLimit::new(quota)));
        if rate.quota != quota {
            *rate = Arc::new(RateLimit::new(quota));
        }
        rate.clone()
    }

    /// Forgets the listeners and buckets `config` no longer has; open connections keep
    /// their own `Arc`s.
    pub fn retain(&self, config: &Config) {
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        listeners.retain(|name, _| config.listener(name).is_some());
        drop(listeners);
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        rates.retain(|key, _| {
            let Some(listener) = config.listener(&key.listener) else {
                return false;
            };
            match (&key.route, &listener.mode) {
                (None, _) => listener.limits.rate.is_some(),
                (Some((host, prefix)), Mode::Http { routes }) => routes
                    .iter()
                    .any(|r| r.rate.is_some() && r.host == *host && r.path_prefix == *prefix),
                (Some(_), Mode::Tcp { .. }) => false,
            }
        });
    }

    /// Drops the buckets of clients idle long enough to be full again (governor's
    /// `retain_recent`): run once a minute by the control task.
    pub fn prune(&self) {
        let rates: Vec<Arc<RateLimit>> = {
            let rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
            rates.values().cloned().collect()
        };
        for rate in rates {
            rate.prune();
        }
    }

    /// Each listener's state, for the metrics.
    pub fn listeners(&self) -> Vec<(String, Arc<ListenerState>)> {
        let listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = listeners
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn quota(requests: u32) -> Rate {
        Rate {
            requests,
            per: Duration::from_secs(60),
            burst: requests,
        }
    }

    #[test]
    fn a_bucket_is_kept_until_its_quota_changes() {
        let registry = Registry::default();
        let key = RateKey {
            listener: "web".into(),
            route: None,
        };
        let first = registry.rate(key.clone(), quota(1));
        let ip = "127.0.0.2".parse().unwrap();
        assert!(first.check(ip).is_ok());
        assert!(first.check(ip).is_err());
        let same = registry.rate(key.clone(), quota(1));
        assert!(Arc::ptr_eq(&first, &same));
        assert!(same.check(ip).is_err(), "the bucket was reset");
        let changed = registry.rate(key, quota(2));
        assert!(!Arc::ptr_eq(&first, &changed));
        assert!(changed.check(ip).is_ok());
    }

    #[test]
    fn refusals_are_counted_each_and_logged_once_a_second() {
        let state = ListenerState::default();
        assert!(state.refused(Refusal::Rate));
        assert!(!state.refused(Refusal::Rate));
        assert!(state.refused(Refusal::BodySize));
        let rate = state.refusals().find(|(r, _)| *r == Refusal::Rate);
        assert_eq!(rate, Some((Refusal::Rate, 2)));
    }
}
