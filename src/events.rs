//! The failover timeline: the kinds of event (a public contract), recent events with
//! wall-clock millisecond timestamps served by `GET /events`, and the clock they use.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;

use serde::Serialize;

/// How many events are kept; older ones fall off.
const CAPACITY: usize = 1000;

/// What happened. The names are what `/events` shows and what dashboards and the
/// status page match on: a public contract, spelled only here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    ServerDown,
    ServerUp,
    Drain,
    Enable,
    Weight,
    ReloadOk,
    ReloadFailed,
    ListenerAdded,
    ListenerRemoved,
    /// A reload changed the certificates of a listener that terminates TLS.
    TlsReloaded,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::ServerDown => "server_down",
            EventKind::ServerUp => "server_up",
            EventKind::Drain => "drain",
            EventKind::Enable => "enable",
            EventKind::Weight => "weight",
            EventKind::ReloadOk => "reload_ok",
            EventKind::ReloadFailed => "reload_failed",
            EventKind::ListenerAdded => "listener_added",
            EventKind::ListenerRemoved => "listener_removed",
            EventKind::TlsReloaded => "tls_reloaded",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

/// Milliseconds since the Unix epoch, for events, logs and `/status`.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    pub event: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

impl Event {
    pub fn new(event: EventKind) -> Event {
        Event {
            ts_ms: now_millis(),
            event,
            upstream: None,
            server: None,
            listener: None,
            detail: None,
            generation: None,
        }
    }

    pub fn server(mut self, upstream: &str, server: impl ToString) -> Event {
        self.upstream = Some(upstream.to_string());
        self.server = Some(server.to_string());
        self
    }

    pub fn listener(mut self, listener: &str) -> Event {
        self.listener = Some(listener.to_string());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Event {
        self.detail = Some(detail.into());
        self
    }

    pub fn generation(mut self, generation: u64) -> Event {
        self.generation = Some(generation);
        self
    }
}

/// A bounded, append-only log; written on state changes only, never per request.
#[derive(Default)]
pub struct Events {
    recent: Mutex<VecDeque<Event>>,
}

impl Events {
    /// Appends `event`. Two threads may stamp events in one order and push them in the
    /// other; a stamp is never earlier than the one before it, so the timeline reads in
    /// order.
    pub fn push(&self, mut event: Event) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(last) = recent.back() {
            event.ts_ms = event.ts_ms.max(last.ts_ms);
        }
        if recent.len() == CAPACITY {
            recent.pop_front();
        }
        recent.push_back(event);
    }

    /// The events, oldest first, as JSON lines.
    pub fn json_lines(&self) -> String {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for event in recent.iter() {
            if let Ok(line) = serde_json::to_string(event) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }

    #[cfg(test)]
    pub fn snapshot(&self) -> Vec<Event> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_never_go_back_and_old_events_fall_off() {
        let events = Events::default();
        let mut late = Event::new(EventKind::Drain);
        late.ts_ms = 2_000;
        events.push(late);
        let mut early = Event::new(EventKind::Enable);
        early.ts_ms = 1_000;
        events.push(early);
        let list = events.snapshot();
        assert_eq!(list[1].ts_ms, 2_000);
        for _ in 0..CAPACITY {
            events.push(Event::new(EventKind::Weight));
        }
        let list = events.snapshot();
        assert_eq!(list.len(), CAPACITY);
        assert!(list.iter().all(|e| e.event == "weight"));
        let lines = events.json_lines();
        assert_eq!(lines.lines().count(), CAPACITY);
        assert!(lines.starts_with("{\"ts_ms\":"));
    }
}
