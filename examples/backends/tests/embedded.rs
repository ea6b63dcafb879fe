//! Embedded mode with real sockets: rooms, history, health, and two chat servers on one SQLite file.

mod common;

use std::time::Duration;

use anyhow::ensure;
use common::{Client, TempDb, eventually, history, http, start_chat};
use serde_json::json;

#[tokio::test]
async fn health_can_be_failed_and_recovered() -> anyhow::Result<()> {
    let db = TempDb::new("health");
    let s = start_chat("s1", db.mode()).await?;
    assert_eq!(http(s.addr, "GET", "/healthz").await?, (200, "ok".into()));
    assert_eq!(http(s.addr, "POST", "/admin/fail").await?.0, 200);
    assert_eq!(http(s.addr, "GET", "/healthz").await?.0, 503);
    assert_eq!(http(s.addr, "POST", "/admin/recover").await?.0, 200);
    assert_eq!(http(s.addr, "GET", "/healthz").await?, (200, "ok".into()));
    assert_eq!(http(s.addr, "GET", "/admin/fail").await?.0, 405);
    assert_eq!(http(s.addr, "GET", "/nope").await?.0, 404);
    let (status, page) = http(s.addr, "GET", "/").await?;
    assert_eq!(status, 200);
    assert!(
        page.contains("<b id=\"page-server\">s1</b>"),
        "page names its chat server"
    );
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn rooms_keep_messages_apart() -> anyhow::Result<()> {
    let db = TempDb::new("rooms");
    let s = start_chat("s1", db.mode()).await?;
    let mut alice = Client::join(s.addr, "red", "alice").await?;
    let mut bob = Client::join(s.addr, "red", "bob").await?;
    let mut carol = Client::join(s.addr, "blue", "carol").await?;

    alice.say("hello red", "m-red-1").await?;
    let sent = alice.next_of("sent").await?;
    assert_eq!(sent["id"], "m-red-1");
    for c in [&mut alice, &mut bob] {
        let m = c.msg_with_id("m-red-1").await?;
        assert_eq!(m["room"], "red");
        assert_eq!(m["user"], "alice");
        assert_eq!(m["text"], "hello red");
        assert_eq!(m["server"], "s1");
        assert_eq!(m["via"], "s1");
        assert!(m["ts"].as_i64().is_some_and(|t| t > 0));
    }

    carol.say("hello blue", "m-blue-1").await?;
    // The first msg carol sees is her own: red's message never reached her.
    let first = carol.next_of("msg").await?;
    assert_eq!(first["id"], "m-blue-1");
    // And bob, in red, does not get blue's message.
    alice.say("second red", "m-red-2").await?;
    assert_eq!(bob.next_of("msg").await?["id"], "m-red-2");

    // A message without an id gets one from the chat server.
    alice.msg_with_id("m-red-2").await?;
    bob.send(json!({"type": "msg", "text": "no id"})).await?;
    let m = alice.next_of("msg").await?;
    assert_eq!(m["text"], "no id");
    assert!(m["id"].as_str().is_some_and(|id| id.starts_with("s1-")));

    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_socket_stays_open() -> anyhow::Result<()> {
    let db = TempDb::new("errors");
    let s = start_chat("s1", db.mode()).await?;
    let mut c = Client::connect(s.addr).await?;
    c.say("too early", "e1").await?;
    let e = c.next().await?;
    assert_eq!(
        (e["type"].as_str(), e["id"].as_str()),
        (Some("error"), Some("e1"))
    );
    c.send_raw("{not json").await?;
    assert_eq!(c.next().await?["type"], "error");
    c.send(json!({"type": "join", "room": "", "user": "x"}))
        .await?;
    assert_eq!(c.next().await?["type"], "error");
    c.send(json!({"type": "join", "room": "r", "user": "x"}))
        .await?;
    assert_eq!(c.next().await?["type"], "joined");
    c.send(json!({"type": "msg", "text": ""})).await?;
    assert_eq!(c.next().await?["type"], "error");
    c.say("fine", "e2").await?;
    assert_eq!(c.next_of("sent").await?["id"], "e2");

    let (status, _) = http(s.addr, "GET", "/history").await?;
    assert_eq!(status, 400, "room is required");
    let (status, _) = http(s.addr, "GET", "/history?room=r&limit=x").await?;
    assert_eq!(status, 400, "limit must be a number");
    let (status, _) = http(s.addr, "GET", "/ws").await?;
    assert_eq!(status, 400, "plain GET /ws is not a handshake");
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn history_is_oldest_first_and_limited() -> anyhow::Result<()> {
    let db = TempDb::new("history");
    let s = start_chat("s1", db.mode()).await?;
    let mut c = Client::join(s.addr, "hist", "dora").await?;
    for i in 1..=5 {
        c.say(&format!("text {i}"), &format!("h{i}")).await?;
        c.next_of("sent").await?;
    }
    let all = history(s.addr, "hist", 100).await?;
    let ids: Vec<_> = all.iter().map(|m| m["id"].as_str().unwrap_or("")).collect();
    assert_eq!(ids, ["h1", "h2", "h3", "h4", "h5"]);
    assert_eq!(all[0]["text"], "text 1");
    assert_eq!(all[0]["user"], "dora");
    assert_eq!(all[0]["server"], "s1");
    let last2 = history(s.addr, "hist", 2).await?;
    let ids: Vec<_> = last2
        .iter()
        .map(|m| m["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids, ["h4", "h5"]);
    assert!(history(s.addr, "elsewhere", 10).await?.is_empty());

    // Resending an id (what the page does after a failover) is confirmed, stored once.
    c.say("text 5 again", "h5").await?;
    assert_eq!(c.next_of("sent").await?["id"], "h5");
    assert_eq!(history(s.addr, "hist", 100).await?.len(), 5);
    s.stop().await?;
    Ok(())
}

#[tokio::test]
async fn two_chat_servers_share_one_sqlite_file() -> anyhow::Result<()> {
    let db = TempDb::new("shared");
    let s1 = start_chat("s1", db.mode()).await?;
    let s2 = start_chat("s2", db.mode()).await?;
    let mut on1 = Client::join(s1.addr, "lobby", "ann").await?;
    let mut on2 = Client::join(s2.addr, "lobby", "ben").await?;

    on1.say("hi from s1", "x1").await?;
    let m = on2.msg_with_id("x1").await?;
    assert_eq!(
        (m["server"].as_str(), m["via"].as_str()),
        (Some("s1"), Some("s2"))
    );
    assert_eq!(m["text"], "hi from s1");

    on2.say("hi from s2", "x2").await?;
    let m = on1.msg_with_id("x2").await?;
    assert_eq!(
        (m["server"].as_str(), m["via"].as_str()),
        (Some("s2"), Some("s1"))
    );

    for s in [&s1, &s2] {
        let h = history(s.addr, "lobby", 10).await?;
        let ids: Vec<_> = h.iter().map(|m| m["id"].as_str().unwrap_or("")).collect();
        assert_eq!(ids, ["x1", "x2"]);
    }

    // A restarted chat server reads the same history and is reachable again.
    s2.stop().await?;
    let s2 = start_chat("s2", db.mode()).await?;
    let h = history(s2.addr, "lobby", 10).await?;
    assert_eq!(h.len(), 2);
    let mut back = Client::join(s2.addr, "lobby", "ben").await?;
    on1.say("after restart", "x3").await?;
    assert_eq!(back.msg_with_id("x3").await?["via"], "s2");
    eventually("x3 in history", || async {
        let h = history(s2.addr, "lobby", 10).await?;
        ensure!(h.len() == 3, "history has {} messages", h.len());
        Ok(())
    })
    .await?;

    s1.stop().await?;
    s2.stop().await?;
    Ok(())
}

#[tokio::test]
async fn shutdown_closes_websockets_as_going_away() -> anyhow::Result<()> {
    let db = TempDb::new("shutdown");
    let s = start_chat("s1", db.mode()).await?;
    let mut c = Client::join(s.addr, "r", "u").await?;
    let addr = s.addr;
    let stopped = tokio::spawn(s.stop());
    assert_eq!(c.closed().await?, Some(1001));
    tokio::time::timeout(Duration::from_secs(10), stopped).await???;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener is closed after shutdown"
    );
    Ok(())
}
