//! The load of an experiment: WebSocket chat clients sending at a fixed rate and
//! resending what was not acknowledged after a reconnect, and HTTP GETs at a fixed rate.
//! Everything they see goes to a [`Recorder`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::http::HttpConn;

/// Longest wait for a WebSocket handshake plus `joined`, or for one GET.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause before trying again after a failed WebSocket connect.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How many error descriptions are kept for the report.
const KEPT_ERRORS: usize = 50;

/// What happened, when (milliseconds since the experiment's start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    RequestOk,
    RequestFailed,
    MessageAcked,
    Reconnected,
    ConnectFailed,
}

/// Counters and the time series of one experiment, shared by every load task.
pub struct Recorder {
    start: Instant,
    pub requests_ok: AtomicU64,
    pub requests_failed: AtomicU64,
    pub messages_acked: AtomicU64,
    pub messages_resent: AtomicU64,
    pub ws_error_frames: AtomicU64,
    pub ws_closed: AtomicU64,
    pub ws_connect_failed: AtomicU64,
    pub ws_connected: AtomicI64,
    pub pending: AtomicI64,
    reconnect_ms: Mutex<Vec<f64>>,
    samples: Mutex<Vec<(u32, Sample)>>,
    errors: Mutex<Vec<(f64, String)>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            requests_ok: AtomicU64::new(0),
            requests_failed: AtomicU64::new(0),
            messages_acked: AtomicU64::new(0),
            messages_resent: AtomicU64::new(0),
            ws_error_frames: AtomicU64::new(0),
            ws_closed: AtomicU64::new(0),
            ws_connect_failed: AtomicU64::new(0),
            ws_connected: AtomicI64::new(0),
            pending: AtomicI64::new(0),
            reconnect_ms: Mutex::new(Vec::new()),
            samples: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
        }
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// Seconds since the start.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn sample(&self, what: Sample) {
        let ms = self.start.elapsed().as_millis() as u32;
        lock(&self.samples).push((ms, what));
    }

    fn error(&self, what: String) {
        let mut errors = lock(&self.errors);
        if errors.len() < KEPT_ERRORS {
            errors.push((self.elapsed(), what));
        }
    }

    pub fn samples(&self) -> Vec<(u32, Sample)> {
        lock(&self.samples).clone()
    }

    pub fn errors(&self) -> Vec<(f64, String)> {
        lock(&self.errors).clone()
    }

    pub fn reconnect_ms(&self) -> Vec<f64> {
        lock(&self.reconnect_ms).clone()
    }

    fn request_ok(&self) {
        self.requests_ok.fetch_add(1, Ordering::Relaxed);
        self.sample(Sample::RequestOk);
    }

    fn request_failed(&self, what: String) {
        self.requests_failed.fetch_add(1, Ordering::Relaxed);
        self.sample(Sample::RequestFailed);
        self.error(format!("GET: {what}"));
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One chat client's part of the experiment.
pub struct ChatClient {
    pub index: usize,
    pub room: String,
    pub user: String,
    /// Prefix of this client's message ids; the id is `PREFIX-SEQ`.
    pub id_prefix: String,
    pub url: String,
    /// Messages per second.
    pub rate: f64,
}

/// What a chat client ends with.
#[derive(Debug, Default)]
pub struct ClientOutcome {
    pub room: String,
    /// Ids the chat servers acknowledged with `sent`.
    pub acked: Vec<String>,
    /// Ids still unacknowledged when the client gave up.
    pub unacked: Vec<String>,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect_and_join(url: &str, room: &str, user: &str) -> anyhow::Result<Ws> {
    tokio::time::timeout(CLIENT_TIMEOUT, async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .context("websocket handshake")?;
        ws.send(Message::text(
            json!({"type": "join", "room": room, "user": user}).to_string(),
        ))
        .await?;
        while let Some(frame) = ws.next().await {
            if let Message::Text(text) = frame?
                && let Ok(v) = serde_json::from_str::<Value>(&text)
                && v["type"] == "joined"
            {
                return Ok(ws);
            }
        }
        bail!("closed before joined")
    })
    .await
    .context("connect and join timed out")?
}

impl ChatClient {
    /// Sends one message every `1/rate` s while `sending` is not cancelled; reconnects
    /// through rlb whenever the WebSocket closes and resends what was not acknowledged.
    /// Returns once every message is acknowledged after `sending` is cancelled, or at
    /// `give_up`.
    pub async fn run(
        self,
        rec: Arc<Recorder>,
        sending: CancellationToken,
        give_up: tokio::time::Instant,
    ) -> ClientOutcome {
        let period = Duration::from_secs_f64(1.0 / self.rate.max(0.001));
        let mut pending: BTreeMap<u64, String> = BTreeMap::new();
        let mut acked = Vec::new();
        let mut seq = 0u64;
        let mut lost_at: Option<Instant> = None;
        // Spread the clients' sends over one period.
        let offset = period.mul_f64((self.index % 16) as f64 / 16.0);
        tokio::time::sleep(offset).await;

        'session: loop {
            if tokio::time::Instant::now() >= give_up
                || (sending.is_cancelled() && pending.is_empty())
            {
                break;
            }
            let ws = tokio::select! {
                r = connect_and_join(&self.url, &self.room, &self.user) => r,
                _ = tokio::time::sleep_until(give_up) => break,
            };
            let ws = match ws {
                Ok(ws) => ws,
                Err(e) => {
                    rec.ws_connect_failed.fetch_add(1, Ordering::Relaxed);
                    rec.sample(Sample::ConnectFailed);
                    rec.error(format!("client {}: websocket connect: {e:#}", self.index));
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            if let Some(at) = lost_at.take() {
                lock(&rec.reconnect_ms).push(at.elapsed().as_secs_f64() * 1000.0);
                rec.sample(Sample::Reconnected);
            }
            rec.ws_connected.fetch_add(1, Ordering::Relaxed);
            let (mut sink, mut stream) = ws.split();
            let mut ok = true;
            for (&s, id) in &pending {
                rec.messages_resent.fetch_add(1, Ordering::Relaxed);
                if sink.send(Message::text(self.frame(s, id))).await.is_err() {
                    ok = false;
                    break;
                }
            }
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut check = tokio::time::interval(Duration::from_millis(100));
            while ok {
                tokio::select! {
                    _ = tick.tick(), if !sending.is_cancelled() => {
                        seq += 1;
                        let id = format!("{}-{seq}", self.id_prefix);
                        let frame = self.frame(seq, &id);
                        pending.insert(seq, id);
                        rec.pending.fetch_add(1, Ordering::Relaxed);
                        if sink.send(Message::text(frame)).await.is_err() {
                            ok = false;
                        }
                    }
                    frame = stream.next() => match frame {
                        Some(Ok(Message::Text(text))) => {
                            let v: Value = serde_json::from_str(&text).unwrap_or_default();
                            match v["type"].as_str() {
                                Some("sent") => {
                                    let s = v["id"].as_str().and_then(|id| self.seq_of(id));
                                    if let Some(id) = s.and_then(|s| pending.remove(&s)) {
                                        rec.pending.fetch_sub(1, Ordering::Relaxed);
                                        rec.messages_acked.fetch_add(1, Ordering::Relaxed);
                                        rec.sample(Sample::MessageAcked);
                                        acked.push(id);
                                    }
                                }
                                Some("error") => {
                                    rec.ws_error_frames.fetch_add(1, Ordering::Relaxed);
                                    rec.error(format!("client {}: error frame {text}", self.index));
                                }
                                _ => {}
                            }
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => ok = false,
                        Some(Ok(_)) => {}
                    },
                    _ = check.tick() => {
                        if tokio::time::Instant::now() >= give_up {
                            rec.ws_connected.fetch_sub(1, Ordering::Relaxed);
                            break 'session;
                        }
                        if sending.is_cancelled() && pending.is_empty() {
                            rec.ws_connected.fetch_sub(1, Ordering::Relaxed);
                            let _ = sink.send(Message::Close(None)).await;
                            break 'session;
                        }
                    }
                }
            }
            rec.ws_connected.fetch_sub(1, Ordering::Relaxed);
            rec.ws_closed.fetch_add(1, Ordering::Relaxed);
            lost_at = Some(Instant::now());
        }
        ClientOutcome {
            room: self.room,
            acked,
            unacked: pending.into_values().collect(),
        }
    }

    fn frame(&self, seq: u64, id: &str) -> String {
        json!({"type": "msg", "text": format!("message {seq} from {}", self.user), "id": id})
            .to_string()
    }

    fn seq_of(&self, id: &str) -> Option<u64> {
        id.strip_prefix(&self.id_prefix)?
            .strip_prefix('-')?
            .parse()
            .ok()
    }
}

/// GETs `path` through `addr` at `rate` per second on one keep-alive connection until
/// `stop`; a failed request drops the connection and the next one opens a new one.
pub async fn http_load(
    addr: SocketAddr,
    path: String,
    rate: f64,
    rec: Arc<Recorder>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut conn: Option<HttpConn> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let reused = conn.is_some();
        let result = tokio::time::timeout(CLIENT_TIMEOUT, async {
            if conn.is_none() {
                conn = Some(HttpConn::connect(addr, CLIENT_TIMEOUT).await?);
            }
            match conn.as_mut() {
                Some(c) => c.request("GET", &path).await,
                None => bail!("no connection"),
            }
        })
        .await;
        match result {
            Ok(Ok(reply)) if reply.status == 200 => rec.request_ok(),
            Ok(Ok(reply)) => {
                let body = String::from_utf8_lossy(&reply.body);
                rec.request_failed(format!("status {}: {}", reply.status, body.trim()));
            }
            Ok(Err(e)) => {
                conn = None;
                let how = if reused {
                    "reused connection"
                } else {
                    "new connection"
                };
                rec.request_failed(format!("{e:#} ({how})"));
            }
            Err(_) => {
                conn = None;
                rec.request_failed(format!("no answer within {CLIENT_TIMEOUT:?}"));
            }
        }
    }
}
