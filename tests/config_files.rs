//! Every shipped configuration in `config/` is valid, and the binary says so.
mod support;

use std::path::Path;

use support::process::RlbCommand;

#[test]
fn every_file_in_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("config/ exists") {
        let path = entry.expect("readable entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
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
        checked >= 3,
        "found only {checked} configurations in {}",
        dir.display()
    );
}
