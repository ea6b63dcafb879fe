//! The configuration file: TOML schema, validation with `file:line:col` errors, defaults.
//!
//! Two layers, as in sozu and rathole: raw serde structs with `deny_unknown_fields`
//! (`raw`), then the validated types (`types`), whose fields cannot be wrong, made by
//! `validate`, which reports through `collect`. serde stops at the first error of a
//! struct, so the document is walked table by table and each leaf table is deserialized
//! on its own: one run reports every problem in the file.

mod cidr;
mod collect;
mod duration;
mod health;
mod limits;
mod proxy_protocol;
mod raw;
mod size;
mod tls;
mod types;
mod validate;

use std::path::Path;

pub use cidr::parse_cidr;
pub use duration::parse_duration;
pub use size::parse_size;
pub use tls::crypto_provider;
pub use types::*;

impl Config {
    /// Reads and validates the file at `path`; errors name the path as given.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &origin),
            Err(e) => Err(ConfigErrors(vec![ConfigError {
                origin,
                position: None,
                message: format!("cannot read the file: {e}"),
            }])),
        }
    }

    /// Validates `text`; `origin` is the file name used in the error messages, and its
    /// directory is where relative certificate paths start.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
        validate::parse(text, origin)
    }

    pub fn listener(&self, name: &str) -> Option<&ListenerConfig> {
        self.listeners.iter().find(|l| l.name == name)
    }

    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;
