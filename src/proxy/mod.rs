//! The data path: tcp sessions, http requests, and the copy loops they share.

pub mod copy;
pub mod http;
pub mod tcp;
#[cfg(target_os = "linux")]
pub mod zerocopy;
