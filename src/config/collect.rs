//! Problems collected against the source text: byte spans turned into `line:col`,
//! and the small typed readers (durations, addresses, counts) that report as they read.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::duration::parse_duration;
use super::types::{ConfigError, ConfigErrors};

pub(super) type Span = Range<usize>;
pub(super) type Value<'i> = Spanned<DeValue<'i>>;

/// Collects errors against the source text, turning byte spans into line:col.
pub(super) struct Errors<'a> {
    pub(super) text: &'a str,
    pub(super) origin: &'a str,
    pub(super) list: Vec<(usize, ConfigError)>,
}

impl<'a> Errors<'a> {
    pub(super) fn at(&mut self, span: Span, message: impl Into<String>) {
        let offset = span.start.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        self.list.push((
            offset,
            ConfigError {
                origin: self.origin.to_string(),
                position: Some((line, col)),
                message: message.into(),
            },
        ));
    }

    pub(super) fn toml(&mut self, fallback: Span, e: toml::de::Error) {
        let message = e.message().trim_end().replace('\n', " ");
        self.at(e.span().unwrap_or(fallback), message);
    }

    /// Deserializes one leaf table; on failure records the error and returns `None`.
    pub(super) fn leaf<T: DeserializeOwned>(&mut self, value: &Value<'_>) -> Option<T> {
        let span = value.span();
        match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(t) => Some(t),
            Err(e) => {
                self.toml(span, e);
                None
            }
        }
    }

    pub(super) fn table<'v, 'i>(
        &mut self,
        value: &'v Value<'i>,
        what: &str,
    ) -> Option<&'v DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.at(
                    value.span(),
                    format!("{what} must be a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    pub(super) fn duration(
        &mut self,
        value: &Option<Spanned<String>>,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(v) => match parse_duration(v.get_ref()) {
                Ok(d) => d,
                Err(message) => {
                    self.at(v.span(), message);
                    default
                }
            },
        }
    }

    /// A duration that must be more than zero, such as a check interval.
    pub(super) fn positive_duration(
        &mut self,
        key: &str,
        value: &Option<Spanned<String>>,
        default: Duration,
    ) -> Duration {
        let d = self.duration(value, default);
        if d.is_zero() {
            if let Some(v) = value {
                self.at(v.span(), format!("`{key}` must be more than 0"));
            }
            return default;
        }
        d
    }

    pub(super) fn addr(&mut self, value: &Spanned<String>) -> Option<SocketAddr> {
        match value.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.at(
                    value.span(),
                    format!(
                        "bad address `{}`: expected IP:PORT, e.g. \"127.0.0.1:8080\"",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    pub(super) fn count(
        &mut self,
        key: &str,
        value: &Option<Spanned<i64>>,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let v = value.as_ref()?;
        let n = *v.get_ref();
        if n < min || n > max {
            self.at(
                v.span(),
                format!("`{key}` must be between {min} and {max}, found {n}"),
            );
            return None;
        }
        Some(n)
    }
}

pub(super) fn finish(mut errors: Errors<'_>) -> ConfigErrors {
    errors.list.sort_by_key(|(offset, _)| *offset);
    ConfigErrors(errors.list.into_iter().map(|(_, e)| e).collect())
}
