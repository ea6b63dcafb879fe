//! The `[listeners.NAME.limits]` table and the `rate` of a listener or a route: each
//! key checked and reported on its own, even when another key of the table is bad.

use toml::Spanned;
use toml::de::DeValue;

use super::collect::{Errors, Span, Value};
use super::raw::{RawLimits, RawRate};
use super::types::*;

/// The limits of listener `name`; `http` says whether its mode is http, since the
/// head, body and rate keys mean nothing to a tcp listener.
pub(super) fn validate_limits(
    errors: &mut Errors<'_>,
    name: &str,
    value: &Value<'_>,
    http: bool,
) -> Option<Limits> {
    let (raw, complete) = errors.partial::<RawLimits>(value)?;
    let rate = nested(value, "rate").map(|v| (v.span(), validate_rate(errors, v)));
    let defaults = Limits::default();
    let limits = Limits {
        max_connections: errors
            .count("max_connections", &raw.max_connections, 1, 10_000_000)
            .map(|n| n as usize),
        header_timeout: errors.positive_duration(
            "header_timeout",
            &raw.header_timeout,
            defaults.header_timeout,
        ),
        keepalive_timeout: errors.positive_duration(
            "keepalive_timeout",
            &raw.keepalive_timeout,
            defaults.keepalive_timeout,
        ),
        // hyper needs room for a request line; past 1 MiB a head is an attack.
        max_header_size: errors
            .size("max_header_size", &raw.max_header_size, 1024)
            .map_or(defaults.max_header_size, |n| n.min(1 << 20) as usize),
        max_body_size: errors.size("max_body_size", &raw.max_body_size, 1),
        max_connections_per_client: errors
            .count(
                "max_connections_per_client",
                &raw.max_connections_per_client,
                1,
                1_000_000,
            )
            .map(|n| n as u32),
        rate: rate.as_ref().and_then(|(_, r)| *r),
    };
    if raw
        .max_header_size
        .as_ref()
        .and_then(|v| super::size::parse_size(v.get_ref()).ok())
        .is_some_and(|n| n > 1 << 20)
    {
        let span = raw
            .max_header_size
            .as_ref()
            .map(|v| v.span())
            .unwrap_or_default();
        errors.at(span, "`max_header_size` must be at most 1MiB");
    }
    if !http {
        http_only(
            errors,
            name,
            &raw,
            rate.as_ref().map(|(span, _)| span.clone()),
        );
    }
    let rate_ok = rate.as_ref().is_none_or(|(_, r)| r.is_some());
    (complete && rate_ok).then_some(limits)
}

/// The head, body and rate keys, given to tcp listener `name`: each an error.
fn http_only(errors: &mut Errors<'_>, name: &str, raw: &RawLimits, rate: Option<Span>) {
    let keys = [
        (
            "header_timeout",
            raw.header_timeout.as_ref().map(Spanned::span),
        ),
        (
            "keepalive_timeout",
            raw.keepalive_timeout.as_ref().map(Spanned::span),
        ),
        (
            "max_header_size",
            raw.max_header_size.as_ref().map(Spanned::span),
        ),
        (
            "max_body_size",
            raw.max_body_size.as_ref().map(Spanned::span),
        ),
        ("rate", rate),
    ];
    for (key, span) in keys {
        if let Some(span) = span {
            errors.at(
                span,
                format!("listener `{name}`: `{key}` is only for http listeners"),
            );
        }
    }
}

/// `rate = { requests = N, per = "1s", burst = M }`: `per` defaults to one second,
/// `burst` to `requests`.
pub(super) fn validate_rate(errors: &mut Errors<'_>, value: &Value<'_>) -> Option<Rate> {
    if !matches!(value.get_ref(), DeValue::Table(_)) {
        errors.at(
            value.span(),
            "`rate` is a table: rate = { requests = 100, per = \"1s\", burst = 200 }",
        );
        return None;
    }
    let (raw, complete) = errors.partial::<RawRate>(value)?;
    let before = errors.list.len();
    let requests = errors.count("requests", &Some(raw.requests.clone()), 1, 1_000_000_000);
    let per = errors.positive_duration("per", &raw.per, std::time::Duration::from_secs(1));
    let burst = match &raw.burst {
        None => requests,
        Some(_) => errors.count("burst", &raw.burst, 1, 1_000_000_000),
    };
    let requests = requests? as u32;
    if per.as_nanos() < u128::from(requests) {
        let span = raw.per.as_ref().map_or(value.span(), Spanned::span);
        errors.at(span, "`rate`: at most one request per nanosecond");
        return None;
    }
    // A bad `per` was reported and replaced by its default: the rate is still bad.
    (complete && errors.list.len() == before).then_some(Rate {
        requests,
        per,
        burst: burst? as u32,
    })
}

/// The value of `key` in the table `value`, if it is a table holding one.
pub(super) fn nested<'v, 'i>(value: &'v Value<'i>, key: &str) -> Option<&'v Value<'i>> {
    let DeValue::Table(table) = value.get_ref() else {
        return None;
    };
    table
        .iter()
        .find(|(k, _)| k.get_ref() == key)
        .map(|(_, v)| v)
}
