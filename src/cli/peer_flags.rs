//! The flags of uvicorn's, granian's, waitress's, hypercorn's and
//! gunicorn's command lines that
//! corral has no flag of its own for, so that a deploy command renamed to
//! `corral` runs or says precisely why not. Each is one row of [`FLAGS`]:
//!
//! - [`Does::Nothing`]: the flag tunes something corral does its own way
//!   (granian's runtime threads, uvicorn's HTTP parser); it is accepted with
//!   the values its server takes, and named in the log with why it changes
//!   nothing;
//! - [`Does::Sets`]: it means one of corral's settings with another
//!   spelling (`--no-proxy-headers`, granian's `--workers-max-rss` in MiB);
//!   the setting's own flag wins when both are given;
//! - [`Does::Refused`]: it asks for what corral does not do (serve static
//!   files, read an encrypted key); the command exits 2 with the reason;
//! - [`Does::Checks`]: its value is corral's behaviour for one value
//!   (gunicorn's `--header-map drop`, its default), taken without a word,
//!   and refused with the reason for the others.
//!
//! Flags that are plain renamings of corral's (`--timeout-keep-alive`,
//! `--working-dir`) are clap aliases on corral's own flags, and gunicorn's
//! refused flags are in `crate::import_gunicorn`'s settings table.

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::config::{ByteSize, HumanDuration, Overrides};
use crate::tls::CertReqs;

/// What a flag takes after it.
#[derive(Debug, Clone, Copy)]
pub enum Takes {
    /// A switch.
    Nothing,
    /// A value, shown as this name in errors.
    Value(&'static str),
    /// One of these values.
    OneOf(&'static [&'static str]),
}

/// What corral does with a flag.
#[derive(Clone, Copy)]
pub enum Does {
    /// Accepted; logged with why it changes nothing.
    Nothing(&'static str),
    /// Sets what the text says, through the function (given the value),
    /// unless corral's own flag for it is given.
    /// The function says whether it did.
    Sets(
        &'static str,
        fn(&mut Overrides, &str) -> Result<bool, String>,
    ),
    /// Refused, with why.
    Refused(&'static str),
    /// Taken, and nothing said, when the function accepts the value (what
    /// corral does anyway); else refused with the reason it gives.
    Checks(fn(&str) -> Result<(), String>),
}

/// One flag of another server's command line.
pub struct Flag {
    /// As typed: "--reload-delay".
    pub long: &'static str,
    /// Whose it is: "uvicorn", "granian", "waitress", "hypercorn",
    /// "gunicorn", "uvicorn, granian".
    pub from: &'static str,
    pub takes: Takes,
    pub does: Does,
    /// Its one-letter form, if it has one: gunicorn's `-R`.
    pub short: Option<char>,
}

const fn flag(long: &'static str, from: &'static str, takes: Takes, does: Does) -> Flag {
    Flag {
        long,
        from,
        takes,
        does,
        short: None,
    }
}

impl Flag {
    /// The flag with its one-letter form.
    const fn short(mut self, c: char) -> Flag {
        self.short = Some(c);
        self
    }
}

use Does::{Checks, Nothing, Refused, Sets};
use Takes::{OneOf, Value};

const SWITCH: Takes = Takes::Nothing;

const RUNTIME: &str =
    "it tunes granian's Rust runtime; corral's front is --io-threads shards of its own";
const H2_TUNING: &str = "corral sets HTTP/2 flow control itself (256 KiB stream and connection windows: what a connection may make it hold) and sends no pings; --max-concurrent-streams and --max-header-bytes bound a connection";
const STATIC: &str = "corral does not serve files: serve them from the app (WhiteNoise, Starlette's StaticFiles) or from the proxy in front";
const NO_COLOURS: &str = "corral's log has no colours: --log-format text or json";
const RSS_SAMPLING: &str =
    "corral reads each worker's memory itself for --max-memory (granian's --workers-max-rss)";
const KEY_PASSWORD: &str = "an encrypted key is refused: decrypt it once (`openssl pkey -in key.pem -out plain.pem`) and keep the file readable only by corral's user";
const RELOAD_TIMING: &str =
    "corral's --reload watches with inotify and reloads 150 ms after the last change";
const WAITRESS_BUFFERS: &str = "corral sizes its own buffers, and bounds what it holds per request (--max-header-bytes, back-pressure on bodies)";
const SOCKET_ERRORS: &str =
    "a client that leaves early is no error in corral's log: its request is cancelled";
const WILDCARD: &str =
    "--listen *:PORT is 0.0.0.0:PORT and [::]:PORT; give the addresses wanted instead";
const HTTP: &str = "corral speaks HTTP itself (hyper): HTTP/1.1, and HTTP/2 on every bind (ALPN h2 on TLS, h2c with prior knowledge on plain binds)";
const WS: &str = "corral always takes WebSocket upgrades for an ASGI app (an app that does not want one closes the handshake: 403); a WSGI app gets none";

/// Every flag, in the README's order: uvicorn's, granian's, waitress's,
/// hypercorn's, gunicorn's.
pub const FLAGS: &[Flag] = &[
    // uvicorn
    flag(
        "--fd",
        "uvicorn",
        Value("FD"),
        Refused("use systemd socket activation (LISTEN_FDS), which corral reads, or --bind"),
    ),
    flag(
        "--reload-delay",
        "uvicorn",
        Value("SECONDS"),
        Nothing(RELOAD_TIMING),
    ),
    flag(
        "--http",
        "uvicorn, granian",
        OneOf(&["auto", "h11", "httptools", "zttp", "1", "2"]),
        Nothing(HTTP),
    ),
    flag("--http2", "uvicorn", SWITCH, Nothing(HTTP)),
    flag(
        "--ws",
        "uvicorn",
        OneOf(&["auto", "none", "websockets", "websockets-sansio", "wsproto"]),
        Nothing(WS),
    ),
    flag(
        "--ws-max-queue",
        "uvicorn",
        Value("N"),
        Nothing(
            "corral holds a WebSocket's messages with back-pressure both ways; --ws-max-message bounds each one",
        ),
    ),
    flag(
        "--ws-per-message-deflate",
        "uvicorn",
        OneOf(&["true", "false", "True", "False"]),
        Nothing(
            "corral's WebSockets never compress messages (no permessage-deflate is negotiated)",
        ),
    ),
    flag("--use-colors", "uvicorn", SWITCH, Nothing(NO_COLOURS)),
    flag("--no-use-colors", "uvicorn", SWITCH, Nothing(NO_COLOURS)),
    flag(
        "--proxy-headers",
        "uvicorn",
        SWITCH,
        Nothing(
            "corral always reads X-Forwarded-Proto and X-Forwarded-For from the peers --forwarded-allow-ips trusts (127.0.0.1 and ::1 by default), as uvicorn does with it",
        ),
    ),
    flag(
        "--no-proxy-headers",
        "uvicorn",
        SWITCH,
        Sets(
            "--forwarded-allow-ips \"\": X-Forwarded-For and X-Forwarded-Proto are trusted from no TCP peer",
            |o, _| Ok(set(&mut o.forwarded_allow_ips, String::new())),
        ),
    ),
    flag(
        "--server-header",
        "uvicorn",
        SWITCH,
        Nothing("corral sends no Server header of its own; one the app sets is sent"),
    ),
    flag(
        "--no-server-header",
        "uvicorn",
        SWITCH,
        Nothing("corral sends no Server header of its own; one the app sets is sent"),
    ),
    flag(
        "--date-header",
        "uvicorn",
        SWITCH,
        Nothing("corral always sends a Date header"),
    ),
    flag(
        "--no-date-header",
        "uvicorn",
        SWITCH,
        Nothing(
            "corral always sends a Date header, as HTTP asks of a server with a clock (RFC 9110, 6.6.1)",
        ),
    ),
    flag(
        "--timeout-worker-healthcheck",
        "uvicorn",
        Value("SECONDS"),
        Nothing(
            "corral's workers send heartbeats over their channel; one silent for [workers] heartbeat_timeout (30 s by default) has its stacks logged and is replaced",
        ),
    ),
    flag(
        "--reset-contextvars",
        "uvicorn",
        SWITCH,
        Nothing(
            "corral runs each ASGI request in a task of its own, which starts from the context the worker had before the app ran",
        ),
    ),
    flag(
        "--h11-max-incomplete-event-size",
        "uvicorn",
        Value("BYTES"),
        Nothing("--max-header-bytes bounds a request's head (64 KiB by default)"),
    ),
    flag(
        "--ssl-keyfile-password",
        "uvicorn, granian",
        Value("PASSWORD"),
        Refused(KEY_PASSWORD),
    ),
    flag(
        "--ssl-ciphers",
        "uvicorn",
        Value("CIPHERS"),
        Refused(
            "corral offers rustls's safe default cipher suites; --tls-min-version 1.3 for TLS 1.3's only",
        ),
    ),
    // granian
    flag(
        "--uds-permissions",
        "granian",
        Value("MODE"),
        Refused("a Unix socket's mode is 0777 minus --umask, as under gunicorn: give --umask"),
    ),
    flag("--no-ws", "granian", SWITCH, Nothing(WS)),
    flag(
        "--blocking-threads-idle-timeout",
        "granian",
        Value("SECONDS"),
        Nothing("a WSGI worker keeps its --threads threads"),
    ),
    flag("--runtime-threads", "granian", Value("N"), Nothing(RUNTIME)),
    flag(
        "--runtime-blocking-threads",
        "granian",
        Value("N"),
        Nothing(RUNTIME),
    ),
    flag(
        "--runtime-mode",
        "granian",
        OneOf(&["auto", "mt", "st"]),
        Nothing(RUNTIME),
    ),
    flag(
        "--task-impl",
        "granian",
        OneOf(&["asyncio", "rust"]),
        Nothing("corral's ASGI workers run the app's tasks on asyncio (or uvloop, --asgi-loop)"),
    ),
    flag(
        "--http1-buffer-size",
        "granian",
        Value("BYTES"),
        Nothing("--max-header-bytes bounds a request's head, and bodies stream"),
    ),
    flag(
        "--http1-header-read-timeout",
        "granian",
        Value("MS"),
        Nothing("a client has --keepalive (5 s without it) to send a request's head"),
    ),
    flag(
        "--http1-keep-alive",
        "granian",
        SWITCH,
        Nothing("keep-alive is on by default (--keepalive)"),
    ),
    flag(
        "--no-http1-keep-alive",
        "granian",
        SWITCH,
        Sets(
            "--keepalive 0: each connection serves one request",
            |o, _| {
                Ok(set(
                    &mut o.server_flags.keepalive,
                    HumanDuration(std::time::Duration::ZERO),
                ))
            },
        ),
    ),
    flag(
        "--http1-pipeline-flush",
        "granian",
        SWITCH,
        Nothing("corral writes the answers to pipelined requests as they come"),
    ),
    flag(
        "--no-http1-pipeline-flush",
        "granian",
        SWITCH,
        Nothing("corral writes the answers to pipelined requests as they come"),
    ),
    flag(
        "--http2-adaptive-window",
        "granian",
        SWITCH,
        Refused(H2_TUNING),
    ),
    flag(
        "--no-http2-adaptive-window",
        "granian",
        SWITCH,
        Nothing("corral's HTTP/2 windows are fixed"),
    ),
    flag(
        "--http2-initial-connection-window-size",
        "granian",
        Value("BYTES"),
        Refused(H2_TUNING),
    ),
    flag(
        "--http2-initial-stream-window-size",
        "granian",
        Value("BYTES"),
        Refused(H2_TUNING),
    ),
    flag(
        "--http2-keep-alive-interval",
        "granian",
        Value("MS"),
        Refused(H2_TUNING),
    ),
    flag(
        "--http2-keep-alive-timeout",
        "granian",
        Value("SECONDS"),
        Refused(H2_TUNING),
    ),
    flag(
        "--http2-max-headers-size",
        "granian",
        Value("BYTES"),
        Refused(H2_TUNING),
    ),
    flag(
        "--http2-max-send-buffer-size",
        "granian",
        Value("BYTES"),
        Refused(H2_TUNING),
    ),
    flag(
        "--log",
        "granian",
        SWITCH,
        Nothing("corral always logs (--log-level)"),
    ),
    flag(
        "--no-log",
        "granian",
        SWITCH,
        Refused("corral's log cannot be turned off: --log-level error keeps only errors"),
    ),
    flag(
        "--access-log-fmt",
        "granian",
        Value("FORMAT"),
        Refused(
            "granian's access log atoms are not gunicorn's: give the format with --access-logformat, in gunicorn's atoms (the README lists them)",
        ),
    ),
    flag(
        "--ssl-crl",
        "granian",
        Value("FILE"),
        Refused(
            "corral does not check certificate revocation lists: issue client certificates that expire soon, or remove them from --ca-certs",
        ),
    ),
    flag(
        "--ssl-client-verify",
        "granian",
        SWITCH,
        Sets(
            "--cert-reqs required: a client without a certificate from --ca-certs is refused",
            |o, _| Ok(set(&mut o.cert_reqs, CertReqs::Required)),
        ),
    ),
    flag(
        "--no-ssl-client-verify",
        "granian",
        SWITCH,
        Nothing("client certificates are not asked for unless --cert-reqs says so"),
    ),
    flag(
        "--respawn-failed-workers",
        "granian",
        SWITCH,
        Nothing("corral always replaces a worker that dies, with back-off while it keeps failing"),
    ),
    flag(
        "--no-respawn-failed-workers",
        "granian",
        SWITCH,
        Nothing(
            "corral always replaces a worker that dies, with back-off while it keeps failing; a worker that never boots costs only its slot",
        ),
    ),
    flag(
        "--respawn-interval",
        "granian",
        Value("SECONDS"),
        Nothing(
            "a worker that dies is replaced at once, with back-off (workers.restart_backoff) while it keeps failing",
        ),
    ),
    flag(
        "--rss-sample-interval",
        "granian",
        Value("SECONDS"),
        Nothing(RSS_SAMPLING),
    ),
    flag(
        "--rss-samples",
        "granian",
        Value("N"),
        Nothing(RSS_SAMPLING),
    ),
    flag(
        "--workers-max-rss",
        "granian",
        Value("MIB"),
        Sets(
            "--max-memory in MiB: a worker above it is replaced gracefully",
            |o, v| {
                let mib: u64 = v.trim().parse().map_err(|_| {
                    format!("--workers-max-rss {v}: give a number of MiB, like 512")
                })?;
                Ok(set(
                    &mut o.max_memory,
                    ByteSize(mib.saturating_mul(1024 * 1024)),
                ))
            },
        ),
    ),
    flag(
        "--static-path-route",
        "granian",
        Value("ROUTE"),
        Refused(STATIC),
    ),
    flag(
        "--static-path-mount",
        "granian",
        Value("DIR"),
        Refused(STATIC),
    ),
    flag(
        "--static-path-dir-to-file",
        "granian",
        Value("FILE"),
        Refused(STATIC),
    ),
    flag(
        "--static-path-expires",
        "granian",
        Value("SECONDS"),
        Refused(STATIC),
    ),
    flag(
        "--metrics",
        "granian",
        SWITCH,
        Nothing(
            "corral always serves Prometheus metrics at /metrics on its status server (--status-bind)",
        ),
    ),
    flag(
        "--no-metrics",
        "granian",
        SWITCH,
        Nothing(
            "corral always serves Prometheus metrics at /metrics on its status server (--status-bind)",
        ),
    ),
    flag(
        "--metrics-scrape-interval",
        "granian",
        Value("SECONDS"),
        Nothing("corral counts as requests happen"),
    ),
    flag(
        "--metrics-address",
        "granian",
        Value("ADDRESS"),
        Refused(
            "corral serves /metrics on its status server: give its address with --status-bind HOST:PORT",
        ),
    ),
    flag(
        "--metrics-port",
        "granian",
        Value("PORT"),
        Refused(
            "corral serves /metrics on its status server: give its address with --status-bind HOST:PORT",
        ),
    ),
    flag(
        "--reload-tick",
        "granian",
        Value("MS"),
        Nothing(RELOAD_TIMING),
    ),
    flag(
        "--reload-ignore-patterns",
        "granian",
        Value("REGEX"),
        Refused("corral takes globs, not regular expressions: --reload-exclude GLOB"),
    ),
    flag(
        "--reload-ignore-worker-failure",
        "granian",
        SWITCH,
        Nothing("a broken save never stops corral: the last good code serves on"),
    ),
    flag(
        "--no-reload-ignore-worker-failure",
        "granian",
        SWITCH,
        Nothing("a broken save never stops corral: the last good code serves on"),
    ),
    flag(
        "--no-reload",
        "granian",
        SWITCH,
        Nothing("--reload is off unless given"),
    ),
    flag(
        "--no-factory",
        "granian",
        SWITCH,
        Nothing("--factory is off unless given"),
    ),
    // waitress (Flask's documentation serves with it)
    flag(
        "--unix-socket-perms",
        "waitress",
        Value("PERMS"),
        Refused(
            "a Unix socket's mode is 0777 minus --umask, as under gunicorn: for waitress's 600 give --umask 177, for 660 --umask 117",
        ),
    ),
    flag(
        "--url-scheme",
        "waitress",
        Value("SCHEME"),
        Refused(
            "corral takes the scheme from TLS, or from X-Forwarded-Proto sent by a --forwarded-allow-ips peer: have the proxy send it",
        ),
    ),
    flag(
        "--ident",
        "waitress",
        Value("NAME"),
        Sets(
            "--header \"Server: NAME\": the Server header of every response that sets none",
            |o, v| {
                let given = o
                    .header
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case("server"));
                if !given {
                    o.header.push(("Server".to_owned(), v.to_owned()));
                }
                Ok(!given)
            },
        ),
    ),
    flag(
        "--recv-bytes",
        "waitress",
        Value("INT"),
        Nothing(WAITRESS_BUFFERS),
    ),
    flag(
        "--send-bytes",
        "waitress",
        Value("INT"),
        Nothing(WAITRESS_BUFFERS),
    ),
    flag(
        "--outbuf-overflow",
        "waitress",
        Value("INT"),
        Nothing(WAITRESS_BUFFERS),
    ),
    flag(
        "--outbuf-high-watermark",
        "waitress",
        Value("INT"),
        Nothing(WAITRESS_BUFFERS),
    ),
    flag(
        "--inbuf-overflow",
        "waitress",
        Value("INT"),
        Nothing(WAITRESS_BUFFERS),
    ),
    flag(
        "--cleanup-interval",
        "waitress",
        Value("INT"),
        Nothing(
            "an idle connection is closed after --keepalive (waitress's --channel-timeout) exactly",
        ),
    ),
    flag(
        "--channel-request-lookahead",
        "waitress",
        Value("INT"),
        Nothing("corral notices a client that leaves while its request runs, whatever this says"),
    ),
    flag(
        "--asyncore-loop-timeout",
        "waitress",
        Value("INT"),
        Nothing("corral has no asyncore loop"),
    ),
    flag(
        "--asyncore-use-poll",
        "waitress",
        SWITCH,
        Nothing("corral has no asyncore loop"),
    ),
    flag(
        "--log-socket-errors",
        "waitress",
        SWITCH,
        Nothing(SOCKET_ERRORS),
    ),
    flag(
        "--no-log-socket-errors",
        "waitress",
        SWITCH,
        Nothing(SOCKET_ERRORS),
    ),
    flag(
        "--expose-tracebacks",
        "waitress",
        SWITCH,
        Nothing("corral never sends a traceback to a client: the app's is in the log"),
    ),
    flag(
        "--no-expose-tracebacks",
        "waitress",
        SWITCH,
        Nothing("corral never sends a traceback to a client: the app's is in the log"),
    ),
    flag("--ipv4", "waitress", SWITCH, Nothing(WILDCARD)),
    flag("--no-ipv4", "waitress", SWITCH, Nothing(WILDCARD)),
    flag("--ipv6", "waitress", SWITCH, Nothing(WILDCARD)),
    flag("--no-ipv6", "waitress", SWITCH, Nothing(WILDCARD)),
    // hypercorn
    flag(
        "--debug",
        "hypercorn",
        SWITCH,
        Nothing("corral has no debug mode: --log-level debug logs more"),
    ),
    flag(
        "--keyfile-password",
        "hypercorn",
        Value("PASSWORD"),
        Refused(KEY_PASSWORD),
    ),
    flag(
        "--quic-bind",
        "hypercorn",
        Value("ADDRESS"),
        Refused("corral does not speak HTTP/3 (QUIC): HTTP/1.1 and HTTP/2 on --bind"),
    ),
    flag(
        "--server-name",
        "hypercorn",
        Value("NAME"),
        Refused(
            "corral serves every Host: check it in the app (Django's ALLOWED_HOSTS, Starlette's TrustedHostMiddleware) or in the proxy",
        ),
    ),
    // gunicorn's flags for what corral always does
    flag(
        "--header-map",
        "gunicorn",
        Value("STRATEGY"),
        Checks(|v| match v {
            "drop" => Ok(()),
            "refuse" | "dangerous" => Err(format!(
                "--header-map {v}: not supported: corral drops headers with `_` in their name (gunicorn's `drop`, its default), so that a client cannot pass one off as a proxy's header with `-` (X_Forwarded_For for X-Forwarded-For); leave the flag out, or give `drop`"
            )),
            other => Err(format!(
                "--header-map {other:?}: gunicorn takes drop, refuse or dangerous; corral does what drop does"
            )),
        }),
    ),
    flag(
        "--capture-output",
        "gunicorn",
        SWITCH,
        Nothing("corral always logs the workers' stdout and stderr"),
    ),
    flag(
        "--enable-stdio-inheritance",
        "gunicorn",
        SWITCH,
        Nothing(
            "it only applies to gunicorn's --daemon; corral stays in the foreground and sets PYTHONUNBUFFERED for the workers",
        ),
    )
    .short('R'),
    flag(
        "--initgroups",
        "gunicorn",
        SWITCH,
        Nothing("workers always get the supplementary groups of --user"),
    ),
    flag(
        "--no-sendfile",
        "gunicorn",
        SWITCH,
        Nothing("corral never uses sendfile: responses stream through it"),
    ),
    flag(
        "--suppress-ragged-eofs",
        "gunicorn",
        SWITCH,
        Nothing("rustls treats a missing close_notify as the end of the connection"),
    ),
    flag(
        "--do-handshake-on-connect",
        "gunicorn",
        SWITCH,
        Nothing(
            "the TLS handshake always runs as the connection is accepted, bounded by --keep-alive",
        ),
    ),
    flag(
        "--disable-redirect-access-to-syslog",
        "gunicorn",
        SWITCH,
        Nothing(
            "corral's access lines reach syslog only when they go to its own log: give --access-logfile to keep them out of it",
        ),
    ),
    flag(
        "--reload-engine",
        "gunicorn",
        OneOf(&["auto", "poll", "inotify"]),
        Nothing("corral's --reload watches with inotify"),
    ),
];

/// Why a [`Does::Sets`] flag changed nothing.
const OWN_FLAG_WINS: &str = "corral's own flag for the same setting is given, and wins";

/// `value` into `slot` unless it holds one (from corral's own flag);
/// whether it did.
fn set<T>(slot: &mut Option<T>, value: T) -> bool {
    let free = slot.is_none();
    if free {
        *slot = Some(value);
    }
    free
}

/// The flags corral accepts (not the refused ones) as hidden arguments of
/// `cmd`, for [`given`] to find after parsing.
pub fn add_to(cmd: Command) -> Command {
    let mut cmd = cmd;
    for f in FLAGS {
        if matches!(f.does, Refused(_)) {
            continue;
        }
        let long = f.long.trim_start_matches("--");
        // CORRAL_<FLAG> as for every flag of `run`.
        let mut arg = Arg::new(id(f))
            .long(long)
            .env(crate::config::env_name(f.long))
            .hide(true);
        if let Some(c) = f.short {
            arg = arg.short(c);
        }
        let arg = match f.takes {
            Takes::Nothing => arg.action(ArgAction::SetTrue),
            Value(name) => arg.action(ArgAction::Set).value_name(name),
            OneOf(values) => arg
                .action(ArgAction::Set)
                .value_name("VALUE")
                .value_parser(clap::builder::PossibleValuesParser::new(values)),
        };
        cmd = cmd.arg(arg);
    }
    cmd
}

/// The argument id of `f`: its flag as typed, "--fd", which no field of
/// corral's own arguments is named.
fn id(f: &Flag) -> &'static str {
    f.long
}

/// Applies the [`Does::Sets`] flags given in `matches` to `args`, and keeps
/// them in `args.peer_meanings` and the [`Does::Nothing`] ones in
/// `args.peer_no_ops`, for the log.
pub fn apply(matches: &ArgMatches, args: &mut Overrides) -> Result<(), String> {
    for f in FLAGS {
        let id = id(f);
        let Ok(Some(raw)) = matches.try_get_raw(id) else {
            continue;
        };
        let value = raw
            .into_iter()
            .next()
            .map(|v| v.to_string_lossy().into_owned());
        if let Takes::Nothing = f.takes
            && !matches.get_flag(id)
        {
            continue;
        }
        let shown = match &value {
            Some(v) if !matches!(f.takes, Takes::Nothing) => format!("{} {v}", f.long),
            _ => f.long.to_owned(),
        };
        match f.does {
            Nothing(why) => args.peer_no_ops.push((shown, f.from, why)),
            Sets(what, set) => match set(args, value.as_deref().unwrap_or(""))? {
                true => args.peer_meanings.push((shown, f.from, what)),
                false => args.peer_no_ops.push((shown, f.from, OWN_FLAG_WINS)),
            },
            Checks(check) => check(value.as_deref().unwrap_or(""))?,
            Refused(_) => {}
        }
    }
    Ok(())
}

/// Why corral refuses `arg` (as typed: "--fd", "--fd=3"), when it is one
/// of the refused flags.
pub fn refused(arg: &str) -> Option<String> {
    let long = arg.split('=').next().unwrap_or(arg);
    let f = FLAGS.iter().find(|f| f.long == long)?;
    match f.does {
        Refused(why) => Some(format!(
            "corral does not take {long} ({}'s): {why}",
            f.from.replace(", ", "'s and ")
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_is_listed_once_and_none_is_corrals_own() {
        use clap::CommandFactory;
        let own = crate::cli::Cli::command();
        let run = own.find_subcommand("run").unwrap();
        for (i, f) in FLAGS.iter().enumerate() {
            let long = f.long.trim_start_matches("--");
            let corrals = run.get_arguments().any(|a| {
                a.get_long() == Some(long)
                    || a.get_all_aliases().is_some_and(|al| al.contains(&long))
            });
            assert!(!corrals, "{} is corral's own flag", f.long);
            assert!(
                FLAGS[..i].iter().all(|g| g.long != f.long),
                "{} is listed twice",
                f.long
            );
        }
    }

    /// The README's "From uvicorn" and "From granian" tables (and
    /// gunicorn's) name every flag.
    #[test]
    fn the_readme_names_every_flag_in_its_servers_table() {
        let readme = include_str!("../../README.md");
        let section = |title: &str| {
            let start = readme.find(title).expect(title);
            let rest = &readme[start + title.len()..];
            &rest[..rest.find("\n### ").unwrap_or(rest.len())]
        };
        for f in FLAGS {
            for from in f.from.split(", ") {
                let title = match from {
                    "uvicorn" => "### From uvicorn",
                    "granian" => "### From granian",
                    "waitress" => "### From waitress",
                    "hypercorn" => "### From hypercorn",
                    _ => "### Every gunicorn setting",
                };
                assert!(
                    section(title).contains(&format!("`{}", f.long)),
                    "{title} does not name {}",
                    f.long
                );
            }
        }
    }
}
