//! rlb: a layer-4/layer-7 load balancer and reverse proxy.
//!
//! The binary (`main.rs`) parses the command line, sets up logging, and drives a
//! [`Rlb`]; everything else lives here so tests can start rlb in-process on port 0.
//!
//! Modules import only modules below them in `LAYERS` of `scripts/check-layers.py`
//! (CI checks it): pure matching and the configuration at the bottom, then live state,
//! the snapshot, health, the data path, listeners, and the control task on top.
#![forbid(unsafe_code)]

pub(crate) mod balance;
pub mod config;
pub(crate) mod connect;
pub mod control;
pub(crate) mod error;
pub(crate) mod events;
pub mod health;
pub(crate) mod limit;
pub(crate) mod listener;
pub(crate) mod metrics;
pub(crate) mod proxy;
pub(crate) mod route;
pub(crate) mod server;
pub(crate) mod snapshot;
pub(crate) mod tls;

pub use config::Config;
pub use control::{ReloadError, Rlb};
