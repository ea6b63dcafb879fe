//! The JSON frames spoken on `/ws` and the chat message stored in history.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Longest room or user name accepted, in characters; keeps history rows small.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest message text accepted, in characters.
pub const MAX_TEXT_CHARS: usize = 4000;
/// Longest client-chosen message id accepted, in characters (fits a MariaDB index).
pub const MAX_ID_CHARS: usize = 128;

/// A frame sent by a WebSocket client.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientFrame {
    Join {
        room: String,
        user: String,
    },
    Msg {
        text: String,
        /// Chosen by the client so that a message resent after a failover is stored once.
        #[serde(default)]
        id: Option<String>,
    },
}

/// One chat message as it travels between chat servers and sits in history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChatMessage {
    pub id: String,
    pub room: String,
    pub user: String,
    pub text: String,
    /// The chat server that accepted the message from its sender.
    pub server: String,
    /// Milliseconds since the Unix epoch, taken by `server`.
    pub ts: i64,
}

/// A frame sent to a WebSocket client.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame<'a> {
    /// Acknowledges a `join`; `server` is the chat server holding this WebSocket.
    Joined {
        room: &'a str,
        user: &'a str,
        server: &'a str,
    },
    /// A chat message; `via` is the chat server pushing it on this WebSocket.
    Msg {
        #[serde(flatten)]
        message: &'a ChatMessage,
        via: &'a str,
    },
    /// The message with this id is stored (embedded mode) or confirmed by RabbitMQ (full mode).
    Sent { id: &'a str },
    Error {
        error: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
}

impl ServerFrame<'_> {
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Checks a room or user name.
pub fn check_name(what: &str, value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if value.chars().count() > MAX_NAME_CHARS {
        return Err(format!("{what} is longer than {MAX_NAME_CHARS} characters"));
    }
    Ok(())
}

/// Checks the text and optional id of a `msg` frame.
pub fn check_msg(text: &str, id: Option<&str>) -> Result<(), String> {
    if text.is_empty() {
        return Err("text must not be empty".into());
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(format!("text is longer than {MAX_TEXT_CHARS} characters"));
    }
    if let Some(id) = id
        && (id.is_empty() || id.chars().count() > MAX_ID_CHARS)
    {
        return Err(format!("id must be 1 to {MAX_ID_CHARS} characters"));
    }
    Ok(())
}

pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Makes message ids unique across chat servers (by name) and restarts (by boot time).
#[derive(Debug)]
pub struct IdGenerator {
    prefix: String,
    next: AtomicU64,
}

impl IdGenerator {
    pub fn new(server: &str) -> Self {
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Self {
            prefix: format!("{server}-{boot:x}"),
            next: AtomicU64::new(1),
        }
    }

    pub fn next_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_client_frames() {
        let join: ClientFrame =
            serde_json::from_str(r#"{"type":"join","room":"r","user":"u"}"#).unwrap();
        assert_eq!(
            join,
            ClientFrame::Join {
                room: "r".into(),
                user: "u".into()
            }
        );
        let msg: ClientFrame = serde_json::from_str(r#"{"type":"msg","text":"hi"}"#).unwrap();
        assert_eq!(
            msg,
            ClientFrame::Msg {
                text: "hi".into(),
                id: None
            }
        );
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn msg_frame_is_flat() {
        let m = ChatMessage {
            id: "i".into(),
            room: "r".into(),
            user: "u".into(),
            text: "t".into(),
            server: "s1".into(),
            ts: 5,
        };
        let v: serde_json::Value = serde_json::from_str(
            &ServerFrame::Msg {
                message: &m,
                via: "s2",
            }
            .to_json(),
        )
        .unwrap();
        assert_eq!(v["type"], "msg");
        assert_eq!(v["id"], "i");
        assert_eq!(v["server"], "s1");
        assert_eq!(v["via"], "s2");
        assert_eq!(v["ts"], 5);
    }

    #[test]
    fn ids_are_unique() {
        let g = IdGenerator::new("s1");
        assert_ne!(g.next_id(), g.next_id());
        assert!(g.next_id().starts_with("s1-"));
    }

    #[test]
    fn checks_limits() {
        assert!(check_name("room", " ").is_err());
        assert!(check_name("room", &"x".repeat(65)).is_err());
        assert!(check_name("room", "lobby").is_ok());
        assert!(check_msg("", None).is_err());
        assert!(check_msg("hi", Some("")).is_err());
        assert!(check_msg("hi", Some("abc")).is_ok());
    }
}
