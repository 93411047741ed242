//! Configuration: the TOML file and the command line, merged and validated
//! into one resolved [`Config`] with every default filled in.
//!
//! INTERFACE CONTRACT (used by the rest of the binary; keep these names):
//! `config::load(&cli::RunArgs) -> Result<Config, ConfigError>`.
//!
//! The flow is: read the file → parse it into the raw `Raw*` structs (serde,
//! `deny_unknown_fields`; the first syntax or type error stops here) → merge
//! the command line over it, fill the defaults and check the values (every
//! problem is collected, then all are reported at once). Each problem names
//! the file, the line and the key (or the flag) and says how to fix it. The
//! `///` docs on the `Raw*` fields are the config reference;
//! `config/example.toml` shows every key with its default.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

use crate::cli::RunArgs;

/// The file read when no `--config` is given and it exists in the cwd.
const DEFAULT_FILE: &str = "corral.toml";
/// Every key with its default; tested to parse and validate.
const EXAMPLE: &str = include_str!("../config/example.toml");
/// gunicorn's default listen address.
const DEFAULT_BIND: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8000);
/// hyper refuses (panics on) a smaller read buffer than this.
const MIN_HEADER_BYTES: u64 = 8 * 1024;

/// The resolved configuration: every default filled in.
#[derive(Debug, Clone)]
pub struct Config {
    /// The TOML file this came from (absolute), if any.
    pub source: Option<PathBuf>,
    pub app: AppConfig,
    pub server: ServerConfig,
    pub workers: WorkersConfig,
}

#[derive(Debug, Clone)]
pub struct AppConfig {
    /// "pkg.mod:callable" (callable defaults to "application" like gunicorn when
    /// the ":callable" part is missing).
    pub module: String,
    pub interface: Interface,
    /// Interpreter: `$VIRTUAL_ENV/bin/python` when set, else `python3`.
    /// A bare name (no `/`) is looked up in `PATH`; anything else is absolute.
    pub python: PathBuf,
    /// Absolute path (resolved against the config file's folder or the cwd).
    pub chdir: Option<PathBuf>,
    /// Absolute paths, in the order given.
    pub pythonpath: Vec<PathBuf>,
    pub env: BTreeMap<String, String>,
}

/// The protocol between the worker and the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Interface {
    Wsgi,
    Asgi,
    /// The worker tells from the callable.
    Auto,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Never empty.
    pub bind: Vec<Bind>,
    pub backlog: u32,
    /// Idle time a keep-alive connection is kept open between requests (> 0).
    pub keepalive: Duration,
    /// At least 8 KiB (hyper's smallest `max_buf_size`).
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
}

/// One listen address and where it was configured (for error messages).
#[derive(Debug, Clone)]
pub struct Bind {
    pub addr: BindAddr,
    /// e.g. "corral.toml:7 (key server.bind)", "--bind" or
    /// "default (no --bind or server.bind given)".
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

#[derive(Debug, Clone)]
pub struct WorkersConfig {
    /// At least 1.
    pub count: usize,
    /// Concurrent requests per WSGI worker (threads). At least 1.
    pub threads: usize,
    /// Per-request timeout (time to the response head). Longer than 0.
    pub timeout: Duration,
    /// May be 0 (stop without waiting).
    pub graceful_timeout: Duration,
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

// ---------------------------------------------------------------------------
// The raw file: what serde reads. These docs are the config reference.

/// A `corral.toml` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// `[app]`: what to import and how to start Python.
    #[serde(default)]
    app: RawApp,
    /// `[server]`: the HTTP side that corral serves itself.
    #[serde(default)]
    server: RawServer,
    /// `[workers]`: the Python worker processes.
    #[serde(default)]
    workers: RawWorkers,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    /// The app, as "module:callable" (gunicorn's APP argument), e.g.
    /// "main:app" or "pkg.wsgi:application". Without ":callable" the
    /// callable is "application". Required here or on the command line.
    module: Option<Spanned<String>>,
    /// "wsgi", "asgi" or "auto" (the worker tells from the callable).
    /// Default "auto".
    interface: Option<Interface>,
    /// The Python interpreter. A bare name ("python3.12") is looked up in
    /// PATH; a path is relative to this file's folder. Default
    /// `$VIRTUAL_ENV/bin/python` when VIRTUAL_ENV is set, else "python3".
    python: Option<Spanned<String>>,
    /// Folder the workers run in and import the app from, relative to this
    /// file's folder. Default: corral's own working directory.
    chdir: Option<Spanned<String>>,
    /// Folders put in front of sys.path, relative to this file's folder.
    /// Default none.
    #[serde(default)]
    pythonpath: Vec<Spanned<String>>,
    /// Extra environment variables for the workers (a table of strings).
    /// `--env KEY=VALUE` flags are merged over it.
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    /// Addresses to listen on: "HOST:PORT" with an IP address
    /// ("0.0.0.0:8000", "[::]:8000", "localhost:8000") or "unix:/path"
    /// (relative to this file's folder). Default ["127.0.0.1:8000"].
    bind: Option<Spanned<Vec<Spanned<String>>>>,
    /// Listen queue length passed to listen(2). Default 2048.
    backlog: Option<Spanned<u32>>,
    /// How long an idle keep-alive connection stays open between requests,
    /// e.g. "5s". Default "5s".
    keepalive: Option<Spanned<HumanDuration>>,
    /// Largest request head (request line and headers) accepted; bigger ones
    /// get 431. At least "8KiB". Default "64KiB".
    max_header_bytes: Option<Spanned<ByteSize>>,
    /// Largest request body accepted; bigger ones get 413. Default "100MiB".
    max_body_bytes: Option<Spanned<ByteSize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkers {
    /// Number of worker processes. Default 1.
    count: Option<Spanned<usize>>,
    /// Threads per WSGI worker (concurrent requests each). Default 1.
    threads: Option<Spanned<usize>>,
    /// Longest a request may wait for its response head; after that the
    /// client gets 504 and the worker is replaced. Default "30s".
    timeout: Option<Spanned<HumanDuration>>,
    /// How long a stopping worker may finish its requests before it is
    /// killed. Default "30s".
    graceful_timeout: Option<Spanned<HumanDuration>>,
}

// ---------------------------------------------------------------------------
// Loading.

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

/// Reads `--config FILE` (or `./corral.toml` when present), merges the
/// command line over it and validates the result.
pub fn load(args: &RunArgs) -> Result<Config, ConfigError> {
    let cwd = std::env::current_dir().map_err(ConfigError::CurrentDir)?;
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            Some(ConfigFile::new(path, &cwd, text))
        }
        None => match std::fs::read_to_string(cwd.join(DEFAULT_FILE)) {
            Ok(text) => Some(ConfigFile::new(Path::new(DEFAULT_FILE), &cwd, text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                let path = PathBuf::from(DEFAULT_FILE);
                return Err(ConfigError::Read { path, source });
            }
        },
    };
    let virtual_env = std::env::var_os("VIRTUAL_ENV").map(PathBuf::from);
    resolve(args, file.as_ref(), &cwd, virtual_env.as_deref())
}

/// Everything after reading: parse, merge, fill defaults, validate. No I/O.
fn resolve(
    args: &RunArgs,
    file: Option<&ConfigFile>,
    cwd: &Path,
    virtual_env: Option<&Path>,
) -> Result<Config, ConfigError> {
    let raw = match file {
        Some(file) => parse(file).map_err(ConfigError::Parse)?,
        None => RawConfig::default(),
    };
    let mut r = Resolver {
        file,
        cwd,
        problems: Vec::new(),
    };
    let app = r.app(args, raw.app, virtual_env);
    let server = r.server(args, raw.server);
    let workers = r.workers(args, raw.workers);
    match app {
        Some(app) if r.problems.is_empty() => Ok(Config {
            source: file.map(|f| f.path.clone()),
            app,
            server,
            workers,
        }),
        _ => Err(ConfigError::Validate(r.problems)),
    }
}

/// The file into the raw structs; the first syntax or type error.
fn parse(file: &ConfigFile) -> Result<RawConfig, Problem> {
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
        let mut message = e
            .inner()
            .message()
            .replacen("unknown field", "unknown key", 1)
            .replace("expected a sequence", "expected an array")
            .replace("expected a map", "expected a table");
        let wrong_type =
            message.starts_with("invalid type") || message.starts_with("invalid value");
        if wrong_type {
            if let Some(example) = example_for(&key) {
                message.push_str(&format!("; for example: {example}"));
            } else if message.ends_with("expected a string") {
                message.push_str("; put the value in quotes");
            }
        }
        Problem {
            location: e.inner().span().map(|s| file.location(s.start)),
            key: Some(key).filter(|k| !k.is_empty()),
            message,
        }
    })
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

/// Where a value came from, to point a problem at it.
struct At {
    location: Option<String>,
    key: String,
}

impl At {
    fn flag(flag: &str) -> At {
        At {
            location: None,
            key: flag.to_owned(),
        }
    }
}

/// Merges one raw file with the command line and collects problems.
struct Resolver<'a> {
    file: Option<&'a ConfigFile>,
    cwd: &'a Path,
    problems: Vec<Problem>,
}

impl Resolver<'_> {
    fn fail(&mut self, at: &At, message: impl Into<String>) {
        self.problems.push(Problem {
            location: at.location.clone(),
            key: Some(at.key.clone()),
            message: message.into(),
        });
    }

    fn in_file(&self, span: Range<usize>, key: &str) -> At {
        At {
            location: self.file.map(|f| f.location(span.start)),
            key: key.to_owned(),
        }
    }

    /// The folder relative paths in the file are resolved against.
    fn file_dir(&self) -> &Path {
        self.file.map_or(self.cwd, |f| &f.dir)
    }

    /// The flag's value, else the file's, else the default.
    fn pick<T: Clone>(
        &self,
        flag: (Option<&T>, &str),
        file: (Option<&Spanned<T>>, &str),
        default: T,
    ) -> (T, At) {
        match (flag.0, file.0) {
            (Some(v), _) => (v.clone(), At::flag(flag.1)),
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

    fn app(
        &mut self,
        args: &RunArgs,
        raw: RawApp,
        virtual_env: Option<&Path>,
    ) -> Option<AppConfig> {
        let module = match (&args.app, &raw.module) {
            (Some(m), _) => Some((m.clone(), At::flag("APP"))),
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

        let (interface, _) = self.pick(
            (args.interface.as_ref(), "--interface"),
            (None, "app.interface"),
            raw.interface.unwrap_or(Interface::Auto),
        );

        let python = match (&args.python, &raw.python) {
            (Some(p), _) => Some(command_path(self.cwd, p)),
            (None, Some(p)) if p.get_ref().is_empty() => {
                let at = self.in_file(p.span(), "app.python");
                self.fail(
                    &at,
                    "is empty: give an interpreter like \"python3\" or leave the key out",
                );
                None
            }
            (None, Some(p)) => Some(command_path(self.file_dir(), Path::new(p.get_ref()))),
            (None, None) => Some(match virtual_env {
                Some(venv) => venv.join("bin/python"),
                None => PathBuf::from("python3"),
            }),
        };

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

        Some(AppConfig {
            module: module?,
            interface,
            python: python?,
            chdir,
            pythonpath,
            env,
        })
    }

    fn server(&mut self, args: &RunArgs, raw: RawServer) -> ServerConfig {
        let mut bind = Vec::new();
        if !args.bind.is_empty() {
            for addr in &args.bind {
                let addr = match addr {
                    BindAddr::Unix(path) => BindAddr::Unix(absolute(self.cwd, path)),
                    tcp => tcp.clone(),
                };
                bind.push((addr, At::flag("--bind")));
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
            let origin = match &at.location {
                Some(location) => format!("{location} (key {})", at.key),
                None => at.key,
            };
            seen.push(Bind { addr, origin });
        }
        if seen.is_empty() && args.bind.is_empty() && raw.bind.is_none() {
            seen.push(Bind {
                addr: BindAddr::Tcp(DEFAULT_BIND),
                origin: "default (no --bind or server.bind given)".to_owned(),
            });
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
        ServerConfig {
            bind: seen,
            backlog,
            keepalive: keepalive.0,
            max_header_bytes: usize::try_from(max_header_bytes.0).unwrap_or(usize::MAX),
            max_body_bytes: max_body_bytes.0,
        }
    }

    fn workers(&mut self, args: &RunArgs, raw: RawWorkers) -> WorkersConfig {
        let (count, at) = self.pick(
            (args.workers.as_ref(), "--workers"),
            (raw.count.as_ref(), "workers.count"),
            1,
        );
        if count == 0 {
            self.fail(
                &at,
                "must be at least 1 (it is the number of worker processes)",
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
        WorkersConfig {
            count,
            threads,
            timeout: timeout.0,
            graceful_timeout: graceful_timeout.0,
        }
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
    Ok(format!("{module}:{callable}"))
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
fn absolute(base: &Path, path: &Path) -> PathBuf {
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

// ---------------------------------------------------------------------------
// Value types shared by the file and the flags.

impl FromStr for BindAddr {
    type Err = String;

    /// "HOST:PORT" (IPv4, "[IPv6]" or "localhost"), or "unix:/path".
    fn from_str(s: &str) -> Result<BindAddr, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!(
                    "invalid bind address \"{s}\": the socket path is missing, like \"unix:/run/corral.sock\""
                ));
            }
            return Ok(BindAddr::Unix(PathBuf::from(path)));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(BindAddr::Tcp(addr));
        }
        if let Some(port) = s.strip_prefix("localhost:")
            && let Ok(port) = port.parse::<u16>()
        {
            return Ok(BindAddr::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, port))));
        }
        if let Ok(ip) = s.parse::<std::net::IpAddr>() {
            let with_port = SocketAddr::new(ip, 8000);
            return Err(format!(
                "invalid bind address \"{s}\": the port is missing, like \"{with_port}\""
            ));
        }
        Err(format!(
            "invalid bind address \"{s}\": use IP:PORT like \"127.0.0.1:8000\", \"0.0.0.0:8000\" or \"[::]:8000\", or \"unix:/path/to.sock\""
        ))
    }
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddr::Tcp(addr) => write!(f, "{addr}"),
            BindAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A duration written like "30s", "500ms", "2m", "1h" or "1m30s".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<HumanDuration, String> {
        let bad = || {
            format!(
                "invalid duration \"{s}\": use a number with a unit, like \"30s\", \"500ms\", \"2m\""
            )
        };
        let text = s.trim();
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(format!(
                "invalid duration \"{s}\": add a unit, like \"{text}s\" or \"{text}ms\""
            ));
        }
        let mut rest = text;
        let mut nanos: u128 = 0;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let (number, after) = split_number(rest);
            let unit_len = after
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_len);
            let scale: u128 = match unit {
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60 * 1_000_000_000,
                "h" => 3600 * 1_000_000_000,
                _ => return Err(bad()),
            };
            nanos += scaled(number, scale).ok_or_else(bad)?;
            rest = after.trim_start();
        }
        u64::try_from(nanos)
            .map(|n| HumanDuration(Duration::from_nanos(n)))
            .map_err(|_| format!("invalid duration \"{s}\": too long"))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like \"30s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "invalid duration {v}: add a unit and quotes, like \"{v}s\" or \"{v}ms\""
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format!(
                    "invalid duration {v}: add a unit and quotes, like \"{v}s\""
                )))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A byte count written like "64KiB", "10MiB", "1GiB", "512KB" (1000-based),
/// "100B", or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<ByteSize, String> {
        let bad = || {
            format!(
                "invalid size \"{s}\": use a number of bytes or a number with a unit, like \"64KiB\", \"10MiB\", \"512KB\""
            )
        };
        let (number, unit) = split_number(s.trim());
        let unit = unit.trim_start();
        let scale: u128 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" if number.contains('.') => return Err(bad()),
            "" | "b" => 1,
            "kb" => 1000,
            "mb" => 1000_u128.pow(2),
            "gb" => 1000_u128.pow(3),
            "tb" => 1000_u128.pow(4),
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            "k" | "m" | "g" | "t" => {
                let u = unit.to_ascii_uppercase();
                return Err(format!(
                    "invalid size \"{s}\": write \"{number}{u}iB\" (1024-based) or \"{number}{u}B\" (1000-based)"
                ));
            }
            _ => return Err(bad()),
        };
        let bytes = scaled(number, scale).ok_or_else(bad)?;
        u64::try_from(bytes)
            .map(ByteSize)
            .map_err(|_| format!("invalid size \"{s}\": too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like \"64KiB\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ByteSize, E> {
                Err(E::custom(format!(
                    "invalid size {v}: use a whole number of bytes or a unit, like \"1.5MiB\""
                )))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Splits "1.5MiB" into ("1.5", "MiB").
fn split_number(s: &str) -> (&str, &str) {
    let len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s.split_at(len)
}

/// The decimal `number` ("12", "1.5", ".5") times `scale`, rounded down.
fn scaled(number: &str, scale: u128) -> Option<u128> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac = &frac[..frac.len().min(18)];
    let frac_part = if frac.is_empty() {
        0
    } else {
        frac.parse::<u128>().ok()? * scale / 10_u128.pow(frac.len() as u32)
    };
    int.checked_mul(scale)?.checked_add(frac_part)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(s: &str) -> Result<Duration, String> {
        s.parse::<HumanDuration>().map(|d| d.0)
    }

    fn size(s: &str) -> Result<u64, String> {
        s.parse::<ByteSize>().map(|b| b.0)
    }

    /// Resolves `text` as "corral.toml" in /srv/app, run from /cwd.
    fn resolve_text(text: &str, args: &RunArgs) -> Result<Config, ConfigError> {
        let file = ConfigFile::new(Path::new("corral.toml"), Path::new("/srv/app"), text.into());
        resolve(args, Some(&file), Path::new("/cwd"), None)
    }

    fn error_text(text: &str) -> String {
        resolve_text(text, &RunArgs::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn durations() {
        assert_eq!(dur("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(dur("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(dur("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(dur("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(dur("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(dur("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(dur("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(dur(".25s"), Ok(Duration::from_millis(250)));
        assert_eq!(dur("0s"), Ok(Duration::ZERO));
        for bad in ["", "5x", "s", "-5s", "1.2.3s", "5 s x", "1m30"] {
            let err = dur(bad).unwrap_err();
            assert!(err.contains("use a number with a unit"), "{bad}: {err}");
        }
        assert_eq!(
            dur("30").unwrap_err(),
            "invalid duration \"30\": add a unit, like \"30s\" or \"30ms\""
        );
        assert!(dur("999999999999h").unwrap_err().contains("too long"));
    }

    #[test]
    fn sizes() {
        assert_eq!(size("64KiB"), Ok(64 * 1024));
        assert_eq!(size("10MiB"), Ok(10 << 20));
        assert_eq!(size("1GiB"), Ok(1 << 30));
        assert_eq!(size("512KB"), Ok(512_000));
        assert_eq!(size("100B"), Ok(100));
        assert_eq!(size("100"), Ok(100));
        assert_eq!(size("1.5 MiB"), Ok(3 << 19));
        assert_eq!(size("64kib"), Ok(64 * 1024));
        for bad in ["", "1.5", "10XB", "MiB", "-1KiB"] {
            assert!(size(bad).unwrap_err().contains("invalid size"), "{bad}");
        }
        assert!(size("64K").unwrap_err().contains("\"64KiB\" (1024-based)"));
        assert!(size("99999999TiB").unwrap_err().contains("too large"));
    }

    #[test]
    fn binds() {
        let tcp = |s: &str| BindAddr::Tcp(s.parse().unwrap());
        assert_eq!("127.0.0.1:8000".parse(), Ok(tcp("127.0.0.1:8000")));
        assert_eq!("[::1]:80".parse(), Ok(tcp("[::1]:80")));
        assert_eq!("localhost:9".parse(), Ok(tcp("127.0.0.1:9")));
        assert_eq!(
            "unix:/run/a.sock".parse(),
            Ok(BindAddr::Unix("/run/a.sock".into()))
        );
        let missing_port = "0.0.0.0".parse::<BindAddr>().unwrap_err();
        assert!(
            missing_port.contains("like \"0.0.0.0:8000\""),
            "{missing_port}"
        );
        for bad in ["unix:", "example.com:80", "1.2.3.4:99999", ""] {
            assert!(bad.parse::<BindAddr>().is_err(), "{bad}");
        }
    }

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
    fn defaults_without_a_file() {
        let args = RunArgs {
            app: Some("main".into()),
            ..RunArgs::default()
        };
        let config = resolve(&args, None, Path::new("/cwd"), Some(Path::new("/venv"))).unwrap();
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
        assert_eq!(config.workers.count, 1);
        assert_eq!(config.workers.threads, 1);
        assert_eq!(config.workers.timeout, Duration::from_secs(30));
        assert_eq!(config.workers.graceful_timeout, Duration::from_secs(30));
        let config = resolve(&args, None, Path::new("/cwd"), None).unwrap();
        assert_eq!(config.app.python, PathBuf::from("python3"));
    }

    #[test]
    fn example_config_parses_and_validates() {
        let file = ConfigFile::new(
            Path::new("config/example.toml"),
            Path::new("/repo"),
            EXAMPLE.into(),
        );
        let config = resolve(&RunArgs::default(), Some(&file), Path::new("/repo"), None).unwrap();
        assert_eq!(
            config.source,
            Some(PathBuf::from("/repo/config/example.toml"))
        );
        assert_eq!(config.app.module, "app:app");
        assert_eq!(config.app.chdir, Some(PathBuf::from("/repo/example")));
        // The example shows the defaults.
        let defaults = resolve(
            &RunArgs {
                app: Some("app:app".into()),
                ..RunArgs::default()
            },
            None,
            Path::new("/repo"),
            None,
        )
        .unwrap();
        assert_eq!(config.server.backlog, defaults.server.backlog);
        assert_eq!(config.server.keepalive, defaults.server.keepalive);
        assert_eq!(
            config.server.max_header_bytes,
            defaults.server.max_header_bytes
        );
        assert_eq!(config.server.max_body_bytes, defaults.server.max_body_bytes);
        assert_eq!(config.server.bind[0].addr, defaults.server.bind[0].addr);
        assert_eq!(config.workers.count, defaults.workers.count);
        assert_eq!(config.workers.threads, defaults.workers.threads);
        assert_eq!(config.workers.timeout, defaults.workers.timeout);
        assert_eq!(
            config.workers.graceful_timeout,
            defaults.workers.graceful_timeout
        );
        assert_eq!(config.app.interface, defaults.app.interface);
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
"#;
        let config = resolve_text(text, &RunArgs::default()).unwrap();
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
    }

    #[test]
    fn flags_override_the_file() {
        let text = "[app]\nmodule = \"a:app\"\nenv = { A = \"file\", B = \"file\" }\n\
                    [server]\nbind = [\"0.0.0.0:9000\"]\n[workers]\ncount = 4\n";
        let args = RunArgs {
            app: Some("b:app".into()),
            bind: vec!["unix:web.sock".parse().unwrap()],
            workers: Some(2),
            chdir: Some("x".into()),
            python: Some("python3.12".into()),
            env: vec![("B".into(), "flag".into())],
            ..RunArgs::default()
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
    }

    #[test]
    fn parse_errors_name_file_line_and_key() {
        assert_eq!(
            error_text("[app]\nmodule = \"a:b\"\n[server]\nkeepalive = \"5x\"\n"),
            "corral.toml:4: server.keepalive: invalid duration \"5x\": use a number with a unit, like \"30s\", \"500ms\", \"2m\""
        );
        let unknown = error_text("[server]\nbind = []\nkeepalvie = \"5s\"\n");
        assert!(
            unknown.starts_with("corral.toml:3: server.keepalvie: unknown key `keepalvie`, expected one of `bind`, `backlog`, `keepalive`"),
            "{unknown}"
        );
        let wrong_type = error_text("[workers]\n\ncount = \"4\"\n");
        assert_eq!(
            wrong_type,
            "corral.toml:3: workers.count: invalid type: string \"4\", expected usize; for example: count = 1"
        );
        let bind_type = error_text("[server]\nbind = \"0.0.0.0:80\"\n");
        assert!(
            bind_type.contains("expected an array; for example: bind = [\"127.0.0.1:8000\"]"),
            "{bind_type}"
        );
        assert!(error_text("[sever]\n").starts_with("corral.toml:1: sever: unknown key `sever`"));
        assert!(
            error_text("[workers]\ntimeout = 30\n")
                .contains("workers.timeout: invalid duration 30: add a unit")
        );
        let syntax = error_text("[app]\nmodule = main:app\n");
        assert!(
            syntax.starts_with("corral.toml:2: invalid TOML: "),
            "{syntax}"
        );
        assert!(syntax.ends_with(" (in `module = main:app`)"), "{syntax}");
        let env = error_text("[app.env]\nPORT = 8000\n");
        assert!(env.ends_with("app.env.PORT: invalid type: integer `8000`, expected a string; put the value in quotes"), "{env}");
        assert!(
            error_text("[app]\ninterface = \"wgsi\"\n")
                .contains("corral.toml:2: app.interface: unknown variant `wgsi`")
        );
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

    #[test]
    fn missing_app_and_flag_problems() {
        let err = resolve(&RunArgs::default(), None, Path::new("/cwd"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no app given: pass it as `corral main:app` or set [app] module in corral.toml"
        );
        let args = RunArgs {
            app: Some("main:app".into()),
            workers: Some(0),
            ..RunArgs::default()
        };
        let err = resolve(&args, None, Path::new("/cwd"), None).unwrap_err();
        assert!(
            err.to_string().starts_with("--workers: must be at least 1"),
            "{err}"
        );
    }
}
