//! `max_connections_per_client`: open connections per client IP in a sharded map; the
//! shard's lock is taken once when a connection opens and once when it closes, never
//! per request, and an entry goes when its count reaches zero.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Enough shards that connection churn from many clients rarely meets on one lock.
const SHARDS: usize = 32;

pub struct Clients {
    shards: [Mutex<HashMap<IpAddr, u32>>; SHARDS],
}

impl Default for Clients {
    fn default() -> Clients {
        Clients {
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

/// One open connection of one client, for exactly its life.
pub struct ClientSlot {
    clients: Arc<Clients>,
    ip: IpAddr,
}

impl Clients {
    fn shard(&self, ip: IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        let bits = match ip {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        };
        let folded = (bits ^ (bits >> 64)) as u64;
        let mixed = folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        &self.shards[mixed as usize % SHARDS]
    }

    /// A slot for `ip` if it has fewer than `max` connections open.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<ClientSlot> {
        let mut shard = self.shard(ip).lock().unwrap_or_else(|e| e.into_inner());
        let count = shard.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            clients: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip`.
    #[cfg(test)]
    pub fn count(&self, ip: IpAddr) -> u32 {
        let shard = self.shard(ip).lock().unwrap_or_else(|e| e.into_inner());
        shard.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut shard = self
            .clients
            .shard(self.ip)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = shard.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                shard.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_has_its_own_count_and_entries_go_at_zero() {
        let clients = Arc::new(Clients::default());
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let first = clients.try_take(a, 1).expect("first of a");
        assert!(clients.try_take(a, 1).is_none());
        let _other = clients.try_take(b, 1).expect("b is another client");
        drop(first);
        assert_eq!(clients.count(a), 0);
        assert!(clients.try_take(a, 1).is_some());
    }
}
