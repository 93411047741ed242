//! Configuration: the TOML file and the command line, merged and validated
//! into one resolved [`Config`] with every default filled in.
//!
//! INTERFACE CONTRACT (used by the rest of the binary; keep these names):
//! `config::load(&Overrides, converted) -> Result<Config, ConfigError>`, where
//! [`Overrides`] are the flags of `corral run` (the command line flattens it)
//! and `converted` a gunicorn.conf.py ([`gunicorn_file`]) with its corral.toml text;
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
//! Where the parts live: `raw` defines every key once (the `Raw*` structs,
//! and for a plain key, one with a default, its flag, default, check and
//! resolved field too, through the `section!` macro of `keys`); `units`
//! parses the value types written as text in the file and on the command
//! line (durations, sizes, bind addresses, trusted proxies); `overrides`
//! holds the flags of `run` and `check` for the keys of other shapes, each
//! with its `--help`, its `CORRAL_*` variable and the key it stands for, and
//! flattens in the plain keys' flags; `validate` (one file per section)
//! merges the flags over the file, fills the defaults and checks every
//! value; `logs` does the same for `[log]` and the gunicorn flags that sit
//! beside corral's own (`--limit-request-*`, `-p`, `-k`, `--preload`);
//! `resolved` holds the resolved types. This module holds the errors and
//! the pipeline that ties those steps together.
//!
//! Adding a key: see the top of `raw.rs`. A plain key is one entry there
//! and its line in `config/example.toml`; `example_tests` fails until the
//! example shows it with the default the entry names.

#[cfg(test)]
mod dropin_tests;
#[cfg(test)]
mod example_tests;
mod instance;
mod keys;
mod logs;
mod overrides;
#[cfg(test)]
mod proptests;
mod raw;
pub mod reread;
mod resolved;
mod units;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use instance::{Place, SOCKET_NAME, running_sockets, unit_runtime_directory};
pub use logs::{AccessConfig, AccessTarget, HeadLimits, LogConfig};
pub use overrides::{
    AppOutput, LogFormat, LogLevel, Overrides, env_name, parse_duration, parse_worker_class,
};
pub use raw::{
    DeployFlags, DeployKeys, HealthFlags, HealthKeys, ServerFlags, ServerKeys, WorkersFlags,
    WorkersKeys,
};
use raw::{RawConfig, parse};
pub use resolved::*;
pub use units::{
    BindAddr, ByteSize, ForwardedAllow, HumanDuration, MinReady, ProxyProtocol, WorkerCount,
};
pub(crate) use validate::check_env;
use validate::{Resolver, absolute};

/// The file read when no `--config` is given and it exists in the cwd.
pub const DEFAULT_FILE: &str = "corral.toml";

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
    /// corral runs as root and the config file is one someone else may
    /// change.
    #[error("{}", untrusted(path, why))]
    Untrusted { path: PathBuf, why: String },
    /// A client command given neither a config file nor `--socket` found
    /// no running instance, or several.
    #[error("{}", instances_error(place, found))]
    Instances { place: Place, found: Vec<PathBuf> },
}

fn untrusted(path: &Path, why: &str) -> String {
    // A gunicorn.conf.py in the app's folder, the app's user's (gunicorn's
    // classic layout): code that root would run.
    if path.extension().is_some_and(|e| e == "py") {
        return format!(
            "refusing {0}: {why}, and corral runs as root: it is Python code that corral runs as \
             root (as a root gunicorn does), so whoever can change it could run code as root; make \
             the file and its folder root's and writable by no one else (chown root, chmod go-w), or \
             convert it once as the app's user (runuser -u USER -- corral import-gunicorn {0} > \
             app.toml), move app.toml to a folder of root's (/etc/corral/) and run corral -c \
             /etc/corral/app.toml",
            path.display()
        );
    }
    format!(
        "refusing {}: {why}, and corral runs as root: the file names commands corral runs (its hooks, the rollback hook, the interpreter) and where a client command sends the status token; make the file and its folder root's and writable by no one else (chown root, chmod go-w), or give one that is with -c",
        path.display()
    )
}

/// As root, a config file must be one only root or corral's user can
/// change (nor its folder): a file planted in the current folder, or one
/// the app's user may edit, would otherwise run commands as root.
pub fn trusted(path: &Path) -> Result<(), ConfigError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    match crate::private_fs::changeable_by_others(path) {
        Some(why) => Err(ConfigError::Untrusted {
            path: path.to_path_buf(),
            why,
        }),
        None => Ok(()),
    }
}

/// [`read_file`], refused by [`trusted`].
fn read_trusted(config: Option<&Path>, cwd: &Path) -> Result<Option<ConfigFile>, ConfigError> {
    let file = read_file(config, cwd)?;
    if let Some(f) = &file {
        trusted(&f.path)?;
    }
    Ok(file)
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
        "{} corral instances run here; pick one with its APP (corral status main:app), \
         --bind ADDR, -c FILE or --socket PATH:",
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

/// A gunicorn config file converted: its path, the corral.toml text, and
/// for each line of it the place in the file its setting is
/// (`import_gunicorn::Conversion::lines`).
pub type Converted<'a> = (&'a Path, &'a str, &'a [Option<String>]);

/// A config file read into memory.
struct ConfigFile {
    /// As the user wrote it, for messages ("corral.toml").
    shown: String,
    /// Absolute.
    path: PathBuf,
    /// Folder that relative paths in the file are resolved against.
    dir: PathBuf,
    text: String,
    /// A converted file's: for each line, where the user wrote what it
    /// says (see [`Converted`]); empty for a corral.toml.
    lines: Vec<Option<String>>,
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
            lines: Vec::new(),
        }
    }

    /// "corral.toml:7" for a byte offset into the text.
    fn location(&self, offset: usize) -> String {
        let before = &self.text.as_bytes()[..offset.min(self.text.len())];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        if let Some(Some(written)) = self.lines.get(line - 1) {
            return written.clone();
        }
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
    /// The interpreter that ran `python -m corral` (see [`launched_by`]).
    launched_by: Option<PathBuf>,
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
    /// `$FORWARDED_ALLOW_IPS`: the default `server.forwarded_allow_ips`
    /// when set (gunicorn and uvicorn).
    forwarded_allow_ips: Option<String>,
    /// The CPUs for `workers.count = "auto"`, with the reason.
    usable_cpus: crate::cpus::Usable,
}

/// The interpreter `run` uses when none is configured (see
/// `validate::default_python`), for commands that run Python without a
/// config (`corral import-gunicorn`).
pub fn default_interpreter() -> PathBuf {
    let virtual_env = std::env::var_os("VIRTUAL_ENV").map(PathBuf::from);
    validate::default_python(
        launched_by().as_deref(),
        installed_in_venv().as_deref(),
        virtual_env.as_deref(),
    )
    .0
}

/// The variable `python -m corral` sets to the interpreter that ran it
/// (`sys.executable`) before it runs the binary in its place.
pub const LAUNCHER_PYTHON_ENV: &str = "CORRAL_LAUNCHER_PYTHON";

/// The interpreter that ran `python -m corral`, when it did: an absolute
/// path to a file.
fn launched_by() -> Option<PathBuf> {
    let python = PathBuf::from(std::env::var_os(LAUNCHER_PYTHON_ENV)?);
    (python.is_absolute() && python.is_file()).then_some(python)
}

/// The virtualenv this corral binary was installed into (by `pip install
/// corral`): the folder above the binary's own, when it holds the
/// `pyvenv.cfg` every virtualenv has, or the `conda-meta` folder every
/// conda environment has, and a `bin/python`. `/proc/self/exe` names the
/// binary itself, whatever link or `PATH` entry started it.
fn installed_in_venv() -> Option<PathBuf> {
    let exe = std::fs::read_link("/proc/self/exe").ok()?;
    let venv = exe.parent()?.parent()?;
    ((venv.join("pyvenv.cfg").is_file() || venv.join("conda-meta").is_dir())
        && venv.join("bin/python").exists())
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
            launched_by: launched_by(),
            default_socket: instance::default_socket(),
            default_state_dir: instance::default_state_dir(),
            cpus: usable_cpus.count,
            status_token: std::env::var(STATUS_TOKEN_ENV).ok(),
            port: var("PORT"),
            web_concurrency: var("WEB_CONCURRENCY"),
            script_name: var("SCRIPT_NAME"),
            forwarded_allow_ips: var("FORWARDED_ALLOW_IPS"),
            usable_cpus,
        }
    }
}

/// `-c /dev/null`: no config file at all, not even `./corral.toml` or
/// `./gunicorn.conf.py`, as gunicorn reads it (the usual way to keep
/// gunicorn off a gunicorn.conf.py in the working folder).
pub fn no_file(config: &Path) -> bool {
    config == Path::new("/dev/null")
}

/// Reads `--config FILE`, else `./corral.toml` when present, else nothing.
fn read_file(config: Option<&Path>, cwd: &Path) -> Result<Option<ConfigFile>, ConfigError> {
    match config {
        Some(path) if no_file(path) => Ok(None),
        // A gunicorn.conf.py (for the client commands): no [control] of
        // its own, but it names the instance.
        Some(path) if matches!(gunicorn_location(path), Ok(Some(_))) => {
            Ok(Some(ConfigFile::new(path, cwd, String::new())))
        }
        Some(path) => {
            let text =
                crate::private_fs::read_regular_text(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
            Ok(Some(ConfigFile::new(path, cwd, text)))
        }
        None => match crate::private_fs::read_regular_text(&cwd.join(DEFAULT_FILE)) {
            Ok(text) => Ok(Some(ConfigFile::new(Path::new(DEFAULT_FILE), cwd, text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => {
                let path = PathBuf::from(DEFAULT_FILE);
                Err(ConfigError::Read { path, source })
            }
        },
    }
}

/// gunicorn's config file, which gunicorn reads by default.
const GUNICORN_FILE: &str = "gunicorn.conf.py";

/// A gunicorn config file to run: its path, and the module name it has
/// when it was named as gunicorn's `python:MODULE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GunicornConf {
    pub path: PathBuf,
    pub module: Option<String>,
    /// A hypercorn TOML file (its keys mostly gunicorn's), not Python.
    pub hypercorn: bool,
}

impl GunicornConf {
    /// Whose file it is: "gunicorn" or "hypercorn".
    pub fn server(&self) -> &'static str {
        if self.hypercorn {
            "hypercorn"
        } else {
            "gunicorn"
        }
    }

    /// As `corral import-gunicorn` takes it: `python:MODULE` or the path.
    pub fn location(&self) -> String {
        match &self.module {
            Some(module) => format!("python:{module}"),
            None => self.path.display().to_string(),
        }
    }
}

/// The sections of a corral.toml that have a key named `key` ("server" for
/// "bind", "server.tls" for "certfile"): where a key written outside them
/// belongs.
pub fn sections_with(key: &str) -> Vec<String> {
    raw::sections_with(key)
}

/// The candidate closest to `word` by edit distance, when it is close
/// enough to be a likely typo of it (a third of its letters, rounded up).
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut diagonal = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let above = row[j + 1];
                row[j + 1] = (diagonal + usize::from(ca != *cb))
                    .min(row[j] + 1)
                    .min(above + 1);
                diagonal = above;
            }
        }
        row[b.len()]
    };
    let most = word.chars().count().div_ceil(3);
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= most)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Whether `table`, a TOML file's top level, is hypercorn's flat keys
/// rather than a corral.toml: a plain value at the top (a corral.toml has
/// only sections) and none of corral's sections as a table (hypercorn's
/// `workers` is a number).
pub fn is_hypercorn_toml(table: &toml::Table) -> bool {
    const SECTIONS: [&str; 9] = [
        "app", "server", "workers", "health", "control", "deploy", "log", "hooks", "dev",
    ];
    !table
        .iter()
        .any(|(k, v)| v.is_table() && SECTIONS.contains(&k.as_str()))
        && table.values().any(|v| !v.is_table())
}

/// The gunicorn config file `run` and `check` read in place of a
/// corral.toml, as gunicorn would: `--config FILE.py` (or gunicorn's
/// `file:PATH` and `python:MODULE`, see [`gunicorn_location`]), or, with no
/// `--config` and no `./corral.toml`, `./gunicorn.conf.py` when present.
/// `main` has it run and converted (`import_gunicorn::convert_file`) and
/// hands the result to [`load`].
pub fn gunicorn_file(args: &Overrides) -> Result<Option<GunicornConf>, String> {
    match &args.config {
        Some(path) if no_file(path) => Ok(None),
        Some(path) => gunicorn_location(path),
        None => {
            let Ok(cwd) = std::env::current_dir() else {
                return Ok(None);
            };
            let found = !cwd.join(DEFAULT_FILE).exists() && cwd.join(GUNICORN_FILE).is_file();
            Ok(found.then(|| GunicornConf {
                path: PathBuf::from(GUNICORN_FILE),
                module: None,
                hypercorn: false,
            }))
        }
    }
}

/// `--config` as gunicorn's `--config` reads it, when it names a gunicorn
/// config: `FILE.py`, `file:PATH` (any name), or `python:MODULE`, a dotted
/// module name looked up below the current folder as gunicorn imports it
/// from there (`pkg/mod.py`, or `pkg/mod/__init__.py`); or hypercorn's
/// `FILE.toml` of flat keys. `None` for a corral.toml.
pub fn gunicorn_location(given: &Path) -> Result<Option<GunicornConf>, String> {
    let text = given.to_string_lossy();
    if let Some(path) = text.strip_prefix("file:") {
        return Ok(Some(GunicornConf {
            path: PathBuf::from(path),
            module: None,
            hypercorn: false,
        }));
    }
    if let Some(module) = text.strip_prefix("python:") {
        let parts: Vec<&str> = module.split('.').collect();
        let identifier = |p: &&str| {
            p.chars()
                .next()
                .is_some_and(|c| c == '_' || c.is_alphabetic())
                && p.chars().all(|c| c == '_' || c.is_alphanumeric())
        };
        if !parts.iter().all(identifier) {
            return Err(format!(
                "--config python:{module}: not a module name: write it as gunicorn takes it, like python:config.gunicorn"
            ));
        }
        let base: PathBuf = parts.iter().collect();
        let candidates = [base.with_extension("py"), base.join("__init__.py")];
        return match candidates.iter().find(|p| p.is_file()) {
            Some(path) => Ok(Some(GunicornConf {
                path: path.clone(),
                module: Some(module.to_owned()),
                hypercorn: false,
            })),
            None => Err(format!(
                "--config python:{module}: neither {} nor {} is below the current folder, where gunicorn would import it from; run corral from the project's folder, or give the file's path",
                candidates[0].display(),
                candidates[1].display()
            )),
        };
    }
    if given.extension().is_some_and(|e| e == "toml") {
        // hypercorn's flat keys rather than corral's sections; a file that
        // cannot be read or parsed is left to the corral.toml reader, which
        // says why.
        let hypercorn = crate::private_fs::read_regular_text(given)
            .ok()
            .and_then(|text| text.parse::<toml::Table>().ok())
            .is_some_and(|t| is_hypercorn_toml(&t));
        return Ok(hypercorn.then(|| GunicornConf {
            path: given.to_owned(),
            module: None,
            hypercorn: true,
        }));
    }
    Ok(given
        .extension()
        .is_some_and(|e| e == "py")
        .then(|| GunicornConf {
            path: given.to_owned(),
            module: None,
            hypercorn: false,
        }))
}

/// Reads `--config FILE` (or `./corral.toml` when present), merges the
/// command line over it and validates the result. `converted`: the
/// [`gunicorn_file`] and its corral.toml text, read instead; messages name
/// the line of the file that set a key ("gunicorn.conf.py:3"), or, for a
/// line no one setting made, "gunicorn.conf.py (converted)" with the
/// converted text's line.
pub fn load(args: &Overrides, converted: Option<Converted>) -> Result<Config, ConfigError> {
    let cwd = std::env::current_dir().map_err(ConfigError::CurrentDir)?;
    let file = match converted {
        Some((path, toml, lines)) => {
            let mut file = ConfigFile::new(path, &cwd, toml.to_owned());
            file.shown = format!("{} (converted)", path.display());
            file.lines = lines.to_vec();
            Some(file)
        }
        None => read_trusted(args.config.as_deref(), &cwd)?,
    };
    resolve(args, file.as_ref(), &cwd, &Env::from_process()).map_err(|e| match (e, converted) {
        (ConfigError::Parse(mut problem), None) => {
            if let Some(hint) = args.config.as_deref().and_then(gunicorn_hint) {
                problem.message.push_str(&hint);
            }
            ConfigError::Parse(problem)
        }
        (e, _) => e,
    })
}

/// For a `--config` file that does not parse as a corral.toml and whose
/// name does not end in .toml: gunicorn runs a config file of any name as
/// Python (`gunicorn -c g.conf`), so it may be one; corral reads it so when
/// named with gunicorn's `file:` prefix.
fn gunicorn_hint(given: &Path) -> Option<String> {
    if given.extension().is_some_and(|e| e == "toml") {
        return None;
    }
    Some(format!(
        "; if {0} is a gunicorn config file (Python: gunicorn runs any file name as one), give it as `-c file:{0}`",
        given.display()
    ))
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
        None => read_trusted(config, &cwd)?,
    };
    if socket.is_none() && file.is_none() {
        return match running_sockets() {
            (_, found) if found.len() == 1 => Ok(found[0].clone()),
            (place, found) => Err(ConfigError::Instances { place, found }),
        };
    }
    if let Some(f) = &file
        && socket.is_none()
        && let Ok(config) = resolve(&Overrides::default(), Some(f), &cwd, &Env::from_process())
    {
        // The socket the file gives a server started with it alone.
        return Ok(config.control.socket);
    }
    let default = match &file {
        Some(f) => instance::default_socket().for_instance(
            &instance::name(Some(&f.path), Path::new(""), "", "", None),
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
        chdir: None,
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
        chdir: None,
    };
    // Whether `app.chdir` is set, even when [app] has problems of its own.
    let chdir_given = args.chdir.is_some() || raw.app.chdir.is_some();
    let app = r.app(args, raw.app, env);
    let server = r.server(args, raw.server, env);
    let dev = r.dev(args, &raw.dev);
    let workers = r.workers(
        args,
        raw.workers,
        env,
        dev.reload,
        app.as_ref().map(|a| a.interface),
    );
    let health = r.health(
        args,
        raw.health,
        &server,
        &workers,
        env.status_token.as_deref(),
    );
    // With a config file the current folder is not part of the name (a
    // file that names the app and its address is one instance wherever it
    // is started from); a folder given is.
    let no_dir = Path::new("");
    let instance = instance::name(
        file.map(|f| f.path.as_path()),
        app.as_ref()
            .and_then(|a| a.chdir.as_deref())
            .unwrap_or(if file.is_some() { no_dir } else { cwd }),
        app.as_ref().map_or("", |a| a.module.as_str()),
        app.as_ref().map_or("", AppConfig::label),
        server.bind.first().map(|b| &b.addr),
    );
    let socket = env
        .default_socket
        .for_instance(&instance, Some(SOCKET_NAME));
    let control = r.control(args.socket.as_deref(), raw.control, &socket);
    let state_dir = env.default_state_dir.for_instance(&instance, None);
    let deploy = r.deploy(&args.deploy_flags, raw.deploy, &state_dir, chdir_given);
    let log = r.log(args, raw.log);
    if log.access.is_none()
        && let Some(note) = app
            .as_ref()
            .and_then(|a| a.logging.as_ref())
            .and_then(PythonLogging::unfed_access_logger)
    {
        r.warnings.push(note);
    }
    let hooks = r.hooks(&raw.hooks);
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
            hooks,
            dev,
        }),
        _ => Err(ConfigError::Validate(r.problems)),
    }
}

#[cfg(test)]
mod tests;
