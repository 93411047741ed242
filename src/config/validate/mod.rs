//! Merging and checking: the command line over the raw file, every default
//! filled in and every value checked, collecting all problems with where
//! each value came from ([`At`]: a file line and key, or a flag) and how to
//! fix it. One file per section (`app`, `server`, `workers`, `health` with
//! `[control]` and `[deploy]`, `hooks`), each an `impl` block of [`Resolver`]; this
//! file holds the resolver itself and the helpers that check app and
//! environment names and make paths absolute.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};
use toml::Spanned;

use super::{BindAddr, ConfigFile, ForwardedAllow, Problem, RevisionSource};

mod app;
mod dev;
mod health;
mod hooks;
mod server;
mod workers;

/// gunicorn's default listen address.
pub(super) const DEFAULT_BIND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8000);
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

/// The front's shards for `server.io_threads = 0`: half the CPUs, but two
/// from 2 CPUs up (corral starts no more shards than workers; see
/// `crate::shards`). On 2 CPUs with 2 workers and wrk on the same CPUs,
/// two shards served 1.21x the requests/s of one at 32 connections with
/// a lower p99, 1.04-1.15x at 256 with a p99 10-25% longer
/// (bench/README.md, "The front in shards"). Bigger machines keep half
/// the CPUs for the workers: not measured there.
pub(super) fn auto_io_threads(cpus: usize) -> usize {
    (cpus / 2).max(cpus.min(2)).max(1)
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
#[derive(Clone)]
pub(super) struct At {
    location: Option<String>,
    key: String,
    /// A flag whose relative path is in the `--chdir` folder (`flag_dir`).
    in_chdir: bool,
}

impl At {
    pub(super) fn flag(flag: &str) -> At {
        At {
            location: None,
            key: flag.to_owned(),
            in_chdir: false,
        }
    }

    /// Where a relative path given here is read from, for a message.
    pub(super) fn relative_base(&self) -> &'static str {
        match self.location {
            Some(_) => "the config file's folder",
            None if self.in_chdir => "the --chdir folder",
            None => "the current folder",
        }
    }

    /// "corral.toml:7 (key server.bind)" or "--bind", for [`Bind::origin`].
    pub(in crate::config) fn origin(&self) -> String {
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
    pub(super) from_env: &'a [(String, String)],
    /// `app.chdir` (or `--chdir`), once [app] is resolved: gunicorn changes
    /// to it before it opens any file its flags name (see `flag_dir`).
    pub(super) chdir: Option<std::path::PathBuf>,
}

impl Resolver<'_> {
    pub(super) fn fail(&mut self, at: &At, message: impl Into<String>) {
        self.problems.push(Problem {
            location: at.location.clone(),
            key: Some(at.key.clone()),
            message: message.into(),
        });
    }

    /// A flag, or the variable its value came from (`CORRAL_WORKERS`,
    /// `UVICORN_WORKERS`, `--workers in GUNICORN_CMD_ARGS`).
    pub(super) fn flag(&self, flag: &str) -> At {
        match self.from_env.iter().find(|(f, _)| f == flag) {
            Some((_, from)) => At::flag(from),
            None => At::flag(flag),
        }
    }

    /// [`Resolver::flag`] for one of gunicorn's path flags, whose relative
    /// path is in [`Resolver::flag_dir`].
    pub(super) fn dir_flag(&self, flag: &str) -> At {
        At {
            in_chdir: self.chdir.is_some(),
            ..self.flag(flag)
        }
    }

    pub(super) fn in_file(&self, span: Range<usize>, key: &str) -> At {
        At {
            location: self.file.map(|f| f.location(span.start)),
            key: key.to_owned(),
            in_chdir: false,
        }
    }

    /// The folder a relative path in one of gunicorn's flags (`--pid`,
    /// `--access-logfile`, `--error-logfile`, `--certfile`, `--keyfile`,
    /// `--ca-certs`, `--log-config`, `-b unix:`, `--worker-tmp-dir`,
    /// `--pythonpath`) is in: `--chdir` when given, as gunicorn changes to
    /// it before it opens them, else the current folder. `--config`,
    /// `--python`, `--env-file` and the reload paths stay relative to the
    /// current folder, as gunicorn and uvicorn read them.
    pub(super) fn flag_dir(&self) -> &Path {
        self.chdir.as_deref().unwrap_or(self.cwd)
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
        self.given(flag, file)
            .unwrap_or_else(|| (default, At::flag(file.1)))
    }

    /// The flag's value, else the file's, with where it came from; `None`
    /// when neither gives one.
    pub(super) fn given<T: Clone>(
        &self,
        flag: (Option<&T>, &str),
        file: (Option<&Spanned<T>>, &str),
    ) -> Option<(T, At)> {
        match (flag.0, file.0) {
            (Some(v), _) => Some((v.clone(), self.flag(flag.1))),
            (None, Some(v)) => Some((v.get_ref().clone(), self.in_file(v.span(), file.1))),
            (None, None) => None,
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
/// why: the one that ran `python -m corral` (`launched_by`), else the
/// virtualenv corral itself is installed in (`pip install corral` put it
/// in that venv's `bin/`, next to its `python`), else
/// `$VIRTUAL_ENV/bin/python`, else `python3` on `PATH`.
pub(super) fn default_python(
    launched_by: Option<&Path>,
    installed_in: Option<&Path>,
    virtual_env: Option<&Path>,
) -> (PathBuf, String) {
    if let Some(python) = launched_by {
        return (
            python.to_path_buf(),
            format!(
                "the interpreter that ran `python -m corral` ({})",
                python.display()
            ),
        );
    }
    match (installed_in, virtual_env) {
        (Some(venv), _) => (
            venv.join("bin/python"),
            format!(
                "the {} corral is installed in ({})",
                if venv.join("conda-meta").is_dir() {
                    "conda environment"
                } else {
                    "virtualenv"
                },
                venv.display()
            ),
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
mod tests;
