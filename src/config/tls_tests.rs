//! `[listeners.NAME.tls]` validation against real files: certificates generated here
//! (rcgen), each bad file an error at its key's line:col, every problem in one run.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

/// A directory of PEM files with an `lb.toml` origin in it, removed on drop.
struct Files(PathBuf);

impl Files {
    fn new() -> Files {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rlb-config-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        Files(dir)
    }

    /// A self-signed certificate for `names` in `certs/{stem}.pem` and `.key`.
    fn certificate(&self, stem: &str, names: &[&str]) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let made = rcgen::generate_simple_self_signed(names).unwrap();
        self.write(&format!("certs/{stem}.pem"), &made.cert.pem());
        self.write(
            &format!("certs/{stem}.key"),
            &made.signing_key.serialize_pem(),
        );
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.0.join(name), text).unwrap();
    }

    fn origin(&self) -> String {
        self.0.join("lb.toml").display().to_string()
    }

    fn parse(&self, text: &str) -> Result<Config, ConfigErrors> {
        Config::parse(text, &self.origin())
    }

    /// The errors of `text`, each as `LINE:COL: message` (the origin taken off).
    fn errors(&self, text: &str) -> Vec<String> {
        let origin = format!("{}:", self.origin());
        match self.parse(text) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => {
                e.0.iter()
                    .map(|e| e.to_string().replacen(&origin, "", 1))
                    .collect()
            }
        }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An http listener whose `tls` table is `tls` (its lines start at line 8).
fn listener(tls: &str) -> String {
    format!(
        r#"[upstreams.app]
servers = ["127.0.0.1:9001"]

[listeners.https]
bind = "127.0.0.1:0"
routes = [{{ upstream = "app" }}]
[listeners.https.tls]
{tls}
"#
    )
}

fn assert_one(found: &[String], position: &str, needle: &str) {
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with(&format!("{position}: ")) && found[0].contains(needle),
        "expected {position}: …{needle}…, found {}",
        found[0]
    );
}

#[test]
fn a_tls_listener_loads_its_certificates_with_defaults() {
    let files = Files::new();
    files.certificate("a", &["a.example.test"]);
    files.certificate("b", &["*.b.example.test", "B.example.test"]);
    let text = listener(
        r#"certificates = [
  { cert = "certs/a.pem", key = "certs/a.key" },
  { cert = "certs/b.pem", key = "certs/b.key" },
]"#,
    );
    let config = files.parse(&text).unwrap();
    let tls = config.listeners[0].tls.as_ref().unwrap();
    let names: Vec<&Vec<String>> = tls.certificates.iter().map(|c| &c.names).collect();
    assert_eq!(
        names,
        [
            &vec!["a.example.test".to_string()],
            &vec!["*.b.example.test".to_string(), "b.example.test".to_string()]
        ]
    );
    assert_eq!(tls.certificates[0].path, files.0.join("certs/a.pem"));
    assert_eq!(tls.min_version, TlsVersion::Tls12);
    assert_eq!(tls.alpn, ["http/1.1"]);
    assert!(tls.client_ca.is_none());
    assert_eq!(tls.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT);
    // Loaded twice from the same files: equal, so a reload sees nothing changed.
    assert_eq!(files.parse(&text).unwrap(), config);
}

#[test]
fn every_key_of_the_tls_table_is_read() {
    let files = Files::new();
    files.certificate("a", &["a.example.test"]);
    files.certificate("ca", &["clients.example.test"]);
    let text = r#"[upstreams.db]
servers = ["127.0.0.1:3306"]

[listeners.db]
bind = "127.0.0.1:0"
mode = "tcp"
upstream = "db"
[listeners.db.tls]
certificates = [{ cert = "certs/a.pem", key = "certs/a.key" }]
min_version = "1.3"
alpn = ["mysql"]
client_ca = "certs/ca.pem"
handshake_timeout = "2s"
"#;
    let config = files.parse(text).unwrap();
    let tls = config.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.min_version, TlsVersion::Tls13);
    assert_eq!(tls.alpn, ["mysql"]);
    assert_eq!(tls.client_ca.as_ref().unwrap().certs.len(), 1);
    assert_eq!(tls.handshake_timeout, Duration::from_secs(2));
    // A tcp listener offers no ALPN unless told to.
    let plain = files
        .parse(&text.replace("alpn = [\"mysql\"]\n", ""))
        .unwrap();
    assert!(plain.listeners[0].tls.as_ref().unwrap().alpn.is_empty());
}

/// One certificate entry naming `cert` and `key` under `certs/` (where `a.pem`,
/// `a.key` and `other.key` exist, `other.key` not the key of `a.pem`) gives exactly one
/// error, at `position`, containing `needle`.
fn one_bad_file(cert: &str, key: &str, position: &str, needle: &str) {
    let files = Files::new();
    files.certificate("a", &["a.example.test"]);
    files.certificate("other", &["a.example.test"]);
    let entry = format!(r#"certificates = [{{ cert = "certs/{cert}", key = "certs/{key}" }}]"#);
    assert_one(&files.errors(&listener(&entry)), position, needle);
}

#[test]
fn a_missing_certificate_file_is_an_error_at_its_key() {
    one_bad_file("nope.pem", "a.key", "8:26", "certs/nope.pem`: No such file");
}

#[test]
fn a_key_that_is_not_the_certificates_key_is_an_error_at_the_key() {
    // `a.pem` and `a.key` are as long as the names below: the key sits at column 47.
    one_bad_file(
        "a.pem",
        "other.key",
        "8:47",
        "is not the key of the certificate",
    );
}

#[test]
fn a_pem_without_a_certificate_is_an_error() {
    one_bad_file("a.key", "a.key", "8:26", "no certificate in `");
}

#[test]
fn a_key_file_without_a_key_is_an_error() {
    one_bad_file("a.pem", "a.pem", "8:47", "no private key in `");
}

#[test]
fn every_bad_file_of_a_table_is_reported_in_one_run() {
    let files = Files::new();
    files.certificate("a", &["a.example.test"]);
    let found = files.errors(&listener(
        r#"certificates = [
  { cert = "certs/a.pem", key = "certs/a.key" },
  { cert = "certs/missing.pem", key = "certs/missing.key" },
]
client_ca = "certs/a.key"
handshake_timeout = 10"#,
    ));
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(found[0].starts_with("10:12: cannot read"), "{}", found[0]);
    assert!(found[1].starts_with("10:39: cannot read"), "{}", found[1]);
    assert!(
        found[2].starts_with("12:13: no certificate in"),
        "{}",
        found[2]
    );
    assert!(
        found[3].starts_with("13:21: `handshake_timeout` is a duration"),
        "{}",
        found[3]
    );
}

#[test]
fn the_table_itself_is_checked() {
    let files = Files::new();
    files.certificate("a", &["a.example.test"]);
    let cert = r#"certificates = [{ cert = "certs/a.pem", key = "certs/a.key" }]"#;
    assert_one(
        &files.errors(&listener("certificates = []")),
        "8:16",
        "`certificates` is empty",
    );
    assert_one(
        &files.errors(&listener("min_version = \"1.3\"")),
        "7:1",
        "`tls` needs `certificates",
    );
    assert_one(
        &files.errors(&listener(&format!("{cert}\nmin_version = \"1.1\""))),
        "9:15",
        "expected `1.2` or `1.3`",
    );
    assert_one(
        &files.errors(&listener(&format!("{cert}\nalpn = [\"h2\", \"http/1.1\"]"))),
        "9:9",
        "\"h2\" comes with HTTP/2",
    );
    assert_one(
        &files.errors(&listener(&format!("{cert}\nhandshake_timeout = \"0s\""))),
        "9:21",
        "must be more than 0",
    );
    assert_one(
        &files.errors(&listener(&format!("{cert}\nsni = true"))),
        "9:1",
        "unknown field `sni`",
    );
}
