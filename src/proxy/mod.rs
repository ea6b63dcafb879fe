//! The data path: tcp sessions, http requests, the copy loops they share, and the one
//! function that turns a failure into a response.

pub mod copy;
pub mod error;
pub mod http;
pub mod tcp;
#[cfg(target_os = "linux")]
pub mod zerocopy;
