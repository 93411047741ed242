//! hypercorn's TOML config file (`hypercorn -c hypercorn.toml`, Quart's
//! documented way): flat keys, most of them gunicorn's settings under the
//! same name, which [`super::convert_at`]'s work turns into corral's; the rest
//! are hypercorn's own, each mapped here or named with the reason.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value as Json;
use toml::Value;

use super::{Conversion, Out, bind, integer, list, seconds};

/// What becomes of one of hypercorn's keys.
enum Hyper {
    /// gunicorn's setting of this name, converted as gunicorn's.
    Gunicorn(&'static str),
    /// corral's key, with its value converted by the function.
    Corral(
        &'static str,
        &'static str,
        fn(&Json, &Path) -> Option<Value>,
    ),
    /// Not carried over, and why.
    Note(&'static str),
}

use Hyper::{Corral, Gunicorn, Note};

/// hypercorn's keys that are not gunicorn's names ([`key`] maps each).
const OWN: [&str; 30] = [
    "keep_alive_timeout",
    "pid_path",
    "use_reloader",
    "h2_max_concurrent_streams",
    "h2_max_header_list_size",
    "h2_max_inbound_frame_size",
    "verify_mode",
    "insecure_bind",
    "read_timeout",
    "websocket_ping_interval",
    "websocket_max_message_size",
    "wsgi_max_body_size",
    "h11_max_incomplete_size",
    "startup_timeout",
    "alpn_protocols",
    "alt_svc_headers",
    "quic_bind",
    "debug",
    "h11_pass_raw_headers",
    "include_date_header",
    "include_server_header",
    "keep_alive_max_requests",
    "keyfile_password",
    "log",
    "max_app_queue_size",
    "server_names",
    "shutdown_timeout",
    "ssl_enabled",
    "ssl_handshake_timeout",
    "verify_flags",
];

/// hypercorn's keys that are gunicorn's settings of the same name.
const SAME: [&str; 26] = [
    "access_log_format",
    "accesslog",
    "backlog",
    "bind",
    "ca_certs",
    "cert_reqs",
    "certfile",
    "ciphers",
    "daemon",
    "dogstatsd_tags",
    "errorlog",
    "graceful_timeout",
    "group",
    "keyfile",
    "logconfig",
    "logconfig_dict",
    "loglevel",
    "max_requests",
    "max_requests_jitter",
    "root_path",
    "statsd_host",
    "statsd_prefix",
    "umask",
    "user",
    "worker_class",
    "workers",
];

/// Every key of hypercorn's `Config` (0.17).
fn key(name: &str) -> Option<Hyper> {
    if let Some(same) = SAME.iter().find(|s| **s == name) {
        return Some(Gunicorn(same));
    }
    Some(match name {
        "keep_alive_timeout" => Gunicorn("keepalive"),
        "pid_path" => Gunicorn("pidfile"),
        "use_reloader" => Gunicorn("reload"),
        "h2_max_concurrent_streams" => Gunicorn("http2_max_concurrent_streams"),
        "h2_max_header_list_size" => Gunicorn("http2_max_header_list_size"),
        "h2_max_inbound_frame_size" => Gunicorn("http2_max_frame_size"),
        "verify_mode" => Gunicorn("cert_reqs"),
        "insecure_bind" => Corral("server", "insecure_bind", |v, cwd| {
            let addrs: Vec<Value> = list(v)
                .iter()
                .filter_map(|a| bind(a, cwd).ok())
                .map(Value::String)
                .collect();
            Some(Value::Array(addrs))
        }),
        "read_timeout" => Corral("server", "body_timeout", |v, _| seconds(v, None).ok()),
        "websocket_ping_interval" => {
            Corral("server", "ws_ping_interval", |v, _| seconds(v, None).ok())
        }
        "websocket_max_message_size" => Corral("server", "ws_max_message", bytes),
        "wsgi_max_body_size" => Corral("server", "max_body_bytes", bytes),
        "h11_max_incomplete_size" => Corral("server", "max_header_bytes", bytes),
        "startup_timeout" => Corral("workers", "boot_timeout", |v, _| seconds(v, None).ok()),
        "alpn_protocols" => Note("corral offers h2 and http/1.1 by ALPN on its TLS binds"),
        "alt_svc_headers" | "quic_bind" => Note("corral does not speak HTTP/3 (QUIC)"),
        "debug" => Note("corral has no debug mode: [log] level = \"debug\" logs more"),
        "h11_pass_raw_headers" => {
            Note("corral passes header names as the client sent them, lowercased for ASGI")
        }
        "include_date_header" => Note("corral always sends a Date header"),
        "include_server_header" => {
            Note("corral sends no Server header of its own: [server.headers] can add one")
        }
        "keep_alive_max_requests" => Note(
            "not supported: a keep-alive connection serves requests until it is idle for [server] keepalive",
        ),
        "keyfile_password" => Note(
            "an encrypted key is refused: decrypt it once (`openssl pkey -in key.pem -out plain.pem`) and keep it readable only by corral's user",
        ),
        "log" => Note("not a setting a file gives"),
        "max_app_queue_size" => {
            Note("corral bounds what waits for the app with [server] max_queued and back-pressure")
        }
        "server_names" => Note(
            "corral serves every Host: check it in the app (Django's ALLOWED_HOSTS, Starlette's TrustedHostMiddleware) or the proxy",
        ),
        "shutdown_timeout" => Note(
            "[workers] graceful_timeout bounds a stopping worker, its lifespan shutdown included",
        ),
        "ssl_enabled" => Note("TLS is on when [server.tls] has certfile and keyfile"),
        "ssl_handshake_timeout" => Note("a TLS handshake has [server] keepalive to finish"),
        "verify_flags" => Note("not supported: rustls checks client certificates against ca_certs"),
        _ => return None,
    })
}

/// A size in bytes as hypercorn gives it (an integer), as corral writes it.
fn bytes(v: &Json, _: &Path) -> Option<Value> {
    integer(v).filter(|n| *n > 0).map(Value::Integer)
}

/// Converts a hypercorn TOML file's keys (`table`, parsed from `text`) into
/// a corral.toml; `app`: the APP on the command line; relative paths
/// against `cwd`. A key that is not hypercorn's is an error (hypercorn
/// ignores it, so a typo like `workerz` would go unnoticed, the server
/// running on the default): it names the line, and the key meant, or the
/// section of corral's where the key belongs.
pub fn convert(
    table: &toml::Table,
    text: &str,
    app: Option<&str>,
    cwd: &Path,
    file: &Path,
) -> Result<Conversion, String> {
    let mut out = Out::new(cwd);
    let mut settings: BTreeMap<String, Json> = BTreeMap::new();
    let mut unknown = Vec::new();
    for (name, value) in table {
        out.current = name.clone();
        let json = serde_json::to_value(value).unwrap_or(Json::Null);
        match key(name) {
            // gunicorn's cert_reqs wins over hypercorn's verify_mode.
            Some(Gunicorn(g)) if !(name == "verify_mode" && table.contains_key("cert_reqs")) => {
                settings.insert(g.to_owned(), serde_json::json!({ "value": json }));
                if g != name {
                    out.written_as.push((g.to_owned(), name.clone()));
                }
            }
            Some(Gunicorn(_)) => {}
            Some(Corral(section, corral_key, f)) => match f(&json, cwd) {
                Some(v) => out.set(section, corral_key, v),
                // As a gunicorn setting's value gunicorn refuses.
                None => out.invalid(
                    name,
                    format!("{json} is not a value hypercorn takes for it"),
                ),
            },
            Some(Note(why)) => out.note(name, why),
            None => unknown.push(name.as_str()),
        }
    }
    if let Some(name) = unknown.first() {
        return Err(unknown_key(name, text, file));
    }
    super::convert_into(&mut out, &settings, app);
    Ok(out.finish(file, Some(text)))
}

/// The error for `name`, a top-level key of `text` (the file `file`) that
/// is not hypercorn's: "FILE:LINE: KEY: why; the fix".
fn unknown_key(name: &str, text: &str, file: &Path) -> String {
    let line = text
        .lines()
        .position(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix(name)
                .or_else(|| l.strip_prefix(&format!("\"{name}\"")))
                .unwrap_or_default();
            l.trim_start().starts_with('=')
        })
        .map(|i| format!(":{}", i + 1))
        .unwrap_or_default();
    let flat = "a TOML file of keys outside sections is read as hypercorn's";
    let sections = crate::config::sections_with(name);
    let known = OWN.iter().chain(SAME.iter()).copied();
    let why = if let Some(section) = sections.first() {
        format!(
            "not a hypercorn setting ({flat}); it is a key of corral's [{section}] section: put it below a `[{section}]` line, the file's other keys in their sections too"
        )
    } else if let Some(meant) = crate::config::closest(name, known) {
        format!("not a hypercorn setting ({flat}): did you mean `{meant}`?")
    } else {
        format!(
            "not a hypercorn setting ({flat}), nor a key of corral's: remove it, or correct its name (hypercorn ignores an unknown key; corral refuses it, as a typo would leave the setting on its default)"
        )
    };
    format!("{}{line}: {name}: {why}", file.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hypercorn_toml_becomes_a_corral_toml() {
        let table: toml::Table = r#"
bind = ["0.0.0.0:8000"]
insecure_bind = "0.0.0.0:8080"
workers = 3
worker_class = "uvloop"
keep_alive_timeout = 10
pid_path = "run/app.pid"
read_timeout = 30
websocket_ping_interval = 2.5
wsgi_max_body_size = 1048576
startup_timeout = 60
accesslog = "-"
certfile = "cert.pem"
keyfile = "key.pem"
verify_mode = "CERT_REQUIRED"
ca_certs = "ca.pem"
include_server_header = false
server_names = ["example.com"]
"#
        .parse()
        .unwrap();
        assert!(crate::config::is_hypercorn_toml(&table));
        let c = convert(
            &table,
            "",
            Some("app:app"),
            Path::new("/srv"),
            Path::new("h.toml"),
        )
        .unwrap();
        let parsed: toml::Table = c.toml.parse().expect(&c.toml);
        assert_eq!(parsed["app"]["module"].as_str(), Some("app:app"));
        assert_eq!(parsed["app"]["interface"].as_str(), Some("asgi"));
        let server = &parsed["server"];
        assert_eq!(server["bind"][0].as_str(), Some("0.0.0.0:8000"));
        assert_eq!(server["insecure_bind"][0].as_str(), Some("0.0.0.0:8080"));
        assert_eq!(server["keepalive"].as_str(), Some("10s"));
        assert_eq!(server["pid_file"].as_str(), Some("/srv/run/app.pid"));
        assert_eq!(server["body_timeout"].as_str(), Some("30s"));
        assert_eq!(server["ws_ping_interval"].as_str(), Some("2500ms"));
        assert_eq!(server["max_body_bytes"].as_integer(), Some(1_048_576));
        assert_eq!(server["tls"]["cert_reqs"].as_str(), Some("required"));
        assert_eq!(parsed["workers"]["count"].as_integer(), Some(3));
        assert_eq!(parsed["workers"]["boot_timeout"].as_str(), Some("60s"));
        let notes = c.notes.join("\n");
        for needle in [
            "include_server_header: corral sends no Server header of its own",
            "server_names: corral serves every Host",
        ] {
            assert!(notes.contains(needle), "{needle} missing from:\n{notes}");
        }
        // A corral.toml is not hypercorn's, even with a key misplaced.
        let corral: toml::Table = "workers = 2\n[server]\nbind = [\"127.0.0.1:8000\"]\n"
            .parse()
            .unwrap();
        assert!(!crate::config::is_hypercorn_toml(&corral));
    }

    /// A key that is not hypercorn's is an error naming the line: the
    /// setting meant, or the section of corral's it belongs in.
    #[test]
    fn a_key_hypercorn_does_not_have_is_an_error() {
        let error = |text: &str| {
            let table: toml::Table = text.parse().unwrap();
            convert(
                &table,
                text,
                None,
                Path::new("/srv"),
                Path::new("corral.toml"),
            )
            .unwrap_err()
        };
        assert_eq!(
            error("bind = \"127.0.0.1:8000\"\nworkerz = 2\n"),
            "corral.toml:2: workerz: not a hypercorn setting (a TOML file of keys outside sections is read as hypercorn's): did you mean `workers`?"
        );
        assert_eq!(
            error("workers = 2\n  threads = 4\n"),
            "corral.toml:2: threads: not a hypercorn setting (a TOML file of keys outside sections is read as hypercorn's); it is a key of corral's [workers] section: put it below a `[workers]` line, the file's other keys in their sections too"
        );
        assert!(error("frobnicate = 1\n").starts_with("corral.toml:1: frobnicate: not a hypercorn setting (a TOML file of keys outside sections is read as hypercorn's), nor a key of corral's: remove it"));
    }

    /// A value gunicorn refuses is named, and a converted line placed, as
    /// the hypercorn file writes it.
    #[test]
    fn messages_name_the_hypercorn_file_s_own_key_and_line() {
        let text = "workers = 2\nkeep_alive_timeout = \"abc\"\nread_timeout = \"soon\"\n";
        let table: toml::Table = text.parse().unwrap();
        let c = convert(&table, text, None, Path::new("/srv"), Path::new("h.toml")).unwrap();
        assert_eq!(
            c.invalid,
            [
                "h.toml:3: read_timeout: \"soon\" is not a value hypercorn takes for it",
                "h.toml:2: keep_alive_timeout: \"abc\" is not a number of seconds of 0 or more, which gunicorn requires (it refuses to start with it too); write it like keep_alive_timeout = 30"
            ]
        );
        let i = c.toml.lines().position(|l| l == "count = 2").unwrap();
        assert_eq!(c.lines[i].as_deref(), Some("h.toml:1"), "{}", c.toml);
    }

    /// Every key [`OWN`] names is mapped, or [`unknown_key`] would offer it.
    #[test]
    fn every_own_key_is_mapped() {
        for name in OWN.iter().chain(SAME.iter()) {
            assert!(key(name).is_some(), "{name}");
        }
    }
}
