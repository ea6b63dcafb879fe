//! Problems collected against the source text: byte spans turned into `line:col`,
//! and the small typed readers (durations, addresses, counts) that report as they read.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::duration::parse_duration;
use super::size::parse_size;
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

    /// Deserializes one leaf table, reporting every bad key in it (not only serde's
    /// first); `None` when any key was bad.
    pub(super) fn leaf<T: DeserializeOwned>(&mut self, value: &Value<'_>) -> Option<T> {
        self.partial(value)
            .and_then(|(t, complete)| complete.then_some(t))
    }

    /// Like `leaf`, but also gives what the good keys make when some were bad (then
    /// `false`), so that their own checks still run and report.
    ///
    /// serde stops at a struct's first error: each bad key is reported and taken out,
    /// and the rest read again, until what is left reads.
    pub(super) fn partial<T: DeserializeOwned>(&mut self, value: &Value<'_>) -> Option<(T, bool)> {
        let span = value.span();
        let mut current = value.clone();
        let mut removed: Vec<String> = Vec::new();
        loop {
            let error = match T::deserialize(ValueDeserializer::from(current.clone())) {
                Ok(t) => return Some((t, removed.is_empty())),
                Err(e) => e,
            };
            let DeValue::Table(table) = current.get_mut() else {
                self.toml(span, error);
                return None;
            };
            let at = error.span().unwrap_or(span.clone());
            let message = error.message().trim_end().replace('\n', " ");
            // An unknown key is named by the message; any other error sits in a value.
            let unknown = message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split('`').next());
            let bad = table
                .iter()
                .find(|(k, v)| match unknown {
                    Some(name) => k.get_ref() == name,
                    None => contains(&v.span(), &at),
                })
                .map(|(k, _)| k.clone());
            let Some(key) = bad else {
                // A missing key whose bad value was taken out was reported already.
                if !removed
                    .iter()
                    .any(|k| message == format!("missing field `{k}`"))
                {
                    self.at(at, message);
                }
                return None;
            };
            self.at(at, explain(key.get_ref(), &message));
            removed.push(key.get_ref().to_string());
            table.remove(&key);
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

    /// A size with a unit, at least `min` bytes; `None` when absent or bad.
    pub(super) fn size(
        &mut self,
        key: &str,
        value: &Option<Spanned<String>>,
        min: u64,
    ) -> Option<u64> {
        let v = value.as_ref()?;
        match parse_size(v.get_ref()) {
            Ok(n) if n >= min => Some(n),
            Ok(_) => {
                self.at(v.span(), format!("`{key}` must be at least {min} bytes"));
                None
            }
            Err(message) => {
                self.at(v.span(), message);
                None
            }
        }
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

fn contains(outer: &Span, inner: &Span) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// serde's message, with what a person would ask next: the key that was probably
/// meant, or how a duration is written.
fn explain(key: &str, message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let expected: Vec<&str> = rest
            .split('`')
            .skip(1)
            .filter(|s| !s.contains(',') && !s.trim().is_empty() && !s.contains(' '))
            .collect();
        if let Some(near) = closest(key, &expected) {
            return format!("{message}; did you mean `{near}`?");
        }
        return message.to_string();
    }
    if DURATION_KEYS.contains(&key) && message.contains("expected a string") {
        return format!(
            "`{key}` is a duration: a string with a unit (ms, s, m, h), e.g. {key} = \"1s\""
        );
    }
    if SIZE_KEYS.contains(&key) && message.contains("expected a string") {
        return format!(
            "`{key}` is a size: a string with a unit (B, KiB, MiB, GiB), e.g. {key} = \"16KiB\""
        );
    }
    message.to_string()
}

/// The keys whose values are sizes.
const SIZE_KEYS: [&str; 2] = ["max_header_size", "max_body_size"];

/// The keys whose values are durations.
const DURATION_KEYS: [&str; 12] = [
    "shutdown_timeout",
    "idle_timeout",
    "connect_timeout",
    "response_timeout",
    "interval",
    "timeout",
    "max_replication_lag",
    "handshake_timeout",
    "queue_timeout",
    "header_timeout",
    "keepalive_timeout",
    "per",
];

/// The candidate at most two edits from `word` (the nearest), if any.
fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|&(d, _)| d <= 2)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, for "did you mean": keys are short, so the plain quadratic
/// table is plenty.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = previous + usize::from(ca != cb);
            previous = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}
