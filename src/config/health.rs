//! The `[upstreams.NAME.health]` table: the kind of check, its own keys, and the
//! schedule, each problem reported even when `check` itself is bad.

use std::time::Duration;

use toml::Spanned;

use super::collect::{Errors, Span, Value};
use super::raw::{RawCheck, RawHealth};
use super::types::*;

pub(super) fn validate_health(errors: &mut Errors<'_>, value: &Value<'_>) -> Option<Health> {
    // Read as far as it goes: a bad `check` still lets `interval` and the rest report.
    let (raw, complete) = errors.partial::<RawHealth>(value)?;
    let check = match &raw.check {
        Some(check) => check_of(errors, &raw, check),
        None => {
            if complete {
                errors.at(value.span(), "missing field `check`");
            }
            None
        }
    };
    let interval = errors.positive_duration("interval", &raw.interval, DEFAULT_CHECK_INTERVAL);
    // As HAProxy without `timeout check`: never longer than the interval, so a frozen
    // server is ejected within `fall` intervals.
    let timeout =
        errors.positive_duration("timeout", &raw.timeout, DEFAULT_CHECK_TIMEOUT.min(interval));
    let rise = errors
        .count("rise", &raw.rise, 1, 100)
        .map_or(DEFAULT_RISE, |n| n as u32);
    let fall = errors
        .count("fall", &raw.fall, 1, 100)
        .map_or(DEFAULT_FALL, |n| n as u32);
    Some(Health {
        check: check.filter(|_| complete)?,
        interval,
        timeout,
        rise,
        fall,
    })
}

/// The kind of check and its own keys.
fn check_of(errors: &mut Errors<'_>, raw: &RawHealth, check: &Spanned<RawCheck>) -> Option<Check> {
    let check_kind = *check.get_ref();
    keys_of_other_checks(errors, raw, check_kind);
    match check_kind {
        RawCheck::Tcp => Some(Check::Tcp),
        RawCheck::Http => {
            let path = raw
                .path
                .as_ref()
                .map_or_else(|| "/".to_string(), |p| p.get_ref().clone());
            Some(Check::Http { path })
        }
        RawCheck::Mysql => match &raw.user {
            None => {
                errors.at(
                    check.span(),
                    "`check = \"mysql\"` needs a `user` to log in as",
                );
                None
            }
            Some(user) => Some(Check::Mysql {
                user: user.get_ref().clone(),
                password_env: raw.password_env.as_ref().map(|p| p.get_ref().clone()),
                max_replication_lag: raw
                    .max_replication_lag
                    .as_ref()
                    .map(|_| errors.duration(&raw.max_replication_lag, Duration::ZERO)),
            }),
        },
    }
}

/// `path` belongs to http checks, `user` and the rest to mysql ones: each key given to
/// another kind of check is an error.
fn keys_of_other_checks(errors: &mut Errors<'_>, raw: &RawHealth, check_kind: RawCheck) {
    let only = |errors: &mut Errors<'_>, key: &str, v: Option<Span>, allowed: RawCheck| {
        if let Some(span) = v
            && check_kind != allowed
        {
            let kind = match allowed {
                RawCheck::Tcp => "tcp",
                RawCheck::Http => "http",
                RawCheck::Mysql => "mysql",
            };
            errors.at(span, format!("`{key}` is only for `check = \"{kind}\"`"));
        }
    };
    only(
        errors,
        "path",
        raw.path.as_ref().map(|v| v.span()),
        RawCheck::Http,
    );
    only(
        errors,
        "user",
        raw.user.as_ref().map(|v| v.span()),
        RawCheck::Mysql,
    );
    only(
        errors,
        "password_env",
        raw.password_env.as_ref().map(|v| v.span()),
        RawCheck::Mysql,
    );
    only(
        errors,
        "max_replication_lag",
        raw.max_replication_lag.as_ref().map(|v| v.span()),
        RawCheck::Mysql,
    );
}
