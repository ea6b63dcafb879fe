//! The data path: tcp sessions, http requests, the client stream (plain or TLS) they
//! read, and the copy loops they share.

pub mod copy;
pub mod http;
pub mod stream;
pub mod tcp;
#[cfg(target_os = "linux")]
pub mod zerocopy;
