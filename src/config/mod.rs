//! Configuration: the TOML file and the command line, merged and validated
//! into one resolved [`Config`] with every default filled in.
//!
//! INTERFACE CONTRACT (used by the rest of the binary; keep these names):
//! `config::load(&Overrides) -> Result<Config, ConfigError>`, where
//! [`Overrides`] are the flags of `corral run` (the command line flattens it);
//! `config::control_socket(config, socket) -> Result<PathBuf, ConfigError>`
//! for the client commands (`corral reload`, `scale`, `stop`), which need
//! only the control socket and no app.
//!
//! The flow is: read the file → parse it into the raw `Raw*` structs (serde,
//! `deny_unknown_fields`; the first syntax or type error stops here) → merge
//! the command line over it (flags, and the `CORRAL_*` variables clap read
//! for flags not given), fill the defaults (some from the environment:
//! `$PORT`, `$WEB_CONCURRENCY`, `$SCRIPT_NAME`, the usable CPUs) and check the values (every
//! problem is collected, then all are reported at once). Each problem names
//! the file, the line and the key (or the flag) and says how to fix it. The
//! `///` docs on the `Raw*` fields are the config reference;
//! `config/example.toml` shows every key with its default.
//!
//! Where the parts live: `units` parses the value types written as text in
//! the file and on the command line (durations, sizes, bind addresses,
//! trusted proxies);
//! `raw` holds the file format (the `Raw*` structs and their parsing);
//! `validate` merges the command line over the file, fills the defaults and
//! checks every value; `logs` does the same for `[log]` and the gunicorn
//! flags that sit beside corral's own (`--limit-request-*`, `-p`, `-k`,
//! `--preload`). This module holds the resolved types, the errors and
//! the pipeline that ties those steps together.

#[cfg(test)]
mod dropin_tests;
mod instance;
mod logs;
mod overrides;
#[cfg(test)]
mod proptests;
mod raw;
mod units;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use instance::{Place, SOCKET_NAME, running_sockets};
pub use logs::{AccessConfig, AccessTarget, HeadLimits, LogConfig};
pub use overrides::{LogFormat, LogLevel, Overrides, env_name, parse_duration, parse_worker_class};
use raw::{RawConfig, parse};
pub use units::{BindAddr, ByteSize, ForwardedAllow, HumanDuration, MinReady, WorkerCount};
pub(crate) use validate::check_env;
use validate::{Resolver, absolute};

/// The file read when no `--config` is given and it exists in the cwd.
const DEFAULT_FILE: &str = "corral.toml";

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
}

#[derive(Debug, Clone)]
pub struct AppConfig {
    /// "pkg.mod:callable" (callable defaults to "application" like gunicorn when
    /// the ":callable" part is missing).
    pub module: String,
    pub interface: Interface,
    /// Interpreter: `--python`, `app.python`, else the virtualenv corral is
    /// installed in, else `$VIRTUAL_ENV/bin/python`, else `python3` (see
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

/// The protocol between the worker and the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Interface {
    /// PEP 3333: `app(environ, start_response)`, run on the worker's threads.
    Wsgi,
    /// ASGI 3: `async app(scope, receive, send)`, run on an event loop.
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

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Never empty.
    pub bind: Vec<Bind>,
    pub backlog: u32,
    /// Idle time a keep-alive connection is kept open between requests (> 0).
    pub keepalive: Duration,
    /// The largest request head in bytes, counted exactly (request line,
    /// headers, final empty line). At least 8 KiB (hyper's smallest
    /// `max_buf_size`).
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    /// Longest a request body may go without a byte from the client (408
    /// and a CANCEL to the worker). Longer than 0.
    pub body_timeout: Duration,
    /// Longest a client may take no byte of its response before its request
    /// is cancelled and its connection closed. Longer than 0.
    pub send_timeout: Duration,
    /// On SIGTERM: not ready at once, but serving for this long before the
    /// graceful stop (0: the stop begins at once).
    pub shutdown_delay: Duration,
    /// Most client connections open at once on all binds together
    /// (WebSockets included); at the cap corral stops accepting. At least 1.
    pub max_connections: usize,
    /// Most requests waiting in corral for a free worker place; one more
    /// gets 503 with Retry-After at once, and a waiting one gets 503 after
    /// `workers.timeout`. 0: none waits (503 whenever every worker is full).
    pub max_queued: usize,
    /// Threads of corral's own async runtime (the HTTP front, the
    /// supervisor, the status server). At least 1: `server.io_threads = 0`
    /// (the default) is resolved at load time to half the CPUs this process
    /// may use (`std::thread::available_parallelism`), at least 1.
    pub io_threads: usize,
    /// corral itself runs as the workers' user once its sockets are bound.
    pub drop_privileges: bool,
    /// TCP peers whose X-Forwarded-For and X-Forwarded-Proto headers are
    /// trusted (`server.forwarded_allow_ips`); by default 127.0.0.1 and ::1.
    /// Connections on Unix sockets are always trusted.
    pub forwarded_allow_ips: ForwardedAllow,
    /// gunicorn's `limit_request_*` beside `max_header_bytes`.
    pub head_limits: HeadLimits,
    /// Where corral writes its pid, if anywhere.
    pub pid_file: Option<PathBuf>,
}

/// A value that must not show up in logs or debug output (the status
/// token): its `Debug` prints a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

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
    /// At least 1.
    pub count: usize,
    /// Where `count` came from, for the start-up log and `corral check`:
    /// "--workers", "workers.count = \"auto\": affinity mask: 2 CPUs", ...
    pub count_origin: String,
    /// Concurrent requests per WSGI worker (threads). At least 1.
    pub threads: usize,
    /// Most requests (open WebSockets and streaming responses included) one
    /// ASGI worker holds at once; the rest wait in corral. At least 1. WSGI
    /// workers take `threads` at a time (plus a short prefetch) instead.
    pub concurrency: usize,
    /// Per-request timeout (time to the response head). Longer than 0.
    pub timeout: Duration,
    /// May be 0 (stop without waiting).
    pub graceful_timeout: Duration,
    /// Longest a new worker may take to import the app and report ready
    /// before it counts as failed to boot. Longer than 0.
    pub boot_timeout: Duration,
    /// Delay before restarting a slot whose worker failed to boot or died
    /// soon after starting; doubles per consecutive failure. Longer than 0.
    pub restart_backoff: Duration,
    /// Cap on that delay. At least `restart_backoff`.
    pub restart_backoff_max: Duration,
    /// Longest a worker's interpreter may go without a heartbeat (a C call
    /// holding the GIL, a deadlock) before its stacks are dumped and it is
    /// replaced. Longer than 0.
    pub heartbeat_timeout: Duration,
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
    /// Time between two probes of a worker in service. Longer than 0.
    pub probe_interval: Duration,
    /// Longest one probe may take before it counts as failed. Longer than 0.
    pub probe_timeout: Duration,
    /// Failed probes in a row that take a worker out of service. At least 1.
    pub unhealthy_after: u32,
    /// The panic threshold (as in Envoy): when fewer workers than this are
    /// in service, requests go to every live worker rather than to none; see
    /// [`MinReady::required`]. Same bounds as `min_ready`.
    pub min_in_service: MinReady,
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
}

#[derive(Debug, Clone)]
pub struct DeployConfig {
    /// Longest a new generation started by a reload may take to be all in
    /// service before the reload counts as failed. Longer than 0.
    pub ready_timeout: Duration,
    /// How the code a generation runs is named (its revision).
    pub revision: RevisionSource,
    /// Where corral keeps what outlives it (the last known good revision):
    /// absolute. From `deploy.state_dir` (relative to the config file's
    /// folder), else the default: `$STATE_DIRECTORY`, else one folder per
    /// instance under `/var/lib/corral` as
    /// root, `$XDG_STATE_HOME/corral`, `$HOME/.local/state/corral`, else
    /// `/tmp/corral-UID-state`. It may not exist yet.
    pub state_dir: PathBuf,
    /// The command run when a reload (or the first start) fails to come up:
    /// the program, then its arguments. Never empty, and the program is not
    /// empty; a program path with '/' is absolute (resolved against the
    /// config file's folder), a bare name is looked up in `PATH`. No string
    /// holds a NUL byte. `None`: no hook.
    pub rollback_hook: Option<Vec<String>>,
    /// Longest a hook (`rollback_hook`) may run before it is killed. Longer
    /// than 0.
    pub hook_timeout: Duration,
    /// The built-in rollback run when a reload (or the first start) fails
    /// to come up, after `rollback_hook` when both are set. `GitReset` only
    /// with `revision` [`RevisionSource::Git`] or [`RevisionSource::Auto`];
    /// `Symlink` only with `app.chdir` set.
    pub rollback: Rollback,
    /// At a cold start where every worker fails to boot (none has come up
    /// yet), exit with code 3 instead of restarting them with backoff.
    pub exit_on_boot_failure: bool,
    /// How a reload replaces the workers.
    pub strategy: Strategy,
    /// With [`Strategy::Rolling`], the most workers a reload may run beyond
    /// `workers.count` at any time. At least 1; ignored with
    /// [`Strategy::AllAtOnce`].
    pub max_surge: usize,
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

/// Why the configuration could not be loaded. Printed as `error: {err}`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot find the current directory: {0}")]
    CurrentDir(#[source] std::io::Error),
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, unknown key, wrong type or unparsable value (the first one).
    #[error("{0}")]
    Parse(Problem),
    /// Values that parsed but make no sense; all of them.
    #[error("{}", render_problems(.0))]
    Validate(Vec<Problem>),
    /// A client command given neither a config file nor `--socket` found
    /// no running instance, or several.
    #[error("{}", instances_error(place, found))]
    Instances { place: Place, found: Vec<PathBuf> },
}

fn instances_error(place: &Place, found: &[PathBuf]) -> String {
    let root = match place {
        Place::Fixed(p) | Place::PerInstance(p) => p.display().to_string(),
    };
    if found.is_empty() {
        return format!(
            "no running corral found in {root} (and no corral.toml here): pass -c FILE (the config it runs with) or --socket PATH"
        );
    }
    let mut out = format!(
        "{} corral instances run here; pick one with -c FILE or --socket PATH:",
        found.len()
    );
    for p in found {
        out.push_str(&format!("\n  --socket {}", p.display()));
    }
    out
}

/// One thing wrong in the configuration, e.g.
/// `corral.toml:7: server.keepalive: invalid duration "5x": use ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// "corral.toml:7"; `None` for a flag or the config as a whole.
    pub location: Option<String>,
    /// The TOML key path ("server.bind") or the flag ("--workers").
    pub key: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(location) = &self.location {
            write!(f, "{location}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

fn render_problems(problems: &[Problem]) -> String {
    match problems {
        [one] => one.to_string(),
        many => {
            let mut out = format!("{} problems in the configuration:", many.len());
            for problem in many {
                out.push_str("\n  ");
                out.push_str(&problem.to_string());
            }
            out
        }
    }
}

/// A config file read into memory.
struct ConfigFile {
    /// As the user wrote it, for messages ("corral.toml").
    shown: String,
    /// Absolute.
    path: PathBuf,
    /// Folder that relative paths in the file are resolved against.
    dir: PathBuf,
    text: String,
}

impl ConfigFile {
    fn new(shown: &Path, cwd: &Path, text: String) -> ConfigFile {
        let path = absolute(cwd, shown);
        let dir = path
            .parent()
            .map_or_else(|| cwd.to_path_buf(), Path::to_path_buf);
        ConfigFile {
            shown: shown.display().to_string(),
            path,
            dir,
            text,
        }
    }

    /// "corral.toml:7" for a byte offset into the text.
    fn location(&self, offset: usize) -> String {
        let before = &self.text.as_bytes()[..offset.min(self.text.len())];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        format!("{}:{line}", self.shown)
    }

    /// The trimmed, non-empty line holding a byte offset.
    fn line_text(&self, offset: usize) -> Option<&str> {
        let offset = offset.min(self.text.len());
        let before = &self.text.as_bytes()[..offset];
        let start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = self.text.get(start..)?.lines().next()?.trim();
        (!line.is_empty()).then_some(line)
    }
}

/// What the defaults take from the process environment, read once (tests
/// give it directly).
struct Env {
    /// `$VIRTUAL_ENV`, for the default `app.python`.
    virtual_env: Option<PathBuf>,
    /// The virtualenv the running corral binary is installed in, for the
    /// default `app.python` (see [`installed_in_venv`]).
    installed_in: Option<PathBuf>,
    /// Where the default `control.socket` goes (see `instance.rs`).
    default_socket: Place,
    /// Where the default `deploy.state_dir` goes.
    default_state_dir: Place,
    /// The CPUs this process may use (its CPU affinity and cgroup quota,
    /// see [`crate::cpus`]), for `server.io_threads = 0`.
    cpus: usize,
    /// `$CORRAL_STATUS_TOKEN` (see [`HealthConfig::status_token`]).
    status_token: Option<String>,
    /// `$PORT`: the default bind is 0.0.0.0:$PORT when set.
    port: Option<String>,
    /// `$WEB_CONCURRENCY`: the default `workers.count` when set.
    web_concurrency: Option<String>,
    /// `$SCRIPT_NAME`: the default `app.root_path` when set (gunicorn).
    script_name: Option<String>,
    /// The CPUs for `workers.count = "auto"`, with the reason.
    usable_cpus: crate::cpus::Usable,
}

/// The interpreter `run` uses when none is configured (see
/// `validate::default_python`), for commands that run Python without a
/// config (`corral import-gunicorn`).
pub fn default_interpreter() -> PathBuf {
    let virtual_env = std::env::var_os("VIRTUAL_ENV").map(PathBuf::from);
    validate::default_python(installed_in_venv().as_deref(), virtual_env.as_deref()).0
}

/// The virtualenv this corral binary was installed into (by `pip install
/// corral`): the folder above the binary's own, when it holds the
/// `pyvenv.cfg` every virtualenv has and a `bin/python`. `/proc/self/exe`
/// names the binary itself, whatever link or `PATH` entry started it.
fn installed_in_venv() -> Option<PathBuf> {
    let exe = std::fs::read_link("/proc/self/exe").ok()?;
    let venv = exe.parent()?.parent()?;
    (venv.join("pyvenv.cfg").is_file() && venv.join("bin/python").exists())
        .then(|| venv.to_path_buf())
}

/// The environment variable that holds the status token.
pub const STATUS_TOKEN_ENV: &str = "CORRAL_STATUS_TOKEN";

impl Env {
    fn from_process() -> Env {
        let usable_cpus = crate::cpus::usable();
        let var = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        Env {
            virtual_env: std::env::var_os("VIRTUAL_ENV").map(PathBuf::from),
            installed_in: installed_in_venv(),
            default_socket: instance::default_socket(),
            default_state_dir: instance::default_state_dir(),
            cpus: usable_cpus.count,
            status_token: std::env::var(STATUS_TOKEN_ENV).ok(),
            port: var("PORT"),
            web_concurrency: var("WEB_CONCURRENCY"),
            script_name: var("SCRIPT_NAME"),
            usable_cpus,
        }
    }
}

/// Reads `--config FILE`, else `./corral.toml` when present, else nothing.
fn read_file(config: Option<&Path>, cwd: &Path) -> Result<Option<ConfigFile>, ConfigError> {
    match config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            Ok(Some(ConfigFile::new(path, cwd, text)))
        }
        None => match std::fs::read_to_string(cwd.join(DEFAULT_FILE)) {
            Ok(text) => Ok(Some(ConfigFile::new(Path::new(DEFAULT_FILE), cwd, text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => {
                let path = PathBuf::from(DEFAULT_FILE);
                Err(ConfigError::Read { path, source })
            }
        },
    }
}

/// Reads `--config FILE` (or `./corral.toml` when present), merges the
/// command line over it and validates the result.
pub fn load(args: &Overrides) -> Result<Config, ConfigError> {
    let cwd = std::env::current_dir().map_err(ConfigError::CurrentDir)?;
    let file = read_file(args.config.as_deref(), &cwd)?;
    resolve(args, file.as_ref(), &cwd, &Env::from_process())
}

/// The control socket of a running corral, for the client commands
/// (`corral reload`, `scale`, `stop`, `status`): `socket` (the `--socket`
/// flag, relative to the cwd) when given; else `[control] socket` of
/// `config` (or of `./corral.toml` when present), relative to that file's
/// folder; else that file's instance's default socket (see
/// [`ControlConfig::socket`]). Only the `[control]` section is checked, so
/// no app is needed; a file that cannot be read or parsed gives the same
/// errors as [`load`] (file, line, key). With neither, the one instance
/// running under the default folder; none or several is an error that
/// lists them.
pub fn control_socket(
    config: Option<&Path>,
    socket: Option<&Path>,
) -> Result<PathBuf, ConfigError> {
    let cwd = std::env::current_dir().map_err(ConfigError::CurrentDir)?;
    let file = match socket {
        Some(_) => None,
        None => read_file(config, &cwd)?,
    };
    if socket.is_none() && file.is_none() {
        return match running_sockets() {
            (_, found) if found.len() == 1 => Ok(found[0].clone()),
            (place, found) => Err(ConfigError::Instances { place, found }),
        };
    }
    let default = match &file {
        Some(f) => instance::default_socket().for_instance(
            &instance::name(Some(&f.path), &cwd, "", None),
            Some(SOCKET_NAME),
        ),
        None => PathBuf::new(),
    };
    resolve_socket(socket, file.as_ref(), &cwd, &default)
}

/// [`control_socket`] after reading. No I/O.
fn resolve_socket(
    socket: Option<&Path>,
    file: Option<&ConfigFile>,
    cwd: &Path,
    default: &Path,
) -> Result<PathBuf, ConfigError> {
    let raw = match file {
        Some(file) => parse(file).map_err(ConfigError::Parse)?,
        None => RawConfig::default(),
    };
    let mut r = Resolver {
        file,
        cwd,
        problems: Vec::new(),
        warnings: Vec::new(),
        from_env: &[],
    };
    let control = r.control(socket, raw.control, default);
    if r.problems.is_empty() {
        Ok(control.socket)
    } else {
        Err(ConfigError::Validate(r.problems))
    }
}

/// Everything after reading: parse, merge, fill defaults, validate. No I/O
/// but the user and group lookups of `workers.user` and `workers.group`.
fn resolve(
    args: &Overrides,
    file: Option<&ConfigFile>,
    cwd: &Path,
    env: &Env,
) -> Result<Config, ConfigError> {
    let raw = match file {
        Some(file) => parse(file).map_err(ConfigError::Parse)?,
        None => RawConfig::default(),
    };
    let mut r = Resolver {
        file,
        cwd,
        problems: Vec::new(),
        warnings: Vec::new(),
        from_env: &args.from_env,
    };
    // Whether `app.chdir` is set, even when [app] has problems of its own.
    let chdir_given = args.chdir.is_some() || raw.app.chdir.is_some();
    let app = r.app(args, raw.app, env);
    let server = r.server(args, raw.server, env);
    let workers = r.workers(args, raw.workers, env);
    let health = r.health(
        args,
        raw.health,
        &server,
        &workers,
        env.status_token.as_deref(),
    );
    let instance = instance::name(
        file.map(|f| f.path.as_path()),
        app.as_ref().and_then(|a| a.chdir.as_deref()).unwrap_or(cwd),
        app.as_ref().map_or("", |a| a.module.as_str()),
        server.bind.first().map(|b| &b.addr),
    );
    let socket = env
        .default_socket
        .for_instance(&instance, Some(SOCKET_NAME));
    let control = r.control(args.socket.as_deref(), raw.control, &socket);
    let state_dir = env.default_state_dir.for_instance(&instance, None);
    let deploy = r.deploy(raw.deploy, &state_dir, chdir_given);
    let log = r.log(args, raw.log);
    match app {
        Some(app) if r.problems.is_empty() => Ok(Config {
            source: file.map(|f| f.path.clone()),
            instance,
            app,
            server,
            workers,
            health,
            control,
            deploy,
            warnings: r.warnings,
            log,
        }),
        _ => Err(ConfigError::Validate(r.problems)),
    }
}

#[cfg(test)]
mod tests {
    use super::validate::DEFAULT_BIND;
    use super::*;

    /// The environment of the tests: no virtualenv, and the default socket
    /// and state folder of uid 1000 without a runtime or state directory,
    /// with HOME=/home/u, on 4 CPUs.
    pub(super) fn env() -> Env {
        Env {
            virtual_env: None,
            installed_in: None,
            default_socket: Place::Fixed("/tmp/corral-1000/corral.sock".into()),
            default_state_dir: Place::Fixed("/home/u/.local/state/corral".into()),
            cpus: 4,
            status_token: None,
            port: None,
            web_concurrency: None,
            script_name: None,
            usable_cpus: crate::cpus::Usable {
                count: 4,
                why: "affinity mask: 4 CPUs".into(),
            },
        }
    }

    /// Resolves `text` as "corral.toml" in /srv/app, run from /cwd.
    pub(super) fn resolve_text(text: &str, args: &Overrides) -> Result<Config, ConfigError> {
        let file = ConfigFile::new(Path::new("corral.toml"), Path::new("/srv/app"), text.into());
        resolve(args, Some(&file), Path::new("/cwd"), &env())
    }

    /// The default interpreter: the venv corral is installed in, then
    /// `$VIRTUAL_ENV`, then `python3`; a flag or the file always wins; the
    /// origin says which.
    #[test]
    fn the_default_interpreter_is_the_venv_corral_is_installed_in() {
        let args = Overrides {
            app: Some("main:app".into()),
            ..Overrides::default()
        };
        let both = Env {
            virtual_env: Some("/activated".into()),
            installed_in: Some("/srv/app/.venv".into()),
            ..env()
        };
        let app = resolve(&args, None, Path::new("/cwd"), &both).unwrap().app;
        assert_eq!(app.python, PathBuf::from("/srv/app/.venv/bin/python"));
        assert!(
            app.python_origin.contains("installed in (/srv/app/.venv)"),
            "{}",
            app.python_origin
        );
        let activated = Env {
            installed_in: None,
            ..both
        };
        let app = resolve(&args, None, Path::new("/cwd"), &activated)
            .unwrap()
            .app;
        assert_eq!(app.python, PathBuf::from("/activated/bin/python"));
        assert!(
            app.python_origin.starts_with("$VIRTUAL_ENV"),
            "{}",
            app.python_origin
        );
        let app = resolve(&args, None, Path::new("/cwd"), &env()).unwrap().app;
        assert_eq!(app.python, PathBuf::from("python3"));
        assert!(
            app.python_origin.starts_with("python3 on PATH"),
            "{}",
            app.python_origin
        );

        let installed = Env {
            installed_in: Some("/srv/app/.venv".into()),
            ..env()
        };
        let flag = Overrides {
            python: Some("/usr/bin/python3.12".into()),
            ..args.clone()
        };
        let app = resolve(&flag, None, Path::new("/cwd"), &installed)
            .unwrap()
            .app;
        assert_eq!(
            (app.python.to_str(), app.python_origin.as_str()),
            (Some("/usr/bin/python3.12"), "--python")
        );
        let file = ConfigFile::new(
            Path::new("corral.toml"),
            Path::new("/srv/app"),
            "[app]\npython = \"py/bin/python\"\n".into(),
        );
        let app = resolve(&args, Some(&file), Path::new("/cwd"), &installed)
            .unwrap()
            .app;
        assert_eq!(app.python, PathBuf::from("/srv/app/py/bin/python"));
        assert!(
            app.python_origin.contains("app.python"),
            "{}",
            app.python_origin
        );
    }

    #[test]
    fn defaults_without_a_file() {
        let args = Overrides {
            app: Some("main".into()),
            ..Overrides::default()
        };
        let venv = Env {
            virtual_env: Some("/venv".into()),
            installed_in: None,
            ..env()
        };
        let config = resolve(&args, None, Path::new("/cwd"), &venv).unwrap();
        assert_eq!(config.source, None);
        assert_eq!(config.app.module, "main:application");
        assert_eq!(config.app.interface, Interface::Auto);
        assert_eq!(config.app.python, PathBuf::from("/venv/bin/python"));
        assert_eq!(config.app.chdir, None);
        assert_eq!(config.server.bind.len(), 1);
        assert_eq!(config.server.bind[0].addr, BindAddr::Tcp(DEFAULT_BIND));
        assert_eq!(config.server.backlog, 2048);
        assert_eq!(config.server.keepalive, Duration::from_secs(5));
        assert_eq!(config.server.max_header_bytes, 64 * 1024);
        assert_eq!(config.server.max_body_bytes, 100 << 20);
        assert_eq!(config.server.max_queued, 1024);
        // Half of the 4 CPUs of `env()`.
        assert_eq!(config.server.io_threads, 2);
        assert_eq!(
            config.server.forwarded_allow_ips,
            ForwardedAllow::Networks(vec![
                "127.0.0.1/32".parse().unwrap(),
                "::1/128".parse().unwrap()
            ])
        );
        assert_eq!(config.workers.count, 1);
        assert_eq!(config.workers.threads, 1);
        assert_eq!(config.workers.concurrency, 1000);
        assert_eq!(config.workers.timeout, Duration::from_secs(30));
        assert_eq!(config.workers.graceful_timeout, Duration::from_secs(30));
        assert_eq!(config.workers.boot_timeout, Duration::from_secs(30));
        assert_eq!(config.workers.restart_backoff, Duration::from_millis(100));
        assert_eq!(config.workers.restart_backoff_max, Duration::from_secs(30));
        assert_eq!(config.workers.heartbeat_timeout, Duration::from_secs(30));
        assert_eq!(config.workers.max_requests, 0);
        assert_eq!(config.workers.max_requests_jitter, 0);
        assert_eq!(config.workers.max_memory, None);
        assert_eq!(config.workers.identity, None);
        assert_eq!(config.workers.limits, Limits::default());
        assert!(config.health.status_bind.is_none());
        assert_eq!(config.health.min_ready, MinReady::Count(1));
        assert_eq!(config.health.ready_path, None);
        assert_eq!(config.health.probe_interval, Duration::from_secs(10));
        assert_eq!(config.health.probe_timeout, Duration::from_secs(5));
        assert_eq!(config.health.unhealthy_after, 3);
        assert_eq!(config.health.min_in_service, MinReady::Percent(50));
        assert_eq!(
            config.control.socket,
            PathBuf::from("/tmp/corral-1000/corral.sock")
        );
        assert_eq!(config.deploy.ready_timeout, Duration::from_secs(60));
        assert_eq!(config.deploy.revision, RevisionSource::Auto);
        assert_eq!(
            config.deploy.state_dir,
            PathBuf::from("/home/u/.local/state/corral")
        );
        assert_eq!(config.deploy.rollback_hook, None);
        assert_eq!(config.deploy.hook_timeout, Duration::from_secs(60));
        assert_eq!(config.deploy.rollback, Rollback::None);
        assert!(!config.deploy.exit_on_boot_failure);
        assert_eq!(config.deploy.strategy, Strategy::AllAtOnce);
        assert_eq!(config.deploy.max_surge, 1);
        let config = resolve(&args, None, Path::new("/cwd"), &env()).unwrap();
        assert_eq!(config.app.python, PathBuf::from("python3"));
    }

    #[test]
    fn file_values_and_relative_paths() {
        let text = r#"
[app]
module = "pkg.web:app"
interface = "asgi"
python = ".venv/bin/python"
chdir = "src"
pythonpath = ["lib", "/abs"]
env = { A = "1" }

[server]
bind = ["0.0.0.0:9000", "unix:run/web.sock"]
keepalive = "1m30s"
max_body_bytes = 1024

[workers]
count = 4
timeout = "2m"
boot_timeout = "1m"
restart_backoff = "250ms"
restart_backoff_max = "10s"
heartbeat_timeout = "1m"
max_requests = 5000
max_requests_jitter = 500
max_memory = "1.5GiB"
user = "root"

[workers.limits]
nofile = 4096
umask = "022"

[health]
status_bind = "unix:run/status.sock"
min_ready = "75%"
ready_path = "/health/ready?full=1"
probe_interval = "2s"
probe_timeout = "500ms"
unhealthy_after = 1
min_in_service = 2
"#;
        let config = resolve_text(text, &Overrides::default()).unwrap();
        assert_eq!(
            config.app.python,
            PathBuf::from("/srv/app/.venv/bin/python")
        );
        assert_eq!(config.app.chdir, Some(PathBuf::from("/srv/app/src")));
        assert_eq!(
            config.app.pythonpath,
            [PathBuf::from("/srv/app/lib"), "/abs".into()]
        );
        assert_eq!(config.app.interface, Interface::Asgi);
        assert_eq!(
            config.server.bind[0].origin,
            "corral.toml:11 (key server.bind)"
        );
        assert_eq!(
            config.server.bind[1].addr,
            BindAddr::Unix("/srv/app/run/web.sock".into())
        );
        assert_eq!(config.server.keepalive, Duration::from_secs(90));
        assert_eq!(config.server.max_body_bytes, 1024);
        assert_eq!(config.workers.count, 4);
        assert_eq!(config.workers.timeout, Duration::from_secs(120));
        assert_eq!(config.workers.boot_timeout, Duration::from_secs(60));
        assert_eq!(config.workers.restart_backoff, Duration::from_millis(250));
        assert_eq!(config.workers.restart_backoff_max, Duration::from_secs(10));
        let status = config.health.status_bind.unwrap();
        assert_eq!(
            status.addr,
            BindAddr::Unix("/srv/app/run/status.sock".into())
        );
        assert_eq!(status.origin, "corral.toml:32 (key health.status_bind)");
        assert_eq!(config.health.min_ready, MinReady::Percent(75));
        assert_eq!(config.health.min_ready.required(config.workers.count), 3);
        assert_eq!(config.workers.heartbeat_timeout, Duration::from_secs(60));
        assert_eq!(config.workers.max_requests, 5000);
        assert_eq!(config.workers.max_requests_jitter, 500);
        assert_eq!(config.workers.max_memory, Some(3 << 29));
        let identity = config.workers.identity.unwrap();
        assert_eq!(
            (identity.user.as_str(), identity.uid, identity.gid),
            ("root", 0, 0)
        );
        assert_eq!(
            config.workers.limits,
            Limits {
                nofile: Some(4096),
                umask: Some(0o022),
                ..Limits::default()
            }
        );
        assert_eq!(
            config.health.ready_path.as_deref(),
            Some("/health/ready?full=1")
        );
        assert_eq!(config.health.probe_interval, Duration::from_secs(2));
        assert_eq!(config.health.probe_timeout, Duration::from_millis(500));
        assert_eq!(config.health.unhealthy_after, 1);
        assert_eq!(config.health.min_in_service, MinReady::Count(2));
    }

    #[test]
    fn flags_override_the_file() {
        let text = "[app]\nmodule = \"a:app\"\nenv = { A = \"file\", B = \"file\" }\n\
                    [server]\nbind = [\"0.0.0.0:9000\"]\n[workers]\ncount = 4\nboot_timeout = \"1m\"\nmax_requests = 10\nmax_requests_jitter = 2\n\
                    max_memory = \"1GiB\"\n\
                    [health]\nstatus_bind = \"127.0.0.1:9100\"\nmin_ready = 4\nready_path = \"/file\"\n";
        let args = Overrides {
            app: Some("b:app".into()),
            bind: vec!["unix:web.sock".parse().unwrap()],
            workers: Some(WorkerCount::Count(2)),
            chdir: Some("x".into()),
            python: Some("python3.12".into()),
            env: vec![("B".into(), "flag".into())],
            boot_timeout: Some(HumanDuration(Duration::from_secs(5))),
            status_bind: Some("unix:status.sock".parse().unwrap()),
            min_ready: Some(MinReady::Count(2)),
            ready_path: Some("/flag".into()),
            max_requests: Some(0),
            max_requests_jitter: Some(5),
            max_memory: Some(ByteSize(64 << 20)),
            ..Overrides::default()
        };
        let config = resolve_text(text, &args).unwrap();
        assert_eq!(config.app.module, "b:app");
        assert_eq!(config.app.chdir, Some(PathBuf::from("/cwd/x")));
        assert_eq!(config.app.python, PathBuf::from("python3.12"));
        assert_eq!(config.app.env["A"], "file");
        assert_eq!(config.app.env["B"], "flag");
        assert_eq!(config.server.bind.len(), 1);
        assert_eq!(
            config.server.bind[0].addr,
            BindAddr::Unix("/cwd/web.sock".into())
        );
        assert_eq!(config.server.bind[0].origin, "--bind");
        assert_eq!(config.workers.count, 2);
        assert_eq!(config.workers.boot_timeout, Duration::from_secs(5));
        let status = config.health.status_bind.unwrap();
        assert_eq!(status.addr, BindAddr::Unix("/cwd/status.sock".into()));
        assert_eq!(status.origin, "--status-bind");
        assert_eq!(config.health.min_ready, MinReady::Count(2));
        assert_eq!(config.health.ready_path.as_deref(), Some("/flag"));
        assert_eq!(config.workers.max_requests, 0);
        assert_eq!(config.workers.max_requests_jitter, 5);
        assert_eq!(config.workers.max_memory, Some(64 << 20));
    }

    #[test]
    fn concurrency_and_max_queued_flag_then_file_then_default() {
        let app = Overrides {
            app: Some("m:a".into()),
            ..Overrides::default()
        };
        let text = "[server]\nmax_queued = 0\n[workers]\nconcurrency = 64\n";
        let config = resolve_text(text, &app).unwrap();
        // 0 is allowed: no request ever waits.
        assert_eq!(config.server.max_queued, 0);
        assert_eq!(config.workers.concurrency, 64);
        let args = Overrides {
            concurrency: Some(1),
            max_queued: Some(10_000),
            ..app.clone()
        };
        let config = resolve_text(text, &args).unwrap();
        assert_eq!(config.server.max_queued, 10_000);
        assert_eq!(config.workers.concurrency, 1);
        let config = resolve_text("[workers]\nthreads = 4\n", &app).unwrap();
        assert_eq!(config.server.max_queued, 1024);
        assert_eq!(config.workers.concurrency, 1000);
    }

    #[test]
    fn io_threads_flag_then_file_then_half_the_cpus() {
        let app = Overrides {
            app: Some("m:a".into()),
            ..Overrides::default()
        };
        let text = "[server]\nio_threads = 3\n";
        assert_eq!(resolve_text(text, &app).unwrap().server.io_threads, 3);
        let args = Overrides {
            io_threads: Some(1),
            ..app.clone()
        };
        assert_eq!(resolve_text(text, &args).unwrap().server.io_threads, 1);
        // 0, written or left out, is resolved now: half the CPUs, at least 1.
        for text in ["[server]\nio_threads = 0\n", ""] {
            for (cpus, threads) in [(1, 1), (2, 1), (3, 1), (4, 2), (8, 4), (64, 32)] {
                let env = Env { cpus, ..env() };
                let file =
                    ConfigFile::new(Path::new("corral.toml"), Path::new("/srv"), text.into());
                let config = resolve(&app, Some(&file), Path::new("/cwd"), &env).unwrap();
                assert_eq!(config.server.io_threads, threads, "{cpus} CPUs, {text:?}");
            }
        }
        // The flag's 0 is automatic too, over a number in the file.
        let args = Overrides {
            io_threads: Some(0),
            ..app
        };
        assert_eq!(resolve_text(text, &args).unwrap().server.io_threads, 2);
    }

    #[test]
    fn forwarded_allow_ips_flag_then_file_then_default() {
        let app = Overrides {
            app: Some("m:a".into()),
            ..Overrides::default()
        };
        let allow = |text: &str, args: &Overrides| {
            resolve_text(text, args).unwrap().server.forwarded_allow_ips
        };
        let nets = |nets: &[&str]| {
            ForwardedAllow::Networks(nets.iter().map(|n| n.parse().unwrap()).collect())
        };
        let text =
            "[server]\nforwarded_allow_ips = [\"10.0.0.0/8\", \"fd00::/8\", \"192.0.2.1\"]\n";
        assert_eq!(
            allow(text, &app),
            nets(&["10.0.0.0/8", "fd00::/8", "192.0.2.1/32"])
        );
        assert_eq!(
            allow("[server]\nforwarded_allow_ips = [\"*\"]\n", &app),
            ForwardedAllow::Any
        );
        // An empty array trusts nobody (not the default).
        let nobody = allow("[server]\nforwarded_allow_ips = []\n", &app);
        assert_eq!(nobody, nets(&[]));
        assert!(!nobody.allows("127.0.0.1".parse().unwrap()));
        assert_eq!(allow("", &app), nets(&["127.0.0.1/32", "::1/128"]));
        // The flag (comma-separated, spaces allowed) wins over the file.
        let flag = |list: &str| Overrides {
            forwarded_allow_ips: Some(list.into()),
            ..app.clone()
        };
        assert_eq!(
            allow(text, &flag("127.0.0.1, ::ffff:10.1.1.1,fd00::/16")),
            nets(&["127.0.0.1/32", "10.1.1.1/32", "fd00::/16"])
        );
        assert_eq!(allow(text, &flag("*")), ForwardedAllow::Any);
        // "" (or only commas) trusts nobody.
        assert_eq!(allow(text, &flag("")), nets(&[]));
        assert_eq!(allow("", &flag(" , ")), nets(&[]));
    }

    #[test]
    fn deploy_revision_state_dir_and_hook() {
        let app = Overrides {
            app: Some("m:a".into()),
            ..Overrides::default()
        };
        let deploy = |text: &str| resolve_text(text, &app).unwrap().deploy;
        for (name, source) in [
            ("auto", RevisionSource::Auto),
            ("git", RevisionSource::Git),
            ("symlink", RevisionSource::Symlink),
            ("none", RevisionSource::None),
        ] {
            let text = format!("[deploy]\nrevision = \"{name}\"\n");
            assert_eq!(deploy(&text).revision, source, "{name}");
        }
        let text = r#"
[deploy]
revision = ["bin/../revision.sh", "--short", "./x"]
state_dir = "state"
rollback_hook = ["./hooks/rollback", "", "a b"]
hook_timeout = "1m30s"
"#;
        let config = deploy(text);
        // A relative program path is resolved against the file's folder;
        // the arguments are passed as they are.
        assert_eq!(
            config.revision,
            RevisionSource::Command(vec![
                "/srv/app/revision.sh".into(),
                "--short".into(),
                "./x".into()
            ])
        );
        assert_eq!(config.state_dir, PathBuf::from("/srv/app/state"));
        assert_eq!(
            config.rollback_hook,
            Some(vec![
                "/srv/app/hooks/rollback".into(),
                String::new(),
                "a b".into()
            ])
        );
        assert_eq!(config.hook_timeout, Duration::from_secs(90));
        // A bare program name stays for the PATH lookup; absolute paths stay.
        let text = "[deploy]\nrevision = [\"cat\", \"REVISION\"]\nstate_dir = \"/var/lib/x/\"\n\
                    rollback_hook = [\"/usr/local/bin/rollback\"]\n";
        let config = deploy(text);
        assert_eq!(
            config.revision,
            RevisionSource::Command(vec!["cat".into(), "REVISION".into()])
        );
        assert_eq!(config.state_dir, PathBuf::from("/var/lib/x"));
        assert_eq!(
            config.rollback_hook,
            Some(vec!["/usr/local/bin/rollback".into()])
        );
        // The default state folder comes from the environment.
        let systemd = Env {
            default_state_dir: Place::Fixed("/var/lib/app".into()),
            ..env()
        };
        let config = resolve(&app, None, Path::new("/cwd"), &systemd).unwrap();
        assert_eq!(config.deploy.state_dir, PathBuf::from("/var/lib/app"));
    }

    #[test]
    fn deploy_rollback_strategy_and_surge() {
        let app = Overrides {
            app: Some("m:a".into()),
            ..Overrides::default()
        };
        let deploy = |text: &str, args: &Overrides| resolve_text(text, args).unwrap().deploy;
        let text = r#"
[app]
chdir = "current"

[deploy]
rollback = "symlink"
rollback_hook = ["./notify.sh"]
exit_on_boot_failure = true
strategy = "rolling"
max_surge = 3
"#;
        let config = deploy(text, &app);
        assert_eq!(config.rollback, Rollback::Symlink);
        // A hook and a built-in rollback go together.
        assert_eq!(
            config.rollback_hook,
            Some(vec!["/srv/app/notify.sh".into()])
        );
        assert!(config.exit_on_boot_failure);
        assert_eq!(config.strategy, Strategy::Rolling);
        assert_eq!(config.max_surge, 3);
        // "symlink" takes the app folder from --chdir too.
        let args = Overrides {
            chdir: Some("/srv/app/current".into()),
            ..app.clone()
        };
        let config = deploy("[deploy]\nrollback = \"symlink\"\n", &args);
        assert_eq!(config.rollback, Rollback::Symlink);
        // "git-reset" with the default revision ("auto") or "git", with or
        // without app.chdir (the app folder is then the cwd).
        for text in [
            "[deploy]\nrollback = \"git-reset\"\n",
            "[deploy]\nrevision = \"git\"\nrollback = \"git-reset\"\n",
            "[deploy]\nrollback = \"git-reset\"\nrevision = \"auto\"\n",
            "[app]\nchdir = \"src\"\n[deploy]\nrollback = \"git-reset\"\n",
        ] {
            assert_eq!(deploy(text, &app).rollback, Rollback::GitReset, "{text}");
        }
        let config = deploy(
            "[deploy]\nrollback = \"none\"\nexit_on_boot_failure = false\n",
            &app,
        );
        assert_eq!(config.rollback, Rollback::None);
        assert!(!config.exit_on_boot_failure);
        // max_surge with all-at-once is kept but ignored; the default
        // strategy is all-at-once.
        let config = deploy("[deploy]\nmax_surge = 4\n", &app);
        assert_eq!(config.strategy, Strategy::AllAtOnce);
        assert_eq!(config.max_surge, 4);
        let config = deploy(
            "[deploy]\nstrategy = \"all-at-once\"\nmax_surge = 2\n",
            &app,
        );
        assert_eq!(config.strategy, Strategy::AllAtOnce);
        assert_eq!(config.max_surge, 2);
        // More than workers.count is fine too.
        let config = deploy(
            "[workers]\ncount = 2\n[deploy]\nstrategy = \"rolling\"\nmax_surge = 8\n",
            &app,
        );
        assert_eq!(config.strategy, Strategy::Rolling);
        assert_eq!(config.max_surge, 8);
    }

    #[test]
    fn control_socket_and_ready_timeout() {
        let app = Overrides {
            app: Some("m:a".into()),
            ..Overrides::default()
        };
        let text = "[control]\nsocket = \"run/../ctl.sock\"\n[deploy]\nready_timeout = \"2m\"\n";
        let config = resolve_text(text, &app).unwrap();
        assert_eq!(config.control.socket, PathBuf::from("/srv/app/ctl.sock"));
        assert_eq!(config.deploy.ready_timeout, Duration::from_secs(120));
        // The flag wins, relative to the cwd.
        let args = Overrides {
            socket: Some("ctl.sock".into()),
            ..app.clone()
        };
        let config = resolve_text(text, &args).unwrap();
        assert_eq!(config.control.socket, PathBuf::from("/cwd/ctl.sock"));
        let args = Overrides {
            socket: Some("/abs/ctl.sock".into()),
            ..app.clone()
        };
        let config = resolve(&args, None, Path::new("/cwd"), &env()).unwrap();
        assert_eq!(config.control.socket, PathBuf::from("/abs/ctl.sock"));
        // The default comes from the environment.
        let runtime = Env {
            default_socket: Place::Fixed("/run/app/corral.sock".into()),
            ..env()
        };
        let config = resolve(&app, None, Path::new("/cwd"), &runtime).unwrap();
        assert_eq!(config.control.socket, PathBuf::from("/run/app/corral.sock"));
    }

    #[test]
    fn each_instance_gets_its_own_socket_and_state_folder_by_default() {
        let shared = Env {
            default_socket: Place::PerInstance("/run/corral".into()),
            default_state_dir: Place::PerInstance("/var/lib/corral".into()),
            ..env()
        };
        let run = |app: &str, bind: &str| {
            let args = Overrides {
                app: Some(app.into()),
                bind: vec![bind.parse().unwrap()],
                ..Overrides::default()
            };
            resolve(&args, None, Path::new("/srv/api"), &shared).unwrap()
        };
        let a = run("main:app", "127.0.0.1:8000");
        let b = run("main:app", "127.0.0.1:8001");
        assert_ne!(a.instance, b.instance);
        assert_eq!(
            a.control.socket,
            Path::new("/run/corral")
                .join(&a.instance)
                .join("corral.sock")
        );
        assert_eq!(
            a.deploy.state_dir,
            Path::new("/var/lib/corral").join(&a.instance)
        );
        assert_ne!(a.control.socket, b.control.socket);
        assert_ne!(a.deploy.state_dir, b.deploy.state_dir);
        // The same command names the same instance again.
        assert_eq!(a.instance, run("main:app", "127.0.0.1:8000").instance);
        // A config file names it, whatever the flags say.
        let text = "[app]\nmodule = \"main:app\"\n";
        let file = ConfigFile::new(
            Path::new("corral.toml"),
            Path::new("/srv/shop"),
            text.into(),
        );
        let c = resolve(
            &Overrides::default(),
            Some(&file),
            Path::new("/cwd"),
            &shared,
        )
        .unwrap();
        assert!(c.instance.starts_with("shop-"), "{}", c.instance);
        assert_eq!(
            c.instance,
            instance::name(
                Some(Path::new("/srv/shop/corral.toml")),
                Path::new("/"),
                "",
                None
            )
        );
    }

    #[test]
    fn the_client_finds_the_socket_without_an_app() {
        let default = Path::new("/tmp/corral-1000/corral.sock");
        let find = |socket: Option<&str>, text: Option<&str>| {
            let file = text.map(|text| {
                ConfigFile::new(Path::new("corral.toml"), Path::new("/srv/app"), text.into())
            });
            resolve_socket(
                socket.map(Path::new),
                file.as_ref(),
                Path::new("/cwd"),
                default,
            )
            .map_err(|e| e.to_string())
        };
        let file = "[control]\nsocket = \"ctl.sock\"\n";
        assert_eq!(find(None, Some(file)), Ok("/srv/app/ctl.sock".into()));
        assert_eq!(find(Some("my.sock"), Some(file)), Ok("/cwd/my.sock".into()));
        assert_eq!(find(None, None), Ok(default.into()));
        // No [app] module, and problems outside [control] do not matter.
        let other = "[workers]\ncount = 0\n[health]\nmin_ready = 5\n";
        assert_eq!(find(None, Some(other)), Ok(default.into()));
        // A file that does not parse, or a bad socket, is reported as usual.
        assert_eq!(
            find(None, Some("[control]\nsokcet = \"x\"\n")),
            Err("corral.toml:2: control.sokcet: unknown key `sokcet`, expected `socket`".into())
        );
        assert_eq!(
            find(None, Some("[workers]\nthreads = \"4\"\n")),
            Err("corral.toml:2: workers.threads: invalid type: string \"4\", expected usize; for example: threads = 1".into())
        );
        assert_eq!(
            find(None, Some("[control]\n\nsocket = \"\"\n")),
            Err("corral.toml:3: control.socket: is empty: give a path or leave the key out".into())
        );
    }

    #[test]
    fn control_socket_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prod.toml");
        std::fs::write(&config, "[control]\nsocket = \"run/ctl.sock\"\n").unwrap();
        assert_eq!(
            control_socket(Some(&config), None).unwrap(),
            dir.path().join("run/ctl.sock")
        );
        // --socket wins, and the file is not even read.
        let missing = dir.path().join("missing.toml");
        assert_eq!(
            control_socket(Some(&missing), Some(Path::new("/abs/ctl.sock"))).unwrap(),
            PathBuf::from("/abs/ctl.sock")
        );
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            control_socket(Some(&config), Some(Path::new("rel.sock"))).unwrap(),
            cwd.join("rel.sock")
        );
        let err = control_socket(Some(&missing), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("cannot read config file {}: ", missing.display())),
            "{err}"
        );
        std::fs::write(&config, "[control]\nsocket = 1\n").unwrap();
        let err = control_socket(Some(&config), None).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "prod.toml:2: control.socket: invalid type: integer `1`, expected a string; put the value in quotes"
            ),
            "{err}"
        );
    }
}
