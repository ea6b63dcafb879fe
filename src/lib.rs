//! rlb: a layer-4/layer-7 load balancer and reverse proxy.
//!
//! The binary (`main.rs`) parses the command line, sets up logging and signals, and
//! drives a [`runtime::Rlb`]; everything else lives here so tests can start rlb
//! in-process on port 0.
#![forbid(unsafe_code)]

pub mod admin;
pub mod balance;
pub mod config;
pub mod events;
pub mod health;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod runtime;
pub mod server;
pub mod watch;

pub use config::Config;
pub use runtime::Rlb;
