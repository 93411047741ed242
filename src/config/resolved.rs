//! The resolved configuration, [`Config`], with every default filled in:
//! one struct per section. A section's plain keys are its `keys` (made by
//! `section!` in `raw.rs`), read through `Deref` (`cfg.server.keepalive`);
//! the fields here are the keys of other shapes, resolved in `validate`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{
    BindAddr, DeployKeys, ForwardedAllow, HeadLimits, HealthKeys, LogConfig, MinReady,
    ProxyProtocol, ServerKeys, WorkersKeys,
};

/// The resolved configuration: every default filled in.
#[derive(Debug, Clone)]
pub struct Config {
    /// The TOML file this came from (absolute), if any.
    pub source: Option<PathBuf>,
    /// This instance's name, which keys its default control socket and
    /// state folder (see `config/instance.rs`), e.g. `shop-5c1e0a3f`.
    pub instance: String,
    pub app: AppConfig,
    pub server: ServerConfig,
    pub workers: WorkersConfig,
    pub health: HealthConfig,
    pub control: ControlConfig,
    pub deploy: DeployConfig,
    /// Things that work but should be written differently (a deprecated
    /// key), logged once at start-up.
    pub warnings: Vec<String>,
    pub log: LogConfig,
    pub hooks: HooksConfig,
    pub dev: DevConfig,
}

/// `[dev]`: `--reload` and what it watches (see `crate::dev`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevConfig {
    pub reload: bool,
    /// Globs (checked: each compiles) of the files whose changes count.
    pub include: Vec<String>,
    /// Globs of the files and folders whose changes never count.
    pub exclude: Vec<String>,
    /// The folders watched (absolute, existing); empty: the app folder and
    /// `app.pythonpath`.
    pub dirs: Vec<PathBuf>,
    /// Files whose changes count wherever they are, whatever the globs say
    /// (absolute; their folders exist).
    pub extra_files: Vec<PathBuf>,
}

/// The default `dev.reload_include`.
pub const RELOAD_INCLUDE: &[&str] = &["*.py"];
/// The default `dev.reload_exclude`.
pub const RELOAD_EXCLUDE: &[&str] = &[
    ".git",
    "__pycache__",
    ".venv",
    "venv",
    "node_modules",
    ".tox",
    ".mypy_cache",
    ".pytest_cache",
];

/// `[hooks]`: commands run on life-cycle events (see `crate::hooks`). Each
/// is the program then its arguments, checked like `rollback_hook`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HooksConfig {
    pub on_worker_exit: Option<Vec<String>>,
    pub on_ready: Option<Vec<String>>,
    pub on_reload_failed: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct AppConfig {
    /// "pkg.mod:callable" (callable defaults to "application" like gunicorn when
    /// the ":callable" part is missing).
    pub module: String,
    pub interface: Interface,
    /// Interpreter: `--python`, `app.python`, else the virtualenv (or conda
    /// environment) corral is installed in, else `$VIRTUAL_ENV/bin/python`, else `python3` (see
    /// `validate::default_python`). A bare name (no `/`) is looked up in
    /// `PATH`; anything else is absolute.
    pub python: PathBuf,
    /// Where `python` came from, for the start-up log and `corral check`.
    pub python_origin: String,
    /// Absolute path (resolved against the config file's folder or the cwd).
    pub chdir: Option<PathBuf>,
    /// Absolute paths, in the order given.
    pub pythonpath: Vec<PathBuf>,
    /// Set over what the workers inherit (`app.env`, then `--env`).
    pub env: BTreeMap<String, String>,
    /// The only variables of corral's environment the workers inherit:
    /// names, or patterns with `*` ([`EnvAllow::allows`]). `None`: all of
    /// them. Either way never the service manager's nor corral's own
    /// ([`is_corral_own_env`]).
    pub env_allow: Option<EnvAllow>,
    /// Call the attribute with no arguments and serve what it returns
    /// (`app.factory`, `--factory`). Never together with a `module` that
    /// has arguments ("main:create_app('prod')"), which is a factory call
    /// of its own.
    pub factory: bool,
    /// The prefix the app is mounted under ("/api"): SCRIPT_NAME for WSGI,
    /// `root_path` for ASGI. "" for none; else it starts with "/", does not
    /// end with "/", and holds only visible ASCII without '?', '#' or '%'.
    pub root_path: String,
    /// The name in the workers' command lines (`app.proc_name`, `--name`);
    /// `None`: the instance's.
    pub proc_name: Option<String>,
    /// The event loop of an ASGI worker (`app.asgi_loop`, `--asgi-loop`).
    pub asgi_loop: AsgiLoop,
    /// Whether an ASGI worker runs the app's lifespan (`app.asgi_lifespan`,
    /// `--asgi-lifespan`).
    pub asgi_lifespan: AsgiLifespan,
    /// A dotenv file each worker loads before it imports the app
    /// (`app.env_file`, `--env-file`; absolute).
    pub env_file: Option<PathBuf>,
    /// A PasteDeploy app served instead of `module` (`app.paste`,
    /// `--paste`); `module` then names it for the log, `corral check` and
    /// `/status` ("paste:/srv/shop/production.ini#main").
    pub paste: Option<Paste>,
    /// The Python `logging` configuration each worker applies before it
    /// imports the app (`app.logconfig*`, `--log-config*`).
    pub logging: Option<PythonLogging>,
    /// The gunicorn config file whose worker hooks each worker runs
    /// (`app.gunicorn_hooks`).
    pub gunicorn_hooks: Option<GunicornHooks>,
}

/// A gunicorn config file whose worker hooks (`post_fork`,
/// `post_worker_init`, `pre_request`, `post_request`, `worker_int`,
/// `worker_exit`) the workers run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GunicornHooks {
    /// The file (absolute).
    pub path: PathBuf,
    /// gunicorn's `python:MODULE`: the module name it runs under, and the
    /// folder its package is imported from.
    pub module: Option<(String, PathBuf)>,
}

impl GunicornHooks {
    /// What the worker reads from `CORRAL_WORKER_GUNICORN_HOOKS`.
    pub fn for_worker(&self) -> String {
        let (module, root) = match &self.module {
            Some((module, root)) => (Some(module.as_str()), Some(root.display().to_string())),
            None => (None, None),
        };
        serde_json::json!({
            "path": self.path.display().to_string(),
            "module": module,
            "root": root,
        })
        .to_string()
    }
}

/// A PasteDeploy app, as gunicorn's `--paste` and `--paste-global` give it.
#[derive(Debug, Clone, PartialEq)]
pub struct Paste {
    /// The ini file (absolute).
    pub file: PathBuf,
    /// Its `[app:NAME]`; `None`: PasteDeploy's default, "main".
    pub name: Option<String>,
    /// Defaults for the app's `global_conf`.
    pub global: BTreeMap<String, String>,
}

impl Paste {
    /// PasteDeploy's URI for it: "config:/srv/shop/production.ini#main".
    pub fn uri(&self) -> String {
        format!("config:{}", self.file_and_name())
    }

    /// How the log, `corral check` and `/status` name it
    /// ("paste:/srv/shop/production.ini#main").
    pub fn shown(&self) -> String {
        format!("paste:{}", self.file_and_name())
    }

    fn file_and_name(&self) -> String {
        match &self.name {
            Some(name) => format!("{}#{name}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }
}

impl AppConfig {
    /// The app's short name, in the instance's: the module's first part
    /// ("main" of "main:app"), or a Paste app's file ("production").
    pub fn label(&self) -> &str {
        match &self.paste {
            Some(paste) => paste
                .file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("paste"),
            None => self.module.split(':').next().unwrap_or(&self.module),
        }
    }
}

/// A Python `logging` configuration for the workers, as gunicorn's
/// `logconfig`, `logconfig_json` and `logconfig_dict` give it.
#[derive(Debug, Clone, PartialEq)]
pub enum PythonLogging {
    /// An ini file for `logging.config.fileConfig` (absolute).
    Ini(PathBuf),
    /// A JSON or YAML file (by its extension) for `dictConfig` as it is,
    /// uvicorn's `--log-config` (absolute; YAML needs PyYAML).
    Uvicorn(PathBuf),
    /// A JSON file for `logging.config.dictConfig` (absolute).
    Json(PathBuf),
    /// The dictionary for `logging.config.dictConfig`, as JSON text.
    Dict(String),
}

impl PythonLogging {
    /// A warning when the configuration sets up gunicorn's `gunicorn.access`
    /// logger: under gunicorn a logging configuration turns the access log
    /// on, through that logger; corral writes access lines itself, so the
    /// logger gets none, and they went nowhere without a word. A file
    /// another user may change is not read (the workers read it).
    pub fn unfed_access_logger(&self) -> Option<String> {
        const LOGGER: &str = "gunicorn.access";
        let (text, what) = match self {
            PythonLogging::Dict(text) => (text.clone(), "logconfig_dict".to_string()),
            PythonLogging::Ini(path) | PythonLogging::Uvicorn(path) | PythonLogging::Json(path) => {
                let mut options = std::fs::OpenOptions::new();
                let (file, meta, _) =
                    crate::private_fs::open_unfollowed(path, options.read(true)).ok()?;
                if crate::private_fs::writable_by_others(&meta).is_some() || !meta.is_file() {
                    return None;
                }
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::Read::take(file, 1 << 20), &mut text)
                    .ok()?;
                (text, path.display().to_string())
            }
        };
        text.contains(LOGGER).then(|| {
            format!(
                "{what} sets up the {LOGGER} logger, which gets no record under corral: corral writes the access log itself, and no access log is on; give --access-logfile FILE (or - for stdout), with --access-logformat or --access-log json for the lines' shape"
            )
        })
    }

    /// `logconfig`, `--log-config`: an ini file as gunicorn reads it, or a
    /// JSON or YAML one as uvicorn reads it.
    pub fn by_extension(path: PathBuf) -> PythonLogging {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext.to_ascii_lowercase().as_str() {
            "json" | "yaml" | "yml" => PythonLogging::Uvicorn(path),
            _ => PythonLogging::Ini(path),
        }
    }

    /// How the worker is told: "ini:PATH", "json:PATH" or "dict:JSON".
    pub fn for_worker(&self) -> String {
        match self {
            PythonLogging::Ini(path) => format!("ini:{}", path.display()),
            PythonLogging::Uvicorn(path) => format!("uvicorn:{}", path.display()),
            PythonLogging::Json(path) => format!("json:{}", path.display()),
            PythonLogging::Dict(json) => format!("dict:{json}"),
        }
    }
}

/// `app.env_allow`: the names and `*` patterns of the variables workers
/// inherit from corral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvAllow(pub Vec<String>);

impl EnvAllow {
    /// Whether `name` matches one of the names or patterns; `*` matches any
    /// run of characters ("LC_*", "*_URL", "*").
    pub fn allows(&self, name: &str) -> bool {
        self.0.iter().any(|pattern| glob_match(pattern, name))
    }
}

/// `*`-only glob matching, for [`EnvAllow`].
fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(mut tail) = name.strip_prefix(head) else {
                return false;
            };
            if !rest.contains('*') {
                return tail.len() >= rest.len() && tail.ends_with(rest);
            }
            // Try every position for the next literal part.
            loop {
                if glob_match(rest, tail) {
                    return true;
                }
                let mut chars = tail.chars();
                if chars.next().is_none() {
                    return false;
                }
                tail = chars.as_str();
            }
        }
    }
}

/// The variables of corral's environment that belong to its service
/// manager (systemd's socket activation, notify socket and watchdog) or to
/// corral itself (`CORRAL_*`: its flags set from the environment, the
/// status token, its re-exec hand-over): no worker inherits them, whatever
/// `app.env_allow` says.
pub fn is_corral_own_env(name: &str) -> bool {
    const SERVICE_MANAGER: &[&str] = &[
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
    ];
    SERVICE_MANAGER.contains(&name) || name.starts_with("CORRAL_")
}

/// What `app.pass_env` (deprecated) used to give on top of its names, so
/// that an old file keeps its meaning as `app.env_allow`.
pub const OLD_BASE_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TMPDIR",
    "VIRTUAL_ENV",
    "PYTHONPATH",
];

/// The event loop an ASGI worker runs the app on (`app.asgi_loop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AsgiLoop {
    /// uvloop when it is installed, else asyncio's.
    Auto,
    /// asyncio's own loop.
    Asyncio,
    /// uvloop's; a worker without uvloop fails its boot.
    Uvloop,
}

/// Whether an ASGI worker runs the app's lifespan protocol
/// (`app.asgi_lifespan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AsgiLifespan {
    /// When the app supports it.
    Auto,
    /// Always: an app that does not support it fails its boot.
    On,
    /// Never.
    Off,
}

impl AsgiLoop {
    /// As written in the file and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            AsgiLoop::Auto => "auto",
            AsgiLoop::Asyncio => "asyncio",
            AsgiLoop::Uvloop => "uvloop",
        }
    }
}

impl AsgiLifespan {
    /// As written in the file and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            AsgiLifespan::Auto => "auto",
            AsgiLifespan::On => "on",
            AsgiLifespan::Off => "off",
        }
    }
}

/// The protocol between the worker and the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Interface {
    /// PEP 3333: `app(environ, start_response)`, run on the worker's threads.
    Wsgi,
    /// ASGI 3: `async app(scope, receive, send)`, run on an event loop
    /// (uvicorn's `asgi3`).
    #[value(alias = "asgi3")]
    #[serde(alias = "asgi3")]
    Asgi,
    /// ASGI when the callable (or its `__call__`) is a coroutine function,
    /// else WSGI.
    Auto,
}

impl Interface {
    /// As written in the file and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Interface::Wsgi => "wsgi",
            Interface::Asgi => "asgi",
            Interface::Auto => "auto",
        }
    }
}

/// `[server]`, resolved.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The plain keys (`backlog`, `keepalive`, ...: see `RawServer`),
    /// read through `Deref` as `server.keepalive`.
    pub keys: ServerKeys,
    /// Never empty. Served with TLS when `tls` is set.
    pub bind: Vec<Bind>,
    /// `server.insecure_bind`: plain HTTP even when `tls` is set; none of
    /// `bind`'s addresses.
    pub insecure_bind: Vec<Bind>,
    /// `server.reuse_port` (`--reuse-port`): SO_REUSEPORT on the TCP sockets
    /// corral binds for `bind` and `insecure_bind`.
    pub reuse_port: bool,
    /// Shards of corral's HTTP front (`crate::shards`; shard 0 shares its
    /// thread with the supervisor and the status server). At least 1:
    /// `server.io_threads = 0` (the default) is resolved at load time to
    /// half the CPUs this process may use (`crate::cpus`), but two from 2
    /// CPUs up.
    /// corral starts no more shards than `workers.count`.
    pub io_threads: usize,
    /// TCP peers whose X-Forwarded-For and X-Forwarded-Proto headers are
    /// trusted (`server.forwarded_allow_ips`); by default 127.0.0.1 and ::1.
    /// Connections on Unix sockets are always trusted.
    pub forwarded_allow_ips: ForwardedAllow,
    /// Which PROXY protocol headers corral reads (`server.proxy_protocol`).
    pub proxy_protocol: ProxyProtocol,
    /// TCP peers whose PROXY headers are read (`server.proxy_allow_ips`);
    /// by default 127.0.0.1 and ::1. Unix socket peers always may send one.
    pub proxy_allow_ips: ForwardedAllow,
    /// gunicorn's `limit_request_*` beside `max_header_bytes`.
    pub head_limits: HeadLimits,
    /// Where corral writes its pid, if anywhere.
    pub pid_file: Option<PathBuf>,
    /// `server.socket_umask` (`-m`): the app's Unix sockets get mode
    /// `0o777 & !umask` (without it, `workers.limits.umask`'s).
    pub socket_umask: Option<u32>,
    /// HTTPS on every `bind` address (`[server.tls]` and its per-bind
    /// tables), if configured.
    pub tls: Option<TlsConfig>,
    /// Pings and the message limit of WebSockets.
    pub websocket: WebSocketLimits,
    /// `[server.headers]` and `--header`: added to every response that
    /// lacks them (checked: valid, none that frames a response).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl std::ops::Deref for ServerConfig {
    type Target = ServerKeys;
    fn deref(&self) -> &ServerKeys {
        &self.keys
    }
}

/// `[server.tls]` resolved: the certificate set of the TLS binds, and the
/// sets of the `[server.tls.bind."ADDR"]` tables for their addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// `[server.tls]`'s own set: every TLS bind without a table.
    pub files: crate::tls::TlsFiles,
    /// Each `[server.tls.bind."ADDR"]`: its `bind` address and its set.
    pub per_bind: Vec<(BindAddr, crate::tls::TlsFiles)>,
}

impl TlsConfig {
    /// The set serving a TLS listener at `addr` (its address as configured,
    /// or an inherited socket's own): an index into [`TlsConfig::sets`], 0 for
    /// `[server.tls]`'s.
    pub fn set_of(&self, addr: Option<&BindAddr>) -> usize {
        addr.and_then(|addr| self.per_bind.iter().position(|(a, _)| a == addr))
            .map_or(0, |i| i + 1)
    }

    /// Each set with its name, for [`crate::tls::Tls::new`]: "default" for
    /// `[server.tls]`'s, else the address of its table.
    pub fn sets(&self) -> Vec<(String, crate::tls::TlsFiles)> {
        std::iter::once(("default".to_owned(), self.files.clone()))
            .chain(
                self.per_bind
                    .iter()
                    .map(|(addr, files)| (addr.to_string(), files.clone())),
            )
            .collect()
    }
}

/// `server.ws_*`: WebSocket keep-alive and the client message limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocketLimits {
    /// How often an open socket is pinged; `None`: never.
    pub ping_interval: Option<Duration>,
    /// How long a ping may go unanswered before the socket is closed with
    /// 1011 (> 0).
    pub ping_timeout: Duration,
    /// Largest client message (1 to 16 MiB); a bigger one closes with 1009.
    pub max_message: usize,
}

/// A value that must not show up in logs or debug output (the status
/// token): its `Debug` prints a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(super) String);

impl Secret {
    #[cfg(test)]
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// One listen address and where it was configured (for error messages).
#[derive(Debug, Clone)]
pub struct Bind {
    pub addr: BindAddr,
    /// e.g. "corral.toml:7 (key server.bind)", "--bind" or
    /// "default (no --bind or server.bind given)".
    pub origin: String,
}

#[derive(Debug, Clone)]
pub struct WorkersConfig {
    /// The plain keys (see `RawWorkers` in `raw.rs`), read through `Deref`.
    pub keys: WorkersKeys,
    /// At least 1.
    pub count: usize,
    /// Where `count` came from, for the start-up log and `corral check`:
    /// "--workers", "workers.count = \"auto\": affinity mask: 2 CPUs", ...
    pub count_origin: String,
    /// May be 0 (stop without waiting).
    pub graceful_timeout: Duration,
    /// gunicorn's `--worker-tmp-dir`: where the worker script's private
    /// folder is made, else `$TMPDIR` (then /dev/shm when that is
    /// read-only, as in a read-only container).
    pub tmp_dir: Option<PathBuf>,
    /// Delay before restarting a slot whose worker failed to boot or died
    /// soon after starting; doubles per consecutive failure. Longer than 0.
    pub restart_backoff: Duration,
    /// Cap on that delay. At least `restart_backoff`.
    pub restart_backoff_max: Duration,
    /// Requests after which a worker is recycled (replaced gracefully), plus
    /// a random 0..=`max_requests_jitter`; 0: never. `max_requests +
    /// max_requests_jitter` fits in a `u64`.
    pub max_requests: u64,
    /// Upper bound of the random extra requests added to `max_requests` per
    /// worker (ignored while `max_requests` is 0).
    pub max_requests_jitter: u64,
    /// RSS in bytes above which a worker is recycled gracefully; `None`: no
    /// limit. At least 16 MiB.
    pub max_memory: Option<u64>,
    /// Who the workers run as (`workers.user`, `workers.group`), looked up
    /// when the config is loaded; `None` (neither key set): corral's own
    /// user and groups.
    pub identity: Option<Identity>,
    /// Resource limits and umask of the workers (`[workers.limits]`).
    pub limits: Limits,
}

impl std::ops::Deref for WorkersConfig {
    type Target = WorkersKeys;
    fn deref(&self) -> &WorkersKeys {
        &self.keys
    }
}

/// The user and groups the workers run as, while corral keeps its own user
/// (root, to bind the ports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user's name (from `workers.user`, else corral's own user's name,
    /// or its uid when it has no name).
    pub user: String,
    /// From `workers.user`; corral's own uid when only `workers.group` is
    /// set.
    pub uid: u32,
    /// The primary group: from `workers.group`, else the user's.
    pub gid: u32,
    /// The supplementary groups (for setgroups(2)): those of `user` in the
    /// group database, `gid` included, as from getgrouplist(3) (initgroups);
    /// just `[gid]` when only `workers.group` is set.
    pub groups: Vec<u32>,
}

/// Resource limits and umask of the workers (`[workers.limits]`). Each
/// limit is both the soft and the hard limit; `None`: corral's own is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// RLIMIT_NOFILE (open files). At least 64.
    pub nofile: Option<u64>,
    /// RLIMIT_AS in bytes (address space). At least 16 MiB.
    pub address_space: Option<u64>,
    /// RLIMIT_CORE in bytes; 0 disables core dumps.
    pub core: Option<u64>,
    /// The umask. At most 0o777.
    pub umask: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// The plain keys (see `RawHealth` in `raw.rs`), read through `Deref`.
    pub keys: HealthKeys,
    /// Where the status server (/health/live, /health/ready, /status,
    /// /metrics) listens; `None`: no status server. Never one of
    /// `server.bind` (nor overlapping one on the same TCP port). Origins
    /// look like "corral.toml:12 (key health.status_bind)" or
    /// "--status-bind".
    pub status_bind: Option<Bind>,
    /// Workers that must be in service for /health/ready to answer 200; see
    /// [`MinReady::required`]. A count is between 1 and `workers.count`; a
    /// percentage between 1 and 100.
    pub min_ready: MinReady,
    /// The path ("/health/ready", maybe with a "?query") that corral GETs
    /// from each worker through its private channel before the worker
    /// enters service and every `probe_interval` after; 2xx means ready.
    /// `None`: no readiness probe. Starts with "/" and holds only visible
    /// ASCII, without '#'.
    pub ready_path: Option<String>,
    /// The bearer token /status and /metrics require: from
    /// `--status-token-file`, else `$CORRAL_STATUS_TOKEN`, else
    /// `health.status_token_file`, else `health.status_token`. At least 16
    /// bytes of visible ASCII. `None`: no token.
    pub status_token: Option<Secret>,
    /// The panic threshold (as in Envoy): when fewer workers than this are
    /// in service, requests go to every live worker rather than to none; see
    /// [`MinReady::required`]. Same bounds as `min_ready`.
    pub min_in_service: MinReady,
}

impl std::ops::Deref for HealthConfig {
    type Target = HealthKeys;
    fn deref(&self) -> &HealthKeys {
        &self.keys
    }
}

#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// The control socket (a Unix socket whose file permissions are the
    /// access control): absolute, at most 107 bytes. From `--socket`
    /// (relative to the cwd), else `control.socket` (relative to the config
    /// file's folder), else the default: `$RUNTIME_DIRECTORY/corral.sock`,
    /// else one per instance (`config/instance.rs`):
    /// `$XDG_RUNTIME_DIR/corral/NAME/corral.sock`,
    /// `/run/corral/NAME/corral.sock` as root, else
    /// `/tmp/corral-UID/NAME/corral.sock`. Its folder may not exist yet.
    pub socket: PathBuf,
    /// Neither `--socket` nor `control.socket` named it: on a read-only
    /// file system (a container's) corral then runs without one.
    pub is_default: bool,
}

#[derive(Debug, Clone)]
pub struct DeployConfig {
    /// The plain keys (see `RawDeploy` in `raw.rs`), read through `Deref`.
    pub keys: DeployKeys,
    /// How the code a generation runs is named (its revision).
    pub revision: RevisionSource,
    /// Where corral keeps what outlives it (the last known good revision):
    /// absolute. From `deploy.state_dir` (relative to the config file's
    /// folder), else the default: `$STATE_DIRECTORY`, else one folder per
    /// instance under `/var/lib/corral` as
    /// root, `$XDG_STATE_HOME/corral`, `$HOME/.local/state/corral` (a home
    /// of the user's own), else `/tmp/corral-UID-state`. It may not exist yet.
    pub state_dir: PathBuf,
    /// The command run when a reload (or the first start) fails to come up:
    /// the program, then its arguments. Never empty, and the program is not
    /// empty; a program path with '/' is absolute (resolved against the
    /// config file's folder), a bare name is looked up in `PATH`. No string
    /// holds a NUL byte. `None`: no hook.
    pub rollback_hook: Option<Vec<String>>,
    /// The built-in rollback run when a reload (or the first start) fails
    /// to come up, after `rollback_hook` when both are set. `GitReset` only
    /// with `revision` [`RevisionSource::Git`] or [`RevisionSource::Auto`];
    /// `Symlink` only with `app.chdir` set.
    pub rollback: Rollback,
    /// How a reload replaces the workers.
    pub strategy: Strategy,
    /// With [`Strategy::Rolling`], the most workers a reload may run beyond
    /// `workers.count` at any time. At least 1; ignored with
    /// [`Strategy::AllAtOnce`].
    pub max_surge: usize,
    /// Canary reloads (`deploy.canary_*`); `None`: a reload switches as
    /// soon as the new generation is in service.
    pub canary: Option<CanaryConfig>,
    /// `deploy.canary_sticky`: what keeps a client on one generation
    /// during a canary.
    pub canary_sticky: Sticky,
}

impl std::ops::Deref for DeployConfig {
    type Target = DeployKeys;
    fn deref(&self) -> &DeployKeys {
        &self.keys
    }
}

/// `deploy.canary_sticky`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Sticky {
    /// Each request on its own.
    #[default]
    None,
    ClientAddress,
    /// A header's value (the name in lower case).
    Header(String),
    /// A cookie's value.
    Cookie(String),
}

/// `deploy.canary_*`: the share of requests a new generation gets first,
/// and the rule it must pass ([`crate::canary::judge`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CanaryConfig {
    /// Percent of requests, 1 to 50.
    pub share: u32,
    pub thresholds: crate::canary::Thresholds,
}

/// The built-in rollback (`deploy.rollback`): what puts the last known good
/// code back on disk when a reload (or the first start) fails to come up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollback {
    /// The default: no built-in rollback.
    None,
    /// Reset the git checkout in the app folder (`app.chdir`, else the cwd)
    /// to the last known good commit (not HEAD~1).
    GitReset,
    /// Point the `current` symlink, the app folder (`app.chdir`) itself,
    /// back at the last good release.
    Symlink,
}

/// How a reload replaces the workers (`deploy.strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The default: the whole new generation boots beside the old one and
    /// takes over once all of it is in service.
    AllAtOnce,
    /// A few workers at a time, at most [`DeployConfig::max_surge`] beyond
    /// `workers.count`.
    Rolling,
}

/// How corral names the code a generation runs (`deploy.revision`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevisionSource {
    /// The default: whichever of the others fits the app folder (the
    /// runtime decides).
    Auto,
    /// The commit checked out in the app folder (`app.chdir`), from
    /// `git rev-parse HEAD`.
    Git,
    /// The resolved target of the app folder when it is a symlink, like
    /// `current -> releases/X`.
    Symlink,
    /// A command whose output is the revision: the program, then its
    /// arguments. Same rules as [`DeployConfig::rollback_hook`]: never
    /// empty, the program not empty, a program path with '/' absolute.
    Command(Vec<String>),
    /// No revision.
    None,
}
