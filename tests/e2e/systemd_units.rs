//! The unit files under systemd/ pass `systemd-analyze verify` (with the
//! binary path pointed at the one just built).

use crate::common::*;
use std::process::Command;

#[test]
fn the_unit_files_verify() {
    let dir = tempfile::tempdir().unwrap();
    for unit in ["corral.service", "corral.socket"] {
        let text = std::fs::read_to_string(repo(&format!("systemd/{unit}")))
            .unwrap()
            .replace("/usr/local/bin/corral", corral_bin());
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("corral.service"))
        .arg(dir.path().join("corral.socket"))
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let complaints: Vec<&str> = text.lines().filter(|l| l.contains("corral.")).collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze complains: {complaints:#?}"
    );
}
