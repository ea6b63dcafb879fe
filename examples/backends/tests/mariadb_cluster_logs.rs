//! `scripts/mariadb-cluster.sh start` that fails (here: a mariadbd that cannot start)
//! keeps the logs that explain it in `RLB_MARIADB_KEEP_LOGS`, which `scripts/demo.sh
//! --full` keeps in its work directory: "logs kept in" must not point at nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use rlb_demo::experiment::stack::free_ports;

fn installed(name: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .any(|d| Path::new(d).join(name).exists())
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn a_failed_start_keeps_the_logs_that_explain_it() {
    let missing: Vec<_> = ["mariadb-install-db", "mariadb", "mariadb-admin"]
        .into_iter()
        .filter(|b| !installed(b))
        .collect();
    if !missing.is_empty() {
        println!("SKIPPED mariadb-cluster logs test: {missing:?} not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("rlb-cluster-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (fake_bin, tmp, keep) = (dir.join("bin"), dir.join("tmp"), dir.join("kept"));
    std::fs::create_dir_all(&fake_bin).expect("mkdir");
    std::fs::create_dir_all(&tmp).expect("mkdir");
    // A mariadbd that writes why it cannot start to its error log and exits, as a real one
    // does on a bad option or a full disk. mariadb-install-db still runs the real one.
    let fake = fake_bin.join("mariadbd");
    std::fs::write(
        &fake,
        "#!/bin/sh\nfor a in \"$@\"; do case $a in --log-error=*) log=${a#--log-error=};; esac; done\n\
         echo \"[ERROR] fake mariadbd of the test: cannot start\" >>\"$log\"\nexit 1\n",
    )
    .expect("write fake mariadbd");
    let status = Command::new("chmod")
        .arg("+x")
        .arg(&fake)
        .status()
        .expect("chmod");
    assert!(status.success());

    let ports = free_ports(3).expect("free ports");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/mariadb-cluster.sh");
    let path = format!(
        "{}:{}",
        fake_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(&script)
        .arg("start")
        .args(ports.iter().map(|p| p.to_string()))
        .env("PATH", path)
        .env("RLB_MARIADB_TMP", &tmp)
        .env("RLB_MARIADB_KEEP_LOGS", &keep)
        .env_remove("RLB_MARIADB_TEMPLATE")
        .env_remove("RLB_MARIADB_OWNER_PID")
        .output()
        .expect("run mariadb-cluster.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(!out.status.success(), "the start must fail: {stderr}");
    assert!(stderr.contains("exited during startup"), "{stderr}");
    assert!(
        stderr.contains("logs of the failed start kept in"),
        "{stderr}"
    );

    let kept = files_under(&keep);
    let error_log = kept
        .iter()
        .find(|p| p.ends_with("node0/error.log"))
        .unwrap_or_else(|| panic!("node0/error.log kept: {kept:?}"));
    let text = std::fs::read_to_string(error_log).expect("read kept error.log");
    assert!(text.contains("fake mariadbd of the test"), "{text}");
    // The cluster's own directory is still removed: no data files are kept.
    assert_eq!(files_under(&tmp), Vec::<PathBuf>::new());
    let _ = std::fs::remove_dir_all(&dir);
}
