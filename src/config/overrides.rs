//! The command-line flags of `corral run` and `corral check`, as overrides
//! of the config file: each flag of a key of another shape (lists, tables,
//! gunicorn's spellings; with its `CORRAL_<FLAG>` variable, its `--help`
//! text and the `[toml: ...]` key it stands for) is defined here, and merged
//! over the file in `validate`; the flags of the plain keys are defined with
//! their keys in `raw.rs` and flattened in (`server_flags`, ...). The command
//! line ([`crate::cli`]) flattens [`Overrides`] into `run` and `check`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{
    AsgiLifespan, AsgiLoop, BindAddr, ByteSize, HumanDuration, Interface, MinReady, ServerFlags,
    WorkerCount,
};
use super::{DeployFlags, HealthFlags, WorkersFlags};
use crate::access_log::AccessLog;

/// Flags of `corral run`. Everything is optional so that the config file
/// (and then the defaults) fill what is not given.
#[derive(Debug, Clone, Default, Args)]
pub struct Overrides {
    /// The app to serve, as "module:callable", e.g. "main:app"; the callable defaults to
    /// "application" [toml: app.module]
    #[arg(value_name = "APP", env = "CORRAL_APP")]
    pub app: Option<String>,

    /// Config file to read [default: ./corral.toml when it exists]
    #[arg(short = 'c', long, value_name = "FILE", env = "CORRAL_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on: HOST:PORT, [::1]:PORT or unix:/path (gunicorn's
    /// :PORT, HOST alone for port 8000, tcp:// and unix:// too); repeat for
    /// more, or separate with commas [toml: server.bind] [default: 0.0.0.0:$PORT
    /// when PORT is set, else 127.0.0.1:8000]
    #[arg(
        short = 'b',
        long,
        value_name = "ADDR",
        env = "CORRAL_BIND",
        value_delimiter = ',',
        value_parser = BindAddr::gunicorn
    )]
    pub bind: Vec<BindAddr>,

    /// uvicorn's --host: --bind HOST:PORT with --port's port (8000 without it)
    /// [toml: server.bind]
    #[arg(long, value_name = "HOST", env = "CORRAL_HOST")]
    pub host: Option<String>,

    /// uvicorn's --port: --bind HOST:PORT with --host's host (127.0.0.1
    /// without it) [toml: server.bind]
    #[arg(long, value_name = "PORT", env = "CORRAL_PORT", value_parser = super::units::parse_port)]
    pub port: Option<u16>,

    /// waitress's --listen: --bind HOST:PORT, where *:PORT is every IPv4
    /// and IPv6 address (0.0.0.0:PORT and [::]:PORT); repeat for more
    /// [toml: server.bind]
    #[arg(long, value_name = "HOST:PORT", env = "CORRAL_LISTEN")]
    pub listen: Vec<String>,

    /// uvicorn's --uds (waitress's --unix-socket): --bind unix:PATH
    /// [toml: server.bind]
    #[arg(long, alias = "unix-socket", value_name = "PATH", env = "CORRAL_UDS")]
    pub uds: Option<PathBuf>,

    /// Address served as plain HTTP even with --certfile (hypercorn's
    /// --insecure-bind): HOST:PORT, [::1]:PORT or unix:/path, not one of the
    /// --bind addresses; repeat for more, or separate with commas [toml:
    /// server.insecure_bind] [default: none]
    #[arg(
        long,
        value_name = "ADDR",
        env = "CORRAL_INSECURE_BIND",
        value_delimiter = ',',
        value_parser = BindAddr::gunicorn
    )]
    pub insecure_bind: Vec<BindAddr>,

    /// Number of worker processes, or "auto": one per CPU this process may use
    /// (affinity mask, cgroup quota) [toml: workers.count] [default:
    /// $WEB_CONCURRENCY when set, else 1]
    #[arg(short = 'w', long, value_name = "N|auto", env = "CORRAL_WORKERS")]
    pub workers: Option<WorkerCount>,

    /// The APP attribute is an app factory: call it with no arguments and serve
    /// what it returns, as uvicorn's and granian's --factory ("main:create_app('prod')"
    /// calls it with those literal arguments without this flag) [toml: app.factory]
    #[arg(
        long,
        alias = "call",
        env = "CORRAL_FACTORY",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub factory: bool,

    /// Path prefix the app is mounted under behind a proxy, like /api: SCRIPT_NAME
    /// for WSGI, root_path for ASGI [toml: app.root_path] [default: $SCRIPT_NAME,
    /// else none]
    #[arg(
        long,
        alias = "url-path-prefix",
        alias = "url-prefix",
        value_name = "PATH",
        env = "CORRAL_ROOT_PATH"
    )]
    pub root_path: Option<String>,

    /// The name in the workers' command lines, as `ps` shows them
    /// (gunicorn's --name) [toml: app.proc_name] [default: the instance's name]
    #[arg(
        short = 'n',
        long = "name",
        alias = "process-name",
        value_name = "NAME",
        env = "CORRAL_NAME"
    )]
    pub proc_name: Option<String>,

    /// A dotenv file each worker loads with python-dotenv before it imports the
    /// app (uvicorn's --env-file, granian's --env-files) [toml: app.env_file]
    #[arg(
        long,
        alias = "env-files",
        value_name = "FILE",
        env = "CORRAL_ENV_FILE"
    )]
    pub env_file: Option<PathBuf>,

    /// Serve the app of this PasteDeploy ini file instead of APP, FILE#NAME for its
    /// [app:NAME] (gunicorn's --paste, Pyramid's production.ini) [toml: app.paste]
    #[arg(
        long,
        alias = "paster",
        value_name = "FILE[#NAME]",
        env = "CORRAL_PASTE",
        conflicts_with = "app"
    )]
    pub paste: Option<String>,

    /// A default for the Paste app's global_conf, read as %(KEY)s in its ini;
    /// repeat for more (gunicorn's --paste-global; CORRAL_PASTE_GLOBAL holds one)
    /// [toml: app.paste_global]
    #[arg(
        long = "paste-global",
        value_name = "KEY=VALUE",
        value_parser = parse_paste_global,
        env = "CORRAL_PASTE_GLOBAL"
    )]
    pub paste_global: Vec<(String, String)>,

    /// Python logging config applied in each worker before the app is imported,
    /// an ini file for logging.config.fileConfig (gunicorn's --log-config), or a
    /// .json/.yaml file for dictConfig (uvicorn's) [toml: app.logconfig]
    #[arg(long = "log-config", value_name = "FILE", env = "CORRAL_LOG_CONFIG")]
    pub logconfig: Option<PathBuf>,

    /// As --log-config, a JSON file for logging.config.dictConfig (gunicorn's
    /// --log-config-json) [toml: app.logconfig_json]
    #[arg(
        long = "log-config-json",
        value_name = "FILE",
        env = "CORRAL_LOG_CONFIG_JSON",
        conflicts_with = "logconfig"
    )]
    pub logconfig_json: Option<PathBuf>,

    /// Event loop of an ASGI app: uvloop when installed, else asyncio's (auto), or
    /// the one named (gunicorn's --asgi-loop, uvicorn's --loop) [toml: app.asgi_loop]
    /// [default: auto]
    #[arg(
        long = "asgi-loop",
        alias = "loop",
        value_enum,
        value_name = "LOOP",
        env = "CORRAL_ASGI_LOOP"
    )]
    pub asgi_loop: Option<AsgiLoop>,

    /// An ASGI app's lifespan: when the app supports it (auto), always (on: one that
    /// does not fails its boot) or never (gunicorn's --asgi-lifespan, uvicorn's
    /// --lifespan) [toml: app.asgi_lifespan] [default: auto]
    #[arg(
        long = "asgi-lifespan",
        alias = "lifespan",
        value_enum,
        value_name = "LIFESPAN",
        env = "CORRAL_ASGI_LIFESPAN"
    )]
    pub asgi_lifespan: Option<AsgiLifespan>,

    /// Protocol of the app [toml: app.interface] [default: auto]
    #[arg(long, value_enum, value_name = "INTERFACE", env = "CORRAL_INTERFACE")]
    pub interface: Option<Interface>,

    /// Python interpreter for the workers [toml: app.python]
    /// [default: the python of the virtualenv (or conda environment) corral
    /// is installed in, else
    /// $VIRTUAL_ENV/bin/python, else python3 on PATH]
    #[arg(long, value_name = "PATH", env = "CORRAL_PYTHON")]
    pub python: Option<PathBuf>,

    /// Folder the workers run in and import the app from; a relative path in
    /// --pid, --access-logfile, --error-logfile, --certfile, --keyfile,
    /// --ca-certs, --log-config, --pythonpath, --worker-tmp-dir or -b unix:
    /// is in it, as under gunicorn [toml: app.chdir]
    #[arg(long, alias = "working-dir", value_name = "DIR", env = "CORRAL_CHDIR")]
    pub chdir: Option<PathBuf>,

    /// Folder to put in front of sys.path; repeat or separate with commas
    /// (each goes in front in turn, as under gunicorn: the last given is
    /// searched first) [toml: app.pythonpath]
    #[arg(
        long,
        alias = "app-dir",
        value_name = "DIR",
        value_delimiter = ',',
        env = "CORRAL_PYTHONPATH"
    )]
    pub pythonpath: Vec<PathBuf>,

    /// Environment variable for the workers, set over what they inherit from
    /// corral; repeat for more (CORRAL_ENV holds one) [toml: app.env]
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env, env = "CORRAL_ENV")]
    pub env: Vec<(String, String)>,

    /// Time a stopping worker gets to finish its requests
    /// [toml: workers.graceful_timeout] [default: 30s]
    #[arg(
        long,
        alias = "timeout-graceful-shutdown",
        alias = "workers-kill-timeout",
        value_name = "DURATION",
        value_parser = parse_duration,
        env = "CORRAL_GRACEFUL_TIMEOUT"
    )]
    pub graceful_timeout: Option<HumanDuration>,

    /// Address of the status server (/health/live, /health/ready, /status,
    /// /metrics): HOST:PORT, [::1]:PORT or unix:/path; not one of the --bind
    /// addresses [toml: health.status_bind] [default: none, no status server]
    #[arg(long, value_name = "ADDR", env = "CORRAL_STATUS_BIND")]
    pub status_bind: Option<BindAddr>,

    /// File holding the bearer token that /status and /metrics require
    /// (the environment variable CORRAL_STATUS_TOKEN can hold it instead)
    /// [toml: health.status_token_file] [default: none, no token]
    #[arg(long, value_name = "FILE", env = "CORRAL_STATUS_TOKEN_FILE")]
    pub status_token_file: Option<PathBuf>,

    /// Workers that must be in service for /health/ready to answer 200: a
    /// count like 2 or a percentage like 50% [toml: health.min_ready]
    /// [default: 1]
    #[arg(long, value_name = "N|PERCENT", env = "CORRAL_MIN_READY")]
    pub min_ready: Option<MinReady>,

    /// Path that corral GETs from each worker before it enters service and
    /// every probe_interval after; 2xx means ready. Starts with "/", like
    /// /health/ready [toml: health.ready_path] [default: none, no readiness probe]
    #[arg(long, value_name = "PATH", env = "CORRAL_READY_PATH")]
    pub ready_path: Option<String>,

    /// Control socket (a Unix socket; its file permissions are the access
    /// control) for `corral reload`, `scale` and `stop` [toml: control.socket]
    /// [default: $RUNTIME_DIRECTORY/corral.sock, else one per instance:
    /// $XDG_RUNTIME_DIR/corral/NAME/corral.sock, else
    /// /run/corral/NAME/corral.sock as root, else
    /// /tmp/corral-UID/NAME/corral.sock]
    #[arg(
        long,
        value_name = "PATH",
        alias = "control-socket",
        env = "CORRAL_SOCKET"
    )]
    pub socket: Option<PathBuf>,

    /// Requests after which a worker is gracefully replaced; 0 means never
    /// [toml: workers.max_requests] [default: 0]
    #[arg(
        long,
        alias = "limit-max-requests",
        value_name = "N",
        env = "CORRAL_MAX_REQUESTS"
    )]
    pub max_requests: Option<u64>,

    /// Up to this many more requests, at random, before a worker is replaced
    /// [toml: workers.max_requests_jitter] [default: 0]
    #[arg(
        long,
        alias = "limit-max-requests-jitter",
        value_name = "N",
        env = "CORRAL_MAX_REQUESTS_JITTER"
    )]
    pub max_requests_jitter: Option<u64>,

    /// Memory use (RSS) above which a worker is gracefully replaced, like 512MiB
    /// [toml: workers.max_memory] [default: none, no limit]
    #[arg(long, value_name = "SIZE", env = "CORRAL_MAX_MEMORY")]
    pub max_memory: Option<ByteSize>,

    /// Run the workers as this user (a name or a numeric uid), with its
    /// groups; corral itself keeps its own user (root, to bind the ports)
    /// [toml: workers.user] [default: corral's own user]
    #[arg(short = 'u', long, value_name = "USER", env = "CORRAL_USER")]
    pub user: Option<String>,

    /// Run the workers as this group (a name or a numeric gid)
    /// [toml: workers.group] [default: the primary group of --user]
    #[arg(short = 'g', long, value_name = "GROUP", env = "CORRAL_GROUP")]
    pub group: Option<String>,

    /// `--keepalive`, `--backlog`, ...: the flags of `[server]`'s plain keys
    /// (defined with the keys in `raw.rs`).
    #[command(flatten)]
    pub server_flags: ServerFlags,

    /// `--threads`, `--timeout`, ...: the flags of `[workers]`' plain keys.
    #[command(flatten)]
    pub workers_flags: WorkersFlags,

    /// The flags of `[health]`'s plain keys (none yet).
    #[command(flatten)]
    pub health_flags: HealthFlags,

    /// The flags of `[deploy]`'s plain keys (none yet).
    #[command(flatten)]
    pub deploy_flags: DeployFlags,

    /// How often corral pings an open WebSocket (keeps proxies from closing
    /// idle ones, finds vanished clients); 0s: no pings
    /// [toml: server.ws_ping_interval] [default: 20s]
    #[arg(
        long,
        alias = "websocket-ping-interval",
        value_name = "DURATION",
        value_parser = parse_duration,
        env = "CORRAL_WS_PING_INTERVAL"
    )]
    pub ws_ping_interval: Option<HumanDuration>,

    /// How long a WebSocket client may take to answer a ping: then the
    /// socket is closed with 1011 [toml: server.ws_ping_timeout]
    /// [default: 20s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "CORRAL_WS_PING_TIMEOUT")]
    pub ws_ping_timeout: Option<HumanDuration>,

    /// Largest WebSocket message a client may send (1009 above), at most
    /// 16MiB [toml: server.ws_max_message] [default: 16MiB]
    #[arg(
        long,
        value_name = "SIZE",
        alias = "websocket-max-message-size",
        alias = "ws-max-size",
        env = "CORRAL_WS_MAX_MESSAGE"
    )]
    pub ws_max_message: Option<ByteSize>,

    /// Shards of corral's own HTTP front, each a thread that serves its
    /// connections with its share of the workers (no more than workers);
    /// 0: half the CPUs, but two from 2 CPUs up
    /// [toml: server.io_threads] [default: 0]
    #[arg(long, value_name = "N", env = "CORRAL_IO_THREADS")]
    pub io_threads: Option<usize>,

    /// A header added to every response that does not set it, as NAME:VALUE
    /// (uvicorn's --header); repeat for more [toml: server.headers]
    #[arg(
        long,
        value_name = "NAME:VALUE",
        value_parser = parse_header,
        env = "CORRAL_HEADER"
    )]
    pub header: Vec<(String, String)>,

    /// Peers whose X-Forwarded-For and X-Forwarded-Proto headers are trusted
    /// (a reverse proxy), separated with commas: IP addresses, networks like
    /// 10.0.0.0/8, or * for any peer; "" trusts nobody. Unix socket
    /// connections are always trusted [toml: server.forwarded_allow_ips]
    /// [default: $FORWARDED_ALLOW_IPS when set, else 127.0.0.1,::1]
    #[arg(long, value_name = "LIST", env = "CORRAL_FORWARDED_ALLOW_IPS")]
    pub forwarded_allow_ips: Option<String>,

    /// Read a PROXY protocol header (HAProxy's) at the start of connections
    /// from --proxy-allow-from peers: off, v1, v2 or auto (either; the flag
    /// alone means auto) [toml: server.proxy_protocol] [default: off]
    #[arg(
        long,
        value_name = "MODE",
        num_args = 0..=1,
        default_missing_value = "auto",
        value_parser = ["off", "v1", "v2", "auto"],
        env = "CORRAL_PROXY_PROTOCOL"
    )]
    pub proxy_protocol: Option<String>,

    /// Peers whose PROXY headers are read, separated with commas, written as
    /// for --forwarded-allow-ips; Unix socket connections always may send
    /// one [toml: server.proxy_allow_ips] [default: 127.0.0.1,::1]
    #[arg(long, value_name = "LIST", env = "CORRAL_PROXY_ALLOW_FROM")]
    pub proxy_allow_from: Option<String>,

    /// Log verbosity of corral itself, in any case as gunicorn takes it
    /// (gunicorn's "warning" and "critical" too) [toml: log.level] [default:
    /// info]
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        value_name = "LEVEL",
        env = "CORRAL_LOG_LEVEL"
    )]
    pub log_level: Option<LogLevel>,

    /// Log format: human-readable text, or one JSON object per line. Workers'
    /// output is logged line by line either way, tagged with slot and pid
    /// [toml: log.format] [default: text]
    #[arg(long, value_enum, value_name = "FORMAT", env = "CORRAL_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,

    /// What the workers print: tagged (line by line through corral's log,
    /// with slot and pid) or raw (line by line as the app wrote them, its
    /// stdout to stdout and its stderr to stderr, as under gunicorn: for
    /// JSON log lines a platform reads) [toml: log.app_output] [default: tagged]
    #[arg(long, value_enum, value_name = "HOW", env = "CORRAL_APP_OUTPUT")]
    pub app_output: Option<AppOutput>,

    /// Access log, one line per request: off, common or combined (the Common
    /// and Combined Log Formats of Apache and gunicorn), or json; the flag
    /// alone means combined (uvicorn's and granian's --access-log)
    /// [toml: log.access] [default: off, or combined with --access-logfile]
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        num_args = 0..=1,
        default_missing_value = "combined",
        env = "CORRAL_ACCESS_LOG"
    )]
    pub access_log: Option<AccessLog>,

    /// No access log, whatever the config file says (uvicorn's --no-access-log;
    /// --access-log off) [toml: log.access]
    #[arg(long, conflicts_with = "access_log", env = "CORRAL_NO_ACCESS_LOG")]
    pub no_access_log: bool,

    // gunicorn's own spellings, for a gunicorn command line with the
    // command renamed (see the README's migration table).
    /// Write the access log to this file ("-": stdout), reopened on SIGUSR1;
    /// turns the access log on (gunicorn's format unless --access-log or
    /// --access-logformat says otherwise) [toml: log.access_file]
    #[arg(long, value_name = "FILE", env = "CORRAL_ACCESS_LOGFILE")]
    pub access_logfile: Option<PathBuf>,

    /// Access log line in gunicorn's atoms, like
    /// '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s'
    /// (corral adds request_id, queue_ms, worker_slot, worker_pid,
    /// generation); turns the access log on [toml: log.access_format]
    #[arg(long, value_name = "FORMAT", env = "CORRAL_ACCESS_LOGFORMAT")]
    pub access_logformat: Option<String>,

    /// Write corral's own log (workers' output included) to this file instead
    /// of stderr ("-": stderr), reopened on SIGUSR1 [toml: log.error_file]
    #[arg(
        long,
        visible_alias = "log-file",
        alias = "error-log",
        value_name = "FILE",
        env = "CORRAL_ERROR_LOGFILE"
    )]
    pub error_logfile: Option<PathBuf>,

    /// Send gunicorn's StatsD metrics to this agent: HOST:PORT (UDP, port
    /// 8125 when left out) or unix:PATH [toml: log.statsd_host]
    #[arg(long, value_name = "ADDRESS", env = "CORRAL_STATSD_HOST")]
    pub statsd_host: Option<String>,

    /// Put before every StatsD metric name, with a "." added
    /// [toml: log.statsd_prefix]
    #[arg(long, value_name = "PREFIX", env = "CORRAL_STATSD_PREFIX")]
    pub statsd_prefix: Option<String>,

    /// DogStatsD tags added to every StatsD metric, like
    /// env:prod,service:app [toml: log.dogstatsd_tags]
    #[arg(long, value_name = "TAGS", env = "CORRAL_DOGSTATSD_TAGS")]
    pub dogstatsd_tags: Option<String>,

    /// Send corral's own log to a syslog daemon as well, one datagram per
    /// line [toml: log.syslog] [default: false]
    #[arg(long, env = "CORRAL_LOG_SYSLOG")]
    pub log_syslog: bool,

    /// Where the syslog daemon listens: udp://HOST:PORT or unix:///dev/log
    /// [toml: log.syslog_to] [default: udp://localhost:514]
    #[arg(long, value_name = "ADDRESS", env = "CORRAL_LOG_SYSLOG_TO")]
    pub log_syslog_to: Option<String>,

    /// The middle of each syslog line's tag, corral.PREFIX.error
    /// [toml: log.syslog_prefix] [default: --name, else the instance's name]
    #[arg(long, value_name = "PREFIX", env = "CORRAL_LOG_SYSLOG_PREFIX")]
    pub log_syslog_prefix: Option<String>,

    /// The syslog facility: user, daemon, local0 to local7, ...
    /// [toml: log.syslog_facility] [default: user]
    #[arg(long, value_name = "NAME", env = "CORRAL_LOG_SYSLOG_FACILITY")]
    pub log_syslog_facility: Option<String>,

    /// Longest request line (method, target, version) accepted, in bytes;
    /// 414 above; 0: no limit of its own [toml: server.max_request_line]
    /// [default: 0, the head is bounded by --max-header-bytes]
    #[arg(long, value_name = "BYTES", env = "CORRAL_LIMIT_REQUEST_LINE")]
    pub limit_request_line: Option<usize>,

    /// Most header fields in a request; 431 above; 0: 32768
    /// [toml: server.max_header_fields] [default: 100]
    #[arg(long, value_name = "N", env = "CORRAL_LIMIT_REQUEST_FIELDS")]
    pub limit_request_fields: Option<usize>,

    /// Longest header field ("Name: value" and its CRLF) accepted, in bytes; 431 above;
    /// 0: no limit of its own [toml: server.max_header_field_bytes]
    /// [default: 0, the head is bounded by --max-header-bytes]
    #[arg(
        long = "limit-request-field_size",
        alias = "limit-request-field-size",
        value_name = "BYTES",
        env = "CORRAL_LIMIT_REQUEST_FIELD_SIZE"
    )]
    pub limit_request_field_size: Option<usize>,

    /// Write corral's pid to this file (replaced whole, never through a
    /// symlink), removed on a clean exit; corral refuses to start while it
    /// names another corral that runs (a stale file is replaced)
    /// [toml: server.pid_file]
    #[arg(
        short = 'p',
        long = "pid",
        alias = "pid-file",
        value_name = "FILE",
        env = "CORRAL_PID"
    )]
    pub pid: Option<PathBuf>,

    /// Serve HTTPS on every --bind address (not --insecure-bind's) with this
    /// PEM certificate (and its chain) [toml: server.tls.certfile] [default:
    /// none, plain HTTP]
    #[arg(
        long,
        alias = "ssl-certfile",
        alias = "ssl-certificate",
        value_name = "FILE",
        env = "CORRAL_CERTFILE"
    )]
    pub certfile: Option<PathBuf>,

    /// The PEM private key of --certfile, unencrypted [toml: server.tls.keyfile]
    #[arg(
        long,
        alias = "ssl-keyfile",
        value_name = "FILE",
        env = "CORRAL_KEYFILE"
    )]
    pub keyfile: Option<PathBuf>,

    /// CA certificates (PEM) that client certificates are checked against
    /// [toml: server.tls.ca_certs]
    #[arg(
        long,
        alias = "ssl-ca-certs",
        alias = "ssl-ca",
        value_name = "FILE",
        env = "CORRAL_CA_CERTS"
    )]
    pub ca_certs: Option<PathBuf>,

    /// Client certificates: none, optional or required (gunicorn's 0, 1, 2)
    /// [toml: server.tls.cert_reqs] [default: none]
    #[arg(
        long,
        alias = "ssl-cert-reqs",
        alias = "verify-mode",
        value_name = "none|optional|required",
        env = "CORRAL_CERT_REQS"
    )]
    pub cert_reqs: Option<crate::tls::CertReqs>,

    /// Oldest TLS version offered: 1.2 or 1.3 [toml: server.tls.min_version]
    /// [default: 1.2]
    #[arg(
        long,
        alias = "ssl-protocol-min",
        value_name = "1.2|1.3",
        env = "CORRAL_TLS_MIN_VERSION"
    )]
    pub tls_min_version: Option<crate::tls::MinVersion>,

    /// Where the worker script's private folder goes (corral's workers
    /// need no heartbeat file, gunicorn's use for it) [default: $TMPDIR,
    /// else /tmp, else /dev/shm]
    #[arg(long, value_name = "DIR", env = "CORRAL_WORKER_TMP_DIR")]
    pub worker_tmp_dir: Option<PathBuf>,

    /// gunicorn's worker class: sync or gthread mean --interface wsgi;
    /// gevent means --interface wsgi with gevent's greenlets
    /// (workers.gevent); uvicorn.workers.UvicornWorker,
    /// uvicorn_worker.UvicornWorker or asgi mean --interface asgi. eventlet
    /// and tornado are refused
    #[arg(
        short = 'k',
        long,
        value_name = "CLASS",
        value_parser = parse_worker_class,
        env = "CORRAL_WORKER_CLASS"
    )]
    pub worker_class: Option<WorkerClass>,

    /// Set SO_REUSEPORT on the TCP sockets corral binds, as gunicorn's
    /// --reuse-port: another process of the same user may bind the same
    /// address, and the kernel spreads new connections between them
    /// [toml: server.reuse_port] [default: false]
    #[arg(long, env = "CORRAL_REUSE_PORT")]
    pub reuse_port: bool,

    /// Development: watch the app folder and pythonpath and start a new
    /// generation on every change; a broken save keeps the last good code
    /// serving. One worker unless --workers is given
    /// [toml: dev.reload] [default: false]
    #[arg(long, env = "CORRAL_RELOAD")]
    pub reload: bool,

    /// With --reload: globs of files whose changes count too (repeat the
    /// flag, or separate them with commas), added to the file's or the
    /// default ones, as uvicorn adds them to *.py [toml: dev.reload_include]
    /// [default: *.py]
    #[arg(
        long,
        value_name = "GLOB",
        value_delimiter = ',',
        env = "CORRAL_RELOAD_INCLUDE"
    )]
    pub reload_include: Vec<String>,

    /// With --reload: globs of files or folders whose changes never count
    /// (repeat the flag, or separate them with commas), added to the file's
    /// or the default ones (granian's --reload-ignore-dirs and
    /// --reload-ignore-paths) [toml: dev.reload_exclude]
    /// [default: .git,__pycache__,.venv,venv,node_modules,.tox,.mypy_cache,.pytest_cache]
    #[arg(
        long,
        value_name = "GLOB",
        value_delimiter = ',',
        alias = "reload-ignore-dirs",
        alias = "reload-ignore-paths",
        env = "CORRAL_RELOAD_EXCLUDE"
    )]
    pub reload_exclude: Vec<String>,

    /// With --reload: a folder to watch instead of the app folder and
    /// pythonpath (repeat the flag, or separate them with commas; uvicorn's
    /// --reload-dir, granian's --reload-paths) [toml: dev.reload_dirs]
    /// [default: the app folder and pythonpath]
    #[arg(
        long = "reload-dir",
        value_name = "DIR",
        value_delimiter = ',',
        alias = "reload-paths",
        env = "CORRAL_RELOAD_DIR"
    )]
    pub reload_dirs: Vec<PathBuf>,

    /// With --reload: a file whose changes count too, wherever it is and
    /// whatever the globs say (repeat the flag, or separate them with commas;
    /// gunicorn's --reload-extra-file) [toml: dev.reload_extra_files]
    #[arg(
        long = "reload-extra-file",
        value_name = "FILE",
        value_delimiter = ',',
        env = "CORRAL_RELOAD_EXTRA_FILE"
    )]
    pub reload_extra_files: Vec<PathBuf>,

    /// Refused: corral never preloads the app (each worker imports it, so a
    /// reload runs new code and a broken import never reaches the supervisor)
    #[arg(long, env = "CORRAL_PRELOAD")]
    pub preload: bool,

    /// Check the app as `corral check` does, then exit: 0 when it boots, 1
    /// when it does not (gunicorn's --check-config)
    #[arg(long, env = "CORRAL_CHECK_CONFIG")]
    pub check_config: bool,

    /// The app's Unix sockets get mode 0777 & ~MASK, as under gunicorn,
    /// which reads it as 0o007 (octal) or 7 (decimal), or octal digits
    /// after a 0 like 007; the workers' own umask is left alone
    /// [toml: server.socket_umask] [default: none]
    #[arg(
        short = 'm',
        long,
        value_name = "MASK",
        value_parser = super::units::Umask::gunicorn,
        env = "CORRAL_UMASK"
    )]
    pub umask: Option<super::units::Umask>,

    /// The other servers' flags given that change nothing (gunicorn's
    /// `--capture-output`, granian's `--runtime-threads`, ...): the flag as
    /// given, whose it is and why (`crate::cli::peer_flags`), for the log.
    #[arg(skip)]
    pub peer_no_ops: Vec<(String, &'static str, &'static str)>,
    /// uvicorn's `UVICORN_*` and granian's `GRANIAN_*` variables read, each
    /// said as a line for the log (`crate::cli`'s `peer_env`).
    #[arg(skip)]
    pub peer_env: Vec<String>,
    /// `CORRAL_*` variables that name no flag of corral's (a typo such as
    /// `CORRAL_WORKER`), for a warning: they are not read.
    #[arg(skip)]
    pub unknown_env: Vec<String>,
    /// Those that mean one of corral's settings: the flag as given, whose
    /// it is and what it is taken as.
    #[arg(skip)]
    pub peer_meanings: Vec<(String, &'static str, &'static str)>,

    /// The flags ("--workers", "APP") whose value came from the
    /// environment, each with where, as messages name it: its `CORRAL_*`
    /// variable, uvicorn's or granian's (`UVICORN_WORKERS`), or
    /// `--workers in GUNICORN_CMD_ARGS`. Filled by [`crate::cli::parse`].
    #[arg(skip)]
    pub from_env: Vec<(String, String)>,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `--app-output`: how what the workers print reaches corral's output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppOutput {
    /// Line by line through corral's log, tagged with slot and pid, control
    /// characters shown.
    #[default]
    Tagged,
    /// Line by line as the app wrote them, its stdout to corral's stdout
    /// and its stderr to corral's stderr (gunicorn's way, for JSON log
    /// lines a platform's log agent reads).
    Raw,
}

/// `--log-level`; gunicorn's "critical" and "warning" are accepted too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    #[value(alias = "critical")]
    #[serde(alias = "critical")]
    Error,
    #[value(alias = "warning")]
    #[serde(alias = "warning")]
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl From<LogLevel> for tracing::level_filters::LevelFilter {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Error => Self::ERROR,
            LogLevel::Warn => Self::WARN,
            LogLevel::Info => Self::INFO,
            LogLevel::Debug => Self::DEBUG,
            LogLevel::Trace => Self::TRACE,
        }
    }
}

/// The environment variable of a `run` flag: "--max-requests" →
/// "CORRAL_MAX_REQUESTS", "APP" → "CORRAL_APP".
pub fn env_name(flag: &str) -> String {
    format!(
        "CORRAL_{}",
        flag.trim_start_matches('-')
            .replace('-', "_")
            .to_uppercase()
    )
}

/// A duration flag: "30s", "500ms", "2m", or a bare number of seconds as
/// gunicorn takes it (`--timeout 30`). The TOML file insists on a unit.
pub fn parse_duration(s: &str) -> Result<HumanDuration, String> {
    match s.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => {
            Ok(HumanDuration(std::time::Duration::from_secs_f64(secs)))
        }
        _ => s.parse(),
    }
}

/// What `-k/--worker-class` stands for in corral: the app's interface,
/// and for gunicorn's gevent workers, gevent's greenlets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerClass {
    pub interface: Interface,
    /// `[workers] gevent`: the worker runs its requests in greenlets.
    pub gevent: bool,
}

/// `-k/--worker-class`: gunicorn's worker classes that corral's workers
/// stand in for; any other is refused with what to use instead.
pub fn parse_worker_class(s: &str) -> Result<WorkerClass, String> {
    let interface = match s {
        "sync"
        | "gthread"
        | "gunicorn.workers.sync.SyncWorker"
        | "gunicorn.workers.gthread.ThreadWorker" => Interface::Wsgi,
        // gunicorn's gevent workers: the app in greenlets, gevent's
        // monkey-patching done before it is imported. Its pywsgi variants
        // differ from it only in the HTTP server, which is corral's here.
        "gevent"
        | "gevent_wsgi"
        | "gevent_pywsgi"
        | "gunicorn.workers.ggevent.GeventWorker"
        | "gunicorn.workers.ggevent.GeventPyWSGIWorker" => {
            return Ok(WorkerClass {
                interface: Interface::Wsgi,
                gevent: true,
            });
        }
        "asgi"
        | "uvicorn.workers.UvicornWorker"
        | "uvicorn.workers.UvicornH11Worker"
        | "uvicorn_worker.UvicornWorker"
        | "uvicorn_worker.UvicornH11Worker"
        | "gunicorn.workers.gasgi.ASGIWorker"
        // hypercorn's: its workers are ASGI on asyncio or uvloop.
        | "asyncio"
        | "uvloop" => Interface::Asgi,
        "trio" => {
            return Err(
                "corral's ASGI workers run on asyncio or uvloop, not trio (hypercorn's -k trio): serve an asyncio app with -k asyncio"
                    .into(),
            );
        }
        other => return Err(unsupported_worker_class(other)),
    };
    Ok(WorkerClass {
        interface,
        gevent: false,
    })
}

/// Why corral has no such worker class, and what to use instead.
pub fn unsupported_worker_class(class: &str) -> String {
    if class.starts_with("eventlet") || class.contains(".geventlet.") {
        format!(
            "corral has no {class} workers (eventlet is no longer developed, and gunicorn \
             deprecates its worker): use -k gevent for a WSGI app that needs green threads, \
             --threads N for one that waits on I/O, or serve an ASGI app (-k asgi)"
        )
    } else if class.contains("geventwebsocket") || class.contains("GeventWebSocket") {
        format!(
            "corral has no {class} workers: a WSGI app cannot take WebSockets under corral \
             (corral answers them only for ASGI apps); serve the WebSocket part as an ASGI \
             app (-k asgi), or use -k gevent for the rest"
        )
    } else {
        format!(
            "corral has no worker class {class:?}: it runs WSGI apps in threads \
             (-k sync, -k gthread) or gevent's greenlets (-k gevent) and ASGI apps on an \
             event loop (-k uvicorn.workers.UvicornWorker, -k asgi)"
        )
    }
}

/// "KEY=VALUE" for `--env`.
fn parse_env(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("\"{s}\" has no '=': write it as KEY=VALUE"))?;
    super::check_env(key, value)?;
    Ok((key.to_owned(), value.to_owned()))
}

/// "NAME:VALUE" for `--header`, split at the first colon as uvicorn splits
/// it; the value without the spaces around it.
fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("\"{s}\" has no ':': write it as NAME:VALUE"))?;
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

fn parse_paste_global(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() && !s.contains('\0') => {
            Ok((key.to_owned(), value.to_owned()))
        }
        _ => Err(format!("\"{s}\" is no KEY=VALUE")),
    }
}

impl Overrides {
    /// uvicorn's `--no-access-log`, made the `--access-log off` it means.
    pub fn uvicorn_access_log(&mut self) {
        if self.no_access_log {
            self.access_log = Some(AccessLog::Off);
        }
    }

    /// uvicorn's `--host`, `--port` and `--uds`, and waitress's
    /// `--listen`, made the `--bind` they mean; an error when `--bind` is
    /// given too, or `--uds` or `--listen` with `--host` or `--port`.
    pub fn uvicorn_binds(&mut self) -> Result<(), String> {
        if self.host.is_none()
            && self.port.is_none()
            && self.uds.is_none()
            && self.listen.is_empty()
        {
            return Ok(());
        }
        if !self.bind.is_empty() {
            return Err(
                "--bind and uvicorn's --host, --port or --uds (or waitress's --listen) name the address twice: give one of them"
                    .into(),
            );
        }
        if !self.listen.is_empty() {
            if self.host.is_some() || self.port.is_some() {
                return Err("--listen and --host or --port name the address twice (waitress refuses them together too): give one of them".into());
            }
            for addr in std::mem::take(&mut self.listen) {
                match addr.strip_prefix("*:") {
                    Some(port) => {
                        for host in ["0.0.0.0", "[::]"] {
                            let bind = BindAddr::gunicorn(&format!("{host}:{port}"))
                                .map_err(|e| format!("--listen {addr}: {e}"))?;
                            self.bind.push(bind);
                        }
                    }
                    None => self.bind.push(
                        BindAddr::gunicorn(&addr).map_err(|e| format!("--listen {addr}: {e}"))?,
                    ),
                }
            }
            if self.uds.is_none() {
                return Ok(());
            }
        }
        if let Some(path) = self.uds.take() {
            if self.host.is_some() || self.port.is_some() {
                return Err("--uds and --host or --port: the app listens on the Unix socket or on the port, give one".into());
            }
            self.bind.push(BindAddr::Unix(path));
            return Ok(());
        }
        let host = self.host.take().unwrap_or_else(|| "127.0.0.1".into());
        let port = self.port.take().unwrap_or(8000);
        let addr = match host.contains(':') && !host.starts_with('[') {
            true => format!("[{host}]:{port}"),
            false => format!("{host}:{port}"),
        };
        let bind = BindAddr::gunicorn(&addr).map_err(|e| format!("--host {host}: {e}"))?;
        self.bind.push(bind);
        Ok(())
    }
}
