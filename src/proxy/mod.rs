//! The data path: tcp sessions, http requests, and the copy loop and server
//! connections they share.

pub mod copy;
pub mod error;
pub mod http;
pub mod pool;
pub mod tcp;
#[cfg(target_os = "linux")]
pub mod zerocopy;
