//! The unit files under systemd/ pass `systemd-analyze verify` (with the
//! binary path pointed at the one just built), and the template for
//! several apps gives each instance folders of its own.

use crate::common::*;
use std::process::Command;

#[test]
fn the_unit_files_verify() {
    let dir = tempfile::tempdir().unwrap();
    for unit in [
        "corral.service",
        "corral.socket",
        "corral@.service",
        "corral@.socket",
    ] {
        let text = std::fs::read_to_string(repo(&format!("systemd/{unit}")))
            .unwrap()
            .replace("/usr/local/bin/corral", corral_bin());
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("corral.service"))
        .arg(dir.path().join("corral.socket"))
        // Two apps' instances of the template, as `systemctl enable
        // corral@shop corral@blog` makes them.
        .arg(dir.path().join("corral@shop.service"))
        .arg(dir.path().join("corral@shop.socket"))
        .arg(dir.path().join("corral@blog.service"))
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("corral.") || l.contains("corral@"))
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze complains: {complaints:#?}"
    );
}

/// Several apps on one host from the shipped units: no two units share a
/// runtime or state folder (systemd removes a runtime folder when its unit
/// stops; the state holds the last good release a rollback goes back to),
/// and none is the shared root `/run/corral` itself, where corrals started
/// by hand keep one folder per instance.
#[test]
fn each_units_folders_are_its_own() {
    let setting = |unit: &str, key: &str| -> String {
        let text = std::fs::read_to_string(repo(&format!("systemd/{unit}"))).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{unit} has no {key}="))
            .to_owned()
    };
    for key in ["RuntimeDirectory", "StateDirectory"] {
        let template = setting("corral@.service", key);
        assert_eq!(template, "corral/%i", "corral@.service {key}=");
        let single = setting("corral.service", key);
        assert!(
            single.starts_with("corral/") && single.len() > "corral/".len(),
            "corral.service {key}={single}"
        );
    }
    assert_eq!(
        setting("corral@.service", "ExecStart"),
        "/usr/local/bin/corral run -c /etc/corral/%i.toml"
    );
    assert_eq!(setting("corral@.service", "SyslogIdentifier"), "corral-%i");
    // The socket outlives the service's runtime folder.
    assert_eq!(
        setting("corral@.socket", "ListenStream"),
        "/run/corral-%i.sock"
    );
}
