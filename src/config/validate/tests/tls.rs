//! The checks of `[server] insecure_bind` and the `[server.tls.bind."ADDR"]`
//! tables.

use std::path::Path;

use super::*;
use crate::config::tests::{env, resolve_text};
use crate::config::{BindAddr, ConfigFile, Overrides, resolve};
use crate::tls::CertReqs;

/// The config `text` as read from `dir/corral.toml`.
fn resolve_in(dir: &Path, text: &str) -> Result<crate::config::Config, String> {
    let file = ConfigFile::new(&dir.join("corral.toml"), dir, text.into());
    resolve(&Overrides::default(), Some(&file), dir, &env()).map_err(|e| e.to_string())
}

/// A self-signed certificate and its key, `NAME.pem` and `NAME.key` in `dir`.
fn certificate(dir: &Path, name: &str) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={name}")])
        .args(["-keyout", &format!("{name}.key")])
        .args(["-out", &format!("{name}.pem")])
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn insecure_bind_lists_plain_addresses_beside_bind() {
    let text = "[app]\nmodule = \"m:a\"\n[server]\nbind = [\"0.0.0.0:443\"]\n\
                insecure_bind = [\"0.0.0.0:80\", \"unix:plain.sock\"]\n";
    let server = resolve_text(text, &Overrides::default()).unwrap().server;
    let plain: Vec<String> = server
        .insecure_bind
        .iter()
        .map(|b| b.addr.to_string())
        .collect();
    assert_eq!(
        plain,
        ["0.0.0.0:80", "unix:/nonexistent/srv/app/plain.sock"]
    );
    assert_eq!(
        server.insecure_bind[0].origin,
        "corral.toml:5 (key server.insecure_bind)"
    );
    // Without [server.tls] too; and the flag replaces the file's list.
    let args = Overrides {
        insecure_bind: vec!["127.0.0.1:8080".parse().unwrap()],
        ..Overrides::default()
    };
    let server = resolve_text(text, &args).unwrap().server;
    assert_eq!(server.insecure_bind.len(), 1);
    assert_eq!(server.insecure_bind[0].origin, "--insecure-bind");
    assert!(server.tls.is_none());
    // None by default.
    let text = "[app]\nmodule = \"m:a\"\n";
    assert!(
        resolve_text(text, &Overrides::default())
            .unwrap()
            .server
            .insecure_bind
            .is_empty()
    );
}

#[test]
fn an_address_in_both_lists_is_an_error_that_says_where_and_how() {
    let text = "[app]\nmodule = \"m:a\"\n[server]\nbind = [\"127.0.0.1:8443\", \"0.0.0.0:9000\"]\n\
                insecure_bind = [\"127.0.0.1:8080\", \"127.0.0.1:8443\", \"127.0.0.1:9000\", \"127.0.0.1:8080\", \"8080\"]\n";
    let text = problems(text, &Overrides::default());
    for expected in [
        "corral.toml:5: server.insecure_bind: 127.0.0.1:8443 is also a server.bind address (at corral.toml:4 (key server.bind)): an address serves either TLS (bind) or plain HTTP (insecure_bind); remove it from one of the two lists",
        "corral.toml:5: server.insecure_bind: 127.0.0.1:9000 overlaps the server.bind address 0.0.0.0:9000 (at corral.toml:4 (key server.bind)) on the same port",
        "corral.toml:5: server.insecure_bind: 127.0.0.1:8080 is listed twice (first at corral.toml:5 (key server.insecure_bind))",
        "corral.toml:5: server.insecure_bind: invalid bind address \"8080\"",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    // The default bind counts, and so do the flags.
    let args = Overrides {
        insecure_bind: vec!["127.0.0.1:8000".parse().unwrap()],
        ..Overrides::default()
    };
    let text = problems("[app]\nmodule = \"m:a\"\n", &args);
    assert!(
        text.contains("--insecure-bind: 127.0.0.1:8000 is also a server.bind address (at default (no --bind or server.bind given))"),
        "{text}"
    );
    // The status server may not take an insecure_bind address either.
    let text = "[app]\nmodule = \"m:a\"\n[server]\ninsecure_bind = [\"127.0.0.1:8080\"]\n\
                [health]\nstatus_bind = \"127.0.0.1:8080\"\n";
    assert!(
        problems(text, &Overrides::default()).starts_with(
            "corral.toml:6: health.status_bind: 127.0.0.1:8080 is also a server address (at corral.toml:4 (key server.insecure_bind))"
        )
    );
}

#[test]
fn a_per_bind_table_names_a_bind_address_and_needs_tls_on() {
    // TLS off: nothing to override (files are not read then).
    let text = "[app]\nmodule = \"m:a\"\n[server]\nbind = [\"127.0.0.1:8443\"]\n\
                [server.tls.bind.\"127.0.0.1:8443\"]\ncert_reqs = \"required\"\n";
    assert_eq!(
        problems(text, &Overrides::default()),
        "corral.toml:5: server.tls.bind.\"127.0.0.1:8443\": overrides [server.tls], which is off: \
         set certfile and keyfile in [server.tls] (or --certfile, --keyfile) to serve HTTPS"
    );
    let dir = tempfile::tempdir().unwrap();
    certificate(dir.path(), "public");
    let tls = "[server.tls]\ncertfile = \"public.pem\"\nkeyfile = \"public.key\"\n";
    let text = format!(
        "[app]\nmodule = \"m:a\"\n[server]\nbind = [\"127.0.0.1:8443\"]\ninsecure_bind = [\"127.0.0.1:8080\"]\n{tls}\
         [server.tls.bind.\"127.0.0.1:9443\"]\ncert_reqs = \"required\"\n\
         [server.tls.bind.\"127.0.0.1:8080\"]\nmin_version = \"1.3\"\n\
         [server.tls.bind.\"nowhere\"]\nmin_version = \"1.3\"\n"
    );
    let text = resolve_in(dir.path(), &text).unwrap_err();
    let file = dir.path().join("corral.toml");
    let file = file.display();
    for expected in [
        format!(
            "{file}:9: server.tls.bind.\"127.0.0.1:9443\": 127.0.0.1:9443 is not a server.bind address (those are \"127.0.0.1:8443\"): name one of them, written as in bind, or remove this table"
        ),
        format!(
            "{file}:11: server.tls.bind.\"127.0.0.1:8080\": 127.0.0.1:8080 is a server.insecure_bind address (at {file}:5 (key server.insecure_bind)), served as plain HTTP without a certificate: remove this table, or move the address to server.bind"
        ),
        format!("{file}:13: server.tls.bind.\"nowhere\": invalid bind address \"nowhere\""),
    ] {
        assert!(text.contains(&expected), "no {expected:?} in:\n{text}");
    }
}

#[test]
fn a_per_bind_table_overrides_what_it_sets_for_its_address_only() {
    let dir = tempfile::tempdir().unwrap();
    certificate(dir.path(), "public");
    certificate(dir.path(), "internal");
    let text = "[app]\nmodule = \"m:a\"\n[server]\nbind = [\"0.0.0.0:443\", \"unix:internal.sock\"]\n\
                [server.tls]\ncertfile = \"public.pem\"\nkeyfile = \"public.key\"\nmin_version = \"1.3\"\n\
                [server.tls.bind.\"unix:internal.sock\"]\ncertfile = \"internal.pem\"\nkeyfile = \"internal.key\"\n\
                ca_certs = \"internal.pem\"\ncert_reqs = \"required\"\n";
    let tls = resolve_in(dir.path(), text).unwrap().server.tls.unwrap();
    assert_eq!(tls.files.certfile, dir.path().join("public.pem"));
    assert_eq!(tls.files.cert_reqs, CertReqs::None);
    let [(addr, files)] = &tls.per_bind[..] else {
        panic!("one set per table: {tls:?}")
    };
    // Written relative to the file's folder, compared once absolute.
    assert_eq!(*addr, BindAddr::Unix(dir.path().join("internal.sock")));
    assert_eq!(files.certfile, dir.path().join("internal.pem"));
    assert_eq!(files.cert_reqs, CertReqs::Required);
    // What the table leaves out comes from [server.tls].
    assert_eq!(files.min_version, tls.files.min_version);
    assert_eq!(tls.set_of(Some(addr)), 1);
    assert_eq!(tls.set_of(Some(&"0.0.0.0:443".parse().unwrap())), 0);
    assert_eq!(tls.set_of(None), 0);
}

#[test]
fn a_bad_file_in_a_per_bind_table_is_reported_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    certificate(dir.path(), "public");
    std::fs::write(dir.path().join("junk.pem"), "not a certificate\n").unwrap();
    let text = "[app]\nmodule = \"m:a\"\n[server]\nbind = [\"127.0.0.1:8443\"]\n\
                [server.tls]\ncertfile = \"public.pem\"\nkeyfile = \"public.key\"\n\
                [server.tls.bind.\"127.0.0.1:8443\"]\nca_certs = \"junk.pem\"\ncert_reqs = \"sometimes\"\n";
    let text = resolve_in(dir.path(), text).unwrap_err();
    assert!(
        text.contains(
            ":10: server.tls.bind.\"127.0.0.1:8443\".cert_reqs: \"sometimes\" is not one of"
        ),
        "{text}"
    );
    let fixed = "[app]\nmodule = \"m:a\"\n[server]\nbind = [\"127.0.0.1:8443\"]\n\
                 [server.tls]\ncertfile = \"public.pem\"\nkeyfile = \"public.key\"\n\
                 [server.tls.bind.\"127.0.0.1:8443\"]\nca_certs = \"junk.pem\"\ncert_reqs = \"required\"\n";
    let text = resolve_in(dir.path(), fixed).unwrap_err();
    assert!(
        text.contains(":9: server.tls.bind.\"127.0.0.1:8443\".ca_certs: ")
            && text.contains("junk.pem holds no PEM certificate"),
        "{text}"
    );
}
