//! Merging and checking: the command line over the raw file, every default
//! filled in and every value checked, collecting all problems with where
//! each value came from ([`At`]: a file line and key, or a flag) and how to
//! fix it. Also the helpers that check app and environment names and make
//! paths absolute.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use nix::unistd::{Gid, Group, Uid, User};
use toml::Spanned;

use super::raw::{
    RawApp, RawControl, RawDeploy, RawHealth, RawLimits, RawServer, RawWorkers, StringOrArray,
};
use super::{
    AppConfig, Bind, BindAddr, ByteSize, ConfigFile, ControlConfig, DEFAULT_FILE, DeployConfig,
    Env, EnvAllow, ForwardedAllow, HealthConfig, HumanDuration, Identity, Interface, Limits,
    MinReady, OLD_BASE_ENV, Problem, RevisionSource, Rollback, Secret, ServerConfig, Strategy,
    WorkerCount, WorkersConfig, is_corral_own_env,
};
use crate::cli::RunArgs;

/// gunicorn's default listen address.
pub(super) const DEFAULT_BIND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8000);
/// hyper refuses (panics on) a smaller read buffer than this.
const MIN_HEADER_BYTES: u64 = 8 * 1024;
/// The default `server.body_timeout` and `server.send_timeout` (see their
/// docs in `raw` for why).
const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
/// The default `server.max_connections`.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Shortest status token: 16 characters of visible ASCII.
const MIN_TOKEN_LEN: usize = 16;
/// Smallest `workers.max_memory`: a Python interpreter alone uses about
/// 10 MiB, so a lower limit would recycle every worker at once (and a plain
/// number, which is bytes, is most likely a missing unit).
const MIN_MAX_MEMORY: u64 = 16 << 20;
/// Smallest `workers.limits.nofile`: a worker's interpreter, its channel
/// to corral and the app's files and sockets all need file descriptors.
const MIN_NOFILE: u64 = 64;
/// Smallest `workers.limits.address_space`: a Python interpreter alone maps
/// more than that (and a plain number, which is bytes, is most likely a
/// missing unit).
const MIN_ADDRESS_SPACE: u64 = 16 << 20;
/// Longest Unix socket path: `sun_path` holds 108 bytes with the final NUL.
const MAX_SOCKET_PATH: usize = 107;

/// The threads of corral's own runtime for `server.io_threads = 0`: half
/// of `cpus`, at least 1. The other half is left for the Python workers,
/// which do most of the work; on 2 CPUs one front thread instead of two
/// served 8-10% more requests/s (fewer wake-ups across threads).
pub(super) fn auto_io_threads(cpus: usize) -> usize {
    (cpus / 2).max(1)
}

/// The default `server.forwarded_allow_ips`: a proxy on the same machine
/// (gunicorn and uvicorn trust 127.0.0.1; ::1 is the same over IPv6).
fn default_forwarded_allow() -> ForwardedAllow {
    ForwardedAllow::Networks(vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST).into(),
        IpAddr::V6(Ipv6Addr::LOCALHOST).into(),
    ])
}

/// Where a value came from, to point a problem at it.
pub(super) struct At {
    location: Option<String>,
    key: String,
}

impl At {
    pub(super) fn flag(flag: &str) -> At {
        At {
            location: None,
            key: flag.to_owned(),
        }
    }

    /// "corral.toml:7 (key server.bind)" or "--bind", for [`Bind::origin`].
    fn origin(&self) -> String {
        match &self.location {
            Some(location) => format!("{location} (key {})", self.key),
            None => self.key.clone(),
        }
    }
}

/// Merges one raw file with the command line and collects problems.
pub(super) struct Resolver<'a> {
    pub(super) file: Option<&'a ConfigFile>,
    pub(super) cwd: &'a Path,
    pub(super) problems: Vec<Problem>,
    pub(super) warnings: Vec<String>,
    /// The flags ("--workers", "APP") whose value came from the
    /// environment (`CORRAL_WORKERS`), so that a problem names the variable.
    pub(super) from_env: &'a [String],
}

impl Resolver<'_> {
    pub(super) fn fail(&mut self, at: &At, message: impl Into<String>) {
        self.problems.push(Problem {
            location: at.location.clone(),
            key: Some(at.key.clone()),
            message: message.into(),
        });
    }

    /// A flag, or its `CORRAL_*` variable when that is where the value came
    /// from.
    fn flag(&self, flag: &str) -> At {
        if self.from_env.iter().any(|f| f == flag) {
            return At::flag(&crate::cli::env_name(flag));
        }
        At::flag(flag)
    }

    pub(super) fn in_file(&self, span: Range<usize>, key: &str) -> At {
        At {
            location: self.file.map(|f| f.location(span.start)),
            key: key.to_owned(),
        }
    }

    /// The folder relative paths in the file are resolved against.
    pub(super) fn file_dir(&self) -> &Path {
        self.file.map_or(self.cwd, |f| &f.dir)
    }

    /// The flag's value, else the file's, else the default.
    pub(super) fn pick<T: Clone>(
        &self,
        flag: (Option<&T>, &str),
        file: (Option<&Spanned<T>>, &str),
        default: T,
    ) -> (T, At) {
        match (flag.0, file.0) {
            (Some(v), _) => (v.clone(), self.flag(flag.1)),
            (None, Some(v)) => (v.get_ref().clone(), self.in_file(v.span(), file.1)),
            (None, None) => (default, At::flag(file.1)),
        }
    }

    /// A path from the file, checked non-empty and made absolute.
    fn file_path(&mut self, value: &Spanned<String>, key: &str) -> Option<PathBuf> {
        if value.get_ref().is_empty() {
            let at = self.in_file(value.span(), key);
            self.fail(&at, "is empty: give a path or leave the key out");
            return None;
        }
        Some(absolute(self.file_dir(), Path::new(value.get_ref())))
    }

    pub(super) fn app(&mut self, args: &RunArgs, raw: RawApp, env: &Env) -> Option<AppConfig> {
        let virtual_env = env.virtual_env.as_deref();
        let script_name = env.script_name.clone();
        let module = match (&args.app, &raw.module) {
            (Some(m), _) => Some((m.clone(), self.flag("APP"))),
            (None, Some(m)) => Some((m.get_ref().clone(), self.in_file(m.span(), "app.module"))),
            (None, None) => None,
        };
        let module = match module {
            None => {
                let file = self.file.map_or(DEFAULT_FILE, |f| &f.shown);
                self.problems.push(Problem {
                    location: None,
                    key: None,
                    message: format!(
                        "no app given: pass it as `corral main:app` or set [app] module in {file}"
                    ),
                });
                None
            }
            Some((module, at)) => check_module(&module)
                .map_err(|message| self.fail(&at, message))
                .ok(),
        };

        let interface_flag = self.gunicorn_flags(args);
        let (interface, _) = self.pick(
            (interface_flag.as_ref(), "--interface"),
            (None, "app.interface"),
            raw.interface.unwrap_or(Interface::Auto),
        );

        let python = match (&args.python, &raw.python) {
            (Some(p), _) => Some((command_path(self.cwd, p), self.flag("--python").origin())),
            (None, Some(p)) if p.get_ref().is_empty() => {
                let at = self.in_file(p.span(), "app.python");
                self.fail(
                    &at,
                    "is empty: give an interpreter like \"python3\" or leave the key out",
                );
                None
            }
            (None, Some(p)) => Some((
                command_path(self.file_dir(), Path::new(p.get_ref())),
                self.in_file(p.span(), "app.python").origin(),
            )),
            (None, None) => Some(default_python(env.installed_in.as_deref(), virtual_env)),
        };
        let (python, python_origin) = python.unzip();

        let chdir = match (&args.chdir, &raw.chdir) {
            (Some(dir), _) => Some(absolute(self.cwd, dir)),
            (None, Some(dir)) => self.file_path(dir, "app.chdir"),
            (None, None) => None,
        };

        let pythonpath = if args.pythonpath.is_empty() {
            let mut paths = Vec::new();
            for p in &raw.pythonpath {
                paths.extend(self.file_path(p, "app.pythonpath"));
            }
            paths
        } else {
            args.pythonpath
                .iter()
                .map(|p| absolute(self.cwd, p))
                .collect()
        };

        let mut env = BTreeMap::new();
        for (key, value) in &raw.env {
            let at = self.in_file(value.span(), &format!("app.env.{key}"));
            match check_env(key, value.get_ref()) {
                Ok(()) => drop(env.insert(key.clone(), value.get_ref().clone())),
                Err(message) => self.fail(&at, message),
            }
        }
        for (key, value) in &args.env {
            env.insert(key.clone(), value.clone());
        }

        let env_allow = self.env_allow(raw.env_allow, raw.pass_env);

        let (factory, factory_at) = match (args.factory, &raw.factory) {
            (true, _) => (true, Some(self.flag("--factory"))),
            (false, Some(f)) => (*f.get_ref(), Some(self.in_file(f.span(), "app.factory"))),
            (false, None) => (false, None),
        };
        if let (true, Some(module), Some(at)) = (factory, &module, factory_at)
            && module.contains('(')
        {
            let message = format!(
                "\"{module}\" already calls its factory with arguments: drop {} or the parentheses",
                if at.location.is_some() {
                    "`factory = true`"
                } else {
                    "--factory"
                }
            );
            self.fail(&at, message);
        }

        let root_path = match (&args.root_path, &raw.root_path) {
            (Some(p), _) => Some((p.clone(), self.flag("--root-path"))),
            (None, Some(p)) => Some((p.get_ref().clone(), self.in_file(p.span(), "app.root_path"))),
            (None, None) => script_name.map(|p| (p, At::flag("SCRIPT_NAME (environment)"))),
        };
        let root_path = match root_path {
            None => String::new(),
            Some((path, at)) => check_root_path(&path).unwrap_or_else(|message| {
                self.fail(&at, message);
                String::new()
            }),
        };

        Some(AppConfig {
            module: module?,
            interface,
            python: python?,
            python_origin: python_origin?,
            chdir,
            pythonpath,
            env,
            env_allow,
            factory,
            root_path,
        })
    }

    /// `app.env_allow`, or the deprecated `app.pass_env` read as one.
    fn env_allow(
        &mut self,
        allow: Option<Spanned<Vec<Spanned<String>>>>,
        pass_env: Option<Spanned<Vec<String>>>,
    ) -> Option<EnvAllow> {
        if let (Some(_), Some(pass)) = (&allow, &pass_env) {
            let at = self.in_file(pass.span(), "app.pass_env");
            self.fail(
                &at,
                "is the old name of env_allow: move its names into env_allow and remove it",
            );
            return None;
        }
        if let Some(pass) = pass_env {
            let at = self.in_file(pass.span(), "app.pass_env");
            let names = pass.into_inner();
            if names.iter().any(|n| n == "*") {
                self.warnings.push(format!(
                    "{}: pass_env = [\"*\"] is the default now (workers inherit corral's environment): remove it",
                    at.origin()
                ));
                return None;
            }
            let mut allowed: Vec<String> = OLD_BASE_ENV.iter().map(|n| (*n).to_owned()).collect();
            allowed.extend(names.iter().cloned());
            let list = allowed
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ");
            self.warnings.push(format!(
                "{}: pass_env is deprecated: workers now inherit corral's whole environment; to keep \
                 this file's allowlist write env_allow = [{list}], or remove pass_env to pass everything",
                at.origin()
            ));
            return Some(EnvAllow(allowed));
        }
        let allow = allow?;
        let mut names = Vec::new();
        for name in allow.into_inner() {
            let at = self.in_file(name.span(), "app.env_allow");
            let text = name.into_inner();
            if text.is_empty() || text.contains(['=', '\0']) {
                self.fail(
                    &at,
                    format!(
                        "\"{}\" is not a variable name or pattern: write names like \"DATABASE_URL\" or patterns like \"LC_*\"",
                        text.escape_default()
                    ),
                );
            } else if is_corral_own_env(&text) {
                self.fail(
                    &at,
                    format!(
                        "{text} belongs to corral or its service manager and never reaches a worker: remove it (set a value for the workers in [app.env] instead)"
                    ),
                );
            } else {
                names.push(text);
            }
        }
        Some(EnvAllow(names))
    }

    /// `env`: `$PORT` for the default bind, the CPUs this process may use
    /// for `io_threads = 0`.
    pub(super) fn server(&mut self, args: &RunArgs, raw: RawServer, env: &Env) -> ServerConfig {
        let cpus = env.cpus;
        let mut bind = Vec::new();
        if !args.bind.is_empty() {
            for addr in &args.bind {
                let addr = match addr {
                    BindAddr::Unix(path) => BindAddr::Unix(absolute(self.cwd, path)),
                    tcp => tcp.clone(),
                };
                bind.push((addr, self.flag("--bind")));
            }
        } else if let Some(list) = &raw.bind {
            if list.get_ref().is_empty() {
                let at = self.in_file(list.span(), "server.bind");
                self.fail(&at, "is empty: list at least one address like [\"127.0.0.1:8000\"], or leave the key out for the default 127.0.0.1:8000");
            }
            for entry in list.get_ref() {
                let at = self.in_file(entry.span(), "server.bind");
                match entry.get_ref().parse::<BindAddr>() {
                    Ok(BindAddr::Unix(path)) => {
                        bind.push((BindAddr::Unix(absolute(self.file_dir(), &path)), at))
                    }
                    Ok(tcp) => bind.push((tcp, at)),
                    Err(message) => self.fail(&at, message),
                }
            }
        }
        let mut seen: Vec<Bind> = Vec::new();
        for (addr, at) in bind {
            if let Some(first) = seen.iter().find(|b| b.addr == addr) {
                let message = format!("{addr} is listed twice (first at {})", first.origin);
                self.fail(&at, message);
                continue;
            }
            let origin = at.origin();
            seen.push(Bind { addr, origin });
        }
        if seen.is_empty() && args.bind.is_empty() && raw.bind.is_none() {
            match env.port.as_deref().map(str::trim) {
                // As gunicorn and uvicorn do on a PaaS: all interfaces.
                Some(port) => match port.parse::<u16>() {
                    Ok(port) => seen.push(Bind {
                        addr: BindAddr::Tcp(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port)),
                        origin: "PORT (environment; no --bind or server.bind given)".to_owned(),
                    }),
                    Err(_) => self.fail(
                        &At::flag("PORT (environment)"),
                        format!(
                            "\"{}\" is not a port number (0 to 65535); it is used because no --bind or server.bind is given: fix or unset PORT, or give --bind",
                            port.escape_default()
                        ),
                    ),
                },
                None => seen.push(Bind {
                    addr: BindAddr::Tcp(DEFAULT_BIND),
                    origin: "default (no --bind or server.bind given)".to_owned(),
                }),
            }
        }

        let (backlog, at) = self.pick(
            (args.backlog.as_ref(), "--backlog"),
            (raw.backlog.as_ref(), "server.backlog"),
            2048,
        );
        if backlog == 0 {
            self.fail(&at, "must be at least 1, like 2048");
        }
        let (keepalive, at) = self.pick(
            (args.keepalive.as_ref(), "--keepalive"),
            (raw.keepalive.as_ref(), "server.keepalive"),
            HumanDuration(Duration::from_secs(5)),
        );
        if keepalive.0.is_zero() {
            self.fail(&at, "must be longer than 0s, like \"5s\"");
        }
        let (max_header_bytes, at) = self.pick(
            (args.max_header_bytes.as_ref(), "--max-header-bytes"),
            (raw.max_header_bytes.as_ref(), "server.max_header_bytes"),
            ByteSize(64 * 1024),
        );
        if max_header_bytes.0 < MIN_HEADER_BYTES {
            self.fail(&at, "must be at least \"8KiB\", like \"64KiB\"");
        }
        let (max_body_bytes, _) = self.pick(
            (args.max_body_bytes.as_ref(), "--max-body-bytes"),
            (raw.max_body_bytes.as_ref(), "server.max_body_bytes"),
            ByteSize(100 * 1024 * 1024),
        );
        let (body_timeout, at) = self.pick(
            (args.body_timeout.as_ref(), "--body-timeout"),
            (raw.body_timeout.as_ref(), "server.body_timeout"),
            HumanDuration(DEFAULT_CLIENT_TIMEOUT),
        );
        if body_timeout.0.is_zero() {
            self.fail(&at, "must be longer than 0s, like \"20s\"");
        }
        let (send_timeout, at) = self.pick(
            (args.send_timeout.as_ref(), "--send-timeout"),
            (raw.send_timeout.as_ref(), "server.send_timeout"),
            HumanDuration(DEFAULT_CLIENT_TIMEOUT),
        );
        if send_timeout.0.is_zero() {
            self.fail(&at, "must be longer than 0s, like \"20s\"");
        }
        let (shutdown_delay, _) = self.pick(
            (args.shutdown_delay.as_ref(), "--shutdown-delay"),
            (raw.shutdown_delay.as_ref(), "server.shutdown_delay"),
            HumanDuration(Duration::ZERO),
        );
        let (max_connections, at) = self.pick(
            (args.max_connections.as_ref(), "--max-connections"),
            (raw.max_connections.as_ref(), "server.max_connections"),
            DEFAULT_MAX_CONNECTIONS,
        );
        if max_connections == 0 {
            self.fail(
                &at,
                "must be at least 1 (it is the number of client connections open at once), \
                 like 10000",
            );
        }
        let (max_queued, _) = self.pick(
            (args.max_queued.as_ref(), "--max-queued"),
            (raw.max_queued.as_ref(), "server.max_queued"),
            1024,
        );
        let (io_threads, _) = self.pick(
            (args.io_threads.as_ref(), "--io-threads"),
            (raw.io_threads.as_ref(), "server.io_threads"),
            0,
        );
        let forwarded_allow_ips = self.forwarded_allow(
            args.forwarded_allow_ips.as_deref(),
            raw.forwarded_allow_ips.as_ref(),
        );
        let head_limits = self.head_limits(args, &raw);
        let pid_file = self.pid_file(args, &raw);
        ServerConfig {
            bind: seen,
            backlog,
            keepalive: keepalive.0,
            max_header_bytes: usize::try_from(max_header_bytes.0).unwrap_or(usize::MAX),
            max_body_bytes: max_body_bytes.0,
            body_timeout: body_timeout.0,
            send_timeout: send_timeout.0,
            shutdown_delay: shutdown_delay.0,
            max_connections,
            max_queued,
            io_threads: match io_threads {
                0 => auto_io_threads(cpus),
                n => n,
            },
            drop_privileges: raw.drop_privileges.map(|d| d.into_inner()).unwrap_or(false),
            forwarded_allow_ips,
            head_limits,
            pid_file,
        }
    }

    /// `server.forwarded_allow_ips`: the flag's comma-separated list (empty
    /// items skipped, so "" trusts nobody), else the file's array, else
    /// [`default_forwarded_allow`]. Each bad entry is reported.
    fn forwarded_allow(
        &mut self,
        flag: Option<&str>,
        file: Option<&Spanned<Vec<Spanned<String>>>>,
    ) -> ForwardedAllow {
        let mut allow = ForwardedAllow::Networks(Vec::new());
        match (flag, file) {
            (Some(list), _) => {
                let entries = list.split(',').map(str::trim).filter(|e| !e.is_empty());
                for entry in entries {
                    if let Err(message) = allow.add(entry) {
                        self.fail(&self.flag("--forwarded-allow-ips"), message);
                    }
                }
            }
            (None, Some(list)) => {
                for entry in list.get_ref() {
                    if let Err(message) = allow.add(entry.get_ref()) {
                        let at = self.in_file(entry.span(), "server.forwarded_allow_ips");
                        self.fail(&at, message);
                    }
                }
            }
            (None, None) => allow = default_forwarded_allow(),
        }
        allow
    }

    /// `env`: `$WEB_CONCURRENCY` and the CPUs for `count = "auto"`.
    pub(super) fn workers(&mut self, args: &RunArgs, raw: RawWorkers, env: &Env) -> WorkersConfig {
        let web_concurrency = env
            .web_concurrency
            .as_deref()
            .map(|text| text.parse::<WorkerCount>());
        let env_at = || At::flag("WEB_CONCURRENCY (environment)");
        let (count, at) = match (args.workers, &raw.count, web_concurrency) {
            (Some(n), _, _) => (Some(n), self.flag("--workers")),
            (None, Some(n), _) => (Some(*n.get_ref()), self.in_file(n.span(), "workers.count")),
            (None, None, Some(Ok(n))) => (Some(n), env_at()),
            (None, None, Some(Err(message))) => {
                let message =
                    format!("{message}; it is used because no --workers or workers.count is given");
                self.fail(&env_at(), message);
                (None, env_at())
            }
            (None, None, None) => (
                Some(WorkerCount::Count(1)),
                At::flag("default: no --workers, workers.count or WEB_CONCURRENCY given"),
            ),
        };
        let (count, count_origin) = match count {
            Some(WorkerCount::Count(n)) => (n, at.origin()),
            Some(WorkerCount::Auto) => (
                env.usable_cpus.count,
                format!("{} = auto: {}", at.origin(), env.usable_cpus.why),
            ),
            None => (1, at.origin()),
        };
        if count == 0 {
            self.fail(
                &at,
                "must be at least 1 (it is the number of worker processes), or \"auto\"",
            );
        }
        let (threads, at) = self.pick(
            (args.threads.as_ref(), "--threads"),
            (raw.threads.as_ref(), "workers.threads"),
            1,
        );
        if threads == 0 {
            self.fail(
                &at,
                "must be at least 1 (it is the number of threads per worker)",
            );
        }
        let (concurrency, at) = self.pick(
            (args.concurrency.as_ref(), "--concurrency"),
            (raw.concurrency.as_ref(), "workers.concurrency"),
            1000,
        );
        if concurrency == 0 {
            self.fail(
                &at,
                "must be at least 1 (it is the number of requests one ASGI worker holds at \
                 once), like 1000",
            );
        }
        let (timeout, at) = self.pick(
            (args.timeout.as_ref(), "--timeout"),
            (raw.timeout.as_ref(), "workers.timeout"),
            HumanDuration(Duration::from_secs(30)),
        );
        if timeout.0.is_zero() {
            self.fail(&at, "must be longer than 0s, like \"30s\"");
        }
        let (graceful_timeout, _) = self.pick(
            (args.graceful_timeout.as_ref(), "--graceful-timeout"),
            (raw.graceful_timeout.as_ref(), "workers.graceful_timeout"),
            HumanDuration(Duration::from_secs(30)),
        );
        let (boot_timeout, at) = self.pick(
            (args.boot_timeout.as_ref(), "--boot-timeout"),
            (raw.boot_timeout.as_ref(), "workers.boot_timeout"),
            HumanDuration(Duration::from_secs(30)),
        );
        if boot_timeout.0.is_zero() {
            self.fail(&at, "must be longer than 0s, like \"30s\"");
        }
        let (backoff, backoff_at) = self.pick(
            (None, ""),
            (raw.restart_backoff.as_ref(), "workers.restart_backoff"),
            HumanDuration(Duration::from_millis(100)),
        );
        if backoff.0.is_zero() {
            self.fail(&backoff_at, "must be longer than 0s, like \"100ms\"");
        }
        let (backoff_max, max_at) = self.pick(
            (None, ""),
            (
                raw.restart_backoff_max.as_ref(),
                "workers.restart_backoff_max",
            ),
            HumanDuration(Duration::from_secs(30)),
        );
        if backoff_max.0.is_zero() {
            self.fail(&max_at, "must be longer than 0s, like \"30s\"");
        } else if backoff_max.0 < backoff.0 {
            let (initial, max) = (backoff.0, backoff_max.0);
            if raw.restart_backoff_max.is_some() {
                let message = format!(
                    "{max:?} is shorter than workers.restart_backoff ({initial:?}): \
                     make it at least as long, or shorten restart_backoff"
                );
                self.fail(&max_at, message);
            } else {
                let message = format!(
                    "{initial:?} is longer than workers.restart_backoff_max ({max:?} by default): \
                     shorten it, or set restart_backoff_max to at least {initial:?}"
                );
                self.fail(&backoff_at, message);
            }
        }
        let (heartbeat_timeout, at) = self.pick(
            (None, ""),
            (raw.heartbeat_timeout.as_ref(), "workers.heartbeat_timeout"),
            HumanDuration(Duration::from_secs(30)),
        );
        if heartbeat_timeout.0.is_zero() {
            self.fail(&at, "must be longer than 0s, like \"30s\"");
        }
        let (max_requests, _) = self.pick(
            (args.max_requests.as_ref(), "--max-requests"),
            (raw.max_requests.as_ref(), "workers.max_requests"),
            0,
        );
        let (max_requests_jitter, at) = self.pick(
            (args.max_requests_jitter.as_ref(), "--max-requests-jitter"),
            (
                raw.max_requests_jitter.as_ref(),
                "workers.max_requests_jitter",
            ),
            0,
        );
        if max_requests.checked_add(max_requests_jitter).is_none() {
            let message = format!(
                "max_requests + max_requests_jitter is more than {}: lower them",
                u64::MAX
            );
            self.fail(&at, message);
        }
        let max_memory = match (&args.max_memory, &raw.max_memory) {
            (Some(size), _) => Some((*size, self.flag("--max-memory"))),
            (None, Some(size)) => Some((
                *size.get_ref(),
                self.in_file(size.span(), "workers.max_memory"),
            )),
            (None, None) => None,
        };
        if let Some((ByteSize(bytes), at)) = &max_memory
            && *bytes < MIN_MAX_MEMORY
        {
            let message = format!(
                "{bytes} bytes is less than a Python worker needs: give at least \"16MiB\", \
                 with a unit, like \"512MiB\""
            );
            self.fail(at, message);
        }
        let user = match (&args.user, &raw.user) {
            (Some(user), _) => Some((user.clone(), self.flag("--user"))),
            (None, Some(user)) => Some((
                user.get_ref().clone(),
                self.in_file(user.span(), "workers.user"),
            )),
            (None, None) => None,
        };
        let group = match (&args.group, &raw.group) {
            (Some(group), _) => Some((group.clone(), self.flag("--group"))),
            (None, Some(group)) => Some((
                group.get_ref().clone(),
                self.in_file(group.span(), "workers.group"),
            )),
            (None, None) => None,
        };
        let identity = self.identity(user, group);
        let limits = self.limits(&raw.limits);
        WorkersConfig {
            count,
            count_origin,
            threads,
            concurrency,
            timeout: timeout.0,
            graceful_timeout: graceful_timeout.0,
            boot_timeout: boot_timeout.0,
            restart_backoff: backoff.0,
            restart_backoff_max: backoff_max.0,
            heartbeat_timeout: heartbeat_timeout.0,
            max_requests,
            max_requests_jitter,
            max_memory: max_memory.map(|(size, _)| size.0),
            identity,
            limits,
        }
    }

    /// `workers.user` and `workers.group` (each with where it came from),
    /// looked up; `None` when neither is given or one is unknown (reported).
    fn identity(
        &mut self,
        user: Option<(String, At)>,
        group: Option<(String, At)>,
    ) -> Option<Identity> {
        // Outer `None`: not given; inner `None`: unknown (reported).
        let user = user.map(|(name, at)| match find_user(&name) {
            Ok(user) => Some((user, at)),
            Err(message) => {
                self.fail(&at, message);
                None
            }
        });
        let group = group.map(|(name, at)| {
            find_group(&name)
                .map_err(|message| self.fail(&at, message))
                .ok()
        });
        match (user, group) {
            (None, None) | (Some(None), _) | (_, Some(None)) => None,
            (Some(Some((user, at))), group) => {
                let gid = group.flatten().map_or(user.gid, |group| group.gid);
                let groups = CString::new(user.name.as_bytes())
                    .map_err(|_| format!("the name {:?} holds a NUL byte", user.name))
                    .and_then(|name| {
                        nix::unistd::getgrouplist(&name, gid).map_err(|errno| {
                            format!("cannot read the groups of user {:?}: {errno}", user.name)
                        })
                    });
                match groups {
                    Ok(groups) => Some(Identity {
                        user: user.name,
                        uid: user.uid.as_raw(),
                        gid: gid.as_raw(),
                        groups: groups.into_iter().map(Gid::as_raw).collect(),
                    }),
                    Err(message) => {
                        self.fail(&at, message);
                        None
                    }
                }
            }
            (None, Some(Some(group))) => {
                let uid = nix::unistd::getuid();
                let user = match User::from_uid(uid) {
                    Ok(Some(user)) => user.name,
                    _ => uid.to_string(),
                };
                Some(Identity {
                    user,
                    uid: uid.as_raw(),
                    gid: group.gid.as_raw(),
                    groups: vec![group.gid.as_raw()],
                })
            }
        }
    }

    /// `[workers.limits]`, checked.
    fn limits(&mut self, raw: &RawLimits) -> Limits {
        if let Some(nofile) = &raw.nofile
            && *nofile.get_ref() < MIN_NOFILE
        {
            let at = self.in_file(nofile.span(), "workers.limits.nofile");
            let message = format!(
                "{} is too few open files for a Python worker: give at least {MIN_NOFILE}, \
                 like 65536",
                nofile.get_ref()
            );
            self.fail(&at, message);
        }
        if let Some(size) = &raw.address_space
            && size.get_ref().0 < MIN_ADDRESS_SPACE
        {
            let at = self.in_file(size.span(), "workers.limits.address_space");
            let message = format!(
                "{} bytes is less than a Python worker needs: give at least \"16MiB\", with a \
                 unit, like \"2GiB\"",
                size.get_ref().0
            );
            self.fail(&at, message);
        }
        Limits {
            nofile: raw.nofile.as_ref().map(|n| *n.get_ref()),
            address_space: raw.address_space.as_ref().map(|size| size.get_ref().0),
            core: raw.core.as_ref().map(|size| size.get_ref().0),
            umask: raw.umask.as_ref().map(|umask| umask.get_ref().0),
        }
    }

    pub(super) fn health(
        &mut self,
        args: &RunArgs,
        raw: RawHealth,
        server: &ServerConfig,
        workers: &WorkersConfig,
        env_token: Option<&str>,
    ) -> HealthConfig {
        let status = match (&args.status_bind, &raw.status_bind) {
            (Some(addr), _) => Some((absolute_bind(self.cwd, addr), self.flag("--status-bind"))),
            (None, Some(text)) => {
                let at = self.in_file(text.span(), "health.status_bind");
                match text.get_ref().parse::<BindAddr>() {
                    Ok(addr) => Some((absolute_bind(self.file_dir(), &addr), at)),
                    Err(message) => {
                        self.fail(&at, message);
                        None
                    }
                }
            }
            (None, None) => None,
        };
        let status_bind = status.map(|(addr, at)| {
            if let Some(taken) = server.bind.iter().find(|b| overlaps(&b.addr, &addr)) {
                let message = if taken.addr == addr {
                    format!(
                        "{addr} is also a server address (at {}): give the status server its own address, like \"127.0.0.1:9000\"",
                        taken.origin
                    )
                } else {
                    format!(
                        "{addr} overlaps the server address {} (at {}) on the same port: give the status server its own port, like \"127.0.0.1:9000\"",
                        taken.addr, taken.origin
                    )
                };
                self.fail(&at, message);
            }
            Bind {
                addr,
                origin: at.origin(),
            }
        });

        let count_key = match args.workers {
            Some(_) => "--workers",
            None => "workers.count",
        };
        let (min_ready, at) = self.pick(
            (args.min_ready.as_ref(), "--min-ready"),
            (raw.min_ready.as_ref(), "health.min_ready"),
            MinReady::Count(1),
        );
        self.check_min_workers(min_ready, &at, workers.count, count_key, "100%");

        let ready_path = match (&args.ready_path, &raw.ready_path) {
            (Some(path), _) => Some((path.clone(), self.flag("--ready-path"))),
            (None, Some(path)) => {
                let at = self.in_file(path.span(), "health.ready_path");
                Some((path.get_ref().clone(), at))
            }
            (None, None) => None,
        };
        if let Some((path, at)) = &ready_path
            && let Err(message) = check_ready_path(path)
        {
            self.fail(at, message);
        }
        let (probe_interval, at) = self.pick(
            (None, ""),
            (raw.probe_interval.as_ref(), "health.probe_interval"),
            HumanDuration(Duration::from_secs(10)),
        );
        if probe_interval.0.is_zero() {
            self.fail(&at, "must be longer than 0s, like \"10s\"");
        }
        let (probe_timeout, at) = self.pick(
            (None, ""),
            (raw.probe_timeout.as_ref(), "health.probe_timeout"),
            HumanDuration(Duration::from_secs(5)),
        );
        if probe_timeout.0.is_zero() {
            self.fail(&at, "must be longer than 0s, like \"5s\"");
        }
        let (unhealthy_after, at) = self.pick(
            (None, ""),
            (raw.unhealthy_after.as_ref(), "health.unhealthy_after"),
            3,
        );
        if unhealthy_after == 0 {
            self.fail(
                &at,
                "must be at least 1 (it is the number of failed probes in a row), like 3",
            );
        }
        let (min_in_service, at) = self.pick(
            (None, ""),
            (raw.min_in_service.as_ref(), "health.min_in_service"),
            MinReady::Percent(50),
        );
        self.check_min_workers(min_in_service, &at, workers.count, count_key, "50%");

        let status_token = self.status_token(args, &raw, env_token);

        HealthConfig {
            status_bind,
            min_ready,
            ready_path: ready_path.map(|(path, _)| path),
            status_token,
            probe_interval: probe_interval.0,
            probe_timeout: probe_timeout.0,
            unhealthy_after,
            min_in_service,
        }
    }

    /// The status token: `--status-token-file`, else `env_token`
    /// (`$CORRAL_STATUS_TOKEN`), else `health.status_token_file`, else
    /// `health.status_token` (the two keys exclude each other). The file is
    /// read here, once.
    fn status_token(
        &mut self,
        args: &RunArgs,
        raw: &RawHealth,
        env_token: Option<&str>,
    ) -> Option<Secret> {
        if let (Some(_), Some(file)) = (&raw.status_token, &raw.status_token_file) {
            let at = self.in_file(file.span(), "health.status_token_file");
            self.fail(
                &at,
                "health.status_token is set too: keep one of the two (the file keeps the \
                 token out of this config)",
            );
            return None;
        }
        let (text, at) = if let Some(path) = &args.status_token_file {
            let at = self.flag("--status-token-file");
            (self.read_token(&absolute(self.cwd, path), &at)?, at)
        } else if let Some(token) = env_token {
            (token.to_owned(), At::flag(super::STATUS_TOKEN_ENV))
        } else if let Some(file) = &raw.status_token_file {
            let at = self.in_file(file.span(), "health.status_token_file");
            let path = self.file_path(file, "health.status_token_file")?;
            (self.read_token(&path, &at)?, at)
        } else if let Some(token) = &raw.status_token {
            let at = self.in_file(token.span(), "health.status_token");
            (token.get_ref().clone(), at)
        } else {
            return None;
        };
        match check_token(&text) {
            Ok(()) => Some(Secret(text)),
            Err(message) => {
                self.fail(&at, message);
                None
            }
        }
    }

    /// A token file's content without surrounding white space.
    fn read_token(&mut self, path: &Path, at: &At) -> Option<String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Some(text.trim().to_owned()),
            Err(e) => {
                let message = format!(
                    "cannot read {}: {e}: write the token into that file, or give another path",
                    path.display()
                );
                self.fail(at, message);
                None
            }
        }
    }

    /// `control.socket`: the flag (relative to the cwd), else the file's
    /// (relative to its folder), else `default` (see
    /// [`super::default_socket`]).
    pub(super) fn control(
        &mut self,
        flag: Option<&Path>,
        raw: RawControl,
        default: &Path,
    ) -> ControlConfig {
        let socket = match (flag, &raw.socket) {
            (Some(path), _) => Some((absolute(self.cwd, path), self.flag("--socket"))),
            (None, Some(path)) => {
                let at = self.in_file(path.span(), "control.socket");
                self.file_path(path, "control.socket").map(|p| (p, at))
            }
            (None, None) => Some((default.to_path_buf(), At::flag("control.socket"))),
        };
        if let Some((path, at)) = &socket
            && let Err(message) = check_socket_path(path)
        {
            self.fail(at, message);
        }
        ControlConfig {
            socket: socket.map_or_else(|| default.to_path_buf(), |(path, _)| path),
        }
    }

    /// `[deploy]`; `default_state_dir` is the default `state_dir` (see
    /// [`super::default_state_dir_in`]); `chdir_given` says whether
    /// `app.chdir` (or `--chdir`) is set, which `rollback = "symlink"` needs.
    pub(super) fn deploy(
        &mut self,
        raw: RawDeploy,
        default_state_dir: &Path,
        chdir_given: bool,
    ) -> DeployConfig {
        let (ready_timeout, at) = self.pick(
            (None, ""),
            (raw.ready_timeout.as_ref(), "deploy.ready_timeout"),
            HumanDuration(Duration::from_secs(60)),
        );
        if ready_timeout.0.is_zero() {
            self.fail(&at, "must be longer than 0s, like \"60s\"");
        }
        let revision = match &raw.revision {
            None => RevisionSource::Auto,
            Some(value) => {
                let at = self.in_file(value.span(), "deploy.revision");
                match value.get_ref() {
                    StringOrArray::String(name) => match name.as_str() {
                        "auto" => RevisionSource::Auto,
                        "git" => RevisionSource::Git,
                        "symlink" => RevisionSource::Symlink,
                        "none" => RevisionSource::None,
                        other => {
                            self.fail(&at, unknown_revision(other));
                            RevisionSource::Auto
                        }
                    },
                    StringOrArray::Array(words) => self
                        .file_command(words, &at, REVISION_EXAMPLE)
                        .map_or(RevisionSource::Auto, RevisionSource::Command),
                }
            }
        };
        let state_dir = raw
            .state_dir
            .as_ref()
            .and_then(|dir| self.file_path(dir, "deploy.state_dir"))
            .unwrap_or_else(|| default_state_dir.to_path_buf());
        let rollback_hook = raw.rollback_hook.as_ref().and_then(|value| {
            let at = self.in_file(value.span(), "deploy.rollback_hook");
            match value.get_ref() {
                StringOrArray::String(text) => {
                    let message = format!(
                        "is a string: write the command as an array of strings (the program, \
                         then its arguments), like {}",
                        as_array(text, HOOK_EXAMPLE)
                    );
                    self.fail(&at, message);
                    None
                }
                StringOrArray::Array(words) => self.file_command(words, &at, HOOK_EXAMPLE),
            }
        });
        let (hook_timeout, at) = self.pick(
            (None, ""),
            (raw.hook_timeout.as_ref(), "deploy.hook_timeout"),
            HumanDuration(Duration::from_secs(60)),
        );
        if hook_timeout.0.is_zero() {
            self.fail(&at, "must be longer than 0s, like \"60s\"");
        }
        let rollback = raw.rollback.as_ref().map_or(Rollback::None, |value| {
            let at = self.in_file(value.span(), "deploy.rollback");
            let rollback = match value.get_ref().as_str() {
                "none" => Rollback::None,
                "git-reset" => Rollback::GitReset,
                "symlink" => Rollback::Symlink,
                other => {
                    self.fail(&at, unknown_rollback(other));
                    Rollback::None
                }
            };
            if rollback == Rollback::Symlink && !chdir_given {
                self.fail(
                    &at,
                    "\"symlink\" needs app.chdir: set it to the `current` symlink that points at \
                     the release, like \"/srv/app/current\" (or pass --chdir)",
                );
            }
            let revision_at = raw
                .revision
                .as_ref()
                .and_then(|v| self.file.map(|f| f.location(v.span().start)));
            if rollback == Rollback::GitReset
                && let Some(message) = git_reset_conflict(&revision, revision_at.as_deref())
            {
                self.fail(&at, message);
            }
            rollback
        });
        let (exit_on_boot_failure, _) = self.pick(
            (None, ""),
            (
                raw.exit_on_boot_failure.as_ref(),
                "deploy.exit_on_boot_failure",
            ),
            false,
        );
        let strategy = raw.strategy.as_ref().map_or(Strategy::AllAtOnce, |value| {
            match value.get_ref().as_str() {
                "all-at-once" => Strategy::AllAtOnce,
                "rolling" => Strategy::Rolling,
                other => {
                    let at = self.in_file(value.span(), "deploy.strategy");
                    self.fail(&at, unknown_name("strategy", other, STRATEGIES));
                    Strategy::AllAtOnce
                }
            }
        });
        let (max_surge, at) =
            self.pick((None, ""), (raw.max_surge.as_ref(), "deploy.max_surge"), 1);
        if max_surge == 0 {
            self.fail(
                &at,
                "must be at least 1 (it is the number of extra workers a rolling reload may \
                 run), like 1",
            );
        }
        DeployConfig {
            ready_timeout: ready_timeout.0,
            revision,
            state_dir,
            rollback_hook,
            hook_timeout: hook_timeout.0,
            rollback,
            exit_on_boot_failure,
            strategy,
            max_surge,
        }
    }

    /// A command from the file (`deploy.revision`, `deploy.rollback_hook`),
    /// checked: not empty, a program that is not empty, no NUL byte; a
    /// program path with '/' made absolute against the file's folder (a
    /// bare name stays for the PATH lookup). `example` is a command like
    /// `["cat", "REVISION"]` for the messages.
    fn file_command(&mut self, words: &[String], at: &At, example: &str) -> Option<Vec<String>> {
        let Some((program, args)) = words.split_first() else {
            let message = format!("is empty: give a command like {example}, or leave the key out");
            self.fail(at, message);
            return None;
        };
        if program.is_empty() {
            let message =
                format!("the program (the first string) is empty: give a command like {example}");
            self.fail(at, message);
            return None;
        }
        if let Some(word) = words.iter().find(|w| w.contains('\0')) {
            let message = format!("\"{}\" holds a NUL byte", word.escape_debug());
            self.fail(at, message);
            return None;
        }
        let program = match command_path(self.file_dir(), Path::new(program))
            .into_os_string()
            .into_string()
        {
            Ok(program) => program,
            Err(path) => {
                let message = format!(
                    "the program \"{program}\" is relative to this file's folder {}, which is \
                     not valid UTF-8: give an absolute path",
                    Path::new(&path).display()
                );
                self.fail(at, message);
                return None;
            }
        };
        Some([program].into_iter().chain(args.iter().cloned()).collect())
    }

    /// Checks a number of workers in service (`min_ready`,
    /// `min_in_service`): at least 1 (or 1%), a count at most `count`
    /// (`count_key` names where that came from; `percent` is the percentage
    /// the message suggests instead). `count` 0 is reported elsewhere.
    fn check_min_workers(
        &mut self,
        value: MinReady,
        at: &At,
        count: usize,
        count_key: &str,
        percent: &str,
    ) {
        match value {
            MinReady::Count(0) => self.fail(
                at,
                "must be at least 1: use a count like 2 or a percentage like \"50%\"",
            ),
            MinReady::Percent(0) => self.fail(
                at,
                "must be at least 1%: use a percentage like \"50%\" or a count like 2",
            ),
            MinReady::Count(n) if count > 0 && n > count => {
                let message = format!(
                    "needs {n} workers in service but {count_key} is {count}: lower it to {count} or less, or use a percentage like \"{percent}\""
                );
                self.fail(at, message);
            }
            _ => {}
        }
    }
}

/// A user (`workers.user`) by name, or by uid when all digits.
fn find_user(name: &str) -> Result<User, String> {
    let uid = id_number(name, "user name like \"www-data\" or a uid", "uid")?;
    let found = match uid {
        Some(uid) => User::from_uid(Uid::from_raw(uid)),
        None => User::from_name(name),
    };
    let how = "give a user that exists on this machine (see `getent passwd`), by name or uid";
    match found {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(match uid {
            Some(uid) => format!("no user has uid {uid}: {how}"),
            None => format!("unknown user {name:?}: {how}"),
        }),
        Err(errno) => Err(format!("cannot look up the user {name:?}: {errno}")),
    }
}

/// A group (`workers.group`) by name, or by gid when all digits.
fn find_group(name: &str) -> Result<Group, String> {
    let gid = id_number(name, "group name like \"www-data\" or a gid", "gid")?;
    let found = match gid {
        Some(gid) => Group::from_gid(Gid::from_raw(gid)),
        None => Group::from_name(name),
    };
    let how = "give a group that exists on this machine (see `getent group`), by name or gid";
    match found {
        Ok(Some(group)) => Ok(group),
        Ok(None) => Err(match gid {
            Some(gid) => format!("no group has gid {gid}: {how}"),
            None => format!("unknown group {name:?}: {how}"),
        }),
        Err(errno) => Err(format!("cannot look up the group {name:?}: {errno}")),
    }
}

/// The number a user or group is given as (`kind`: "uid" or "gid") when
/// `name` is all digits; `None` for a name. Empty is an error (`what` says
/// what to give instead).
fn id_number(name: &str, what: &str, kind: &str) -> Result<Option<u32>, String> {
    if name.is_empty() {
        return Err(format!("is empty: give a {what}, or leave it out"));
    }
    if !name.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    name.parse()
        .map(Some)
        .map_err(|_| format!("{name} is too large for a {kind} (at most {})", u32::MAX))
}

/// A bind address with a relative socket path made absolute.
fn absolute_bind(base: &Path, addr: &BindAddr) -> BindAddr {
    match addr {
        BindAddr::Unix(path) => BindAddr::Unix(absolute(base, path)),
        tcp => tcp.clone(),
    }
}

/// Whether listening on both addresses would fail: the same address, or the
/// same TCP port where one side takes every address of its family
/// ("0.0.0.0", "[::]"; IPv6 sockets are IPv6-only). Port 0 never clashes
/// (the kernel picks a free port for each).
fn overlaps(a: &BindAddr, b: &BindAddr) -> bool {
    match (a, b) {
        (BindAddr::Tcp(a), BindAddr::Tcp(b)) => {
            a.port() != 0
                && a.port() == b.port()
                && a.is_ipv4() == b.is_ipv4()
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
        }
        (a, b) => a == b,
    }
}

/// "pkg.mod:callable" checked, with ":application" added when missing.
fn check_module(spec: &str) -> Result<String, String> {
    let example = "write it as \"module:callable\", like \"main:app\"";
    if spec.trim().is_empty() {
        return Err(format!("is empty: {example}"));
    }
    let (module, callable) = spec.split_once(':').unwrap_or((spec, "application"));
    if let Some(stem) = module.strip_suffix(".py") {
        return Err(format!(
            "\"{spec}\" names a file: use the module name, like \"{}:{callable}\"",
            stem.replace('/', ".")
        ));
    }
    if module.contains('/') {
        return Err(format!(
            "\"{module}\" is a path: use dots between packages, like \"{}\"",
            module.trim_matches('/').replace('/', ".")
        ));
    }
    let identifier = |part: &str| {
        let mut chars = part.chars();
        chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
            && chars.all(|c| c.is_alphanumeric() || c == '_')
    };
    if !module.split('.').all(identifier) {
        return Err(format!(
            "\"{module}\" is not a Python module name: {example} (dotted names like \"pkg.web:app\" work)"
        ));
    }
    if callable.trim().is_empty() {
        return Err(format!("\"{spec}\" has no callable after ':': {example}"));
    }
    // "create_app('prod', debug=False)": a factory call, whose literal
    // arguments the worker parses (it never evaluates code).
    let name = match callable.split_once('(') {
        Some((name, _)) if !callable.ends_with(')') => {
            return Err(format!(
                "\"{spec}\" opens a call to {name} but does not end with ')': write \"{module}:{name}()\" or \"{module}:{name}('arg', key=1)\""
            ));
        }
        Some((name, _)) => name,
        None => callable,
    };
    if !name.split('.').all(identifier) {
        return Err(format!(
            "\"{name}\" is not a Python attribute name: {example}, or a factory call like \"main:create_app()\""
        ));
    }
    Ok(format!("{module}:{callable}"))
}

/// `app.root_path` checked and normalised: "" or "/" is none, a trailing
/// '/' is dropped.
fn check_root_path(path: &str) -> Result<String, String> {
    let example = "write the prefix the app is mounted under, like \"/api\"";
    if path.is_empty() || path == "/" {
        return Ok(String::new());
    }
    if !path.starts_with('/') {
        return Err(format!("\"{path}\" does not start with '/': {example}"));
    }
    if let Some(c) = path
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '?' | '#' | '%'))
    {
        return Err(format!(
            "\"{}\" holds {:?}, which a path prefix may not: {example} (visible ASCII, no '?', '#' or '%')",
            path.escape_default(),
            c
        ));
    }
    Ok(path.trim_end_matches('/').to_owned())
}

/// Why `token` cannot be the status token: it travels in an
/// `Authorization: Bearer` header, so visible ASCII only, and it must not be
/// guessable.
fn check_token(token: &str) -> Result<(), String> {
    let hint = "like the output of `openssl rand -hex 32`";
    if let Some(c) = token.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "holds {c:?}: use visible ASCII only (no spaces), {hint}"
        ));
    }
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "is {} characters long: use at least {MIN_TOKEN_LEN}, {hint}",
            token.len()
        ));
    }
    Ok(())
}

/// Checks `health.ready_path`: a request path like "/health/ready" that can
/// be sent as is (visible ASCII, no fragment).
fn check_ready_path(path: &str) -> Result<(), String> {
    let example = "like \"/health/ready\"";
    if path.is_empty() {
        return Err(format!(
            "is empty: give a path {example}, or leave it out for no readiness probe"
        ));
    }
    if !path.starts_with('/') {
        if let Some((_, rest)) = path.split_once("://") {
            let only = rest.find('/').map_or("/", |i| &rest[i..]);
            return Err(format!(
                "\"{path}\" is a URL: it must start with \"/\"; give only the path, like \"{only}\" \
                 (corral sends the probe to each worker itself)"
            ));
        }
        return Err(format!(
            "\"{path}\" must start with \"/\", like \"/{path}\""
        ));
    }
    if let Some(c) = path.chars().find(|&c| !c.is_ascii_graphic() || c == '#') {
        return Err(format!(
            "\"{}\" holds {c:?}, which cannot be sent in a request path: \
             percent-encode it (a space is %20)",
            path.escape_debug()
        ));
    }
    Ok(())
}

/// The command in the messages about `deploy.revision`.
const REVISION_EXAMPLE: &str = "[\"cat\", \"REVISION\"]";
/// The command in the messages about `deploy.rollback_hook`.
const HOOK_EXAMPLE: &str = "[\"./rollback.sh\", \"--notify\"]";

/// Why a string is not a `deploy.revision` name, and what to write.
fn unknown_revision(name: &str) -> String {
    let names = "\"auto\", \"git\", \"symlink\" or \"none\"";
    if name.contains(char::is_whitespace) || name.contains('/') {
        format!(
            "\"{name}\" is not {names}: to run a command, write it as an array of strings, like {}",
            as_array(name, REVISION_EXAMPLE)
        )
    } else {
        format!(
            "unknown revision source \"{name}\": use {names}, or a command as an array of \
             strings, like {REVISION_EXAMPLE}"
        )
    }
}

/// The values of `deploy.rollback`.
const ROLLBACKS: &[&str] = &["none", "git-reset", "symlink"];
/// The values of `deploy.strategy`.
const STRATEGIES: &[&str] = &["all-at-once", "rolling"];

/// Why a string is not one of `names` (the values a key takes; `what` names
/// them in the message), and what to write: the name meant when only case,
/// spaces, '-' or '_' differ.
fn unknown_name(what: &str, name: &str, names: &[&str]) -> String {
    let list = match names {
        [] => String::new(),
        [one] => format!("\"{one}\""),
        [first @ .., last] => {
            let first: Vec<String> = first.iter().map(|n| format!("\"{n}\"")).collect();
            format!("{} or \"{last}\"", first.join(", "))
        }
    };
    match close_name(name, names) {
        Some(meant) => format!("unknown {what} \"{name}\": write \"{meant}\" (one of {list})"),
        None => format!("unknown {what} \"{name}\": use {list}"),
    }
}

/// The one of `names` that `name` means when only case, spaces, '-' or '_'
/// differ.
fn close_name<'a>(name: &str, names: &[&'a str]) -> Option<&'a str> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    names.iter().copied().find(|n| squash(n) == squash(name))
}

/// Why a string is not a `deploy.rollback` name, and what to write; a
/// script belongs in `deploy.rollback_hook`.
fn unknown_rollback(name: &str) -> String {
    let script = name.contains(char::is_whitespace) || name.contains('/');
    if script && close_name(name, ROLLBACKS).is_none() {
        format!(
            "\"{name}\" is not \"none\", \"git-reset\" or \"symlink\": to run a script of your \
             own, give it as rollback_hook = {}",
            as_array(name, HOOK_EXAMPLE)
        )
    } else {
        unknown_name("rollback", name, ROLLBACKS)
    }
}

/// Why `rollback = "git-reset"` cannot work with `revision`, if it cannot:
/// it resets to the last known good revision, which must then be a git
/// commit. `revision_at` is where `deploy.revision` is set
/// ("corral.toml:4").
fn git_reset_conflict(revision: &RevisionSource, revision_at: Option<&str>) -> Option<String> {
    let (is, instead) = match revision {
        RevisionSource::Git | RevisionSource::Auto => return None,
        RevisionSource::Symlink => (
            "\"symlink\"",
            ", or use rollback = \"symlink\" to point the app folder back at the last good release",
        ),
        RevisionSource::None => ("\"none\"", ""),
        RevisionSource::Command(_) => {
            ("a command", ", or do the rollback in rollback_hook instead")
        }
    };
    let at = revision_at.map_or_else(String::new, |at| format!(" (at {at})"));
    Some(format!(
        "\"git-reset\" resets the app folder to the last known good commit, so it needs \
         deploy.revision \"git\" or \"auto\", but deploy.revision is {is}{at}: set revision = \
         \"git\"{instead}"
    ))
}

/// `text` split at whitespace as a TOML array, like `["a", "b"]`; `example`
/// when there is nothing to split.
fn as_array(text: &str, example: &str) -> String {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|word| format!("{word:?}"))
        .collect();
    if words.is_empty() {
        example.to_owned()
    } else {
        format!("[{}]", words.join(", "))
    }
}

/// Checks a Unix socket path (absolute) for `control.socket`: short enough
/// for `bind(2)`.
fn check_socket_path(path: &Path) -> Result<(), String> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(format!(
            "\"{}\" is {len} bytes long, more than the {MAX_SOCKET_PATH} that a Unix socket path \
             may hold: use a shorter path",
            path.display()
        ));
    }
    Ok(())
}

/// Checks one environment variable for the workers.
pub(crate) fn check_env(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() || key.contains(['=', '\0']) {
        return Err(format!(
            "\"{key}\" is not a valid variable name (it must be non-empty, without '=')"
        ));
    }
    if value.contains('\0') {
        return Err(format!("the value of {key} contains a NUL byte"));
    }
    Ok(())
}

/// The interpreter when neither `--python` nor `app.python` names one, and
/// why: the virtualenv corral itself is installed in (`pip install corral`
/// put it in that venv's `bin/`, next to its `python`), else
/// `$VIRTUAL_ENV/bin/python`, else `python3` on `PATH`.
pub(super) fn default_python(
    installed_in: Option<&Path>,
    virtual_env: Option<&Path>,
) -> (PathBuf, String) {
    match (installed_in, virtual_env) {
        (Some(venv), _) => (
            venv.join("bin/python"),
            format!("the virtualenv corral is installed in ({})", venv.display()),
        ),
        (None, Some(venv)) => (
            venv.join("bin/python"),
            format!("$VIRTUAL_ENV ({})", venv.display()),
        ),
        (None, None) => (
            PathBuf::from("python3"),
            "python3 on PATH: corral is not installed in a virtualenv, and no $VIRTUAL_ENV, --python or app.python is given".into(),
        ),
    }
}
/// A bare command name stays as is (PATH lookup); a path is made absolute.
fn command_path(base: &Path, path: &Path) -> PathBuf {
    if path.to_string_lossy().contains('/') {
        absolute(base, path)
    } else {
        path.to_path_buf()
    }
}

/// `base.join(path)` with "." and ".." removed lexically (like Python's
/// `os.path.abspath`).
pub(super) fn absolute(base: &Path, path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in base.join(path).components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{env, resolve_text};
    use crate::config::{Env, resolve};

    #[test]
    fn modules() {
        assert_eq!(check_module("main:app"), Ok("main:app".into()));
        assert_eq!(check_module("pkg.wsgi"), Ok("pkg.wsgi:application".into()));
        assert_eq!(check_module("m:create_app()"), Ok("m:create_app()".into()));
        assert!(
            check_module("main.py:app")
                .unwrap_err()
                .contains("\"main:app\"")
        );
        assert!(
            check_module("pkg/web:app")
                .unwrap_err()
                .contains("\"pkg.web\"")
        );
        assert!(check_module("").is_err());
        assert!(check_module(":app").is_err());
        assert!(check_module("main:").is_err());
        assert!(check_module("my-app:app").is_err());
    }

    #[test]
    fn validation_reports_every_problem() {
        let text = "[app]\nmodule = \"\"\nenv = { \"A=B\" = \"x\" }\n\n[server]\nbind = [\"0.0.0.0\", \"[::]:80\", \"[::]:80\"]\n\
                    max_header_bytes = \"1KiB\"\n[workers]\ncount = 0\nthreads = 0\ntimeout = \"0s\"\n";
        let text = resolve_text(text, &RunArgs::default())
            .unwrap_err()
            .to_string();
        let expected = [
            "8 problems in the configuration:",
            "  corral.toml:2: app.module: is empty: write it as \"module:callable\", like \"main:app\"",
            "  corral.toml:3: app.env.A=B: \"A=B\" is not a valid variable name",
            "  corral.toml:6: server.bind: invalid bind address \"0.0.0.0\": the port is missing, like \"0.0.0.0:8000\"",
            "  corral.toml:6: server.bind: [::]:80 is listed twice (first at corral.toml:6 (key server.bind))",
            "  corral.toml:7: server.max_header_bytes: must be at least \"8KiB\"",
            "  corral.toml:9: workers.count: must be at least 1",
            "  corral.toml:10: workers.threads: must be at least 1",
        ];
        for line in expected {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(
            text.contains("corral.toml:11: workers.timeout: must be longer than 0s"),
            "{text}"
        );
    }

    fn problems(text: &str, args: &RunArgs) -> String {
        resolve_text(text, args).unwrap_err().to_string()
    }

    #[test]
    fn boot_timeout_and_restart_backoff() {
        let text = "[app]\nmodule = \"m:a\"\n[workers]\nboot_timeout = \"0s\"\n\
                    restart_backoff = \"0ms\"\nrestart_backoff_max = \"0s\"\n";
        let text = problems(text, &RunArgs::default());
        let expected = [
            "3 problems in the configuration:",
            "  corral.toml:4: workers.boot_timeout: must be longer than 0s, like \"30s\"",
            "  corral.toml:5: workers.restart_backoff: must be longer than 0s, like \"100ms\"",
            "  corral.toml:6: workers.restart_backoff_max: must be longer than 0s, like \"30s\"",
        ];
        for line in expected {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }

        let text = "[app]\nmodule = \"m:a\"\n[workers]\nrestart_backoff = \"2s\"\n\
                    restart_backoff_max = \"500ms\"\n";
        assert_eq!(
            problems(text, &RunArgs::default()),
            "corral.toml:5: workers.restart_backoff_max: 500ms is shorter than workers.restart_backoff (2s): \
             make it at least as long, or shorten restart_backoff"
        );
        // Without restart_backoff_max, the problem is the key that was set.
        let text = "[app]\nmodule = \"m:a\"\n[workers]\nrestart_backoff = \"1m\"\n";
        assert_eq!(
            problems(text, &RunArgs::default()),
            "corral.toml:4: workers.restart_backoff: 60s is longer than workers.restart_backoff_max (30s by default): \
             shorten it, or set restart_backoff_max to at least 60s"
        );
        let text = "[app]\nmodule = \"m:a\"\n[workers]\nrestart_backoff = \"1s\"\n\
                    restart_backoff_max = \"1s\"\n";
        let config = resolve_text(text, &RunArgs::default()).unwrap();
        assert_eq!(config.workers.restart_backoff, Duration::from_secs(1));
        assert_eq!(config.workers.restart_backoff_max, Duration::from_secs(1));

        let args = RunArgs {
            app: Some("m:a".into()),
            boot_timeout: Some(HumanDuration(Duration::ZERO)),
            ..RunArgs::default()
        };
        assert_eq!(
            problems("", &args),
            "--boot-timeout: must be longer than 0s, like \"30s\""
        );
    }

    #[test]
    fn status_bind_must_not_be_a_server_address() {
        let text = "[app]\nmodule = \"m:a\"\n[server]\nbind = [\"127.0.0.1:8000\", \"unix:web.sock\"]\n\
                    [health]\nstatus_bind = \"127.0.0.1:8000\"\n";
        assert_eq!(
            problems(text, &RunArgs::default()),
            "corral.toml:6: health.status_bind: 127.0.0.1:8000 is also a server address \
             (at corral.toml:4 (key server.bind)): give the status server its own address, like \"127.0.0.1:9000\""
        );
        // Socket paths are compared once made absolute.
        let text = "[app]\nmodule = \"m:a\"\n[server]\nbind = [\"unix:/srv/app/web.sock\"]\n\
                    [health]\nstatus_bind = \"unix:./web.sock\"\n";
        assert!(problems(text, &RunArgs::default()).starts_with(
            "corral.toml:6: health.status_bind: unix:/srv/app/web.sock is also a server address"
        ));
        // The default server address counts too.
        let text = "[app]\nmodule = \"m:a\"\n[health]\nstatus_bind = \"127.0.0.1:8000\"\n";
        assert!(
            problems(text, &RunArgs::default())
                .contains("(at default (no --bind or server.bind given))")
        );
        // A wildcard address takes the port on every address of its family.
        let text = "[app]\nmodule = \"m:a\"\n[server]\nbind = [\"0.0.0.0:8000\"]\n\
                    [health]\nstatus_bind = \"127.0.0.1:8000\"\n";
        assert_eq!(
            problems(text, &RunArgs::default()),
            "corral.toml:6: health.status_bind: 127.0.0.1:8000 overlaps the server address 0.0.0.0:8000 \
             (at corral.toml:4 (key server.bind)) on the same port: give the status server its own port, like \"127.0.0.1:9000\""
        );
        // Flags: both sides.
        let args = RunArgs {
            app: Some("m:a".into()),
            bind: vec!["[::]:8000".parse().unwrap()],
            status_bind: Some("[::1]:8000".parse().unwrap()),
            ..RunArgs::default()
        };
        assert!(problems("", &args).starts_with(
            "--status-bind: [::1]:8000 overlaps the server address [::]:8000 (at --bind)"
        ));
        let text = "[health]\nstatus_bind = \"localhost\"\n";
        let args = RunArgs {
            app: Some("m:a".into()),
            ..RunArgs::default()
        };
        assert!(
            problems(text, &args).starts_with(
                "corral.toml:2: health.status_bind: invalid bind address \"localhost\""
            )
        );

        // Different ports, families, port 0 or paths are fine.
        for (server, status) in [
            ("127.0.0.1:8000", "127.0.0.1:9000"),
            ("0.0.0.0:8000", "[::1]:8000"),
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("unix:web.sock", "unix:status.sock"),
            ("127.0.0.1:8000", "unix:8000"),
        ] {
            let text = format!(
                "[app]\nmodule = \"m:a\"\n[server]\nbind = [\"{server}\"]\n[health]\nstatus_bind = \"{status}\"\n"
            );
            let config = resolve_text(&text, &RunArgs::default()).unwrap();
            let status = config.health.status_bind.unwrap();
            assert_eq!(status.origin, "corral.toml:6 (key health.status_bind)");
        }
    }

    #[test]
    fn min_ready_counts_and_percentages() {
        let min_ready = |text: &str, args: &RunArgs| {
            let text = format!("[app]\nmodule = \"m:a\"\n{text}");
            resolve_text(&text, args).map(|c| c.health.min_ready)
        };
        let none = RunArgs::default();
        assert_eq!(
            min_ready("[workers]\ncount = 4\n[health]\nmin_ready = 4\n", &none).unwrap(),
            MinReady::Count(4)
        );
        assert_eq!(
            min_ready("[health]\nmin_ready = \"2\"\n[workers]\ncount = 3\n", &none).unwrap(),
            MinReady::Count(2)
        );
        assert_eq!(
            min_ready("[health]\nmin_ready = \"100%\"\n", &none).unwrap(),
            MinReady::Percent(100)
        );
        let err = min_ready("[workers]\ncount = 2\n[health]\nmin_ready = 3\n", &none)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "corral.toml:6: health.min_ready: needs 3 workers in service but workers.count is 2: \
             lower it to 2 or less, or use a percentage like \"100%\""
        );
        let args = RunArgs {
            workers: Some(WorkerCount::Count(1)),
            ..RunArgs::default()
        };
        let err = min_ready("[workers]\ncount = 4\n[health]\nmin_ready = 2\n", &args)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "corral.toml:6: health.min_ready: needs 2 workers in service but --workers is 1"
            ),
            "{err}"
        );
        let args = RunArgs {
            min_ready: Some(MinReady::Count(3)),
            ..RunArgs::default()
        };
        let err = min_ready("", &args).unwrap_err().to_string();
        assert!(
            err.starts_with("--min-ready: needs 3 workers in service but workers.count is 1"),
            "{err}"
        );
        assert_eq!(
            min_ready("[health]\nmin_ready = 0\n", &none)
                .unwrap_err()
                .to_string(),
            "corral.toml:4: health.min_ready: must be at least 1: use a count like 2 or a percentage like \"50%\""
        );
        assert_eq!(
            min_ready("[health]\nmin_ready = \"0%\"\n", &none)
                .unwrap_err()
                .to_string(),
            "corral.toml:4: health.min_ready: must be at least 1%: use a percentage like \"50%\" or a count like 2"
        );
        // workers.count = 0 is reported once, not again through min_ready.
        let err = min_ready("[workers]\ncount = 0\n[health]\nmin_ready = 2\n", &none)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("corral.toml:4: workers.count: must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn ready_path_must_start_with_a_slash() {
        let ready_path = |path: &str| {
            let text = format!("[app]\nmodule = \"m:a\"\n[health]\nready_path = {path:?}\n");
            resolve_text(&text, &RunArgs::default())
                .map(|c| c.health.ready_path.unwrap())
                .map_err(|e| e.to_string())
        };
        for good in ["/health/ready", "/", "/ready?deep=1&x=%20", "//x"] {
            assert_eq!(ready_path(good).as_deref(), Ok(good));
        }
        let at = "corral.toml:4: health.ready_path: ";
        assert_eq!(
            ready_path("health/ready").unwrap_err(),
            format!("{at}\"health/ready\" must start with \"/\", like \"/health/ready\"")
        );
        assert_eq!(
            ready_path("http://127.0.0.1:8000/healthz").unwrap_err(),
            format!(
                "{at}\"http://127.0.0.1:8000/healthz\" is a URL: it must start with \"/\"; give only the path, \
                 like \"/healthz\" (corral sends the probe to each worker itself)"
            )
        );
        assert!(
            ready_path("http://localhost")
                .unwrap_err()
                .contains("like \"/\"")
        );
        assert_eq!(
            ready_path("").unwrap_err(),
            format!(
                "{at}is empty: give a path like \"/health/ready\", or leave it out for no readiness probe"
            )
        );
        assert_eq!(
            ready_path("/health ready").unwrap_err(),
            format!(
                "{at}\"/health ready\" holds ' ', which cannot be sent in a request path: \
                 percent-encode it (a space is %20)"
            )
        );
        for bad in ["/a\tb", "/caf\u{e9}", "/ready#top", "/a\nb"] {
            assert!(
                ready_path(bad)
                    .unwrap_err()
                    .contains("cannot be sent in a request path"),
                "{bad:?}"
            );
        }
        let args = RunArgs {
            app: Some("m:a".into()),
            ready_path: Some("ready".into()),
            ..RunArgs::default()
        };
        assert_eq!(
            problems("[health]\nready_path = \"/ok\"\n", &args),
            "--ready-path: \"ready\" must start with \"/\", like \"/ready\""
        );
    }

    #[test]
    fn probe_settings() {
        let text = "[app]\nmodule = \"m:a\"\n[health]\nprobe_interval = \"0s\"\n\
                    probe_timeout = \"0ms\"\nunhealthy_after = 0\nmin_in_service = 0\n";
        let text = problems(text, &RunArgs::default());
        let expected = [
            "4 problems in the configuration:",
            "  corral.toml:4: health.probe_interval: must be longer than 0s, like \"10s\"",
            "  corral.toml:5: health.probe_timeout: must be longer than 0s, like \"5s\"",
            "  corral.toml:6: health.unhealthy_after: must be at least 1 (it is the number of failed probes in a row), like 3",
            "  corral.toml:7: health.min_in_service: must be at least 1: use a count like 2 or a percentage like \"50%\"",
        ];
        for line in expected {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        // A probe may take longer than the interval; the probes do not overlap.
        let text = "[app]\nmodule = \"m:a\"\n[health]\nprobe_interval = \"1s\"\n\
                    probe_timeout = \"3s\"\nunhealthy_after = 10\n";
        let config = resolve_text(text, &RunArgs::default()).unwrap();
        assert_eq!(config.health.probe_interval, Duration::from_secs(1));
        assert_eq!(config.health.probe_timeout, Duration::from_secs(3));
        assert_eq!(config.health.unhealthy_after, 10);
    }

    #[test]
    fn min_in_service_follows_the_rules_of_min_ready() {
        let min_in_service = |text: &str, args: &RunArgs| {
            let text = format!("[app]\nmodule = \"m:a\"\n{text}");
            resolve_text(&text, args)
                .map(|c| c.health.min_in_service)
                .map_err(|e| e.to_string())
        };
        let none = RunArgs::default();
        assert_eq!(
            min_in_service(
                "[workers]\ncount = 4\n[health]\nmin_in_service = 4\n",
                &none
            ),
            Ok(MinReady::Count(4))
        );
        assert_eq!(
            min_in_service("[health]\nmin_in_service = \"100%\"\n", &none),
            Ok(MinReady::Percent(100))
        );
        assert_eq!(
            min_in_service("[workers]\ncount = 2\n[health]\nmin_in_service = 3\n", &none),
            Err(
                "corral.toml:6: health.min_in_service: needs 3 workers in service but workers.count is 2: \
                 lower it to 2 or less, or use a percentage like \"50%\""
                    .into()
            )
        );
        let args = RunArgs {
            workers: Some(WorkerCount::Count(1)),
            ..RunArgs::default()
        };
        assert!(
            min_in_service("[workers]\ncount = 4\n[health]\nmin_in_service = 2\n", &args)
                .unwrap_err()
                .starts_with(
                    "corral.toml:6: health.min_in_service: needs 2 workers in service but --workers is 1"
                )
        );
        // The default 50% fits any number of workers.
        assert_eq!(min_in_service("", &args), Ok(MinReady::Percent(50)));
        assert_eq!(
            min_in_service("[health]\nmin_in_service = \"0%\"\n", &none),
            Err(
                "corral.toml:4: health.min_in_service: must be at least 1%: use a percentage like \"50%\" or a count like 2"
                    .into()
            )
        );
        // Both thresholds wrong: both reported.
        let err = min_in_service(
            "[workers]\ncount = 2\n[health]\nmin_ready = 3\nmin_in_service = 5\n",
            &none,
        )
        .unwrap_err();
        assert!(err.starts_with("2 problems in the configuration:"), "{err}");
        assert!(err.contains("health.min_ready: needs 3 workers"), "{err}");
        assert!(
            err.contains("health.min_in_service: needs 5 workers"),
            "{err}"
        );
    }

    #[test]
    fn recycling_and_heartbeat() {
        let text = "[app]\nmodule = \"m:a\"\n[workers]\nheartbeat_timeout = \"0s\"\n\
                    max_memory = 512\n";
        let text = problems(text, &RunArgs::default());
        let expected = [
            "2 problems in the configuration:",
            "  corral.toml:4: workers.heartbeat_timeout: must be longer than 0s, like \"30s\"",
            "  corral.toml:5: workers.max_memory: 512 bytes is less than a Python worker needs: \
             give at least \"16MiB\", with a unit, like \"512MiB\"",
        ];
        for line in expected {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        let text = "[app]\nmodule = \"m:a\"\n[workers]\nmax_memory = \"16MiB\"\n\
                    max_requests = 1\nmax_requests_jitter = 9223372036854775807\n";
        let config = resolve_text(text, &RunArgs::default()).unwrap();
        assert_eq!(config.workers.max_memory, Some(16 << 20));
        assert_eq!(config.workers.max_requests, 1);
        assert_eq!(config.workers.max_requests_jitter, i64::MAX as u64);
        // A jitter without max_requests is ignored, as in gunicorn.
        let text = "[app]\nmodule = \"m:a\"\n[workers]\nmax_requests_jitter = 50\n";
        let config = resolve_text(text, &RunArgs::default()).unwrap();
        assert_eq!(config.workers.max_requests, 0);
        assert_eq!(config.workers.max_requests_jitter, 50);

        let args = RunArgs {
            app: Some("m:a".into()),
            max_requests: Some(u64::MAX),
            max_requests_jitter: Some(1),
            max_memory: Some(ByteSize(0)),
            ..RunArgs::default()
        };
        let text = problems("", &args);
        assert!(
            text.contains(
                "--max-requests-jitter: max_requests + max_requests_jitter is more than 18446744073709551615: lower them"
            ),
            "{text}"
        );
        assert!(
            text.contains("--max-memory: 0 bytes is less than a Python worker needs"),
            "{text}"
        );
    }

    #[test]
    fn user_and_group() {
        let workers = |text: &str, args: &RunArgs| {
            let text = format!("[app]\nmodule = \"m:a\"\n[workers]\n{text}");
            resolve_text(&text, args)
                .map(|c| c.workers)
                .map_err(|e| e.to_string())
        };
        let none = RunArgs::default();
        assert_eq!(workers("", &none).unwrap().identity, None);
        // By name or uid; the group defaults to the user's primary group,
        // and the groups are the user's (root's include its own group).
        for user in ["\"root\"", "\"0\"", "\"00\""] {
            let identity = workers(&format!("user = {user}\n"), &none)
                .unwrap()
                .identity
                .unwrap();
            assert_eq!(identity.user, "root", "{user}");
            assert_eq!((identity.uid, identity.gid), (0, 0), "{user}");
            assert!(identity.groups.contains(&0), "{identity:?}");
        }
        let with_group = |text: &str| workers(text, &none).unwrap().identity.unwrap();
        let identity = with_group("user = \"root\"\ngroup = \"0\"\n");
        assert_eq!((identity.uid, identity.gid), (0, 0));
        assert!(identity.groups.contains(&0), "{identity:?}");
        // Only a group: corral's own user, with just that group.
        let identity = with_group("group = \"root\"\n");
        let own = nix::unistd::getuid().as_raw();
        assert_eq!((identity.uid, identity.gid), (own, 0));
        assert_eq!(identity.groups, [0]);
        assert!(!identity.user.is_empty());
        // The flags win over the file (the file's user is not looked up).
        let args = RunArgs {
            user: Some("0".into()),
            group: Some("root".into()),
            ..RunArgs::default()
        };
        let text = "user = \"corral-no-such-user\"\ngroup = \"corral-no-such-group\"\n";
        let identity = workers(text, &args).unwrap().identity.unwrap();
        assert_eq!(
            (identity.user.as_str(), identity.uid, identity.gid),
            ("root", 0, 0)
        );

        // Unknown users and groups name the key (or the flag); both are
        // reported.
        assert_eq!(
            workers(text, &none).unwrap_err(),
            "2 problems in the configuration:\n  \
             corral.toml:4: workers.user: unknown user \"corral-no-such-user\": give a user that \
             exists on this machine (see `getent passwd`), by name or uid\n  \
             corral.toml:5: workers.group: unknown group \"corral-no-such-group\": give a group \
             that exists on this machine (see `getent group`), by name or gid"
        );
        let args = RunArgs {
            user: Some("4294967294".into()),
            ..RunArgs::default()
        };
        assert_eq!(
            workers("group = \"root\"\n", &args).unwrap_err(),
            "--user: no user has uid 4294967294: give a user that exists on this machine \
             (see `getent passwd`), by name or uid"
        );
        let args = RunArgs {
            group: Some("4294967294".into()),
            ..RunArgs::default()
        };
        assert_eq!(
            workers("user = \"root\"\n", &args).unwrap_err(),
            "--group: no group has gid 4294967294: give a group that exists on this machine \
             (see `getent group`), by name or gid"
        );
        assert_eq!(
            workers("user = \"\"\n", &none).unwrap_err(),
            "corral.toml:4: workers.user: is empty: give a user name like \"www-data\" or a \
             uid, or leave it out"
        );
        assert_eq!(
            workers("group = \"99999999999\"\n", &none).unwrap_err(),
            "corral.toml:4: workers.group: 99999999999 is too large for a gid (at most 4294967295)"
        );
        assert!(
            workers("user = \"root\\u0000\"\n", &none)
                .unwrap_err()
                .starts_with("corral.toml:4: workers.user: unknown user \"root\\0\"")
        );
    }

    #[test]
    fn limits() {
        let limits = |text: &str| {
            let text = format!("[app]\nmodule = \"m:a\"\n[workers.limits]\n{text}");
            resolve_text(&text, &RunArgs::default())
                .map(|c| c.workers.limits)
                .map_err(|e| e.to_string())
        };
        assert_eq!(limits(""), Ok(Limits::default()));
        let text = "nofile = 1024\naddress_space = \"1.5GiB\"\ncore = 0\numask = \"077\"\n";
        assert_eq!(
            limits(text),
            Ok(Limits {
                nofile: Some(1024),
                address_space: Some(3 << 29),
                core: Some(0),
                umask: Some(0o077),
            })
        );
        let text = "nofile = 64\naddress_space = \"16MiB\"\ncore = \"1GiB\"\numask = \"0\"\n";
        assert_eq!(
            limits(text),
            Ok(Limits {
                nofile: Some(64),
                address_space: Some(16 << 20),
                core: Some(1 << 30),
                umask: Some(0),
            })
        );
        // Too low to run Python; a plain number is bytes. Both reported,
        // with the other [workers] problems.
        let text = "[app]\nmodule = \"m:a\"\n[workers]\ncount = 0\nuser = \"corral-no-such-user\"\n\
                    [workers.limits]\nnofile = 0\naddress_space = 2048\n";
        let text = problems(text, &RunArgs::default());
        let expected = [
            "4 problems in the configuration:",
            "  corral.toml:4: workers.count: must be at least 1",
            "  corral.toml:5: workers.user: unknown user \"corral-no-such-user\"",
            "  corral.toml:7: workers.limits.nofile: 0 is too few open files for a Python worker: \
             give at least 64, like 65536",
            "  corral.toml:8: workers.limits.address_space: 2048 bytes is less than a Python \
             worker needs: give at least \"16MiB\", with a unit, like \"2GiB\"",
        ];
        for line in expected {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn missing_app_and_flag_problems() {
        let err = resolve(&RunArgs::default(), None, Path::new("/cwd"), &env()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no app given: pass it as `corral main:app` or set [app] module in corral.toml"
        );
        let args = RunArgs {
            app: Some("main:app".into()),
            workers: Some(WorkerCount::Count(0)),
            ..RunArgs::default()
        };
        let err = resolve(&args, None, Path::new("/cwd"), &env()).unwrap_err();
        assert!(
            err.to_string().starts_with("--workers: must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn client_timeouts_and_connection_cap() {
        let text = "[app]\nmodule = \"m:a\"\n[server]\nbody_timeout = \"0s\"\n\
                    send_timeout = \"0ms\"\nmax_connections = 0\n";
        let text = problems(text, &RunArgs::default());
        let expected = [
            "3 problems in the configuration:",
            "  corral.toml:4: server.body_timeout: must be longer than 0s, like \"20s\"",
            "  corral.toml:5: server.send_timeout: must be longer than 0s, like \"20s\"",
            "  corral.toml:6: server.max_connections: must be at least 1 (it is the number of \
             client connections open at once), like 10000",
        ];
        for line in expected {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        let args = RunArgs {
            app: Some("m:a".into()),
            body_timeout: Some(HumanDuration(Duration::ZERO)),
            ..RunArgs::default()
        };
        assert_eq!(
            problems("", &args),
            "--body-timeout: must be longer than 0s, like \"20s\""
        );
        // Flags win over the file; the defaults fill the rest.
        let args = RunArgs {
            send_timeout: Some(HumanDuration(Duration::from_secs(3))),
            max_connections: Some(7),
            ..RunArgs::default()
        };
        let text = "[app]\nmodule = \"m:a\"\n[server]\nsend_timeout = \"9s\"\nmax_connections = 9\n\
                    shutdown_delay = \"15s\"\n";
        let config = resolve_text(text, &args).unwrap();
        assert_eq!(config.server.send_timeout, Duration::from_secs(3));
        assert_eq!(config.server.shutdown_delay, Duration::from_secs(15));
        assert_eq!(config.server.max_connections, 7);
        assert_eq!(config.server.body_timeout, DEFAULT_CLIENT_TIMEOUT);
        let args = RunArgs {
            shutdown_delay: Some(HumanDuration(Duration::from_secs(2))),
            ..RunArgs::default()
        };
        let config = resolve_text(text, &args).unwrap();
        assert_eq!(config.server.shutdown_delay, Duration::from_secs(2));
    }

    #[test]
    fn status_token_from_the_file_a_token_file_or_the_environment() {
        let app = "[app]\nmodule = \"m:a\"\n[health]\n";
        let token = "0123456789abcdef0123";
        let config = resolve_text(
            &format!("{app}status_token = \"{token}\"\n"),
            &RunArgs::default(),
        )
        .unwrap();
        let got = config.health.status_token.clone().unwrap();
        assert_eq!(got.expose(), token);
        // It never shows in debug output.
        assert!(!format!("{config:?}").contains(token));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, format!("  {token}\n")).unwrap();
        let text = format!("{app}status_token_file = \"{}\"\n", file.display());
        let config = resolve_text(&text, &RunArgs::default()).unwrap();
        assert_eq!(config.health.status_token.unwrap().expose(), token);

        // The environment wins over the file's keys; the flag over all.
        let from_env = Env {
            status_token: Some("from-the-environment".into()),
            ..env()
        };
        let f = ConfigFile::new(Path::new("corral.toml"), Path::new("/srv/app"), text);
        let config = resolve(&RunArgs::default(), Some(&f), Path::new("/cwd"), &from_env).unwrap();
        assert_eq!(
            config.health.status_token.unwrap().expose(),
            "from-the-environment"
        );
        let flag_file = dir.path().join("flag-token");
        std::fs::write(&flag_file, "from-the-flag-file\n").unwrap();
        let args = RunArgs {
            status_token_file: Some(flag_file),
            ..RunArgs::default()
        };
        let config = resolve(&args, Some(&f), Path::new("/cwd"), &from_env).unwrap();
        assert_eq!(
            config.health.status_token.unwrap().expose(),
            "from-the-flag-file"
        );
    }

    #[test]
    fn status_token_problems_say_where_and_how() {
        let app = "[app]\nmodule = \"m:a\"\n[health]\n";
        let hint = "like the output of `openssl rand -hex 32`";
        assert_eq!(
            problems(
                &format!("{app}status_token = \"short\"\n"),
                &RunArgs::default()
            ),
            format!(
                "corral.toml:4: health.status_token: is 5 characters long: use at least 16, {hint}"
            )
        );
        assert_eq!(
            problems(
                &format!("{app}status_token = \"with a space in it\"\n"),
                &RunArgs::default()
            ),
            format!(
                "corral.toml:4: health.status_token: holds ' ': use visible ASCII only (no spaces), {hint}"
            )
        );
        let both =
            format!("{app}status_token = \"0123456789abcdef\"\nstatus_token_file = \"token\"\n");
        assert_eq!(
            problems(&both, &RunArgs::default()),
            "corral.toml:5: health.status_token_file: health.status_token is set too: keep one \
             of the two (the file keeps the token out of this config)"
        );
        let missing = problems(
            &format!("{app}status_token_file = \"no-such-token\"\n"),
            &RunArgs::default(),
        );
        assert!(
            missing.starts_with(
                "corral.toml:4: health.status_token_file: cannot read /srv/app/no-such-token: "
            ) && missing.ends_with("write the token into that file, or give another path"),
            "{missing}"
        );
        let from_env = Env {
            status_token: Some("tiny".into()),
            ..env()
        };
        let args = RunArgs {
            app: Some("m:a".into()),
            ..RunArgs::default()
        };
        assert_eq!(
            resolve(&args, None, Path::new("/cwd"), &from_env)
                .unwrap_err()
                .to_string(),
            format!("CORRAL_STATUS_TOKEN: is 4 characters long: use at least 16, {hint}")
        );
    }

    #[test]
    fn forwarded_allow_ips_problems_name_each_bad_entry() {
        let how = "is not an IP address or network: use e.g. \"127.0.0.1\", \"10.0.0.0/8\" \
                   or \"*\"";
        let text = "[app]\nmodule = \"m:a\"\n[server]\nforwarded_allow_ips = [\"10.0.0.300\"]\n";
        assert_eq!(
            problems(text, &RunArgs::default()),
            format!("corral.toml:4: server.forwarded_allow_ips: \"10.0.0.300\" {how}")
        );
        // Every bad entry, each at its own line.
        let text = "[app]\nmodule = \"m:a\"\n[server]\nforwarded_allow_ips = [\n  \"127.0.0.1\",\n  \
                    \"localhost\",\n  \"10.0.0.0/33\",\n]\n";
        let text = problems(text, &RunArgs::default());
        let expected = [
            "2 problems in the configuration:",
            &format!("  corral.toml:6: server.forwarded_allow_ips: \"localhost\" {how}"),
            "  corral.toml:7: server.forwarded_allow_ips: \"10.0.0.0/33\" has a bad prefix \
             length: write 0 to 32 after the \"/\", like \"10.0.0.0/8\"",
        ];
        for line in expected {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        // The flag is named, and the file's entries are not checked then.
        let args = RunArgs {
            app: Some("m:a".into()),
            forwarded_allow_ips: Some("127.0.0.1, 10.0.0.300,::1,nginx".into()),
            ..RunArgs::default()
        };
        let text = problems("[server]\nforwarded_allow_ips = [\"bad\"]\n", &args);
        assert_eq!(
            text,
            format!(
                "2 problems in the configuration:\n  \
                 --forwarded-allow-ips: \"10.0.0.300\" {how}\n  \
                 --forwarded-allow-ips: \"nginx\" {how}"
            )
        );
    }

    #[test]
    fn concurrency_must_be_at_least_one() {
        let text = "[app]\nmodule = \"m:a\"\n[server]\nmax_queued = 0\n[workers]\n\
                    threads = 0\nconcurrency = 0\n";
        let text = problems(text, &RunArgs::default());
        let expected = [
            "2 problems in the configuration:",
            "  corral.toml:6: workers.threads: must be at least 1",
            "  corral.toml:7: workers.concurrency: must be at least 1 (it is the number of \
             requests one ASGI worker holds at once), like 1000",
        ];
        for line in expected {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        // max_queued = 0 is fine: no request ever waits.
        assert!(!text.contains("max_queued"), "{text}");
        // The flag is named when it is the one at fault, and wins over the
        // file.
        let args = RunArgs {
            app: Some("main:app".into()),
            concurrency: Some(0),
            ..RunArgs::default()
        };
        let err = problems("[workers]\nconcurrency = 8\n", &args);
        assert_eq!(
            err,
            "--concurrency: must be at least 1 (it is the number of requests one ASGI worker \
             holds at once), like 1000"
        );
        let args = RunArgs {
            concurrency: Some(8),
            ..args
        };
        let config = resolve_text("[workers]\nconcurrency = 0\n", &args).unwrap();
        assert_eq!(config.workers.concurrency, 8);
    }

    #[test]
    fn auto_io_threads_is_half_the_cpus_at_least_one() {
        let threads: Vec<usize> = (0..=9).map(auto_io_threads).collect();
        assert_eq!(threads, [1, 1, 1, 1, 2, 2, 3, 3, 4, 4]);
        // 0 in the file is fine (automatic), and never stays 0.
        let args = RunArgs {
            app: Some("m:a".into()),
            ..RunArgs::default()
        };
        let config = resolve_text("[server]\nio_threads = 0\n", &args).unwrap();
        assert_eq!(config.server.io_threads, auto_io_threads(env().cpus));
    }

    #[test]
    fn control_socket_and_deploy_problems() {
        let long = format!("/{}.sock", "s".repeat(110));
        let text = format!(
            "[app]\nmodule = \"m:a\"\n[control]\nsocket = {long:?}\n[deploy]\nready_timeout = \"0s\"\n"
        );
        let text = problems(&text, &RunArgs::default());
        let expected = [
            "2 problems in the configuration:".to_owned(),
            format!(
                "  corral.toml:4: control.socket: \"{long}\" is 116 bytes long, more than the 107 \
                 that a Unix socket path may hold: use a shorter path"
            ),
            "  corral.toml:6: deploy.ready_timeout: must be longer than 0s, like \"60s\""
                .to_owned(),
        ];
        for line in expected {
            assert!(text.contains(&line), "missing {line:?} in:\n{text}");
        }
        // A relative path counts once made absolute.
        let name = "s".repeat(100);
        let text = format!("[app]\nmodule = \"m:a\"\n[control]\nsocket = \"{name}\"\n");
        assert!(problems(&text, &RunArgs::default()).contains("is 109 bytes long"));
        let args = RunArgs {
            app: Some("m:a".into()),
            socket: Some(long.clone().into()),
            ..RunArgs::default()
        };
        assert!(
            problems("", &args).starts_with(&format!("--socket: \"{long}\" is 116 bytes long")),
        );
        // Exactly 107 bytes fit.
        let fits = format!("/{}", "s".repeat(106));
        let args = RunArgs {
            socket: Some(fits.clone().into()),
            ..args
        };
        let config = resolve_text("", &args).unwrap();
        assert_eq!(config.control.socket, PathBuf::from(fits));
    }

    #[test]
    fn revision_and_hook_problems() {
        let text = "[app]\nmodule = \"m:a\"\n[deploy]\nrevision = \"gti\"\nstate_dir = \"\"\n\
                    rollback_hook = []\nhook_timeout = \"0s\"\n";
        let text = problems(text, &RunArgs::default());
        let expected = [
            "4 problems in the configuration:",
            "  corral.toml:4: deploy.revision: unknown revision source \"gti\": use \"auto\", \"git\", \
             \"symlink\" or \"none\", or a command as an array of strings, like [\"cat\", \"REVISION\"]",
            "  corral.toml:5: deploy.state_dir: is empty: give a path or leave the key out",
            "  corral.toml:6: deploy.rollback_hook: is empty: give a command like \
             [\"./rollback.sh\", \"--notify\"], or leave the key out",
            "  corral.toml:7: deploy.hook_timeout: must be longer than 0s, like \"60s\"",
        ];
        for line in expected {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }

        let deploy = |text: &str| {
            let text = format!("[app]\nmodule = \"m:a\"\n[deploy]\n{text}");
            resolve_text(&text, &RunArgs::default())
                .map(|c| c.deploy)
                .map_err(|e| e.to_string())
        };
        let at = "corral.toml:4: deploy.";
        // Names are exact.
        assert!(
            deploy("revision = \"Git\"\n")
                .unwrap_err()
                .starts_with(&format!("{at}revision: unknown revision source \"Git\""))
        );
        // A command written as a string: the array to write instead.
        assert_eq!(
            deploy("revision = \"git rev-parse HEAD\"\n").unwrap_err(),
            format!(
                "{at}revision: \"git rev-parse HEAD\" is not \"auto\", \"git\", \"symlink\" or \"none\": \
                 to run a command, write it as an array of strings, like [\"git\", \"rev-parse\", \"HEAD\"]"
            )
        );
        assert!(
            deploy("revision = \"./revision.sh\"\n")
                .unwrap_err()
                .ends_with("like [\"./revision.sh\"]")
        );
        assert_eq!(
            deploy("rollback_hook = \"./rollback.sh --notify\"\n").unwrap_err(),
            format!(
                "{at}rollback_hook: is a string: write the command as an array of strings (the \
                 program, then its arguments), like [\"./rollback.sh\", \"--notify\"]"
            )
        );
        assert!(
            deploy("rollback_hook = \" \"\n")
                .unwrap_err()
                .ends_with("like [\"./rollback.sh\", \"--notify\"]")
        );
        assert_eq!(
            deploy("revision = []\n").unwrap_err(),
            format!(
                "{at}revision: is empty: give a command like [\"cat\", \"REVISION\"], or leave the key out"
            )
        );
        assert_eq!(
            deploy("revision = [\"\", \"x\"]\n").unwrap_err(),
            format!(
                "{at}revision: the program (the first string) is empty: give a command like [\"cat\", \"REVISION\"]"
            )
        );
        assert_eq!(
            deploy("rollback_hook = [\"rollback\", \"a\\u0000b\"]\n").unwrap_err(),
            format!("{at}rollback_hook: \"a\\0b\" holds a NUL byte")
        );
        // An empty argument is fine.
        assert_eq!(
            deploy("rollback_hook = [\"rollback\", \"\"]\n")
                .unwrap()
                .rollback_hook,
            Some(vec!["rollback".into(), String::new()])
        );
    }

    #[test]
    fn rollback_and_strategy_problems() {
        let text = "[app]\nmodule = \"m:a\"\n[deploy]\nrollback = \"git_reset\"\n\
                    strategy = \"canary\"\nmax_surge = 0\n";
        let text = problems(text, &RunArgs::default());
        let expected = [
            "3 problems in the configuration:",
            "  corral.toml:4: deploy.rollback: unknown rollback \"git_reset\": write \"git-reset\" \
             (one of \"none\", \"git-reset\" or \"symlink\")",
            "  corral.toml:5: deploy.strategy: unknown strategy \"canary\": use \"all-at-once\" or \
             \"rolling\"",
            "  corral.toml:6: deploy.max_surge: must be at least 1 (it is the number of extra \
             workers a rolling reload may run), like 1",
        ];
        for line in expected {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }

        let deploy = |text: &str, args: &RunArgs| {
            let text = format!("[app]\nmodule = \"m:a\"\n[deploy]\n{text}");
            resolve_text(&text, args)
                .map(|c| c.deploy)
                .map_err(|e| e.to_string())
        };
        let none = RunArgs::default();
        let at = "corral.toml:4: deploy.";
        // Names are exact; close ones get the spelling to use.
        for (wrong, meant) in [
            ("GitReset", "git-reset"),
            ("git reset", "git-reset"),
            ("Symlink", "symlink"),
            ("NONE", "none"),
        ] {
            assert_eq!(
                deploy(&format!("rollback = {wrong:?}\n"), &none).unwrap_err(),
                format!(
                    "{at}rollback: unknown rollback \"{wrong}\": write \"{meant}\" (one of \
                     \"none\", \"git-reset\" or \"symlink\")"
                )
            );
        }
        for (wrong, meant) in [
            ("all_at_once", "all-at-once"),
            ("AllAtOnce", "all-at-once"),
            ("Rolling", "rolling"),
        ] {
            assert!(
                deploy(&format!("strategy = {wrong:?}\n"), &none)
                    .unwrap_err()
                    .starts_with(&format!(
                        "{at}strategy: unknown strategy \"{wrong}\": write \"{meant}\""
                    ))
            );
        }
        assert_eq!(
            deploy("rollback = \"\"\n", &none).unwrap_err(),
            format!(
                "{at}rollback: unknown rollback \"\": use \"none\", \"git-reset\" or \"symlink\""
            )
        );
        // A script belongs in rollback_hook.
        assert_eq!(
            deploy("rollback = \"./rollback.sh --notify\"\n", &none).unwrap_err(),
            format!(
                "{at}rollback: \"./rollback.sh --notify\" is not \"none\", \"git-reset\" or \
                 \"symlink\": to run a script of your own, give it as rollback_hook = \
                 [\"./rollback.sh\", \"--notify\"]"
            )
        );

        // "symlink" needs app.chdir.
        assert_eq!(
            deploy("rollback = \"symlink\"\n", &none).unwrap_err(),
            format!(
                "{at}rollback: \"symlink\" needs app.chdir: set it to the `current` symlink that \
                 points at the release, like \"/srv/app/current\" (or pass --chdir)"
            )
        );
        // An app.chdir with a problem of its own is reported once.
        let text = "[app]\nmodule = \"m:a\"\nchdir = \"\"\n[deploy]\nrollback = \"symlink\"\n";
        assert_eq!(
            problems(text, &none),
            "corral.toml:3: app.chdir: is empty: give a path or leave the key out"
        );

        // "git-reset" needs a revision that is a git commit.
        let prefix = "\"git-reset\" resets the app folder to the last known good commit, so it \
                      needs deploy.revision \"git\" or \"auto\", but deploy.revision is";
        assert_eq!(
            deploy("revision = \"symlink\"\nrollback = \"git-reset\"\n", &none).unwrap_err(),
            format!(
                "corral.toml:5: deploy.rollback: {prefix} \"symlink\" (at corral.toml:4): set \
                 revision = \"git\", or use rollback = \"symlink\" to point the app folder back at \
                 the last good release"
            )
        );
        assert_eq!(
            deploy("rollback = \"git-reset\"\n\nrevision = \"none\"\n", &none).unwrap_err(),
            format!("{at}rollback: {prefix} \"none\" (at corral.toml:6): set revision = \"git\"")
        );
        assert_eq!(
            deploy(
                "rollback = \"git-reset\"\nrevision = [\"cat\", \"REVISION\"]\n",
                &none
            )
            .unwrap_err(),
            format!(
                "{at}rollback: {prefix} a command (at corral.toml:5): set revision = \"git\", or \
                 do the rollback in rollback_hook instead"
            )
        );
        // A revision with a problem of its own is reported once.
        let text =
            "[app]\nmodule = \"m:a\"\n[deploy]\nrevision = \"svn\"\nrollback = \"git-reset\"\n";
        assert!(
            problems(text, &none)
                .starts_with("corral.toml:4: deploy.revision: unknown revision source \"svn\""),
        );
        assert!(!problems(text, &none).contains("deploy.rollback"));

        // Every deploy problem at once.
        let text = "[app]\nmodule = \"m:a\"\n[deploy]\nrevision = \"none\"\n\
                    rollback = \"git-reset\"\nstrategy = \"\"\nmax_surge = 0\n";
        assert!(problems(text, &none).starts_with("3 problems in the configuration:"));
    }
}
