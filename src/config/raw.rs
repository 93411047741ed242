//! The config file format, each key defined once: the `Raw*` structs that
//! serde reads (with `deny_unknown_fields`; their `///` docs are the config
//! reference), the compiled-in example config, and [`parse`], which turns a
//! file into those structs or the first syntax or type error, pointed at its
//! line and key.
//!
//! # How to add a key
//!
//! A plain key (one value with a default, like a duration, a size, a count
//! or a bool) is one entry in its section's `section!` below:
//!
//! ```text
//! /// What it does, for the config reference (the default is added).
//! header_timeout: HumanDuration = "10s" => Duration,
//!     flag "header-timeout": "The flag's --help line",
//!     check longer_than_0;
//! ```
//!
//! `name: Type` is the type the file and the flag are read as; `= "10s"` the
//! default, written as `config/example.toml` writes it (a TOML value);
//! `=> Duration` the type of the resolved field (`cfg.server.header_timeout`;
//! see `keys::Resolve` for the conversions); `flag "NAME": "help"` (optional;
//! `short 't'` and `alias "other"` may follow NAME) makes `--NAME` and
//! `CORRAL_NAME`, whose `--help` ends `[toml: server.header_timeout]
//! [default: 10s]`; `check F` (optional) runs `F(&value, default)` and
//! reports its `Err` at the file's line or the flag (`keys.rs` has
//! `longer_than_0`, `at_least_1`, `count_of(...)`). Then add its line, set to
//! the default, to `config/example.toml`: `example_tests` fails until the
//! example shows it with that default. That is all: no other file changes.
//!
//! A key of another shape (a list, a table, a value that depends on other
//! keys or on the environment) is an entry with its full field type and no
//! `= default` (like `bind: Option<Spanned<Vec<Spanned<String>>>>;`); its
//! flag goes in `overrides.rs`, its resolution in `validate/`, its resolved
//! field beside the section's `keys` in `resolved.rs`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use toml::Spanned;

use std::time::Duration;

use super::keys::{at_least_1, count_of, header_bytes, longer_than_0, section};
use super::units::Umask;
use super::{AppOutput, LogFormat, LogLevel};
use super::{
    AsgiLifespan, AsgiLoop, ByteSize, ConfigFile, HumanDuration, Interface, MinReady, Problem,
    WorkerCount,
};
use crate::access_log::AccessLog;

/// Every key with its default; tested to parse and validate.
pub(super) const EXAMPLE: &str = include_str!("../../config/example.toml");

/// A `corral.toml` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    /// `[app]`: what to import and how to start Python.
    #[serde(default)]
    pub(super) app: RawApp,
    /// `[server]`: the HTTP side that corral serves itself.
    #[serde(default)]
    pub(super) server: RawServer,
    /// `[workers]`: the Python worker processes.
    #[serde(default)]
    pub(super) workers: RawWorkers,
    /// `[health]`: the status server, when the instance counts as ready and
    /// the readiness probe of the workers.
    #[serde(default)]
    pub(super) health: RawHealth,
    /// `[control]`: the control socket that `corral reload`, `corral scale`
    /// and `corral stop` talk to.
    #[serde(default)]
    pub(super) control: RawControl,
    /// `[deploy]`: reloads (a new generation of workers taking over).
    #[serde(default)]
    pub(super) deploy: RawDeploy,
    /// `[log]`: corral's own log and the access log.
    #[serde(default)]
    pub(super) log: RawLog,
    /// `[hooks]`: commands run when a worker exits, a generation comes
    /// into service, or a reload fails.
    #[serde(default)]
    pub(super) hooks: RawHooks,
    /// `[dev]`: development mode (`--reload`).
    #[serde(default)]
    pub(super) dev: RawDev,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    /// Verbosity of corral's own log: "error" (gunicorn's "critical" too),
    /// "warn" ("warning"), "info", "debug" or "trace". Default "info".
    pub(super) level: Option<LogLevel>,
    /// "text" (human-readable) or "json" (one object per line). Default
    /// "text".
    pub(super) format: Option<LogFormat>,
    /// What the workers print: "tagged" (line by line through corral's
    /// log, with slot and pid, control characters shown) or "raw" (line by
    /// line as the app wrote them, its stdout to corral's stdout and its
    /// stderr to corral's stderr, as under gunicorn: JSON log lines reach
    /// a platform's log agent as they are). Default "tagged".
    pub(super) app_output: Option<AppOutput>,
    /// A file for corral's own log (workers' output included) instead of
    /// stderr, relative to this file's folder; "-" means stderr (gunicorn's
    /// `errorlog`). Opened for appending, created mode 0640; reopened on
    /// SIGUSR1 (for logrotate). In a folder another user may write to, a
    /// symlink is refused, and so is a file neither corral's user nor the
    /// folder's owner owns. Default: stderr.
    pub(super) error_file: Option<Spanned<String>>,
    /// The access log, one line per request: "off", "common", "combined"
    /// (Apache's and gunicorn's formats) or "json". Default "off", or
    /// "combined" (gunicorn's default line) when `access_file` is set.
    pub(super) access: Option<AccessLog>,
    /// A file for the access log, relative to this file's folder; "-" means
    /// stdout (gunicorn's `accesslog`). Opened and reopened as `error_file`.
    /// Default: the access lines go to corral's own log.
    pub(super) access_file: Option<Spanned<String>>,
    /// The access line in gunicorn's `access_log_format` atoms, like
    /// '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s'
    /// (an unknown atom is written "-", as gunicorn does), plus corral's
    /// `request_id`, `queue_ms`, `worker_slot`, `worker_pid` and
    /// `generation`; turns the access log on. Default: none (the format of
    /// `access`).
    pub(super) access_format: Option<Spanned<String>>,
    /// The StatsD or DogStatsD agent corral sends gunicorn's metrics to
    /// (gunicorn's `statsd_host`): "HOST:PORT" over UDP (port 8125 when left
    /// out; "[::1]:8125" for IPv6) or "unix:PATH", a Unix datagram socket
    /// (relative to this file's folder). Default: none, no StatsD.
    pub(super) statsd_host: Option<Spanned<String>>,
    /// Put before every StatsD metric name, with a "." added (gunicorn's
    /// `statsd_prefix`): "app" sends "app.gunicorn.requests". Default "".
    pub(super) statsd_prefix: Option<Spanned<String>>,
    /// DogStatsD tags added to every StatsD metric (gunicorn's
    /// `dogstatsd_tags`), like "env:prod,service:app". Default "".
    pub(super) dogstatsd_tags: Option<Spanned<String>>,
    /// Send corral's own log to a syslog daemon as well (gunicorn's
    /// `syslog`), one datagram per line tagged "corral.PREFIX.error", where
    /// it goes on to stderr or `error_file` too. Default false.
    pub(super) syslog: Option<Spanned<bool>>,
    /// Where the syslog daemon listens (gunicorn's `syslog_addr`):
    /// "udp://HOST:PORT" (port 514 when left out) or "unix:///dev/log", a
    /// Unix datagram socket. Only with `syslog = true`. Default
    /// "udp://localhost:514", as gunicorn's on Linux.
    pub(super) syslog_to: Option<Spanned<String>>,
    /// The middle of each line's tag, "corral.PREFIX.error" (gunicorn's
    /// `syslog_prefix`): letters, digits, '.', '_' and '-'. Default:
    /// `app.proc_name`, as gunicorn's, else the instance's name.
    pub(super) syslog_prefix: Option<Spanned<String>>,
    /// The syslog facility (gunicorn's `syslog_facility`): "user", "daemon",
    /// "local0" to "local7", ... Default "user".
    pub(super) syslog_facility: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApp {
    /// The app, as "module:callable" (gunicorn's APP argument), e.g.
    /// "main:app" or "pkg.wsgi:application". Without ":callable" the
    /// callable is "application". Required here or on the command line.
    pub(super) module: Option<Spanned<String>>,
    /// "wsgi", "asgi" or "auto" (the worker tells from the callable).
    /// Default "auto".
    pub(super) interface: Option<Interface>,
    /// The event loop an ASGI app runs on: "auto" (uvloop when installed,
    /// else asyncio's), "asyncio" or "uvloop" (a worker without uvloop then
    /// fails its boot), as gunicorn's `asgi_loop` and uvicorn's `--loop`.
    /// A WSGI app ignores it. Default "auto".
    pub(super) asgi_loop: Option<AsgiLoop>,
    /// Whether an ASGI app's lifespan protocol runs: "auto" (when the app
    /// supports it), "on" (an app that does not fails its boot) or "off"
    /// (never: no startup, no shutdown), as gunicorn's `asgi_lifespan` and
    /// uvicorn's `--lifespan`. Default "auto".
    pub(super) asgi_lifespan: Option<AsgiLifespan>,
    /// The Python interpreter. A bare name ("python3.12") is looked up in
    /// PATH; a path is relative to this file's folder. Default: the python
    /// of the virtualenv (or conda environment) corral is installed in, else
    /// `$VIRTUAL_ENV/bin/python` when VIRTUAL_ENV is set, else "python3".
    pub(super) python: Option<Spanned<String>>,
    /// Folder the workers run in and import the app from, relative to this
    /// file's folder. Default: corral's own working directory.
    pub(super) chdir: Option<Spanned<String>>,
    /// Folders put in front of sys.path, relative to this file's folder,
    /// searched in the order listed (gunicorn's `--pythonpath a,b` searches
    /// b first). Default none.
    #[serde(default)]
    pub(super) pythonpath: Vec<Spanned<String>>,
    /// Extra environment variables for the workers (a table of strings),
    /// set over what they inherit. `--env KEY=VALUE` flags are merged over
    /// it.
    #[serde(default)]
    pub(super) env: BTreeMap<String, Spanned<String>>,
    /// Hardening: the only variables of corral's environment the workers
    /// inherit, as names or patterns with `*` (like "LC_*"), e.g. ["PATH",
    /// "HOME", "LANG", "LC_*", "DATABASE_URL"]. `env` and corral's own
    /// CORRAL_SLOT, CORRAL_GENERATION and CORRAL_REVISION are set either way.
    /// Default: not set, the workers inherit corral's whole environment
    /// (as under gunicorn, uvicorn and granian) except the service
    /// manager's variables (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES,
    /// NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID) and corral's own
    /// (every CORRAL_* variable, like CORRAL_STATUS_TOKEN), which never
    /// reach a worker, allowed or not.
    pub(super) env_allow: Option<Spanned<Vec<Spanned<String>>>>,
    /// Deprecated: read as `env_allow` with the base corral used to pass
    /// (PATH, HOME, LANG, LANGUAGE, LC_*, TZ, TMPDIR, VIRTUAL_ENV,
    /// PYTHONPATH) plus these names, so an old file keeps its meaning, with
    /// a warning; ["*"] is the default now. Not together with `env_allow`.
    pub(super) pass_env: Option<Spanned<Vec<String>>>,
    /// The attribute named by `module` is an app factory: call it with no
    /// arguments and serve what it returns (uvicorn's and granian's
    /// `--factory`). "main:create_app('prod', debug=False)" calls it with
    /// those arguments instead (literals only, as gunicorn). Default false.
    pub(super) factory: Option<Spanned<bool>>,
    /// The path prefix the app is mounted under behind a proxy, like
    /// "/api": WSGI apps get it as SCRIPT_NAME (and PATH_INFO without it
    /// when the request path starts with it), ASGI apps as the scope's
    /// `root_path` (with `path` starting with it, as uvicorn does). Default:
    /// $SCRIPT_NAME when set (as gunicorn reads it), else none.
    pub(super) root_path: Option<Spanned<String>>,
    /// The name in the workers' command lines, which `ps`, `top -c` and
    /// `htop` show as "... corral_worker.py [NAME] worker 0 generation 1"
    /// (gunicorn's `proc_name`). Default: the instance's name, like
    /// "shop-5c1e0a3f" (see `corral status`).
    pub(super) proc_name: Option<Spanned<String>>,
    /// A dotenv file each worker loads into its environment before it
    /// imports the app, with python-dotenv (which must be installed beside
    /// the app), as uvicorn's `--env-file` does: variables already set stay
    /// as they are. Relative to this file's folder. Default: none.
    pub(super) env_file: Option<Spanned<String>>,
    /// A PasteDeploy ini file whose app the workers serve instead of
    /// `module` (gunicorn's `paste`, `--paste`; Pyramid's
    /// `production.ini`), relative to this file's folder; "FILE#NAME" picks
    /// its `[app:NAME]` (default "main"). The workers need PasteDeploy
    /// installed. When the file has a `[loggers]` section and no
    /// `logconfig*` key is set, the workers apply it as their logging
    /// configuration, as gunicorn does. Not together with `module`.
    /// Default: none.
    pub(super) paste: Option<Spanned<String>>,
    /// Defaults handed to the Paste app's `global_conf` (gunicorn's
    /// `raw_paste_global_conf`, `--paste-global KEY=VALUE`): a table of
    /// strings, e.g. `[app.paste_global]` with `db = "postgresql:///shop"`,
    /// which the ini reads as `%(db)s`. Default: none.
    #[serde(default)]
    pub(super) paste_global: BTreeMap<String, Spanned<String>>,
    /// Python `logging` configuration that each worker applies before it
    /// imports the app, as gunicorn's workers inherit it: an ini file for
    /// `logging.config.fileConfig` (gunicorn's `logconfig`, `--log-config`),
    /// relative to this file's folder; `%(here)s` in it is the file's
    /// folder. A `.json`, `.yaml` or `.yml` file is given to
    /// `logging.config.dictConfig` as it is, as uvicorn's `--log-config`
    /// does (YAML needs PyYAML beside the app). It configures the app's loggers (where their records go, at
    /// which level, in which format); corral's own log stays as `[log]`
    /// sets it. A worker that cannot apply it fails its boot with the
    /// traceback. At most one of `logconfig`, `logconfig_json` and
    /// `logconfig_dict`. Default: none (Python's defaults: warnings and
    /// errors to stderr, which corral logs).
    pub(super) logconfig: Option<Spanned<String>>,
    /// As `logconfig`, a JSON file for `logging.config.dictConfig`
    /// (gunicorn's `logconfig_json`, `--log-config-json`), laid over
    /// gunicorn's defaults as gunicorn does: a root logger at INFO writing
    /// to stdout, unless the file sets `root`. Default: none.
    pub(super) logconfig_json: Option<Spanned<String>>,
    /// As `logconfig_json`, the dictionary itself as a table (gunicorn's
    /// `logconfig_dict`), e.g. `[app.logconfig_dict.loggers.shop]` with
    /// `level = "DEBUG"`. Default: none.
    pub(super) logconfig_dict: Option<Spanned<toml::Table>>,
    /// A gunicorn config file whose Python hooks run under corral. Each
    /// worker runs the hooks gunicorn's workers run: `post_fork(server,
    /// worker)` before the app's import, `post_worker_init(worker)` after
    /// it, `pre_request(worker, req)` and `post_request(worker, req,
    /// environ, resp)` around each WSGI request, `worker_int(worker)` on
    /// SIGINT or SIGQUIT, `worker_abort(worker)` past `timeout` and
    /// `worker_exit(server, worker)` when the worker exits. One Python process beside the workers runs the hooks of
    /// gunicorn's arbiter: `on_starting(server)` before the first worker
    /// starts, `when_ready(server)` once the first generation is in
    /// service, `on_reload(server)`, `nworkers_changed(server, new, old)`,
    /// `child_exit(server, worker)` after each worker exit and
    /// `on_exit(server)` at a stop. The file runs once more in each worker
    /// and in that process, as the workers' user (its other settings change
    /// nothing there). A path relative to this file's folder, or gunicorn's
    /// "python:MODULE", found below the current folder. Set when corral
    /// reads a gunicorn.conf.py that defines one of these hooks (and by
    /// `corral import-gunicorn`). Default: none.
    pub(super) gunicorn_hooks: Option<Spanned<String>>,
}

section! {
    /// `[server]`: the HTTP side that corral serves itself.
    RawServer, ServerKeys, ServerFlags, resolve_server_keys, SERVER_KEYS, "server" {
        /// Addresses to listen on: "HOST:PORT" with an IP address
        /// ("0.0.0.0:8000", "[::]:8000", "localhost:8000") or "unix:/path"
        /// (relative to this file's folder; a stale socket file there is
        /// replaced, and corral removes its file when it stops, as gunicorn
        /// does). Default: ["0.0.0.0:$PORT"] when the
        /// environment variable PORT is set (as gunicorn and uvicorn do on
        /// Heroku, Render, Cloud Run, Fly), else ["127.0.0.1:8000"].
        bind: Option<Spanned<Vec<Spanned<String>>>>;
        /// Addresses served as plain HTTP (h2c with prior knowledge included)
        /// even when `[server.tls]` is set, written like `bind` entries and
        /// listened on beside them (hypercorn's `insecure_bind`): "HTTPS on 443,
        /// plain on 80", or a plain port for a load balancer's health checks.
        /// An address may not be in both lists. Under systemd socket activation,
        /// an inherited socket whose address is listed here serves plain HTTP.
        /// Default: none.
        insecure_bind: Option<Spanned<Vec<Spanned<String>>>>;
        /// Set SO_REUSEPORT on the TCP sockets corral binds, as gunicorn's
        /// `reuse_port`: another process of the same user may then bind the same
        /// address (a second corral, say, started beside this one by a
        /// deployment tool), and the kernel spreads new connections between
        /// them. Sockets from systemd (its `ReusePort=`) or a USR2 parent are
        /// used as they are. Default false.
        reuse_port: Option<Spanned<bool>>;
        /// Listen queue length passed to listen(2).
        backlog: u32 = 2048 => u32,
            flag "backlog": "Listen queue length",
            check at_least_1;
        /// How long an idle keep-alive connection stays open between requests, e.g.
        /// "5s"; also the time a client has to send a request head, a TLS
        /// handshake or a PROXY header. 0 turns HTTP/1 keep-alive off, as
        /// gunicorn's `--keep-alive 0`: each response closes its connection
        /// (a client then has 5 s for its head).
        keepalive: HumanDuration = "5s" => Duration,
            flag "keepalive" alias "keep-alive" alias "timeout-keep-alive" alias "channel-timeout":
                "Idle time before a keep-alive connection is closed; 0: no keep-alive";
        /// Largest request head accepted: the request line, the headers and the
        /// empty line that ends them, counted exactly as received; a bigger one
        /// gets 431 Request Header Fields Too Large. At least "8KiB".
        max_header_bytes: ByteSize = "64KiB" => usize,
            flag "max-header-bytes" alias "max-request-header-size": "Largest request head accepted (431 above)",
            check header_bytes;
        /// Largest request body accepted; bigger ones get 413.
        max_body_bytes: ByteSize = "100MiB" => u64,
            flag "max-body-bytes" alias "max-request-body-size": "Largest request body accepted (413 above)";
        /// Longest a request body may go without a byte from the client, before it
        /// reaches a worker and while it streams to one: the client then gets 408
        /// Request Timeout, and an app already reading the body sees the client
        /// gone (`wsgi.input` raises, ASGI `receive()` returns `http.disconnect`);
        /// its worker is never touched. The time a worker spends waiting for the
        /// client's bytes does not count against `workers.timeout`. Longer than 0.
        /// "20s" rides out TCP retransmission back-off on a poor link (1 + 2 +
        /// 4 + 8 s), and is a third of nginx's `client_body_timeout` because
        /// here a stalled upload may hold a Python thread, which nginx's does
        /// not.
        body_timeout: HumanDuration = "20s" => Duration,
            flag "body-timeout" alias "read-timeout":
                "Longest a request body may go without a byte from the client: then 408, and the app \
                 sees the client gone; its worker is not touched",
            check longer_than_0;
        /// The least a request body that streams to its worker (one past the
        /// first 64 KiB) must average, in bytes per second of the time the
        /// app waits for the client, once that time passes `body_timeout`:
        /// a slower body gets 408 and the app sees the client gone, as for a
        /// stall. Without it a client that sends a byte every few seconds
        /// holds a Python thread without end. "240B" is ASP.NET Core
        /// Kestrel's `MinRequestBodyDataRate`, which a modem passes; "0"
        /// turns it off.
        body_min_rate: ByteSize = "240B" => u64,
            flag "body-min-rate":
                "Least bytes per second a request body that streams to its worker must average once \
                 the app has waited body_timeout for it (0: no minimum)";
        /// Longest a client may take no byte of its response (it stopped reading):
        /// its request is then cancelled (the app's next write raises, its worker
        /// place is freed) and the connection closed. The same holds for a
        /// WebSocket whose client stops reading. Longer than 0. "20s" for the
        /// same reasons as `body_timeout`.
        send_timeout: HumanDuration = "20s" => Duration,
            flag "send-timeout":
                "Longest a client may take no byte of its response: then its request is cancelled and \
                 the connection closed",
            check longer_than_0;
        /// On SIGTERM, how long corral keeps serving before its graceful stop
        /// begins: `/health/ready` on the status server answers 503 at once, so a
        /// load balancer or Kubernetes takes the instance out of rotation, while
        /// corral goes on accepting and serving as before; then it drains as it
        /// does without a delay. A second SIGTERM ends the wait at once (INT and
        /// QUIT stop at once, as always). It is what a Kubernetes `preStop: sleep`
        /// does, without a shell in the image. The service manager's stop timeout
        /// (`terminationGracePeriodSeconds`, systemd's `TimeoutStopSec=`) must
        /// cover shutdown_delay + graceful_timeout. "0s": the graceful stop
        /// begins at once, as gunicorn's.
        shutdown_delay: HumanDuration = "0s" => Duration,
            flag "shutdown-delay":
                "On SIGTERM, keep serving this long before the graceful stop, with /health/ready \
                 answering 503 at once (so load balancers and Kubernetes stop sending traffic first); a \
                 second SIGTERM ends the wait";
        /// The most client connections open at once, on all `bind` addresses
        /// together, WebSockets included. At the cap corral stops accepting: new
        /// connections wait in the kernel's listen queue (`backlog`) while the open
        /// ones keep working, and `corral_connections_capped_total` in /metrics
        /// counts the times. Each connection needs a file descriptor: keep it below
        /// corral's open-file limit (systemd's LimitNOFILE=). At least 1.
        max_connections: usize = 10000 => usize,
            flag "max-connections" alias "connection-limit":
                "Most client connections open at once (WebSockets included); at the cap new ones wait \
                 in the listen queue",
            check count_of("client connections open at once");
        /// The most requests waiting in corral for a free worker place (see
        /// `workers.threads` and `workers.concurrency`); a request arriving when
        /// that many already wait gets 503 Service Unavailable with Retry-After at
        /// once (a waiting request still gets 503 after `workers.timeout`). 0 means
        /// no request ever waits (503 whenever every worker is full).
        max_queued: usize = 1024 => usize,
            flag "max-queued":
                "Most requests waiting in corral for a free worker place; one more gets 503 with \
                 Retry-After at once; 0: none waits (503 whenever every worker is full)";
        /// How often corral pings an open WebSocket, so that proxies and load
        /// balancers that close idle connections (nginx's and most cloud load
        /// balancers' 60 s) see traffic, and a client that vanished without a
        /// word is found. "0s" sends no pings. Default "20s", as uvicorn.
        ws_ping_interval: Option<Spanned<HumanDuration>>;
        /// How long a WebSocket client may take to answer a ping with a pong:
        /// after that corral closes the socket with 1011, the app sees
        /// `websocket.disconnect` with 1011, and its worker place is freed.
        /// Longer than 0. Default "20s", as uvicorn.
        ws_ping_timeout: Option<Spanned<HumanDuration>>;
        /// Largest WebSocket message a client may send; a bigger one closes the
        /// socket with 1009 (the app sees 1009 too). From "1B" to "16MiB" (the
        /// most a worker's channel carries in one message). Default "16MiB".
        ws_max_message: Option<Spanned<ByteSize>>;
        /// Shards of corral's own HTTP front: each a thread with an event loop
        /// of its own that accepts connections, serves them, and runs the
        /// channels of its share of the workers, so that most requests never
        /// leave the thread that read them. corral starts no more shards than
        /// workers. 0 means automatic: half the CPUs corral may use, leaving
        /// the other half to the workers, but two from 2 CPUs up (on 2 CPUs
        /// two served 1.04-1.21x the requests/s of one). Default 0.
        io_threads: Option<Spanned<usize>>;
        /// After binding its sockets as root, corral itself switches to `[workers]
        /// user`/`group` (which must be set).
        drop_privileges: bool = false => bool;
        /// The peers whose X-Forwarded-For and X-Forwarded-Proto headers corral
        /// trusts (X-Forwarded-Ssl and X-Forwarded-Protocol too, as gunicorn's
        /// default `secure_scheme_headers`): a reverse proxy in front of it,
        /// like nginx (gunicorn's and uvicorn's `forwarded_allow_ips`). Each
        /// entry is an IP address ("127.0.0.1", "::1"), a network in CIDR form
        /// ("10.0.0.0/8", "fd00::/8") or "*" (any peer). An IPv4 peer on an IPv6 socket
        /// ("::ffff:127.0.0.1") matches the IPv4 entries. [] trusts nobody.
        /// Connections on Unix sockets are always trusted: only local processes
        /// that the socket's file permissions let in can connect, as with a
        /// proxy on a Unix socket. Default: $FORWARDED_ALLOW_IPS when set (a
        /// comma-separated list, as gunicorn and uvicorn read it), else
        /// ["127.0.0.1", "::1"].
        forwarded_allow_ips: Option<Spanned<Vec<Spanned<String>>>>;
        /// The PROXY protocol (HAProxy's; gunicorn's `proxy_protocol`): "off",
        /// "v1" (the text header), "v2" (the binary one) or "auto" (either). A
        /// connection from a `proxy_allow_ips` peer (or on a Unix socket) may
        /// then begin with a PROXY header, which corral reads before TLS and
        /// HTTP: its source address becomes the client's (`REMOTE_ADDR`, the
        /// ASGI scope's `client`, the access log), and the environ gets
        /// gunicorn's `PROXY_PROTOCOL`, `PROXY_ADDR` and `PROXY_PORT`. A
        /// connection without one is served as it is; a header from another
        /// peer gets 403, a malformed one 400 (on a TLS bind the connection
        /// is closed). Default "off".
        proxy_protocol: Option<Spanned<String>>;
        /// The peers whose PROXY headers corral reads (gunicorn's
        /// `proxy_allow_ips`), written like `forwarded_allow_ips` entries; "*"
        /// is any peer. Connections on Unix sockets always may send one.
        /// Default ["127.0.0.1", "::1"].
        proxy_allow_ips: Option<Spanned<Vec<Spanned<String>>>>;
        /// Longest request line (method, target and version, as gunicorn's
        /// `limit_request_line` counts it) in bytes; a longer one gets 414 URI
        /// Too Long. 0 means no limit of its own (`max_header_bytes` bounds the
        /// whole head). Default 0: gunicorn's 4094 refuses long query strings
        /// that corral, bounding the head as a whole, can serve.
        max_request_line: Option<Spanned<usize>>;
        /// Most header fields in a request (gunicorn's `limit_request_fields`);
        /// more get 431 Request Header Fields Too Large. At most 32768; 0 means
        /// 32768. Default 100, as gunicorn.
        max_header_fields: Option<Spanned<usize>>;
        /// Longest header field ("Name: value" and its CRLF) in bytes (gunicorn's
        /// `limit_request_field_size`); a longer one gets 431. 0 means no limit
        /// of its own. Default 0 (`max_header_bytes` bounds the whole head).
        max_header_field_bytes: Option<Spanned<usize>>;
        /// A file corral writes its pid to once its sockets are bound (gunicorn's
        /// `pidfile`), relative to this file's folder; replaced whole (a new
        /// file renamed over it, so a symlink there is replaced, never
        /// followed), mode 0644, and removed when corral exits cleanly while it
        /// still holds corral's pid. Default: none.
        pid_file: Option<Spanned<String>>;
        /// gunicorn's `umask` (`-m/--umask`): the app's Unix sockets
        /// (`unix:` binds) get mode `0777 & ~umask`, as under gunicorn, which
        /// sets it around the bind only: the workers keep their own umask
        /// (`[workers.limits] umask`). Octal digits like "007". Default:
        /// `[workers.limits] umask` when set, else the socket is 0666 under
        /// corral's own umask.
        socket_umask: Option<Spanned<Umask>>;
        /// The most HTTP/2 streams (requests) one connection may have open at once
        /// (SETTINGS_MAX_CONCURRENT_STREAMS); more are refused with RST_STREAM. At
        /// least 1.
        max_concurrent_streams: u32 = 100 => u32,
            flag "max-concurrent-streams" alias "http2-max-concurrent-streams":
                "The most HTTP/2 streams one connection may have open at once",
            check at_least_1;
        /// `[server.headers]`: headers added to every response that does
        /// not set them itself (uvicorn's `--header`), like
        /// `"Strict-Transport-Security" = "max-age=63072000"`; the app's own
        /// header of the same name wins. Not the headers corral frames a
        /// response with (Content-Length, Transfer-Encoding, Connection, ...).
        /// `--header NAME:VALUE` flags are merged over this table. Default:
        /// none.
        headers: BTreeMap<String, Spanned<String>>;
        /// `[server.tls]`: HTTPS (and HTTP/2 by ALPN) on every `bind` address.
        tls: RawTls;
    }
}

/// TLS on every `bind` address (not on `insecure_bind`'s), as gunicorn's
/// `--certfile`/`--keyfile` apply to all of them: set `certfile` (and
/// `keyfile`, unless certfile holds the key too) to turn it on. Paths are
/// relative to this file's folder.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub(super) struct RawTls {
    /// The server's certificate in PEM, followed by its intermediate
    /// certificates. Default: none (no TLS).
    pub(super) certfile: Option<Spanned<String>>,
    /// The certificate's private key in PEM (PKCS#8, RSA or EC),
    /// unencrypted: corral never asks for a passphrase. Default: none: the
    /// key is read from `certfile`, as gunicorn reads it.
    pub(super) keyfile: Option<Spanned<String>>,
    /// CA certificates in PEM that client certificates are checked against
    /// (needed by `cert_reqs` "optional" and "required"). Default: none.
    pub(super) ca_certs: Option<Spanned<String>>,
    /// Client certificates: "none" (not asked for), "optional" (checked
    /// when sent) or "required" (a client without a valid one is refused
    /// during the handshake); gunicorn's 0, 1, 2 also work. The subject of
    /// a client certificate reaches the app (`SSL_CLIENT_S_DN`, ASGI
    /// `scope["extensions"]["tls"]`). Default "none".
    pub(super) cert_reqs: Option<Spanned<String>>,
    /// Oldest TLS version offered: "1.2" or "1.3". Default "1.2".
    pub(super) min_version: Option<Spanned<String>>,
    /// `[server.tls.bind."ADDR"]`: another certificate set for the `bind`
    /// address ADDR (written as in `bind`), e.g. an internal port that
    /// requires client certificates where the public one does not. Each
    /// table holds any of `certfile`, `keyfile`, `ca_certs`, `cert_reqs`
    /// and `min_version`; what it leaves out is taken from `[server.tls]`
    /// (and its flags). Needs `[server.tls]` on. Default: none.
    pub(super) bind: BTreeMap<Spanned<String>, RawTlsBind>,
}

/// One `[server.tls.bind."ADDR"]` table: the `[server.tls]` keys that
/// differ on that address.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawTlsBind {
    /// As `[server.tls] certfile`, for this address. Default: [server.tls]'s.
    pub(super) certfile: Option<Spanned<String>>,
    /// As `[server.tls] keyfile`. Default: [server.tls]'s.
    pub(super) keyfile: Option<Spanned<String>>,
    /// As `[server.tls] ca_certs`. Default: [server.tls]'s.
    pub(super) ca_certs: Option<Spanned<String>>,
    /// As `[server.tls] cert_reqs`. Default: [server.tls]'s.
    pub(super) cert_reqs: Option<Spanned<String>>,
    /// As `[server.tls] min_version`. Default: [server.tls]'s.
    pub(super) min_version: Option<Spanned<String>>,
}

section! {
    /// `[workers]`: the Python worker processes.
    RawWorkers, WorkersKeys, WorkersFlags, resolve_workers_keys, WORKERS_KEYS, "workers" {
        /// Number of worker processes, or "auto": one per CPU this process may
        /// use (its affinity mask and cgroup CPU quota, the smallest, rounded
        /// up). Default: $WEB_CONCURRENCY when set (as gunicorn and uvicorn
        /// read it on Heroku, Render, Fly), else 1.
        count: Option<Spanned<WorkerCount>>;
        /// Threads per WSGI worker (concurrent requests each).
        threads: usize = 1 => usize,
            flag "threads" alias "blocking-threads": "Threads per WSGI worker",
            check count_of("threads per worker");
        /// Carry requests and responses between corral and each WSGI worker
        /// through two rings in memory they share, waking the other side only
        /// when it sleeps, instead of through the worker's socket: fewer system
        /// calls and copies per request. The worker checks nothing differently
        /// and can only spoil its own rings. x86-64 only (elsewhere, and for
        /// ASGI workers, the socket carries everything); false: the socket
        /// always.
        shared_memory: bool = true => bool;
        /// Run a WSGI worker's requests in gevent's greenlets, as gunicorn's `-k
        /// gevent` does: gevent's monkey-patching is done before the app is
        /// imported, each request runs in its own greenlet, and a worker holds up
        /// to `concurrency` requests at once (`threads` is not used). The app's
        /// environment must have gevent installed. WSGI only.
        gevent: bool = false => bool;
        /// The most requests (open WebSockets and streaming responses included) one
        /// ASGI worker (or gevent worker) holds at once; beyond it requests wait in
        /// corral's queue (`server.max_queued`). WSGI workers take `threads`
        /// requests at a time (plus a short prefetch). At least 1.
        concurrency: usize = 1000 => usize,
            flag "concurrency" alias "worker-connections" alias "limit-concurrency" alias "backpressure":
                "Most requests (open WebSockets and streaming responses included) one ASGI \
                 (or gevent) worker holds at once; the rest wait in corral. WSGI workers take \
                 --threads at a time",
            check count_of("requests one ASGI worker holds at once");
        /// Longest a request may wait for its response head; after that the client
        /// gets 504 and a one-thread WSGI worker is replaced (with `threads`, the
        /// request's thread runs on and the others serve until every thread is
        /// held so; an ASGI request's task is cancelled). It also raises
        /// `boot_timeout` and `heartbeat_timeout` when longer. 0 means no limit, as gunicorn's
        /// `--timeout 0` (Cloud Run's quickstart uses it): a request takes as
        /// long as the app takes, and a worker stuck in one is never replaced
        /// for it (its heartbeat still is checked).
        timeout: HumanDuration = "30s" => Duration,
            flag "timeout" short 't':
                "Longest wait for a response head before 504 (and a one-thread worker's restart); 0: no limit";
        /// How long a stopping worker may finish its requests before it is
        /// killed. Default "30s".
        graceful_timeout: Option<Spanned<HumanDuration>>;
        /// How long a new worker may take to start Python and import the app
        /// (and run an ASGI app's lifespan startup); after that it counts as
        /// failed to boot and is killed. Longer than 0. When it is not set and
        /// `timeout` is longer, it is `timeout`, as gunicorn's timeout bounds a
        /// worker's start too (`--timeout 120` for an app that loads a model).
        boot_timeout: HumanDuration = "30s" => Duration,
            flag "boot-timeout":
                "Longest a new worker may take to import the app before it counts as failed to boot",
            check longer_than_0;
        /// Wait before restarting a worker that failed to boot or died soon
        /// after starting; it doubles with each consecutive failure of the same
        /// worker slot, up to `restart_backoff_max`. Longer than 0. Default
        /// "100ms".
        restart_backoff: Option<Spanned<HumanDuration>>;
        /// Longest wait between restarts of a failing worker slot. At least
        /// `restart_backoff`. Default "30s".
        restart_backoff_max: Option<Spanned<HumanDuration>>;
        /// How long a worker's Python interpreter may go without sending a
        /// heartbeat (a C call holding the GIL, an ASGI event loop blocked by a
        /// call that does not await, a deadlock) before corral dumps its stacks
        /// to the log and replaces it. Longer than 0. When it is not set and
        /// `timeout` is longer, it is `timeout`: gunicorn's timeout is how long
        /// a worker may go silent.
        heartbeat_timeout: HumanDuration = "30s" => Duration,
            flag "heartbeat-timeout":
                "Longest a worker may go without a heartbeat (a call holding the GIL, a blocked event loop) before it is replaced",
            check longer_than_0;
        /// Requests a worker serves before it is recycled (gracefully replaced),
        /// as in gunicorn; guards against leaks. 0 means never. Default 0.
        max_requests: Option<Spanned<u64>>;
        /// Up to this many more requests, chosen at random per worker, are added
        /// to `max_requests` so that the workers are not all recycled at once
        /// (as in gunicorn). Ignored while `max_requests` is 0. Default 0.
        max_requests_jitter: Option<Spanned<u64>>;
        /// A worker whose memory use (RSS) grows above this size is recycled
        /// gracefully, e.g. "512MiB". A plain number is bytes. At least "16MiB".
        /// Default: none (no limit).
        max_memory: Option<Spanned<ByteSize>>;
        /// How long a worker serves before it is recycled (gracefully replaced,
        /// its replacement in service first), e.g. "6h": granian's
        /// `--workers-lifetime`, for a leak that grows with time rather than
        /// requests. Each worker gets up to a tenth more at random, so that
        /// workers started together are not all recycled together. "0s" means
        /// never.
        max_lifetime: HumanDuration = "0s" => Duration,
            flag "max-lifetime" alias "workers-lifetime":
                "Recycle a worker after it has served this long, like 6h (granian's --workers-lifetime); 0 never";
        /// The user the workers run as: a user name like "www-data" or a numeric
        /// uid, as gunicorn's `--user`; they get the user's supplementary groups
        /// too. corral itself keeps its own user (root, so that it can bind
        /// ports below 1024), which must be root to switch to another user. The
        /// user must exist when corral starts. Default: none (the workers run as
        /// corral's own user).
        user: Option<Spanned<String>>;
        /// The group the workers run as: a group name like "www-data" or a
        /// numeric gid, as gunicorn's `--group`. The group must exist when
        /// corral starts. Default: the primary group of `user`; with `group`
        /// but no `user`, the workers keep corral's own user, with this group as
        /// their only group.
        group: Option<Spanned<String>>;
        /// `[workers.limits]`: resource limits and umask of the workers.
        limits: RawLimits;
    }
}

/// Each limit is set as both the soft and the hard limit of every worker;
/// a key left out keeps corral's own limit (or umask).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawLimits {
    /// Most files a worker may have open at once (RLIMIT_NOFILE), sockets
    /// included, e.g. 65536. At least 64, and at most the kernel's
    /// fs.nr_open (1048576 by default). Default: corral's own limit.
    pub(super) nofile: Option<Spanned<u64>>,
    /// Largest virtual memory (address space) a worker may map (RLIMIT_AS),
    /// e.g. "2GiB"; beyond it allocations fail (Python raises MemoryError).
    /// Each thread's stack counts too. A plain number is bytes. At least
    /// "16MiB". Default: corral's own limit.
    pub(super) address_space: Option<Spanned<ByteSize>>,
    /// Largest core dump a crashing worker may write (RLIMIT_CORE), e.g.
    /// "1GiB"; 0 disables core dumps. A plain number is bytes. Default:
    /// corral's own limit.
    pub(super) core: Option<Spanned<ByteSize>>,
    /// The umask of the workers, as a string of octal digits like "027"
    /// (files the app creates get no write access for the group and no
    /// access for others); at most "777". Default: corral's own umask.
    /// (gunicorn's `-m/--umask` is `[server] socket_umask`: gunicorn leaves
    /// its workers' umask alone.)
    pub(super) umask: Option<Spanned<Umask>>,
}

section! {
    /// `[health]`: the status server, when the instance counts as ready and the readiness probe of the workers.
    RawHealth, HealthKeys, HealthFlags, resolve_health_keys, HEALTH_KEYS, "health" {
        /// Address of the status server (/health/live, /health/ready, /status,
        /// /metrics), written like a `server.bind` entry: "127.0.0.1:9000",
        /// "[::1]:9000" or "unix:/path" (relative to this file's folder). It
        /// must differ from every `server.bind` address. /status shows boot
        /// tracebacks: on an address other hosts can reach, set a
        /// `status_token` (corral warns at start-up otherwise). Default: none
        /// (no status server).
        status_bind: Option<Spanned<String>>;
        /// A bearer token that /status and /metrics require (`Authorization:
        /// Bearer TOKEN`; without it they answer 401); /health/live and
        /// /health/ready stay open for probes. At least 16 characters of visible
        /// ASCII, like the output of `openssl rand -hex 32`. Rather than writing
        /// it here, put it in a file (`status_token_file`) or in the environment
        /// variable CORRAL_STATUS_TOKEN, which wins over both keys. Default:
        /// none (open to whoever reaches `status_bind`).
        status_token: Option<Spanned<String>>;
        /// A file holding the `status_token` (surrounding white space, like the
        /// final newline, is ignored), relative to this file's folder; read
        /// once at start-up. Not with `status_token`. Default: none.
        status_token_file: Option<Spanned<String>>;
        /// How many workers must be in service for /health/ready to answer 200:
        /// a count like 2 (at most `workers.count`) or a percentage of
        /// `workers.count` like "50%" (rounded up). Default 1.
        min_ready: Option<Spanned<MinReady>>;
        /// The readiness probe: a path like "/health/ready" (a "?query" may
        /// follow) that corral requests (GET) from each worker through its
        /// private channel before the worker enters service, then every
        /// `probe_interval`; a 2xx answer means ready. A new worker whose probe
        /// has not passed within `workers.boot_timeout` counts as failed to
        /// boot. It must start with "/". Default: none (no readiness probe; a
        /// worker is in service once it has imported the app).
        ready_path: Option<Spanned<String>>;
        /// Time between two readiness probes of a worker. Longer than 0.
        probe_interval: HumanDuration = "10s" => Duration,
            check longer_than_0;
        /// How long one readiness probe may take before it counts as failed. Longer
        /// than 0.
        probe_timeout: HumanDuration = "5s" => Duration,
            check longer_than_0;
        /// Failed readiness probes in a row that take a worker out of service (it
        /// gets no new requests until a probe succeeds again). At least 1.
        unhealthy_after: u32 = 3 => u32,
            check count_of("failed probes in a row");
        /// The panic threshold, as in Envoy: when fewer workers than this are in
        /// service, corral sends requests to every live worker rather than to
        /// none. Written like `min_ready`: a count like 2 (at most
        /// `workers.count`) or a percentage of `workers.count` like "50%"
        /// (rounded up). Default "50%".
        min_in_service: Option<Spanned<MinReady>>;
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawControl {
    /// Path of the control socket of the running corral (a Unix socket;
    /// its file permissions are the access control), relative to this
    /// file's folder. `corral reload`, `corral scale` and `corral stop`
    /// read it from the same file. Its folder, and every folder above, must
    /// be private: not a symlink, corral's user's or root's, and not
    /// writable by group or others (a sticky /tmp is fine); corral creates
    /// a missing one with mode 0700. Default
    /// `$RUNTIME_DIRECTORY/corral.sock` when RUNTIME_DIRECTORY is set
    /// (systemd's RuntimeDirectory=, one unit's own), else one folder per
    /// instance: `$XDG_RUNTIME_DIR/corral/NAME/corral.sock` when
    /// XDG_RUNTIME_DIR is set, else "/run/corral/NAME/corral.sock" as root,
    /// else "/tmp/corral-UID/NAME/corral.sock", where NAME names this
    /// instance after this file's path (or, without a file, its folder, app
    /// and first bind address), like "shop-5c1e0a3f".
    pub(super) socket: Option<Spanned<String>>,
}

section! {
    /// `[deploy]`: reloads (a new generation of workers taking over).
    RawDeploy, DeployKeys, DeployFlags, resolve_deploy_keys, DEPLOY_KEYS, "deploy" {
        /// How long a new generation of workers started by a reload may take to be
        /// all in service; after that the reload counts as failed, the new
        /// generation is stopped and the old one keeps serving. Longer than 0.
        ready_timeout: HumanDuration = "60s" => Duration,
            check longer_than_0;
        /// How corral names the code a generation runs (its revision; the last
        /// one that came up is remembered as the last known good one): "git" (the
        /// commit checked out in the app folder `app.chdir`, from `git
        /// rev-parse HEAD`), "symlink" (where the app folder points when it is
        /// a symlink like `current -> releases/X`), "none", or a command as an
        /// array of strings, like ["cat", "REVISION"], whose first line of
        /// output is the revision (it runs in the app folder; a relative program path with a
        /// "/" is relative to this file's folder, a bare name is looked up in
        /// PATH). Default "auto": "symlink" when the app folder is a symlink,
        /// else "git".
        revision: Option<Spanned<StringOrArray>>;
        /// Folder where corral remembers what must outlive it, like the last
        /// known good revision, relative to this file's folder; created when
        /// needed (mode 0700; its files are 0600, replaced whole). It must not
        /// be writable by group or others. Default `$STATE_DIRECTORY` when
        /// STATE_DIRECTORY is set (systemd's StateDirectory=, one unit's own),
        /// else one folder per instance (NAME as for `control.socket`):
        /// "/var/lib/corral/NAME" as root, else `$XDG_STATE_HOME/corral/NAME`
        /// when XDG_STATE_HOME is set, else `$HOME/.local/state/corral/NAME`
        /// when HOME is a folder of corral's user's own, else
        /// "/tmp/corral-UID-state/NAME" (a container's user with
        /// HOME=/nonexistent or HOME=/). One app's own: corral refuses to
        /// start when another running corral keeps its state here.
        state_dir: Option<Spanned<String>>;
        /// A command, as an array of strings (the program, then its arguments),
        /// that corral runs when a reload (or the first start) fails to come
        /// up, e.g. to put the previous release back and reload again. A
        /// relative program path with a "/" is relative to this file's folder;
        /// a bare name is looked up in PATH. Its environment describes the
        /// failure: CORRAL_FAILED_REVISION, CORRAL_GOOD_REVISION (the last
        /// known good revision), CORRAL_REASON, CORRAL_ERROR_FILE and
        /// CORRAL_APP_DIR. Default: none (no hook).
        rollback_hook: Option<Spanned<StringOrArray>>;
        /// How long a hook (`rollback_hook` and the `[hooks]`) may run before it is
        /// killed. Longer than 0.
        hook_timeout: HumanDuration = "60s" => Duration,
            check longer_than_0;
        /// A built-in rollback, run when a reload (or the first start) fails to
        /// come up; no script needed. With `rollback_hook` too, the hook runs
        /// first, then the built-in rollback. "none"; "git-reset": reset the
        /// git checkout in the app folder `app.chdir` to the last known good
        /// commit (the one that last came up, not HEAD~1), like `git reset
        /// --hard`, so uncommitted changes there are lost; it needs `revision`
        /// "git", or "auto" with an app folder that is not a symlink;
        /// "symlink": point the `current` symlink, that is `app.chdir` itself
        /// (like `current -> releases/X`), back at the release that last came
        /// up; it needs `app.chdir`. Default "none".
        rollback: Option<Spanned<String>>;
        /// When corral starts and every worker fails to boot (none has come up
        /// yet), exit with code 3 instead of restarting them with backoff, for
        /// setups that let the service manager decide (systemd: `Restart=`,
        /// `RestartPreventExitStatus=`). Only the first start: a reload that fails
        /// leaves the old generation serving.
        exit_on_boot_failure: bool = false => bool;
        /// How a reload replaces the workers: "all-at-once" (the whole new
        /// generation boots beside the old one and takes over when all of it is
        /// in service) or "rolling" (a few at a time, at most `max_surge` more
        /// workers than `workers.count` at any time). Default "all-at-once".
        strategy: Option<Spanned<String>>;
        /// With `strategy` "rolling", the most workers a reload may run beyond
        /// `workers.count` at any time. At least 1. Ignored with "all-at-once"
        /// (it may stay set). Default 1.
        max_surge: Option<Spanned<usize>>;
        /// Canary reloads: the percentage of requests (1 to 50) the new
        /// generation's first workers get for `canary_duration` while the old
        /// generation serves the rest; it takes over only when it is no worse
        /// (see `canary_min_requests`, `canary_confidence`,
        /// `canary_latency_ratio`); otherwise the reload fails and the old
        /// generation stays. 0: no canary. Default 0.
        canary_share: Option<Spanned<u32>>;
        /// How long a canary runs before the new generation may take over
        /// (extended once by as much when it has had too few requests). Longer
        /// than 0. Default "60s".
        canary_duration: Option<Spanned<HumanDuration>>;
        /// Requests the new generation must answer during a canary before any
        /// verdict; with fewer after twice `canary_duration` the reload fails
        /// (never promoted on no evidence). At least 1. Default 100.
        canary_min_requests: Option<Spanned<u64>>;
        /// How sure corral must be that the new generation answers 5xx more
        /// often than the old one before it fails the canary (Fisher's exact
        /// test, one-sided: it fails when the p-value is below 1 minus this).
        /// Between 0.5 and 1, exclusive. Default 0.999.
        canary_confidence: Option<Spanned<f64>>;
        /// The canary fails when the new generation's p99 latency is more than
        /// this many times the old one's (and `canary_latency_floor` above
        /// it). At least 1. Default 2.0.
        canary_latency_ratio: Option<Spanned<f64>>;
        /// How much slower (p99) the new generation must be, beyond
        /// `canary_latency_ratio`, to fail the canary: small differences of
        /// fast endpoints are noise. Default "50ms".
        canary_latency_floor: Option<Spanned<HumanDuration>>;
        /// Which generation a canary's requests go to: "none" (each request on
        /// its own), "client-address" (the client's address decides, so a
        /// client stays on one generation), "header:NAME" or "cookie:NAME" (that
        /// header's or cookie's value decides; requests without it go on their
        /// own). Default "none".
        canary_sticky: Option<Spanned<String>>;
    }
}

/// The `[hooks]` section. Each hook is a command as an array of strings
/// (the program, then its arguments; no shell), run off corral's own loop,
/// killed after `deploy.hook_timeout`, its output logged line by line. A
/// relative program path with a "/" is relative to this file's folder; a
/// bare name is looked up in PATH. It inherits corral's environment plus
/// the variables named below and runs in the app folder.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHooks {
    /// Run after a worker process exited, whatever the cause (a crash, a
    /// recycle, a reload, a stop), with CORRAL_WORKER_PID, CORRAL_SLOT,
    /// CORRAL_GENERATION and either CORRAL_EXIT_CODE or CORRAL_EXIT_SIGNAL
    /// (the signal's number). gunicorn's `worker_exit` and `child_exit`;
    /// prometheus_client's `mark_process_dead` belongs here. Default: none.
    pub(super) on_worker_exit: Option<Spanned<StringOrArray>>,
    /// Run when a generation is in service (every slot's worker is), once
    /// per generation: at start-up and after each reload, with
    /// CORRAL_GENERATION and CORRAL_REVISION. gunicorn's `when_ready`.
    /// Default: none.
    pub(super) on_ready: Option<Spanned<StringOrArray>>,
    /// Run when a reload fails to come up (the old generation keeps
    /// serving), beside `deploy.rollback_hook`, with CORRAL_GENERATION (the
    /// failed one), CORRAL_REVISION (its revision) and CORRAL_REASON.
    /// Default: none.
    pub(super) on_reload_failed: Option<Spanned<StringOrArray>>,
}

/// The `[dev]` section: for development, never production.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDev {
    /// Watch the app folder (`app.chdir`, else the current folder) and
    /// `app.pythonpath` and start a new generation when a watched file
    /// changes. A broken save keeps the last good code serving and logs the
    /// error once; the next save tries again. With it on, one worker runs
    /// unless `--workers` is given, and `workers.graceful_timeout` defaults
    /// to "1s". Default false.
    pub(super) reload: Option<Spanned<bool>>,
    /// Globs of the files whose changes count, matched against a file's
    /// path below the watched folder ("*.py" matches at any depth;
    /// "templates/**" a folder). Default ["*.py"].
    pub(super) reload_include: Option<Spanned<Vec<Spanned<String>>>>,
    /// Globs of the files and folders whose changes never count, matched
    /// against the path below the watched folder and against each of its
    /// folder names; a folder holding a `pyvenv.cfg` (a virtualenv) never
    /// counts either. Default [".git", "__pycache__", ".venv", "venv",
    /// "node_modules", ".tox", ".mypy_cache", ".pytest_cache"].
    pub(super) reload_exclude: Option<Spanned<Vec<Spanned<String>>>>,
    /// The folders to watch instead of the app folder and `app.pythonpath`
    /// (uvicorn's --reload-dir, granian's --reload-paths); relative to this
    /// file's folder. Default: none.
    pub(super) reload_dirs: Option<Spanned<Vec<Spanned<String>>>>,
    /// Files whose changes count too, wherever they are and whatever the
    /// globs say (gunicorn's reload_extra_files); relative to this file's
    /// folder. Default: none.
    pub(super) reload_extra_files: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A value written as a string or as an array of strings
/// (`deploy.revision`, `deploy.rollback_hook`); validation says which forms
/// each key takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StringOrArray {
    String(String),
    Array(Vec<String>),
}

impl<'de> Deserialize<'de> for StringOrArray {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringOrArray;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringOrArray, E> {
                Ok(StringOrArray::String(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringOrArray, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(StringOrArray::Array(items))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// The file into the raw structs; the first syntax or type error.
pub(super) fn parse(file: &ConfigFile) -> Result<RawConfig, Problem> {
    let de = toml::Deserializer::parse(&file.text).map_err(|e| {
        let mut message = format!("invalid TOML: {}", e.message());
        if let Some(line) = e.span().and_then(|s| file.line_text(s.start)) {
            message.push_str(&format!(" (in `{line}`)"));
        }
        Problem {
            location: e.span().map(|s| file.location(s.start)),
            key: None,
            message,
        }
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = key_path(e.path());
        let span = e.inner().span();
        let line = span.clone().and_then(|s| file.line_text(s.start));
        Problem {
            location: span.map(|s| file.location(s.start)),
            message: explain(e.inner().message(), &key, line),
            key: Some(key).filter(|k| !k.is_empty()),
        }
    })
}

/// serde's `message` about `key` (written on the file's `line`) in the
/// file's words rather than Rust's ("a whole number", not "usize"), with
/// the fix: the example's value for a wrong type, the section a misplaced
/// key belongs in.
fn explain(message: &str, key: &str, line: Option<&str>) -> String {
    let mut message = message
        .replacen("unknown field", "unknown key", 1)
        .replace("invalid type: sequence", "invalid type: array")
        .replace("invalid type: map", "invalid type: table")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table");
    for (rust, words) in [
        ("usize", "a whole number of 0 or more"),
        ("u64", "a whole number of 0 or more"),
        ("u32", "a whole number of 0 or more"),
        ("u16", "a whole number of 0 or more"),
        ("u8", "a whole number of 0 or more"),
        ("i64", "a whole number"),
        ("i32", "a whole number"),
        ("isize", "a whole number"),
    ] {
        if let Some(start) = message.strip_suffix(&format!("expected {rust}")) {
            message = format!("{start}expected {words}");
        }
    }
    let (section, name) = match key.rsplit_once('.') {
        Some((section, name)) => (section, name),
        None => ("", key),
    };
    // A section's name given a value: `workers = 4` at the top.
    if message.contains(", expected struct Raw") {
        let example = match (key, line.and_then(|l| l.split_once('='))) {
            ("workers", Some((_, n))) if n.trim().parse::<u64>().is_ok() => {
                format!("`[workers]`, then `count = {}`", n.trim())
            }
            _ => format!("`[{key}]`, then its keys as config/example.toml shows them"),
        };
        return format!(
            "is a section, not a value: write its keys below a `[{key}]` line, like {example}"
        );
    }
    if message.starts_with("unknown key") {
        // A key of another section: the top level's `bind`, `[server]`'s
        // `threads`; else a typo of one of this section's.
        let elsewhere: Vec<String> = sections_with(name)
            .into_iter()
            .filter(|s| s != section)
            .collect();
        let Some(home) = elsewhere.first() else {
            let keys = keys_of(section).unwrap_or_default();
            if let Some(meant) = super::closest(name, keys.iter().map(String::as_str)) {
                message.push_str(&format!("; did you mean `{meant}`?"));
            }
            return message;
        };
        let written = line.unwrap_or(name);
        if section.is_empty() {
            return format!(
                "`{name}` is not a key outside any section: it belongs in [{home}]; move it below a `[{home}]` line: `[{home}]` then `{written}`"
            );
        }
        message.push_str(&format!(
            "; `{name}` is a key of [{home}]: if it is meant, move it below a `[{home}]` line"
        ));
        return message;
    }
    if message.starts_with("invalid type") || message.starts_with("invalid value") {
        if let Some(example) = example_for(key) {
            message.push_str(&format!("; for example: {example}"));
        } else if message.ends_with("expected a table") {
            // `env = ["A=1"]`: the example made of its first pair.
            let pair = line
                .and_then(|l| l.split('"').nth(1))
                .and_then(|item| item.split_once('='))
                .filter(|(k, _)| !k.is_empty() && !k.contains(' '));
            let example = match pair {
                Some((k, v)) => format!("`{k} = \"{v}\"`"),
                // A table of fixed keys, like [workers.limits].
                None if keys_of(key).is_some() => {
                    "its keys, as config/example.toml shows them".to_owned()
                }
                None => "`NAME = \"value\"`".to_owned(),
            };
            message.push_str(&format!(
                "; write it as a section of its own, one key a line: `[{key}]` then {example}"
            ));
        } else if message.ends_with("expected a string") {
            message.push_str("; put the value in quotes");
        }
    }
    message
}

/// The keys of `[section]` (the top level for ""), from the message serde
/// gives for an unknown one; `None` when `section` is not a table of fixed
/// keys (like `[app.env]`).
pub(super) fn keys_of(section: &str) -> Option<Vec<String>> {
    let probe = if section.is_empty() {
        "__probe__ = 1\n".to_owned()
    } else {
        format!("[{section}]\n__probe__ = 1\n")
    };
    let message = toml::from_str::<RawConfig>(&probe).err()?.to_string();
    let (_, expected) = message.split_once("unknown field `__probe__`, expected ")?;
    let expected = expected.lines().next()?;
    let keys = expected
        .trim_start_matches("one of ")
        .split(", ")
        .map(|k| k.trim_matches('`').to_owned())
        .collect();
    Some(keys)
}

/// The sections (and their tables, like "server.tls") that have a key
/// named `key`, in the order the file format lists them.
pub(super) fn sections_with(key: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo: Vec<String> = keys_of("").unwrap_or_default();
    todo.reverse();
    while let Some(section) = todo.pop() {
        let Some(keys) = keys_of(&section) else {
            continue;
        };
        if keys.iter().any(|k| k == key) && keys_of(&format!("{section}.{key}")).is_none() {
            found.push(section.clone());
        }
        todo.extend(keys.iter().rev().map(|k| format!("{section}.{k}")));
    }
    found
}

/// "server.bind[1]" from serde_path_to_error's path, without the segments
/// that `toml::Spanned` adds.
fn key_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Map { key } if key.starts_with("$__serde_spanned") => {}
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Unknown => {}
        }
    }
    out
}

/// `key = value` for a key path, taken from the example config.
fn example_for(key: &str) -> Option<String> {
    let example: toml::Table = toml::from_str(EXAMPLE).ok()?;
    let (section, rest) = key.split_once('.')?;
    let name = rest.split(['.', '[']).next()?;
    let value = example.get(section)?.get(name)?;
    (!value.is_table()).then(|| format!("{name} = {value}"))
}

#[cfg(test)]
mod tests;
