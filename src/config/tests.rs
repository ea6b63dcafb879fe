//! Validation of configuration files: line:col of each bad config, defaults, every error in one run.

use std::time::Duration;

use super::*;

fn errors(text: &str) -> Vec<String> {
    match Config::parse(text, "lb.toml") {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts that exactly one error was reported, at `position`, containing `needle`.
fn one_error(text: &str, position: &str, needle: &str) {
    let found = errors(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    let expected = format!("lb.toml:{position}: ");
    assert!(
        found[0].starts_with(&expected),
        "{} does not start with {expected}",
        found[0]
    );
    assert!(
        found[0].contains(needle),
        "{} does not mention {needle}",
        found[0]
    );
}

const TCP_OK: &str = r#"
[listeners.db]
bind = "127.0.0.1:3307"
mode = "tcp"
upstream = "replicas"

[upstreams.replicas]
servers = ["127.0.0.1:3312"]
"#;

#[test]
fn a_full_config_parses_with_its_values() {
    let c = Config::parse(
        r#"
[global]
workers = 2
shutdown_timeout = "5s"
log_format = "json"
access_log = false
watch_config = true

[admin]
bind = "127.0.0.1:9901"

[listeners.web]
bind = "127.0.0.1:8080"
mode = "http"
routes = [
  { path_prefix = "/api/randoms", upstream = "randoms" },
  { host = "Chat.Example.test:8080", upstream = "app" },
  { upstream = "app" },
]

[upstreams.app]
balance = "least_conn"
servers = ["127.0.0.1:9001", { addr = "127.0.0.1:9003", weight = 3 }]

[upstreams.app.health]
check = "http"
path = "/healthz"
interval = "1s"
timeout = "500ms"
rise = 2
fall = 2

[upstreams.randoms]
servers = ["127.0.0.1:8082"]

[upstreams.randoms.health]
check = "mysql"
user = "rlb_check"
password_env = "RLB_MYSQL_PASSWORD"
max_replication_lag = "5s"
"#,
        "lb.toml",
    )
    .unwrap();
    assert_eq!(c.global.workers, Some(2));
    assert_eq!(c.global.shutdown_timeout, Duration::from_secs(5));
    assert_eq!(c.global.log_format, LogFormat::Json);
    assert!(!c.global.access_log && c.global.watch_config);
    assert_eq!(c.admin.as_ref().unwrap().bind.port(), 9901);
    let Mode::Http { routes } = &c.listeners[0].mode else {
        panic!()
    };
    assert_eq!(routes.len(), 3);
    assert_eq!(routes[0].path_prefix.as_deref(), Some("/api/randoms"));
    assert_eq!(routes[1].host.as_deref(), Some("chat.example.test"));
    let app = c.upstream("app").unwrap();
    assert_eq!(app.balance, Balance::LeastConn);
    assert_eq!(app.servers[1].weight, 3);
    let health = app.health.as_ref().unwrap();
    assert_eq!(
        (health.interval, health.timeout, health.rise, health.fall),
        (Duration::from_secs(1), Duration::from_millis(500), 2, 2)
    );
    let Check::Mysql {
        max_replication_lag,
        ..
    } = &c
        .upstream("randoms")
        .unwrap()
        .health
        .as_ref()
        .unwrap()
        .check
    else {
        panic!()
    };
    assert_eq!(*max_replication_lag, Some(Duration::from_secs(5)));
}

#[test]
fn defaults_apply_when_keys_are_left_out() {
    let c = Config::parse(TCP_OK, "lb.toml").unwrap();
    assert_eq!(c.global.workers, None);
    assert_eq!(c.global.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT);
    assert!(c.global.access_log);
    assert!(c.admin.is_none());
    let u = c.upstream("replicas").unwrap();
    assert_eq!(u.balance, Balance::RoundRobin);
    assert_eq!(u.servers[0].weight, 1);
    assert!(u.health.is_none());
}

#[test]
fn toml_syntax_error() {
    one_error("[listeners.a\nbind = 1\n", "1:13", "");
}

#[test]
fn unknown_key() {
    one_error(
        &format!("{TCP_OK}\n[upstreams.replicas.health]\ncheck = \"tcp\"\nintervall = \"1s\"\n"),
        "12:1",
        "unknown field `intervall`",
    );
    one_error(
        &format!("colour = 1\n{TCP_OK}"),
        "1:1",
        "unknown key `colour`",
    );
}

#[test]
fn unknown_upstream() {
    one_error(
        &TCP_OK.replace("upstream = \"replicas\"", "upstream = \"replica\""),
        "5:12",
        "unknown upstream `replica` (defined: replicas)",
    );
}

#[test]
fn duplicate_bind() {
    let text = format!(
        "{TCP_OK}\n[listeners.again]\nbind = \"127.0.0.1:3307\"\nmode = \"tcp\"\nupstream = \"replicas\"\n"
    );
    one_error(
        &text,
        "11:8",
        "duplicate bind 127.0.0.1:3307: already used by listener `db`",
    );
}

#[test]
fn a_wildcard_bind_clashes_with_any_address_on_its_port() {
    let text = format!(
        "{TCP_OK}\n[listeners.all]\nbind = \"0.0.0.0:3307\"\nmode = \"tcp\"\nupstream = \"replicas\"\n"
    );
    one_error(
        &text,
        "11:8",
        "duplicate bind 0.0.0.0:3307: listener `db` binds 127.0.0.1:3307",
    );
    let text = format!(
        "[admin]\nbind = \"[::]:3307\"\n{TCP_OK}\n[listeners.other_port]\nbind = \"0.0.0.0:3308\"\nmode = \"tcp\"\nupstream = \"replicas\"\n"
    );
    one_error(
        &text,
        "5:8",
        "duplicate bind 127.0.0.1:3307: the admin listener binds [::]:3307",
    );
}

#[test]
fn bad_duration() {
    let text = format!("[global]\nshutdown_timeout = \"30\"\n{TCP_OK}");
    one_error(&text, "2:20", "bad duration `30`");
}

#[test]
fn bad_address() {
    one_error(
        &TCP_OK.replace("127.0.0.1:3312", "localhost"),
        "8:12",
        "bad address `localhost`: expected IP:PORT",
    );
}

#[test]
fn unknown_balance_lists_the_valid_values() {
    let text = TCP_OK.replace(
        "[upstreams.replicas]",
        "[upstreams.replicas]\nbalance = \"fastest\"",
    );
    one_error(
        &text,
        "8:11",
        "unknown variant `fastest`, expected `round_robin` or `least_conn`",
    );
}

#[test]
fn tcp_listener_without_upstream() {
    one_error(
        &TCP_OK.replace("upstream = \"replicas\"\n", ""),
        "4:8",
        "tcp listener `db` needs an `upstream`",
    );
}

#[test]
fn http_listener_without_routes() {
    let text = "[listeners.web]\nbind = \"127.0.0.1:8080\"\nmode = \"http\"\n[upstreams.app]\nservers = [\"127.0.0.1:1\"]\n";
    one_error(text, "3:8", "http listener `web` needs `routes`");
}

#[test]
fn upstream_without_servers() {
    one_error(
        &TCP_OK.replace("[\"127.0.0.1:3312\"]", "[]"),
        "8:11",
        "upstream `replicas` has no servers",
    );
}

#[test]
fn mysql_check_needs_a_user_and_path_is_http_only() {
    let text = format!("{TCP_OK}\n[upstreams.replicas.health]\ncheck = \"mysql\"\npath = \"/\"\n");
    let found = errors(&text);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("lb.toml:11:9: ") && found[0].contains("needs a `user`"),
        "{found:#?}"
    );
    assert!(
        found[1].starts_with("lb.toml:12:8: ")
            && found[1].contains("`path` is only for `check = \"http\"`"),
        "{found:#?}"
    );
}

#[test]
fn every_error_is_reported_in_one_run_in_file_order() {
    let text = r#"[global]
shutdown_timeout = "soon"

[listeners.web]
bind = "127.0.0.1:8080"
routes = [{ upstream = "nope" }]

[listeners.db]
bind = "127.0.0.1:8080"
mode = "tcp"

[upstreams.app]
balance = "random"
servers = ["300.0.0.1:1"]
"#;
    let found = errors(text);
    let positions: Vec<&str> = found
        .iter()
        .map(|e| e.split(": ").next().unwrap())
        .collect();
    assert_eq!(
        positions,
        [
            "lb.toml:2:20",
            "lb.toml:6:24",
            "lb.toml:9:8",
            "lb.toml:10:8",
            "lb.toml:13:11",
            "lb.toml:14:12"
        ],
        "{found:#?}"
    );
}

#[test]
fn an_unreadable_file_is_an_error_not_a_panic() {
    let e = Config::load(Path::new("/nonexistent/lb.toml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/lb.toml: cannot read the file"),
        "{e}"
    );
}

#[test]
fn the_check_timeout_defaults_to_the_interval_when_shorter() {
    let short =
        format!("{TCP_OK}\n[upstreams.replicas.health]\ncheck = \"tcp\"\ninterval = \"250ms\"\n");
    let c = Config::parse(&short, "lb.toml").unwrap();
    assert_eq!(
        c.upstreams[0].health.as_ref().unwrap().timeout,
        Duration::from_millis(250)
    );
    let long = short.replace("250ms", "5s");
    let c = Config::parse(&long, "lb.toml").unwrap();
    assert_eq!(
        c.upstreams[0].health.as_ref().unwrap().timeout,
        DEFAULT_CHECK_TIMEOUT
    );
}

#[test]
fn unknown_upstream_in_a_route() {
    one_error(
        "[listeners.web]\nbind = \"127.0.0.1:8080\"\nroutes = [{ upstream = \"nope\" }]\n\
         [upstreams.app]\nservers = [\"127.0.0.1:9001\"]\n",
        "3:24",
        "unknown upstream `nope` (defined: app)",
    );
}

#[test]
fn http_listener_without_mode_or_routes_is_reported_at_its_table() {
    one_error(
        "[listeners.web]\nbind = \"127.0.0.1:8080\"\n[upstreams.app]\nservers = [\"127.0.0.1:9001\"]\n",
        "1:1",
        "http listener `web` needs `routes`",
    );
}

/// Every bad key of one table is reported, not only serde's first, and a bad `check`
/// does not hide the schedule's problems beside it.
#[test]
fn every_bad_key_of_a_table_is_reported() {
    let text = format!(
        "{TCP_OK}\n[upstreams.replicas.health]\ncheck = \"https\"\ninterval = \"1\"\n\
         timeout = 5\nrise = \"two\"\nfalls = 2\n"
    );
    let found = errors(&text);
    assert_eq!(found.len(), 5, "{found:#?}");
    let expect = [
        ("lb.toml:11:9:", "unknown variant `https`"),
        ("lb.toml:12:12:", "bad duration `1`"),
        (
            "lb.toml:13:11:",
            "`timeout` is a duration: a string with a unit",
        ),
        ("lb.toml:14:8:", "invalid type: string \"two\""),
        ("lb.toml:15:1:", "unknown field `falls`"),
    ];
    for (line, (position, needle)) in found.iter().zip(expect) {
        assert!(line.starts_with(position), "{line} is not at {position}");
        assert!(line.contains(needle), "{line} does not say {needle}");
    }
    assert!(found[4].ends_with("did you mean `fall`?"), "{}", found[4]);
}

#[test]
fn a_misspelt_key_gets_a_did_you_mean() {
    let text = "[listeners.web]\nbind = \"127.0.0.1:8080\"\nroutes = [{ upstream = \"app\" }]\n\
                [upstreams.app]\nbalanse = \"least_conn\"\nservers = [\"127.0.0.1:9001\"]\n";
    one_error(text, "5:1", "unknown field `balanse`");
    assert!(errors(text)[0].ends_with("did you mean `balance`?"));
    // Nothing close: no guess.
    let far = text.replace("balanse", "strategy");
    assert!(
        !errors(&far)[0].contains("did you mean"),
        "{:?}",
        errors(&far)
    );
}

#[test]
fn a_duration_written_as_a_number_says_how_to_write_it() {
    let text = "[global]\nshutdown_timeout = 30\n[listeners.web]\nbind = \"127.0.0.1:8080\"\n\
                routes = [{ upstream = \"app\" }]\n[upstreams.app]\nservers = [\"127.0.0.1:9001\"]\n";
    one_error(
        text,
        "2:20",
        "`shutdown_timeout` is a duration: a string with a unit (ms, s, m, h), e.g. shutdown_timeout = \"1s\"",
    );
}

#[test]
fn the_per_server_limit_and_queue_timeout_are_read_and_checked() {
    let limited = |keys: &str| TCP_OK.replace("servers = [", &format!("{keys}\nservers = ["));
    let c = Config::parse(&limited("max_connections_per_server = 100"), "lb.toml").unwrap();
    let limit = ServerLimit {
        max: 100,
        queue_timeout: DEFAULT_QUEUE_TIMEOUT,
    };
    assert_eq!(c.upstreams[0].limit, Some(limit));
    let keys = "max_connections_per_server = 2\nqueue_timeout = \"250ms\"";
    let c = Config::parse(&limited(keys), "lb.toml").unwrap();
    let queue_timeout = c.upstreams[0].limit.map(|l| l.queue_timeout);
    assert_eq!(queue_timeout, Some(Duration::from_millis(250)));
    assert_eq!(
        Config::parse(TCP_OK, "lb.toml").unwrap().upstreams[0].limit,
        None
    );

    let limit = "`max_connections_per_server` must be between 1 and 1000000, found 0";
    one_error(&limited("max_connections_per_server = 0"), "8:30", limit);
    let needs = "`queue_timeout` needs `max_connections_per_server`";
    one_error(&limited("queue_timeout = \"1s\""), "8:17", needs);
    let keys = "max_connections_per_server = 1\nqueue_timeout = \"0s\"";
    one_error(
        &limited(keys),
        "9:17",
        "`queue_timeout` must be more than 0",
    );
    let keys = "max_connections_per_server = 1\nqueue_timeout = 5";
    one_error(&limited(keys), "9:17", "queue_timeout = \"1s\"");
    let keys = "max_connections_per_server = \"many\"";
    one_error(&limited(keys), "8:30", "invalid type");
}

/// Asserts that exactly `expected` errors were reported, each starting with its
/// `lb.toml:LINE:COL: ` and containing its text.
fn assert_errors(text: &str, expected: &[(&str, &str)]) {
    let found = errors(text);
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (line, (at, needle)) in found.iter().zip(expected) {
        let at = format!("lb.toml:{at}: ");
        assert!(
            line.starts_with(&at) && line.contains(needle),
            "{line} is not {at}{needle}"
        );
    }
}

const HTTP_OK: &str = r#"
[listeners.web]
bind = "127.0.0.1:8080"
routes = [{ upstream = "app" }]

[upstreams.app]
servers = ["127.0.0.1:9001"]
"#;

#[test]
fn limits_parse_with_their_values_and_a_route_may_carry_its_own_rate() {
    let text = HTTP_OK.replace(
        "routes = [{ upstream = \"app\" }]",
        r#"routes = [{ path_prefix = "/login", upstream = "app", rate = { requests = 5, per = "1m" } }, { upstream = "app" }]

[listeners.web.limits]
max_connections = 20000
header_timeout = "5s"
keepalive_timeout = "30s"
max_header_size = "8KiB"
max_body_size = "10MiB"
max_connections_per_client = 100
rate = { requests = 100, per = "1s", burst = 200 }"#,
    );
    let c = Config::parse(&text, "lb.toml").unwrap();
    let l = &c.listeners[0].limits;
    assert_eq!(l.max_connections, Some(20000));
    assert_eq!(l.header_timeout, Duration::from_secs(5));
    assert_eq!(l.keepalive_timeout, Duration::from_secs(30));
    assert_eq!(l.max_header_size, 8 * 1024);
    assert_eq!(l.max_body_size, Some(10 << 20));
    assert_eq!(l.max_connections_per_client, Some(100));
    let rate = Rate {
        requests: 100,
        per: Duration::from_secs(1),
        burst: 200,
    };
    assert_eq!(l.rate, Some(rate));
    let Mode::Http { routes } = &c.listeners[0].mode else {
        panic!()
    };
    let login = Rate {
        requests: 5,
        per: Duration::from_secs(60),
        burst: 5,
    };
    assert_eq!((routes[0].rate, routes[1].rate), (Some(login), None));
}

#[test]
fn limits_default_to_safe_values_and_off_for_the_rest() {
    let c = Config::parse(HTTP_OK, "lb.toml").unwrap();
    let l = &c.listeners[0].limits;
    assert_eq!(l.header_timeout, Duration::from_secs(10));
    assert_eq!(l.keepalive_timeout, Duration::from_secs(75));
    assert_eq!(l.max_header_size, 16 * 1024);
    assert_eq!(
        (
            l.max_connections,
            l.max_body_size,
            l.max_connections_per_client,
            l.rate
        ),
        (None, None, None, None)
    );
}

#[test]
fn every_bad_limit_is_reported_at_its_line_and_column_in_one_run() {
    let text = format!(
        "{HTTP_OK}
[listeners.web.limits]
max_connections = 0
header_timeout = \"10\"
keepalive_timeout = \"0s\"
max_header_size = \"16kb\"
max_body_size = \"1.5MiB\"
max_connections_per_client = -1
rate = {{ requests = 0, per = \"1x\", burst = 0 }}
"
    );
    assert_errors(
        &text,
        &[
            ("10:19", "`max_connections` must be between 1 and"),
            ("11:18", "bad duration `10`"),
            ("12:21", "`keepalive_timeout` must be more than 0"),
            ("13:19", "bad size `16kb`"),
            ("14:17", "bad size `1.5MiB`"),
            (
                "15:30",
                "`max_connections_per_client` must be between 1 and",
            ),
            ("16:21", "`requests` must be between 1 and"),
            ("16:30", "bad duration `1x`"),
            ("16:44", "`burst` must be between 1 and"),
        ],
    );
}

#[test]
fn a_bad_route_rate_and_an_unknown_limit_key_are_reported() {
    let text = HTTP_OK.replace(
        "routes = [{ upstream = \"app\" }]",
        "routes = [{ upstream = \"app\", rate = { requests = 5, burts = 9 } }]\n\n[listeners.web.limits]\nmax_conections = 5",
    );
    assert_errors(
        &text,
        &[
            ("4:54", "unknown field `burts`"),
            ("7:1", "did you mean `max_connections`?"),
        ],
    );
}

#[test]
fn a_size_written_as_a_number_says_how_to_write_it() {
    let text = format!("{HTTP_OK}\n[listeners.web.limits]\nmax_body_size = 1024\n");
    one_error(
        &text,
        "10:17",
        "`max_body_size` is a size: a string with a unit",
    );
}

#[test]
fn http_limits_on_a_tcp_listener_are_reported() {
    let text = format!(
        "{TCP_OK}\n[listeners.db.limits]\nmax_connections_per_client = 10\nmax_body_size = \"1MiB\"\nrate = {{ requests = 1 }}\n"
    );
    assert_errors(
        &text,
        &[
            ("12:17", "`max_body_size` is only for http listeners"),
            ("13:8", "`rate` is only for http listeners"),
        ],
    );
}
