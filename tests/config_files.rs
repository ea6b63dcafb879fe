//! Every shipped configuration in `config/` is valid, and the binary says so.
mod support;

use std::path::{Path, PathBuf};

use support::process::RlbCommand;
use support::rlb::TempDir;
use support::tls::Ca;

/// A configuration that names certificate files (`config/tls.toml`) is checked from a
/// copy beside certificates made here, the files its comments tell a person to make.
fn with_certificates(path: &Path, dir: &TempDir) -> PathBuf {
    std::fs::create_dir_all(dir.0.join("certs")).expect("certs dir");
    let ca = Ca::new("rlb example CA");
    ca.server(&["localhost", "*.example.test"])
        .write(dir, "certs/example");
    Ca::new("rlb example clients CA").write(dir, "certs/clients.pem");
    let text = std::fs::read_to_string(path).expect("readable config");
    dir.file("tls.toml", &text)
}

#[test]
fn every_file_in_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("config/ exists") {
        let mut path = entry.expect("readable entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let certs = TempDir::new("config-certs");
        if path.file_name().is_some_and(|n| n == "tls.toml") {
            path = with_certificates(&path, &certs);
        }
        if let Err(errors) = rlb::Config::load(&path) {
            panic!("{} is invalid:\n{errors}", path.display());
        }
        let output = RlbCommand::file(&path).arg("--check").run();
        assert!(output.status.success(), "{}: {output:?}", path.display());
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "configuration OK"
        );
        checked += 1;
    }
    assert!(
        checked >= 4,
        "found only {checked} configurations in {}",
        dir.display()
    );
}
