//! `corral import-gunicorn FILE [APP]`: runs a gunicorn config file with the
//! app's Python exactly as gunicorn does (`exec` in a fresh namespace, see
//! `read_conf.py`; no gunicorn import), then [`convert_at`]s the settings it
//! defines into a `corral.toml` printed on stdout. Every setting with no
//! equivalent is named on stderr with the reason ([`settings::SETTINGS`]).
//! The hooks gunicorn calls in its workers and in its arbiter make `[app]
//! gunicorn_hooks` name the file: corral's workers run the first, a
//! Python process beside them the others.
//! A hypercorn TOML file is read too (`hypercorn`): its keys are mostly
//! gunicorn's.

mod hypercorn;
mod settings;

pub use settings::refused_flag;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use toml::Value;

use crate::cli::ImportArgs;

/// Executes the config file and prints its settings as JSON.
const READ_CONF: &str = include_str!("read_conf.py");

/// The sections of the output, in order.
const SECTIONS: [&str; 7] = [
    "app",
    "server",
    "server.tls",
    "workers",
    "workers.limits",
    "log",
    "dev",
];

pub fn run(args: &ImportArgs) -> u8 {
    let python = args
        .python
        .clone()
        .unwrap_or_else(crate::config::default_interpreter);
    let conf = match crate::config::gunicorn_location(&args.file) {
        Ok(Some(conf)) => conf,
        Ok(None) => crate::config::GunicornConf {
            path: args.file.clone(),
            module: None,
            hypercorn: false,
        },
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let conversion = match convert_file(&conf, args.app.as_deref(), &python) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    // A value gunicorn refuses would be left out, and the server run on
    // the default: no corral.toml without it.
    if !conversion.invalid.is_empty() {
        for e in &conversion.invalid {
            eprintln!("error: {e}");
        }
        return 1;
    }
    print!("{}", with_python(&conversion.toml, &python));
    if !conversion.notes.is_empty() {
        eprintln!(
            "not converted ({}; the README's migration table has every setting):",
            args.file.display()
        );
    }
    for note in &conversion.notes {
        eprintln!("  {note}");
    }
    0
}

/// `toml` with `[app] python` set to the interpreter that read the file
/// when it is a path (`--python`, or the virtualenv's): the converted file
/// runs the app with it wherever corral is started from, as a unit that
/// sets no `VIRTUAL_ENV` starts it. An interpreter found on `PATH` is left
/// for corral to find again.
fn with_python(toml: &str, python: &Path) -> String {
    if python.components().count() < 2 {
        return toml.to_string();
    }
    // Its folder made absolute; the interpreter itself, a virtualenv's
    // link, left as it is.
    let python = match (
        python.parent().map(std::fs::canonicalize),
        python.file_name(),
    ) {
        (Some(Ok(folder)), Some(name)) => folder.join(name),
        _ => python.to_path_buf(),
    };
    let line = format!(
        "python = {}\n",
        toml::Value::String(python.display().to_string())
    );
    if let Some(at) = toml.find("\n[app]\n") {
        let at = at + "\n[app]\n".len();
        return format!("{}{line}{}", &toml[..at], &toml[at..]);
    }
    // No [app] yet: one of its own before the first section.
    let at = toml.find("\n[").map_or(toml.len(), |i| i + 1);
    format!("{}[app]\n{line}\n{}", &toml[..at], &toml[at..])
}

/// The command that converts the file at `path` (given to corral as
/// `location`) into a ./corral.toml for good. Never a redirection onto the
/// file itself, which the shell would empty before corral reads it, nor
/// onto a ./corral.toml already there: then a new file, moved over the old
/// one only when the old one is the file converted.
pub fn convert_command(location: &str, path: &Path) -> String {
    let target = Path::new("corral.toml");
    let import = format!("corral import-gunicorn {location}");
    if !target.exists() {
        return format!("{import} > corral.toml");
    }
    let same = std::fs::canonicalize(target)
        .ok()
        .is_some_and(|t| std::fs::canonicalize(path).is_ok_and(|p| p == t));
    if same {
        format!("{import} > corral.new.toml && mv corral.new.toml corral.toml")
    } else {
        format!("{import} > corral.new.toml")
    }
}

/// Longest a gunicorn config file may take to run.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the gunicorn config file `conf` with `python` as gunicorn would (a
/// `python:MODULE` one under its module's name, so that its relative
/// imports work) and
/// [`convert_at`]s what it sets. corral reads the file itself (under
/// [`read_checked`]'s rule: it is code) and hands its bytes to Python.
pub fn convert_file(
    conf: &crate::config::GunicornConf,
    app: Option<&str>,
    python: &Path,
) -> Result<Conversion, String> {
    let file = conf.path.as_path();
    if conf.hypercorn {
        let text = crate::private_fs::read_regular_text(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| format!("{} is not TOML: {e}", file.display()))?;
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        return hypercorn::convert(&table, &text, app, &cwd, file);
    }
    let source = read_checked(file)?;
    // As root: the interpreter (and what it imports at start, a
    // virtualenv's .pth files among them) must be root's to run.
    let untrusted = crate::private_fs::program_changeable(python)
        .map(|why| format!("someone besides root can change it ({why})"))
        .or_else(|| crate::private_fs::untrusted_python_paths(python));
    if let Some(why) = untrusted {
        return Err(format!(
            "refusing to run {} as root to read {}: {why}, and whoever can change it could run \
             code as root. Give an interpreter only root can change (--python, [app] python: \
             a virtualenv of root's, or /usr/bin/python3), or convert the file once, as the \
             app's user: {}, and run corral -c corral.toml",
            python.display(),
            file.display(),
            convert_command(&file.display().to_string(), file)
        ));
    }
    // The file may import the app's modules from the current folder, as
    // gunicorn's does, but not as root from a folder another user may
    // change: whoever may would run code as root.
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let shared_cwd = crate::private_fs::code_folder_not_private(&cwd);
    let mut child = Command::new(python)
        .arg("-c")
        .arg(READ_CONF)
        .arg(file)
        .arg(if shared_cwd.is_some() { "0" } else { "1" })
        .args(conf.module.as_deref())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run {} for {}: {e}; give the app's interpreter with --python",
                python.display(),
                file.display()
            )
        })?;
    // Python reads all of stdin before it prints: write, then read stdout
    // on a thread of its own while the clock runs.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&source);
    }
    // What a bare fork() of the file's keeps open never ends: the output
    // is whatever came by 2 s after the interpreter's exit. Its stderr (a
    // traceback, what the file prints) is kept to be shown where the
    // error is: `corral reload`'s answer, `/status`, the log; at most
    // MAX_STDERR of it.
    let stdout = Captured::of(child.stdout.take().expect("piped"), usize::MAX);
    let stderr = Captured::of(child.stderr.take().expect("piped"), MAX_STDERR);
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not finish running within {} s",
                    file.display(),
                    RUN_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("cannot wait for {}: {e}", python.display())),
        }
    };
    let end = Instant::now() + Duration::from_secs(2);
    let stdout = stdout.taken(end);
    let stderr = String::from_utf8_lossy(&stderr.taken(end)).into_owned();
    if !status.success() {
        let path_note = shared_cwd.map_or(String::new(), |why| {
            format!(
                "; as root, it may not import from the current folder {}: {why} (an import \
                 of the app's modules fails; a module there named like a standard one is \
                 never run)",
                cwd.display()
            )
        });
        return Err(format!(
            "{} did not run under {} ({status}){path_note}:\n{}",
            file.display(),
            python.display(),
            file_traceback(&stderr)
        ));
    }
    // What the file printed, as before it was read: on corral's stderr.
    if !stderr.is_empty() {
        eprint!("{stderr}");
    }
    let settings: BTreeMap<String, Json> = serde_json::from_slice(&stdout)
        .map_err(|e| format!("unexpected output from {}: {e}", python.display()))?;
    Ok(convert_at(
        &settings,
        app,
        &cwd,
        file,
        conf.module.as_deref(),
        Some(&String::from_utf8_lossy(&source)),
    ))
}

/// The most of a config file's stderr kept for its error.
const MAX_STDERR: usize = 64 * 1024;

/// A child's pipe read to its end (or `most` bytes of it) on a thread of
/// its own.
struct Captured {
    read: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    ended: std::sync::mpsc::Receiver<()>,
}

impl Captured {
    fn of(mut pipe: impl Read + Send + 'static, most: usize) -> Captured {
        let read = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (done, ended) = std::sync::mpsc::channel::<()>();
        std::thread::spawn({
            let read = read.clone();
            move || {
                let mut buf = [0u8; 16384];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    let mut read = read.lock().unwrap_or_else(|e| e.into_inner());
                    let room = most.saturating_sub(read.len());
                    read.extend_from_slice(&buf[..n.min(room)]);
                }
                let _ = done.send(());
            }
        });
        Captured { read, ended }
    }

    /// What was read by the pipe's end, or by `until`.
    fn taken(self, until: Instant) -> Vec<u8> {
        let _ = self
            .ended
            .recv_timeout(until.saturating_duration_since(Instant::now()));
        std::mem::take(&mut *self.read.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A config file's stderr as its error shows it (the reader prints an
/// error's traceback from the file's own frame on).
fn file_traceback(stderr: &str) -> String {
    let text = stderr.trim_end();
    if text.is_empty() {
        return "(it printed nothing)".to_owned();
    }
    text.to_owned()
}

/// The bytes of a gunicorn config file, which is code corral will run: it
/// must belong to corral's user or root and be writable by no one else,
/// and in a folder another user may change it must not be a symlink
/// (but root's links in a Kubernetes volume, `..data/gunicorn.conf.py`,
/// are followed as for TLS files).
fn read_checked(file: &Path) -> Result<Vec<u8>, String> {
    let followed = crate::private_fs::follow_sticky_links(file);
    let (mut f, meta, _) =
        crate::private_fs::open_unfollowed(&followed, std::fs::OpenOptions::new().read(true))?;
    if let Some(why) = crate::private_fs::writable_by_others(&meta) {
        return Err(format!(
            "refusing to run {}: {why}, and it is code that corral runs; chown it to corral's user or root and chmod go-w it, or convert it once with `{}` and read that",
            file.display(),
            convert_command(&file.display().to_string(), file)
        ));
    }
    let mut source = Vec::new();
    f.read_to_end(&mut source)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    Ok(source)
}

/// A converted file: the TOML text, and a line for each setting it could
/// not carry over.
#[derive(Debug)]
pub struct Conversion {
    pub toml: String,
    pub notes: Vec<String>,
    /// The worker hooks the file defines, which the workers run
    /// (`[app] gunicorn_hooks`).
    pub hooks: Vec<&'static str>,
    /// The arbiter hooks it defines, which a process of their own runs.
    pub arbiter_hooks: Vec<&'static str>,
    /// Why corral will not run with this file (each also a note): a setting
    /// whose meaning corral cannot keep and whose absence would be worse
    /// than a stop, as `daemon` (see [`settings::refused_setting`]).
    pub refused: Vec<String>,
    /// Values gunicorn itself refuses to start with (`workers = 3.0`,
    /// `timeout = "abc"`), each "FILE:LINE: setting: why" (no line when
    /// the file does not show where it is set): an error, as a mistake in
    /// a corral.toml is, rather than a server on the default.
    pub invalid: Vec<String>,
    /// For each line of `toml` (from the first), where in the file its
    /// setting is ("gunicorn.conf.py:3"), when the line is one setting's:
    /// messages about a key point at the line the user wrote.
    pub lines: Vec<Option<String>>,
}

/// What the file set for one name: `{"value": ...}`, `{"callable": true}`
/// or `{"repr": "..."}` (see `read_conf.py`).
fn value_of(entry: &Json) -> Result<&Json, String> {
    if let Some(v) = entry.get("value") {
        return Ok(v);
    }
    if entry.get("callable").is_some() {
        return Err("a function".into());
    }
    Err(format!(
        "{} (not a plain value)",
        entry.get("repr").and_then(Json::as_str).unwrap_or("?")
    ))
}

/// Whether a value means "off / not set" in gunicorn, so that there is
/// nothing to carry over.
fn is_unset(v: &Json) -> bool {
    match v {
        Json::Null => true,
        Json::Bool(b) => !b,
        Json::String(s) => s.is_empty(),
        Json::Array(a) => a.is_empty(),
        Json::Object(o) => o.is_empty(),
        Json::Number(_) => false,
    }
}

struct Out<'a> {
    sections: BTreeMap<&'static str, Vec<(&'static str, Value)>>,
    notes: Vec<String>,
    cwd: &'a Path,
    /// Where gunicorn reads the file's other relative paths: its `chdir`
    /// (gunicorn changes there before it opens them), else `cwd`.
    base: PathBuf,
    /// The worker hooks found ([`settings::WORKER_HOOKS`]).
    hooks: Vec<&'static str>,
    /// The arbiter hooks found ([`settings::ARBITER_HOOKS`]).
    arbiter_hooks: Vec<&'static str>,
    /// Settings corral refuses to run with ([`Conversion::refused`]).
    refused: Vec<String>,
    /// Each value gunicorn refuses, and why ([`Conversion::invalid`]).
    invalid: Vec<(String, String)>,
    /// The setting being converted, and the keys each one set
    /// ("workers.count" from "workers"), for [`Conversion::lines`].
    current: String,
    set_by: Vec<(String, String)>,
    /// gunicorn's name of a setting the file writes under another (a
    /// hypercorn file's `keep_alive_timeout` for `keepalive`), and that name.
    written_as: Vec<(String, String)>,
}

impl<'a> Out<'a> {
    /// An empty conversion; relative paths against `cwd`.
    fn new(cwd: &'a Path) -> Out<'a> {
        Out {
            sections: BTreeMap::new(),
            notes: Vec::new(),
            cwd,
            base: cwd.to_path_buf(),
            hooks: Vec::new(),
            arbiter_hooks: Vec::new(),
            refused: Vec::new(),
            invalid: Vec::new(),
            current: String::new(),
            set_by: Vec::new(),
            written_as: Vec::new(),
        }
    }

    fn set(&mut self, section: &'static str, key: &'static str, value: Value) {
        self.sections.entry(section).or_default().push((key, value));
        if !self.current.is_empty() {
            self.set_by
                .push((format!("{section}.{key}"), self.current.clone()));
        }
    }

    fn note(&mut self, name: &str, why: impl std::fmt::Display) {
        self.notes.push(format!("{name}: {why}"));
    }

    /// The name the file gives gunicorn's setting `name`.
    fn as_written(&self, name: &str) -> String {
        self.written_as
            .iter()
            .find(|(g, _)| g == name)
            .map_or(name, |(_, w)| w.as_str())
            .to_owned()
    }

    /// `name`'s value is one gunicorn refuses too: an error.
    fn invalid(&mut self, name: &str, why: impl std::fmt::Display) {
        self.invalid.push((name.to_owned(), why.to_string()));
    }

    fn path(&self, p: &str) -> Value {
        if p == "-" {
            return Value::String(p.into());
        }
        Value::String(self.base.join(p).display().to_string())
    }
}

fn text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn integer(v: &Json) -> Option<i64> {
    whole(v, None).ok()
}

/// Why a value is not a whole number corral can take ([`whole`]).
#[derive(Debug, PartialEq)]
enum NotWhole {
    /// gunicorn refuses it too.
    Refused,
    /// A whole number gunicorn takes, past the largest corral does
    /// ([`i64::MAX`]).
    TooLarge,
}

/// A whole number as gunicorn's `validate_pos_int` reads it: an int (a
/// bool is one: True is 1), or a string as Python's `int(s, 0)` reads it.
/// `big` is the digits of a Python int past 64 bits, which JSON reading
/// holds as a float (`read_conf.py` gives them beside the value).
fn whole(v: &Json, big: Option<&str>) -> Result<i64, NotWhole> {
    match v {
        Json::Bool(b) => Ok(i64::from(*b)),
        Json::Number(n) => match (n.as_i64(), n.as_u64(), big) {
            (Some(i), _, _) => Ok(i),
            (None, Some(_), _) => Err(NotWhole::TooLarge),
            (None, None, Some(digits)) if !digits.starts_with('-') => Err(NotWhole::TooLarge),
            _ => Err(NotWhole::Refused),
        },
        Json::String(s) => python_int(s),
        _ => Err(NotWhole::Refused),
    }
}

/// Python's `int(s, 0)`: white space around, an optional sign, a 0x, 0o
/// or 0b prefix in either case, single underscores between digits (and
/// after a prefix), and no leading zero on a non-zero decimal ("010").
fn python_int(s: &str) -> Result<i64, NotWhole> {
    let s = s.trim();
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = s.get(..2).map(str::to_ascii_lowercase);
    let (radix, digits) = match lower.as_deref() {
        Some("0x") => (16, s[2..].strip_prefix('_').unwrap_or(&s[2..])),
        Some("0o") => (8, s[2..].strip_prefix('_').unwrap_or(&s[2..])),
        Some("0b") => (2, s[2..].strip_prefix('_').unwrap_or(&s[2..])),
        _ => (10, s),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return Err(NotWhole::Refused);
    }
    let mut n: i128 = 0;
    let mut large = false;
    for c in digits.chars().filter(|c| *c != '_') {
        let d = c.to_digit(radix).ok_or(NotWhole::Refused)?;
        n = n * i128::from(radix) + i128::from(d);
        if n > i128::from(i64::MAX) + 1 {
            large = true;
            n = i128::from(i64::MAX) + 1;
        }
    }
    // "007" is refused, "000" is 0.
    if radix == 10 && digits.starts_with('0') && n != 0 {
        return Err(NotWhole::Refused);
    }
    let n = if negative { -n } else { n };
    match i64::try_from(n) {
        Ok(n) if !large || negative => Ok(n),
        _ => Err(NotWhole::TooLarge),
    }
}

/// A bool as gunicorn's `validate_bool` reads it: a bool, or the string
/// "true" or "false" in any case, with white space around.
fn boolean(v: &Json) -> Option<bool> {
    match v {
        Json::Bool(b) => Some(*b),
        Json::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Seconds as gunicorn gives them, as a corral duration.
/// gunicorn takes what `int(s, 0)` does ([`whole`]); corral also takes a
/// fraction of a second, as a number or a string.
fn seconds(v: &Json, big: Option<&str>) -> Result<Value, NotWhole> {
    let secs = match whole(v, big) {
        Ok(n) if n >= 0 => return Ok(Value::String(format!("{n}s"))),
        Ok(_) => return Err(NotWhole::Refused),
        Err(NotWhole::TooLarge) => return Err(NotWhole::TooLarge),
        Err(NotWhole::Refused) => v
            .as_f64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .ok_or(NotWhole::Refused)?,
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(NotWhole::Refused);
    }
    if secs >= i64::MAX as f64 {
        return Err(NotWhole::TooLarge);
    }
    Ok(Value::String(if secs.fract() == 0.0 {
        format!("{}s", secs as u64)
    } else {
        format!("{}ms", (secs * 1000.0).round() as u64)
    }))
}

/// Why a whole number gunicorn takes is one corral does not.
fn too_large(v: &Json, big: Option<&str>) -> String {
    let shown = big.map_or_else(|| v.to_string(), str::to_owned);
    format!(
        "{shown} is too large: the largest corral takes is {}",
        i64::MAX
    )
}

/// A list as gunicorn takes it: a list, or one string split at commas.
fn list(v: &Json) -> Vec<String> {
    match v {
        Json::Array(items) => items.iter().filter_map(text).collect(),
        Json::String(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        other => text(other).into_iter().collect(),
    }
}

/// A gunicorn bind address as corral writes it.
fn bind(addr: &str, cwd: &Path) -> Result<String, String> {
    if let Some(path) = addr.strip_prefix("unix:") {
        return Ok(format!("unix:{}", cwd.join(path).display()));
    }
    if addr.starts_with("fd://") {
        return Err("file descriptors are not supported: use systemd socket activation".into());
    }
    let addr = addr.strip_prefix("tcp://").unwrap_or(addr);
    // gunicorn's default port when none is given.
    let has_port = match addr.rsplit_once(':') {
        Some((host, port)) => {
            !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) && !host.ends_with(':')
        }
        None => false,
    };
    Ok(if has_port && !addr.ends_with(']') {
        addr.to_owned()
    } else {
        format!("{addr}:8000")
    })
}

/// [`convert_at`] for a file named by its path.
#[cfg(test)]
fn convert(
    settings: &BTreeMap<String, Json>,
    app: Option<&str>,
    cwd: &Path,
    file: &Path,
) -> Conversion {
    convert_at(settings, app, cwd, file, None, None)
}

/// Converts the settings a gunicorn config file (`file`, or the
/// `python:MODULE` gunicorn imports when `module` is given) defined. `app`:
/// the APP given on gunicorn's command line, if any; relative paths are
/// made absolute against `cwd` (gunicorn resolves them against its cwd).
/// Worker and arbiter hooks the file defines make `[app] gunicorn_hooks`
/// name it. `source`: the file's text, where an invalid value's line is
/// looked up.
fn convert_at(
    settings: &BTreeMap<String, Json>,
    app: Option<&str>,
    cwd: &Path,
    file: &Path,
    module: Option<&str>,
    source: Option<&str>,
) -> Conversion {
    let mut out = Out::new(cwd);
    convert_into(&mut out, settings, app);
    if !out.hooks.is_empty() || !out.arbiter_hooks.is_empty() {
        let location = match module {
            Some(module) => format!("python:{module}"),
            None => cwd.join(file).display().to_string(),
        };
        out.set("app", "gunicorn_hooks", Value::String(location));
    }
    let unknown: Vec<&str> = settings
        .keys()
        .map(String::as_str)
        .filter(|k| settings::note(k).is_none())
        .collect();
    if !unknown.is_empty() {
        out.notes.push(format!(
            "not gunicorn settings, ignored (as gunicorn ignores them): {}",
            unknown.join(", ")
        ));
    }
    out.finish(file, source)
}

impl Out<'_> {
    /// The corral.toml text, after the checks that look at several keys;
    /// `source`, the file's text, to point an invalid value at its line.
    fn finish(mut self, file: &Path, source: Option<&str>) -> Conversion {
        tls_key_in_certfile(&mut self);
        let invalid = self
            .invalid
            .iter()
            .map(|(gunicorns, why)| {
                let name = self.as_written(gunicorns);
                let why = why.replace(&format!("like {gunicorns} ="), &format!("like {name} ="));
                let line = source
                    .and_then(|text| line_setting(text, &name))
                    .map(|n| format!(":{n}"))
                    .unwrap_or_default();
                format!("{}{line}: {name}: {why}", file.display())
            })
            .collect();
        let toml = render(&self.sections, file);
        // Each `key = value` line under its `[section]`, back to the
        // setting that made it.
        let mut section = "";
        let lines = toml
            .lines()
            .map(|line| {
                if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                    section = name;
                    return None;
                }
                let (key, _) = line.split_once(" = ")?;
                let full = format!("{section}.{key}");
                let (_, setting) = self.set_by.iter().find(|(k, _)| *k == full)?;
                let setting = self.as_written(setting);
                Some(match source.and_then(|text| line_setting(text, &setting)) {
                    Some(n) => format!("{}:{n}", file.display()),
                    None => format!("{} ({setting})", file.display()),
                })
            })
            .collect();
        Conversion {
            toml,
            lines,
            notes: self.notes,
            hooks: self.hooks,
            arbiter_hooks: self.arbiter_hooks,
            refused: self.refused,
            invalid,
        }
    }
}

/// The line (from 1) of `text` where `name` is last set at the top level
/// (`name = ...`, as a gunicorn.conf.py or a TOML file of flat keys writes
/// it): the assignment that wins. `None` when no line is of that form (the
/// value set some other way, as by `globals()`).
fn line_setting(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            line.strip_prefix(name).is_some_and(|rest| {
                let rest = rest.trim_start();
                rest.starts_with('=') && !rest.starts_with("==")
            })
        })
        .map(|(i, _)| i + 1)
        .last()
}

/// [`convert_at`]'s work on `out`: each gunicorn setting in `settings`.
fn convert_into(out: &mut Out, settings: &BTreeMap<String, Json>, app: Option<&str>) {
    // What is set outside the loop is no one setting's.
    out.current.clear();
    let cwd = out.cwd;
    if let Some(dir) = settings
        .get("chdir")
        .and_then(|e| value_of(e).ok())
        .and_then(text)
    {
        out.base = cwd.join(dir);
    }
    let mut many = false;
    match app {
        // The Paste file names the app, as with gunicorn's --paste (which
        // ignores APP). gunicorn itself, given both a file's `paste` and an
        // APP, loads APP as a Paste URI and fails.
        Some(app) if set_in(settings, "paste") => out.note(
            app,
            "left out: the file's `paste` names the app (gunicorn, given both, fails: it reads APP as a Paste file)",
        ),
        Some(app) => out.set("app", "module", Value::String(app.into())),
        None => {}
    }
    for (name, note) in settings::SETTINGS {
        let Some(entry) = settings.get(*name) else {
            continue;
        };
        out.current = (*name).to_owned();
        // A hook corral runs from the file itself: in the workers, or in
        // the process of the arbiter's hooks.
        if entry.get("callable").is_some() {
            if settings::WORKER_HOOKS.contains(name) {
                out.hooks.push(name);
                continue;
            }
            if settings::ARBITER_HOOKS.contains(name) {
                out.arbiter_hooks.push(name);
                continue;
            }
        }
        let v = match value_of(entry) {
            Ok(v) => v,
            Err(_) if *name == "logconfig_dict" => {
                out.note(
                    name,
                    "holds values a TOML file cannot (objects like sys.stdout): write them as dictConfig's strings (\"ext://sys.stdout\"), or keep the dictionary in a JSON file for logconfig_json",
                );
                continue;
            }
            Err(what) => {
                out.note(name, format!("is {what}; {note}"));
                continue;
            }
        };
        // "false" is False to gunicorn's bool settings: unset, as False is.
        if is_unset(v) || (settings::is_bool(name) && boolean(v) == Some(false)) {
            continue;
        }
        let big = entry.get("int").and_then(Json::as_str);
        let bad = |out: &mut Out, v: &Json| {
            out.invalid(
                name,
                format!("{v} is not a value gunicorn takes for it (gunicorn refuses to start with it too)"),
            )
        };
        match *name {
            "wsgi_app" if app.is_none() => match text(v) {
                Some(m) => out.set("app", "module", Value::String(m)),
                None => bad(out, v),
            },
            "wsgi_app" => {}
            "bind" => {
                let mut addrs = Vec::new();
                for a in list(v) {
                    // Checked as corral will read it: a host name other
                    // than localhost, say, is named here, not at start.
                    let checked = bind(&a, cwd)
                        .and_then(|b| crate::config::BindAddr::gunicorn(&b).map(|_| b));
                    match checked {
                        Ok(b) => addrs.push(Value::String(b)),
                        Err(why) => out.note(name, format!("{a}: {why}")),
                    }
                }
                out.set("server", "bind", Value::Array(addrs));
            }
            "backlog"
            | "workers"
            | "threads"
            | "max_requests"
            | "max_requests_jitter"
            | "limit_request_line"
            | "limit_request_fields"
            | "limit_request_field_size" => {
                let n = match whole(v, big) {
                    Ok(n) if n >= 0 => n,
                    Err(NotWhole::TooLarge) => {
                        out.invalid(name, too_large(v, big));
                        continue;
                    }
                    _ => {
                        out.invalid(
                            name,
                            format!("{v} is not a whole number of 0 or more, which gunicorn requires (it refuses to start with it too); write it like {name} = 4"),
                        );
                        continue;
                    }
                };
                let (section, key) = match *name {
                    "backlog" => ("server", "backlog"),
                    "workers" => ("workers", "count"),
                    "threads" => ("workers", "threads"),
                    "max_requests" => ("workers", "max_requests"),
                    "max_requests_jitter" => ("workers", "max_requests_jitter"),
                    "limit_request_line" => ("server", "max_request_line"),
                    "limit_request_fields" => ("server", "max_header_fields"),
                    _ => ("server", "max_header_field_bytes"),
                };
                out.set(section, key, Value::Integer(n));
            }
            "timeout" | "graceful_timeout" | "keepalive" => {
                let d = match seconds(v, big) {
                    Ok(d) => d,
                    Err(NotWhole::TooLarge) => {
                        out.invalid(name, too_large(v, big));
                        continue;
                    }
                    Err(NotWhole::Refused) => {
                        out.invalid(
                            name,
                            format!("{v} is not a number of seconds of 0 or more, which gunicorn requires (it refuses to start with it too); write it like {name} = 30"),
                        );
                        continue;
                    }
                };
                let (section, key) = match *name {
                    "timeout" => ("workers", "timeout"),
                    "graceful_timeout" => ("workers", "graceful_timeout"),
                    _ => ("server", "keepalive"),
                };
                out.set(section, key, d);
            }
            "worker_class" => match text(v).map(|c| crate::config::parse_worker_class(&c)) {
                Some(Ok(class)) => {
                    // worker_connections counts for these two only.
                    many = class.interface == crate::config::Interface::Asgi || class.gevent;
                    out.set(
                        "app",
                        "interface",
                        Value::String(class.interface.name().into()),
                    );
                    if class.gevent {
                        out.set("workers", "gevent", Value::Boolean(true));
                    }
                }
                Some(Err(why)) => out.note(name, why),
                None => bad(out, v),
            },
            "worker_connections" if many => match integer(v).filter(|n| *n > 0) {
                Some(n) => out.set("workers", "concurrency", Value::Integer(n)),
                None => bad(out, v),
            },
            "chdir" | "pidfile" | "accesslog" | "errorlog" => {
                let Some(p) = text(v) else {
                    bad(out, v);
                    continue;
                };
                if *name == "errorlog" && p == "-" {
                    continue;
                }
                let (section, key) = match *name {
                    "chdir" => ("app", "chdir"),
                    "pidfile" => ("server", "pid_file"),
                    "accesslog" => ("log", "access_file"),
                    _ => ("log", "error_file"),
                };
                let path = if *name == "chdir" {
                    Value::String(cwd.join(&p).display().to_string())
                } else {
                    out.path(&p)
                };
                out.set(section, key, path);
            }
            "pythonpath" => {
                // gunicorn puts each in front of sys.path in turn: the
                // last is searched first, first in `[app] pythonpath`.
                let paths = list(v).iter().rev().map(|p| out.path(p)).collect();
                out.set("app", "pythonpath", Value::Array(paths));
            }
            "raw_env" => {
                let mut env = toml::Table::new();
                for pair in list_keep_commas(v) {
                    match pair.split_once('=') {
                        Some((k, val)) if crate::config::check_env(k, val).is_ok() => {
                            env.insert(k.to_owned(), Value::String(val.to_owned()));
                        }
                        _ => out.note(name, format!("{pair:?} is no KEY=VALUE; left out")),
                    }
                }
                out.set("app", "env", Value::Table(env));
            }
            "user" | "group" => match text(v) {
                Some(id) => out.set(
                    "workers",
                    if *name == "user" { "user" } else { "group" },
                    Value::String(id),
                ),
                None => bad(out, v),
            },
            "umask" => match umask(v) {
                Some(m) => out.set("server", "socket_umask", Value::String(format!("{m:03o}"))),
                None => bad(out, v),
            },
            "forwarded_allow_ips" | "proxy_allow_ips" => {
                let ips = list(v).into_iter().map(Value::String).collect();
                out.set("server", name, Value::Array(ips));
            }
            // A bool before gunicorn 24.1 (true: either version).
            "proxy_protocol" => match v {
                Json::Bool(on) => {
                    let mode = if *on { "auto" } else { "off" };
                    out.set("server", "proxy_protocol", Value::String(mode.into()));
                }
                // gunicorn's validate_proxy_protocol.
                Json::String(m) => match m.trim().to_ascii_lowercase().as_str() {
                    "off" | "false" | "0" | "none" => {
                        out.set("server", "proxy_protocol", Value::String("off".into()))
                    }
                    "auto" | "true" | "1" => {
                        out.set("server", "proxy_protocol", Value::String("auto".into()))
                    }
                    mode @ ("v1" | "v2") => {
                        out.set("server", "proxy_protocol", Value::String(mode.into()))
                    }
                    _ => bad(out, v),
                },
                _ => bad(out, v),
            },
            // Any string: gunicorn runs at info on a level it does not
            // know ("warn", "fatal"), saying nothing.
            "loglevel" => match v {
                Json::String(l) => {
                    let level = match l.trim().to_ascii_lowercase().as_str() {
                        "warning" => "warn",
                        "critical" | "error" => "error",
                        "debug" => "debug",
                        "info" => "info",
                        _ => {
                            out.note(
                                name,
                                format!("{v} is no level gunicorn knows (debug, info, warning, error, critical), so it logs at info, as the converted file does"),
                            );
                            "info"
                        }
                    };
                    out.set("log", "level", Value::String(level.into()));
                }
                _ => bad(out, v),
            },
            "statsd_host" => match text(v).map(|h| crate::statsd::Target::parse(&h)) {
                Some(Ok(crate::statsd::Target::Unix(path))) => {
                    let Value::String(path) = out.path(&path.display().to_string()) else {
                        continue;
                    };
                    out.set("log", "statsd_host", Value::String(format!("unix:{path}")));
                }
                Some(Ok(target)) => {
                    out.set("log", "statsd_host", Value::String(target.to_string()))
                }
                Some(Err(why)) => out.note(name, why),
                None => bad(out, v),
            },
            "syslog" => match boolean(v) {
                Some(true) => out.set("log", "syslog", Value::Boolean(true)),
                Some(false) => {}
                None => bad(out, v),
            },
            // Written as the file wrote it: corral reads gunicorn's forms.
            "syslog_addr" => match text(v).map(|a| (crate::syslog::parse_target(&a), a)) {
                Some((Ok(_), addr)) => out.set("log", "syslog_to", Value::String(addr)),
                Some((Err(why), _)) => out.note(name, why),
                None => bad(out, v),
            },
            "syslog_prefix" => match text(v).map(|p| crate::syslog::check_prefix(&p)) {
                Some(Ok(p)) => out.set("log", "syslog_prefix", Value::String(p)),
                Some(Err(why)) => out.note(name, why),
                None => bad(out, v),
            },
            "syslog_facility" => match text(v).map(|f| (crate::syslog::parse_facility(&f), f)) {
                Some((Ok(_), f)) => out.set("log", "syslog_facility", Value::String(f)),
                Some((Err(why), _)) => out.note(name, why),
                None => bad(out, v),
            },
            "statsd_prefix" | "dogstatsd_tags" => match text(v) {
                Some(t) if t.is_empty() => {}
                Some(t) => out.set("log", name, Value::String(t)),
                None => bad(out, v),
            },
            "access_log_format" => match text(v) {
                Some(f) => match crate::access_log::parse(&f) {
                    Ok(_) => out.set("log", "access_format", Value::String(f)),
                    // As `[log] access_format` is refused in a corral.toml.
                    Err(why) => out.invalid(name, why),
                },
                None => bad(out, v),
            },
            "root_path" | "proc_name" => match text(v) {
                Some(p) => out.set("app", name, Value::String(p)),
                None => bad(out, v),
            },
            "paste" => match text(v) {
                Some(p) => {
                    let (file, name) = match p.rsplit_once('#') {
                        Some((file, name)) => (file.to_owned(), format!("#{name}")),
                        None => (p.clone(), String::new()),
                    };
                    let Value::String(file) = out.path(&file) else {
                        continue;
                    };
                    out.set("app", "paste", Value::String(format!("{file}{name}")));
                }
                None => bad(out, v),
            },
            "raw_paste_global_conf" => {
                let mut global = toml::Table::new();
                for pair in list_keep_commas(v) {
                    match pair.split_once('=') {
                        Some((k, val)) if !k.is_empty() => {
                            global.insert(k.to_owned(), Value::String(val.to_owned()));
                        }
                        _ => out.note(name, format!("{pair:?} is no KEY=VALUE; left out")),
                    }
                }
                out.set("app", "paste_global", Value::Table(global));
            }
            // gunicorn takes the first of these it finds set.
            "logconfig_dict" | "logconfig_json" | "logconfig" => {
                let first = ["logconfig_dict", "logconfig_json", "logconfig"]
                    .into_iter()
                    .find(|n| set_in(settings, n));
                if first != Some(*name) {
                    let first = first.unwrap_or("?");
                    out.note(
                        name,
                        format!("ignored, as gunicorn ignores it beside {first}"),
                    );
                    continue;
                }
                match (*name, v) {
                    // TOML has no null (nor integers past 64 bits).
                    ("logconfig_dict", Json::Object(_)) => match Value::try_from(v) {
                        Ok(table) => out.set("app", "logconfig_dict", table),
                        Err(_) => out.note(
                            name,
                            "holds None (or a number) a TOML file cannot: leave that key out of the dictionary",
                        ),
                    },
                    ("logconfig_dict", _) => bad(out, v),
                    (_, _) => match text(v) {
                        Some(p) => {
                            let path = out.path(&p);
                            out.set("app", name, path);
                        }
                        None => bad(out, v),
                    },
                }
            }
            "certfile" | "keyfile" | "ca_certs" => match text(v) {
                Some(p) => {
                    let path = out.path(&p);
                    out.set("server.tls", name, path);
                }
                None => bad(out, v),
            },
            "cert_reqs" => match cert_reqs(v) {
                // gunicorn's default: nothing to carry over.
                Some("none") => {}
                Some(reqs) => out.set("server.tls", "cert_reqs", Value::String(reqs.into())),
                None => bad(out, v),
            },
            "ssl_version" => match ssl_version(v) {
                Ok(Some(min)) => out.set("server.tls", "min_version", Value::String(min.into())),
                Ok(None) => {}
                Err(why) => out.note(name, why),
            },
            "http2_max_concurrent_streams" => match integer(v).filter(|n| *n > 0) {
                Some(n) => out.set("server", "max_concurrent_streams", Value::Integer(n)),
                None => bad(out, v),
            },
            // Already corral's behaviour.
            "initgroups" | "capture_output" | "config" | "reload_engine" => {}
            "header_map" if text(v).as_deref() == Some("drop") => {}
            "reload" => match boolean(v) {
                Some(true) => out.set("dev", "reload", Value::Boolean(true)),
                Some(false) => {}
                None => bad(out, v),
            },
            "reuse_port" => match boolean(v) {
                Some(true) => out.set("server", "reuse_port", Value::Boolean(true)),
                Some(false) => {}
                None => bad(out, v),
            },
            "reload_extra_files" => {
                let paths = list(v).iter().map(|p| out.path(p)).collect();
                out.set("dev", "reload_extra_files", Value::Array(paths));
            }
            "asgi_loop" | "asgi_lifespan" => {
                let allowed: &[&str] = if *name == "asgi_loop" {
                    &["auto", "asyncio", "uvloop"]
                } else {
                    &["auto", "on", "off"]
                };
                match text(v).map(|t| t.trim().to_ascii_lowercase()) {
                    Some(t) if allowed.contains(&t.as_str()) => {
                        out.set("app", name, Value::String(t))
                    }
                    _ => bad(out, v),
                }
            }
            _ => match settings::refused_setting(name, v) {
                Some(why) => {
                    out.note(name, note);
                    out.refused.push(why);
                }
                None => out.note(name, note),
            },
        }
    }
    out.current.clear();
}

/// Whether the file gives `name` a value that is not gunicorn's "unset".
fn set_in(settings: &BTreeMap<String, Json>, name: &str) -> bool {
    settings
        .get(name)
        .is_some_and(|entry| value_of(entry).is_ok_and(|v| !is_unset(v)))
}

/// gunicorn's `cert_reqs`: `ssl.CERT_NONE`, `CERT_OPTIONAL`,
/// `CERT_REQUIRED` (0, 1, 2; an `ssl.VerifyMode` is written as its number).
fn cert_reqs(v: &Json) -> Option<&'static str> {
    let name = match integer(v) {
        Some(n) => n.to_string(),
        None => text(v)?.trim().to_ascii_uppercase(),
    };
    match name.trim_start_matches("SSL.").trim_start_matches("CERT_") {
        "0" | "NONE" => Some("none"),
        "1" | "OPTIONAL" => Some("optional"),
        "2" | "REQUIRED" => Some("required"),
        _ => None,
    }
}

/// gunicorn's `ssl_version` (an `ssl.PROTOCOL_*` number or name; gunicorn
/// 21 and later ignore it in favour of `ssl_context`) as corral's
/// `min_version`: TLSv1_2 only is "1.2"; "negotiate the newest" (TLS,
/// SSLv23, TLS_SERVER) needs nothing; TLS 1.0 and 1.1 are not offered.
fn ssl_version(v: &Json) -> Result<Option<&'static str>, String> {
    let name = match integer(v) {
        Some(n) => n.to_string(),
        None => text(v)
            .ok_or_else(|| format!("cannot convert {v}"))?
            .trim()
            .to_ascii_uppercase(),
    };
    match name
        .trim_start_matches("SSL.")
        .trim_start_matches("PROTOCOL_")
    {
        "2" | "16" | "17" | "TLS" | "SSLV23" | "TLS_SERVER" | "TLS_CLIENT" => Ok(None),
        "5" | "TLSV1_2" => Ok(Some("1.2")),
        "3" | "4" | "TLSV1" | "TLSV1_1" => Err(format!(
            "{v} asks for TLS 1.0 or 1.1, which corral does not offer: it serves TLS 1.2 and 1.3 ([server.tls] min_version)"
        )),
        _ => Err(format!(
            "{v} is no ssl.PROTOCOL_* corral knows; [server.tls] min_version is \"1.2\" (the default) or \"1.3\""
        )),
    }
}

/// gunicorn reads the key from `certfile` when `keyfile` is not set;
/// corral wants both named.
fn tls_key_in_certfile(out: &mut Out) {
    let Some(tls) = out.sections.get_mut("server.tls") else {
        return;
    };
    let certfile = tls
        .iter()
        .find(|(k, _)| *k == "certfile")
        .map(|(_, v)| v.clone());
    let has_key = tls.iter().any(|(k, _)| *k == "keyfile");
    match certfile {
        Some(c) if !has_key => {
            tls.push(("keyfile", c));
            out.notes.push(
                "keyfile: not set, so gunicorn reads the key from certfile; so does the converted file (keyfile = certfile)"
                    .into(),
            );
        }
        None if has_key || tls.iter().any(|(k, _)| *k == "ca_certs") => {
            out.notes.push(
                "certfile: not set, so gunicorn serves no TLS; the [server.tls] keys above need certfile and keyfile"
                    .into(),
            );
        }
        _ => {}
    }
}

/// `raw_env` is a list whose values may hold commas.
fn list_keep_commas(v: &Json) -> Vec<String> {
    match v {
        Json::String(s) => vec![s.clone()],
        other => list(other),
    }
}

/// gunicorn's `umask`: a number, or a string as Python's `int(s, 0)` reads it.
fn umask(v: &Json) -> Option<u32> {
    let m = match v {
        Json::Number(n) => n.as_u64()?,
        // "022" is refused by int(s, 0), not 22.
        Json::String(s) => u64::try_from(python_int(s).ok()?).ok()?,
        _ => return None,
    };
    u32::try_from(m).ok().filter(|m| *m <= 0o777)
}

fn render(sections: &BTreeMap<&'static str, Vec<(&'static str, Value)>>, file: &Path) -> String {
    let mut text = format!(
        "# Converted from {} by `corral import-gunicorn`.\n\
         # Every key is documented in corral's config/example.toml.\n",
        file.display()
    );
    for section in SECTIONS {
        let Some(keys) = sections.get(section) else {
            continue;
        };
        text.push_str(&format!("\n[{section}]\n"));
        // Tables (`[app.env]`, `[app.logconfig_dict]` and its own) after
        // the plain keys, under headers of their own as a person writes them.
        let mut tables = toml::Table::new();
        for (key, value) in keys {
            match value {
                Value::Table(t) => drop(tables.insert((*key).to_owned(), Value::Table(t.clone()))),
                _ => text.push_str(&format!("{key} = {value}\n")),
            }
        }
        if !tables.is_empty() {
            let mut nested = Value::Table(tables);
            for part in section.rsplit('.') {
                nested = Value::Table(toml::Table::from_iter([(part.to_owned(), nested)]));
            }
            let Value::Table(doc) = nested else {
                unreachable!("built as a table")
            };
            text.push('\n');
            text.push_str(&toml::to_string(&doc).unwrap_or_default());
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: &str) -> BTreeMap<String, Json> {
        let plain: BTreeMap<String, Json> = serde_json::from_str(json).unwrap();
        plain
            .into_iter()
            .map(|(k, v)| (k, serde_json::json!({ "value": v })))
            .collect()
    }

    fn convert_json(json: &str) -> Conversion {
        convert(
            &settings(json),
            None,
            Path::new("/srv"),
            Path::new("gunicorn.conf.py"),
        )
    }

    #[test]
    fn proxy_protocol_settings_carry_over_from_either_gunicorn() {
        let server = |json: &str| {
            let c = convert_json(json);
            let parsed: toml::Table = c.toml.parse().unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
            (parsed.get("server").cloned(), c.notes)
        };
        // gunicorn 24.1 and later: a mode; before, a bool.
        let (s, _) =
            server(r#"{"proxy_protocol": "v2", "proxy_allow_ips": "10.0.0.1, 10.0.0.0/8"}"#);
        let s = s.unwrap();
        assert_eq!(s["proxy_protocol"].as_str(), Some("v2"));
        assert_eq!(s["proxy_allow_ips"][1].as_str(), Some("10.0.0.0/8"));
        let (s, _) = server(r#"{"proxy_protocol": true}"#);
        assert_eq!(s.unwrap()["proxy_protocol"].as_str(), Some("auto"));
        let (s, _) = server(r#"{"proxy_protocol": false}"#);
        assert!(s.is_none());
        let c = convert_json(r#"{"proxy_protocol": "v3"}"#);
        assert!(!c.toml.contains("proxy_protocol"), "{}", c.toml);
        assert!(
            c.invalid.iter().any(|n| n.starts_with(
                "gunicorn.conf.py: proxy_protocol: \"v3\" is not a value gunicorn takes"
            )),
            "{:?}",
            c.invalid
        );
    }

    #[test]
    fn logging_configurations_carry_over_as_gunicorn_picks_them() {
        let c = convert_json(
            r#"{"logconfig_dict": {"version": 1, "formatters": {"j": {"()": "x.Formatter", "fmt": "%(message)s"}},
                "root": {"level": "INFO", "handlers": []}, "incremental": false, "ratio": 0.5},
                "logconfig": "logging.ini"}"#,
        );
        let parsed: toml::Table = toml::from_str(&c.toml).expect(&c.toml);
        // Written as a person writes it, under headers of its own.
        assert!(
            c.toml.contains("\n[app.logconfig_dict.formatters.j]\n"),
            "{}",
            c.toml
        );
        let dict = &parsed["app"]["logconfig_dict"];
        assert_eq!(
            dict["formatters"]["j"]["()"].as_str(),
            Some("x.Formatter"),
            "{}",
            c.toml
        );
        assert_eq!(dict["root"]["handlers"].as_array().map(Vec::len), Some(0));
        assert_eq!(dict["ratio"].as_float(), Some(0.5));
        assert!(!c.toml.contains("logging.ini"), "{}", c.toml);
        assert!(
            c.notes
                .iter()
                .any(|n| n == "logconfig: ignored, as gunicorn ignores it beside logconfig_dict"),
            "{:?}",
            c.notes
        );

        let c = convert_json(r#"{"logconfig_json": "conf/log.json"}"#);
        assert!(
            c.toml.contains("logconfig_json = \"/srv/conf/log.json\""),
            "{}",
            c.toml
        );

        let c = convert_json(r#"{"logconfig_dict": {"version": 1, "root": {"level": null}}}"#);
        assert!(!c.toml.contains("logconfig_dict"), "{}", c.toml);
        assert!(
            c.notes.iter().any(|n| n.contains("holds None")),
            "{:?}",
            c.notes
        );
    }

    #[test]
    fn the_asgi_loop_and_lifespan_carry_over() {
        let c = convert_json(r#"{"asgi_loop": "UVLOOP", "asgi_lifespan": "off"}"#);
        assert!(c.toml.contains("asgi_loop = \"uvloop\""), "{}", c.toml);
        assert!(c.toml.contains("asgi_lifespan = \"off\""), "{}", c.toml);
        let c = convert_json(r#"{"asgi_loop": "trio"}"#);
        assert!(!c.toml.contains("asgi_loop"), "{}", c.toml);
        assert!(
            c.invalid
                .iter()
                .any(|n| n.starts_with("gunicorn.conf.py: asgi_loop: \"trio\" is not a value")),
            "{:?}",
            c.invalid
        );
    }

    #[test]
    fn a_paste_app_and_its_global_conf_carry_over() {
        let c = convert_json(
            r#"{"paste": "conf/production.ini#shop", "raw_paste_global_conf": ["db=sqlite:///a=b", "nonsense"]}"#,
        );
        let parsed: toml::Table = toml::from_str(&c.toml).expect(&c.toml);
        let app = &parsed["app"];
        assert_eq!(app["paste"].as_str(), Some("/srv/conf/production.ini#shop"));
        // An APP given beside it is left out: the file names the app.
        let with_app = convert(
            &settings(r#"{"paste": "production.ini"}"#),
            Some("main:app"),
            Path::new("/srv"),
            Path::new("gunicorn.conf.py"),
        );
        assert!(!with_app.toml.contains("module"), "{}", with_app.toml);
        assert!(
            with_app
                .notes
                .iter()
                .any(|n| n.starts_with("main:app: left out")),
            "{:?}",
            with_app.notes
        );
        assert_eq!(app["paste_global"]["db"].as_str(), Some("sqlite:///a=b"));
        assert!(
            c.notes
                .iter()
                .any(|n| n.contains("\"nonsense\" is no KEY=VALUE")),
            "{:?}",
            c.notes
        );
    }

    #[test]
    fn statsd_settings_and_proc_name_carry_over() {
        let c = convert_json(
            r#"{"statsd_host": "Stats:9125", "statsd_prefix": "web", "dogstatsd_tags": "env:prod"}"#,
        );
        let parsed: toml::Table = c.toml.parse().unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
        assert_eq!(parsed["log"]["statsd_host"].as_str(), Some("stats:9125"));
        assert_eq!(parsed["log"]["statsd_prefix"].as_str(), Some("web"));
        assert_eq!(parsed["log"]["dogstatsd_tags"].as_str(), Some("env:prod"));
        let c = convert_json(r#"{"bind": ["app.example:80", "127.0.0.1"]}"#);
        assert!(c.toml.contains("bind = [\"127.0.0.1:8000\"]"), "{}", c.toml);
        assert!(
            c.notes
                .iter()
                .any(|n| n.starts_with("bind: app.example:80: invalid bind address")),
            "{:?}",
            c.notes
        );
        let c = convert_json(r#"{"proc_name": "shop"}"#);
        assert!(c.toml.contains("proc_name = \"shop\""), "{}", c.toml);
        let c = convert_json(r#"{"statsd_host": "unix:dd.sock"}"#);
        assert!(c.toml.contains("statsd_host = \"unix:/"), "{}", c.toml);
        assert!(c.toml.contains("/dd.sock\""), "{}", c.toml);
        let c = convert_json(r#"{"statsd_host": "stats:http"}"#);
        assert!(
            c.notes.iter().any(|n| n.starts_with("statsd_host:")),
            "{:?}",
            c.notes
        );
    }

    #[test]
    fn common_settings_become_corral_keys() {
        let c = convert_json(
            r#"{"bind": "0.0.0.0:8000", "workers": 3, "threads": 4, "timeout": 60,
                "graceful_timeout": 1.5, "keepalive": 2, "max_requests": 1000,
                "max_requests_jitter": 50, "accesslog": "-", "errorlog": "logs/error.log",
                "loglevel": "warning", "user": 33, "group": "www-data", "chdir": "app",
                "raw_env": ["A=1", "B=x,y", "bad"], "forwarded_allow_ips": "10.0.0.1, 10.0.0.2",
                "limit_request_line": 4094, "limit_request_fields": 50,
                "limit_request_field_size": 8190, "umask": 18, "pidfile": "/run/app.pid",
                "worker_class": "uvicorn.workers.UvicornWorker", "worker_connections": 500,
                "wsgi_app": "main:app", "access_log_format": "%(h)s \"%(r)s\" %(D)s",
                "root_path": "/api", "pythonpath": "src,/opt/lib", "helper": 1}"#,
        );
        let parsed: toml::Table = c.toml.parse().unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
        let get = |path: &str| {
            let mut v = &Value::Table(parsed.clone());
            for part in path.split('.') {
                v = &v[part];
            }
            v.clone()
        };
        assert_eq!(get("app.module").as_str(), Some("main:app"));
        assert_eq!(get("app.interface").as_str(), Some("asgi"));
        assert_eq!(get("app.chdir").as_str(), Some("/srv/app"));
        assert_eq!(get("app.root_path").as_str(), Some("/api"));
        assert_eq!(get("app.env.B").as_str(), Some("x,y"));
        assert_eq!(get("server.bind")[0].as_str(), Some("0.0.0.0:8000"));
        assert_eq!(get("server.keepalive").as_str(), Some("2s"));
        assert_eq!(get("server.max_request_line").as_integer(), Some(4094));
        assert_eq!(
            get("server.forwarded_allow_ips")[1].as_str(),
            Some("10.0.0.2")
        );
        assert_eq!(get("workers.count").as_integer(), Some(3));
        assert_eq!(get("workers.timeout").as_str(), Some("60s"));
        assert_eq!(get("workers.graceful_timeout").as_str(), Some("1500ms"));
        assert_eq!(get("workers.user").as_str(), Some("33"));
        assert_eq!(get("workers.concurrency").as_integer(), Some(500));
        assert_eq!(get("server.socket_umask").as_str(), Some("022"));
        assert_eq!(get("log.access_file").as_str(), Some("-"));
        // Relative to the file's chdir, where gunicorn opens them.
        assert_eq!(
            get("log.error_file").as_str(),
            Some("/srv/app/logs/error.log")
        );
        // In the order gunicorn searches them: the last given first.
        assert_eq!(get("app.pythonpath")[0].as_str(), Some("/opt/lib"));
        assert_eq!(get("app.pythonpath")[1].as_str(), Some("/srv/app/src"));
        assert_eq!(get("log.level").as_str(), Some("warn"));
        assert_eq!(
            get("log.access_format").as_str(),
            Some("%(h)s \"%(r)s\" %(D)s")
        );
        let notes = c.notes.join("\n");
        assert!(
            notes.contains("raw_env: \"bad\" is no KEY=VALUE"),
            "{notes}"
        );
        assert!(
            notes.contains("ignored (as gunicorn ignores them): helper"),
            "{notes}"
        );
    }

    #[test]
    fn tls_settings_become_server_tls() {
        let c = convert_json(
            r#"{"certfile": "tls/cert.pem", "keyfile": "/etc/key.pem", "ca_certs": "ca.pem",
                "cert_reqs": 2, "ssl_version": 5, "http2_max_concurrent_streams": 50}"#,
        );
        let parsed: toml::Table = c.toml.parse().unwrap_or_else(|e| panic!("{e}\n{}", c.toml));
        let tls = &parsed["server"]["tls"];
        assert_eq!(tls["certfile"].as_str(), Some("/srv/tls/cert.pem"));
        assert_eq!(tls["keyfile"].as_str(), Some("/etc/key.pem"));
        assert_eq!(tls["ca_certs"].as_str(), Some("/srv/ca.pem"));
        assert_eq!(tls["cert_reqs"].as_str(), Some("required"));
        assert_eq!(tls["min_version"].as_str(), Some("1.2"));
        assert_eq!(
            parsed["server"]["max_concurrent_streams"].as_integer(),
            Some(50)
        );
        assert!(c.notes.is_empty(), "{:?}", c.notes);
        for (reqs, want) in [(0, None), (1, Some("optional")), (2, Some("required"))] {
            let c = convert_json(&format!(
                r#"{{"certfile": "c.pem", "keyfile": "k.pem", "cert_reqs": {reqs}}}"#
            ));
            let parsed: toml::Table = c.toml.parse().unwrap();
            let got = parsed["server"]["tls"].get("cert_reqs");
            assert_eq!(got.and_then(Value::as_str), want, "{}", c.toml);
        }
        // The key in the certificate's file, an old protocol, a function.
        let mut s = settings(r#"{"certfile": "both.pem", "ssl_version": 3, "cert_reqs": 7}"#);
        s.insert("ssl_context".into(), serde_json::json!({"callable": true}));
        let c = convert(&s, None, Path::new("/srv"), Path::new("g.py"));
        let parsed: toml::Table = c.toml.parse().unwrap();
        assert_eq!(
            parsed["server"]["tls"]["keyfile"].as_str(),
            Some("/srv/both.pem")
        );
        assert!(parsed["server"]["tls"].get("min_version").is_none());
        let notes = c.notes.join("\n");
        for needle in [
            "keyfile: not set, so gunicorn reads the key from certfile",
            "ssl_version: 3 asks for TLS 1.0 or 1.1, which corral does not offer",
            "ssl_context: is a function; not supported: no Python in the supervisor",
        ] {
            assert!(notes.contains(needle), "{needle} missing from:\n{notes}");
        }
        assert_eq!(
            c.invalid,
            [
                "g.py: cert_reqs: 7 is not a value gunicorn takes for it (gunicorn refuses to start with it too)"
            ]
        );
    }

    #[test]
    fn gunicorns_hooks_make_corral_run_the_file_and_the_rest_are_named() {
        let mut s = settings(r#"{"workers": 2}"#);
        for hook in [
            "post_fork",
            "pre_request",
            "worker_exit",
            "when_ready",
            "pre_fork",
        ] {
            s.insert(hook.into(), serde_json::json!({"callable": true}));
        }
        let c = convert(&s, None, Path::new("/srv"), Path::new("conf/g.py"));
        assert_eq!(c.hooks, ["post_fork", "pre_request", "worker_exit"]);
        assert_eq!(c.arbiter_hooks, ["when_ready"]);
        assert!(
            c.toml
                .contains("[app]\ngunicorn_hooks = \"/srv/conf/g.py\"\n"),
            "{}",
            c.toml
        );
        let notes = c.notes.join("\n");
        assert!(notes.contains("pre_fork: is a function"), "{notes}");
        for hook in ["post_fork", "pre_request", "worker_exit", "when_ready"] {
            assert!(
                !notes.contains(&format!("{hook}: ")),
                "{hook} runs, so it is no note: {notes}"
            );
        }
        // gunicorn's python:MODULE keeps its name, for its relative imports.
        let c = convert_at(
            &s,
            None,
            Path::new("/srv"),
            Path::new("config/gunicorn.py"),
            Some("config.gunicorn"),
            None,
        );
        assert!(
            c.toml
                .contains("gunicorn_hooks = \"python:config.gunicorn\""),
            "{}",
            c.toml
        );
        // An arbiter hook alone names the file too.
        let mut s = settings("{}");
        s.insert("child_exit".into(), serde_json::json!({"callable": true}));
        let c = convert(&s, None, Path::new("/srv"), Path::new("g.py"));
        assert_eq!(c.arbiter_hooks, ["child_exit"]);
        assert!(
            c.toml.contains("gunicorn_hooks = \"/srv/g.py\""),
            "{}",
            c.toml
        );
        assert!(c.notes.is_empty(), "{:?}", c.notes);
        // A file without them leaves the key out; a hook that is not a
        // function is no hook.
        let mut s = settings(r#"{"workers": 2, "post_fork": null}"#);
        s.insert("pre_exec".into(), serde_json::json!({"callable": true}));
        let c = convert(&s, None, Path::new("/srv"), Path::new("g.py"));
        assert!(c.hooks.is_empty() && c.arbiter_hooks.is_empty());
        assert!(!c.toml.contains("gunicorn_hooks"), "{}", c.toml);
    }

    /// The worker and the arbiter process run the hooks
    /// `settings::WORKER_HOOKS` and `settings::ARBITER_HOOKS` list, no
    /// more, no fewer.
    #[test]
    fn the_python_side_runs_the_hooks_the_conversion_hands_it() {
        let listed = |file: &str, name: &str| -> Vec<&'static str> {
            let text = crate::worker::script::file(file);
            let start = text
                .find(&format!("{name} = ("))
                .unwrap_or_else(|| panic!("{file} lists {name}"));
            let end = start + text[start..].find(')').unwrap();
            text[start..end].split('"').skip(1).step_by(2).collect()
        };
        assert_eq!(
            listed("corral_worker/hooks.py", "WORKER_HOOKS"),
            settings::WORKER_HOOKS
        );
        assert_eq!(
            listed("corral_worker/arbiter.py", "ARBITER_HOOKS"),
            settings::ARBITER_HOOKS
        );
    }

    #[test]
    fn syslog_settings_become_log_keys() {
        let c = convert_json(
            r#"{"syslog": true, "syslog_addr": "unix:///dev/log#dgram",
                "syslog_prefix": "shop", "syslog_facility": "local3"}"#,
        );
        let parsed: toml::Table = c.toml.parse().unwrap();
        let log = &parsed["log"];
        assert_eq!(log["syslog"].as_bool(), Some(true));
        assert_eq!(log["syslog_to"].as_str(), Some("unix:///dev/log#dgram"));
        assert_eq!(log["syslog_prefix"].as_str(), Some("shop"));
        assert_eq!(log["syslog_facility"].as_str(), Some("local3"));
        assert!(c.notes.is_empty(), "{:?}", c.notes);
        let c = convert_json(r#"{"syslog_facility": "local9", "syslog_prefix": "a b"}"#);
        assert_eq!(c.notes.len(), 2, "{:?}", c.notes);
    }

    /// A value gunicorn refuses to start with is an error naming the file,
    /// the line that sets it and the setting; what corral does not carry
    /// over on purpose stays a note.
    #[test]
    fn a_value_gunicorn_refuses_is_an_error_naming_its_line() {
        let source = "import os\n\nworkers = 3.0\ntimeout = \"abc\"\nmax_requests = -5\naccess_log_format = \"%(h)s %z\"\npreload_app = True\n";
        let s = settings(
            r#"{"workers": 3.0, "timeout": "abc", "max_requests": -5, "access_log_format": "%(h)s %z", "preload_app": true}"#,
        );
        let c = convert_at(
            &s,
            None,
            Path::new("/srv"),
            Path::new("gunicorn.conf.py"),
            None,
            Some(source),
        );
        let invalid = c.invalid.join("\n");
        for needle in [
            "gunicorn.conf.py:3: workers: 3.0 is not a whole number of 0 or more, which gunicorn requires (it refuses to start with it too); write it like workers = 4",
            "gunicorn.conf.py:4: timeout: \"abc\" is not a number of seconds of 0 or more",
            "gunicorn.conf.py:5: max_requests: -5 is not a whole number of 0 or more",
            "gunicorn.conf.py:6: access_log_format: ",
        ] {
            assert!(
                invalid.contains(needle),
                "{needle} missing from:\n{invalid}"
            );
        }
        assert_eq!(c.invalid.len(), 4, "{invalid}");
        assert!(
            c.notes.iter().any(|n| n.starts_with("preload_app: ")),
            "{:?}",
            c.notes
        );
    }

    /// Each converted line points at the line of the file that set it,
    /// for the messages that name where a key comes from.
    #[test]
    fn each_converted_line_points_at_the_setting_it_came_from() {
        let source = "import os\n\nworkers = 2\nbind = [\"127.0.0.1:9000\"]\n";
        let s = settings(r#"{"workers": 2, "bind": ["127.0.0.1:9000"]}"#);
        let c = convert_at(
            &s,
            Some("main:app"),
            Path::new("/srv"),
            Path::new("gunicorn.conf.py"),
            None,
            Some(source),
        );
        let at = |needle: &str| {
            let i = c.toml.lines().position(|l| l.starts_with(needle)).unwrap();
            c.lines[i].clone()
        };
        assert_eq!(
            at("count = 2"),
            Some("gunicorn.conf.py:3".into()),
            "{}",
            c.toml
        );
        assert_eq!(
            at("bind = "),
            Some("gunicorn.conf.py:4".into()),
            "{}",
            c.toml
        );
        // The APP came from the command line, not the file.
        assert_eq!(at("module = "), None, "{}", c.toml);
    }

    #[test]
    fn reuse_port_becomes_the_server_key() {
        let c = convert_json(r#"{"reuse_port": true}"#);
        assert!(c.toml.contains("reuse_port = true"), "{}", c.toml);
        assert!(c.notes.is_empty(), "{:?}", c.notes);
        let c = convert_json(r#"{"reuse_port": "yes"}"#);
        assert!(!c.toml.contains("reuse_port"), "{}", c.toml);
        assert!(!c.invalid.is_empty());
    }

    #[test]
    fn gevent_workers_become_wsgi_in_greenlets_with_their_connections() {
        for class in ["gevent", "gunicorn.workers.ggevent.GeventWorker"] {
            let c = convert_json(&format!(
                r#"{{"worker_class": "{class}", "worker_connections": 50, "threads": 4}}"#
            ));
            let parsed: toml::Table = c.toml.parse().unwrap();
            assert_eq!(parsed["app"]["interface"].as_str(), Some("wsgi"));
            assert_eq!(parsed["workers"]["gevent"].as_bool(), Some(true));
            assert_eq!(parsed["workers"]["concurrency"].as_integer(), Some(50));
            assert!(c.notes.is_empty(), "{:?}", c.notes);
        }
        // worker_connections changes nothing for threads, as in gunicorn.
        let c = convert_json(r#"{"worker_class": "gthread", "worker_connections": 50}"#);
        assert!(!c.toml.contains("concurrency"), "{}", c.toml);
        assert!(!c.toml.contains("gevent"), "{}", c.toml);
    }

    #[test]
    fn daemon_true_is_refused_as_its_flag_is_and_false_is_taken() {
        let c = convert_json(r#"{"daemon": true}"#);
        assert_eq!(
            c.refused,
            [format!(
                "it sets daemon = True: {}; remove the setting (or set it to False) to run this file with corral",
                settings::refused_flag("--daemon").unwrap()
            )]
        );
        assert!(
            c.notes
                .iter()
                .any(|n| n.starts_with("daemon: not supported"))
        );
        for off in [r#"{"daemon": false}"#, r#"{"daemon": null}"#, "{}"] {
            let c = convert_json(off);
            assert!(c.refused.is_empty(), "{off}: {:?}", c.refused);
        }
    }

    #[test]
    fn what_cannot_be_mapped_is_named_with_the_reason() {
        let mut s = settings(
            r#"{"preload_app": true, "worker_class": "eventlet", "daemon": false,
                "bind": ["unix:app.sock", "fd://3", "localhost"],
                "syslog_addr": "tcp://logs:514"}"#,
        );
        s.insert("pre_exec".into(), serde_json::json!({"callable": true}));
        s.insert(
            "ssl_version".into(),
            serde_json::json!({"repr": "<_SSLMethod>"}),
        );
        let c = convert(&s, Some("wsgi:app"), Path::new("/srv"), Path::new("g.py"));
        let notes = c.notes.join("\n");
        for needle in [
            "preload_app: not supported: each worker imports the app itself",
            "worker_class: corral has no eventlet workers",
            "pre_exec: is a function; not supported",
            "ssl_version: is <_SSLMethod> (not a plain value)",
            "bind: fd://3: file descriptors are not supported",
            "syslog_addr: is a TCP address: corral sends syslog over UDP",
        ] {
            assert!(notes.contains(needle), "{needle} missing from:\n{notes}");
        }
        assert!(!notes.contains("daemon"), "false means not set: {notes}");
        assert!(c.toml.contains("module = \"wsgi:app\""), "{}", c.toml);
        assert!(
            c.toml
                .contains("bind = [\"unix:/srv/app.sock\", \"localhost:8000\"]"),
            "{}",
            c.toml
        );
    }

    #[test]
    fn reload_and_its_extra_files_become_dev_keys() {
        let s = settings(
            r#"{"reload": true, "reload_engine": "poll",
                "reload_extra_files": ["conf/site.ini", "/etc/app.toml"]}"#,
        );
        let c = convert(&s, Some("wsgi:app"), Path::new("/srv"), Path::new("g.py"));
        assert!(c.notes.is_empty(), "{:?}", c.notes);
        let parsed: toml::Table = c.toml.parse().unwrap();
        assert_eq!(parsed["dev"]["reload"].as_bool(), Some(true));
        assert_eq!(
            parsed["dev"]["reload_extra_files"],
            Value::Array(vec![
                Value::String("/srv/conf/site.ini".into()),
                Value::String("/etc/app.toml".into())
            ])
        );
        // The [dev] section comes last, as config/example.toml has it.
        assert!(
            c.toml.trim_end().ends_with("\"/etc/app.toml\"]"),
            "{}",
            c.toml
        );
    }

    /// Values gunicorn 27's validators take are taken, with the value
    /// gunicorn gives them; what they refuse is an error. `int(s, 0)` for
    /// whole numbers, "true"/"false" for bools, any string for loglevel.
    #[test]
    fn values_gunicorn_takes_are_taken_and_those_it_refuses_are_errors() {
        // (setting, its value as JSON, the digits of an int past 64 bits,
        // the key it sets, Ok(TOML value) or Err(part of the error)).
        let int = |n: i64| Ok(Value::Integer(n));
        let string = |s: &str| Ok(Value::String(s.into()));
        type Case<'a> = (
            &'a str,
            &'a str,
            Option<&'a str>,
            &'a str,
            Result<Value, &'a str>,
        );
        let cases: Vec<Case> = vec![
            ("loglevel", r#""warn""#, None, "log.level", string("info")),
            ("loglevel", r#""fatal""#, None, "log.level", string("info")),
            ("loglevel", r#""notset""#, None, "log.level", string("info")),
            ("loglevel", r#""TRACE""#, None, "log.level", string("info")),
            (
                "loglevel",
                r#"" Warning ""#,
                None,
                "log.level",
                string("warn"),
            ),
            (
                "loglevel",
                r#""critical""#,
                None,
                "log.level",
                string("error"),
            ),
            (
                "loglevel",
                "3",
                None,
                "log.level",
                Err("not a value gunicorn takes"),
            ),
            (
                "proxy_protocol",
                r#""true""#,
                None,
                "server.proxy_protocol",
                string("auto"),
            ),
            (
                "proxy_protocol",
                r#"" FALSE ""#,
                None,
                "server.proxy_protocol",
                string("off"),
            ),
            (
                "proxy_protocol",
                r#""1""#,
                None,
                "server.proxy_protocol",
                string("auto"),
            ),
            (
                "proxy_protocol",
                r#""V2""#,
                None,
                "server.proxy_protocol",
                string("v2"),
            ),
            (
                "proxy_protocol",
                r#""yes""#,
                None,
                "server.proxy_protocol",
                Err("not a value gunicorn takes"),
            ),
            (
                "reuse_port",
                r#""True""#,
                None,
                "server.reuse_port",
                Ok(Value::Boolean(true)),
            ),
            (
                "syslog",
                r#"" true ""#,
                None,
                "log.syslog",
                Ok(Value::Boolean(true)),
            ),
            (
                "reload",
                r#""TRUE""#,
                None,
                "dev.reload",
                Ok(Value::Boolean(true)),
            ),
            (
                "reload",
                r#""yes""#,
                None,
                "dev.reload",
                Err("not a value gunicorn takes"),
            ),
            (
                "timeout",
                r#""0x1e""#,
                None,
                "workers.timeout",
                string("30s"),
            ),
            (
                "timeout",
                r#"" 0X1E ""#,
                None,
                "workers.timeout",
                string("30s"),
            ),
            (
                "keepalive",
                r#""0b101""#,
                None,
                "server.keepalive",
                string("5s"),
            ),
            (
                "graceful_timeout",
                r#""1_0""#,
                None,
                "workers.graceful_timeout",
                string("10s"),
            ),
            ("timeout", "2.5", None, "workers.timeout", string("2500ms")),
            (
                "timeout",
                r#""0x""#,
                None,
                "workers.timeout",
                Err("not a number of seconds"),
            ),
            (
                "timeout",
                r#""-0x1e""#,
                None,
                "workers.timeout",
                Err("not a number of seconds"),
            ),
            (
                "limit_request_line",
                r#""0o10""#,
                None,
                "server.max_request_line",
                int(8),
            ),
            (
                "max_requests",
                r#""1_000""#,
                None,
                "workers.max_requests",
                int(1000),
            ),
            (
                "max_requests",
                r#""+0x_ff""#,
                None,
                "workers.max_requests",
                int(255),
            ),
            (
                "max_requests",
                r#""000""#,
                None,
                "workers.max_requests",
                int(0),
            ),
            (
                "max_requests",
                r#""010""#,
                None,
                "workers.max_requests",
                Err("not a whole number"),
            ),
            (
                "max_requests",
                r#""1__000""#,
                None,
                "workers.max_requests",
                Err("not a whole number"),
            ),
            (
                "max_requests",
                r#""_1000""#,
                None,
                "workers.max_requests",
                Err("not a whole number"),
            ),
            (
                "max_requests",
                r#""1000_""#,
                None,
                "workers.max_requests",
                Err("not a whole number"),
            ),
            (
                "max_requests",
                r#""0x1g""#,
                None,
                "workers.max_requests",
                Err("not a whole number"),
            ),
            (
                "max_requests",
                r#""1 000""#,
                None,
                "workers.max_requests",
                Err("not a whole number"),
            ),
            (
                "umask",
                r#""0o22""#,
                None,
                "server.socket_umask",
                string("022"),
            ),
            (
                "umask",
                r#""0x12""#,
                None,
                "server.socket_umask",
                string("022"),
            ),
            (
                "umask",
                r#""18""#,
                None,
                "server.socket_umask",
                string("022"),
            ),
            (
                "umask",
                r#""022""#,
                None,
                "server.socket_umask",
                Err("not a value gunicorn takes"),
            ),
            ("workers", "true", None, "workers.count", int(1)),
            ("workers", r#""5""#, None, "workers.count", int(5)),
            (
                "workers",
                "3.0",
                None,
                "workers.count",
                Err("3.0 is not a whole number"),
            ),
            (
                "workers",
                "1e30",
                Some("1000000000000000000000000000000"),
                "workers.count",
                Err(
                    "1000000000000000000000000000000 is too large: the largest corral takes is 9223372036854775807",
                ),
            ),
            (
                "max_requests",
                "9223372036854775808",
                Some("9223372036854775808"),
                "workers.max_requests",
                Err(
                    "9223372036854775808 is too large: the largest corral takes is 9223372036854775807",
                ),
            ),
            (
                "max_requests",
                r#""0x8000000000000000""#,
                None,
                "workers.max_requests",
                Err("is too large: the largest corral takes is 9223372036854775807"),
            ),
            (
                "max_requests",
                "9223372036854775807",
                None,
                "workers.max_requests",
                int(i64::MAX),
            ),
        ];
        for (name, value, big, key, want) in cases {
            let mut entry =
                serde_json::json!({ "value": serde_json::from_str::<Json>(value).unwrap() });
            if let Some(digits) = big {
                entry["int"] = Json::String(digits.into());
            }
            let s = BTreeMap::from([(name.to_owned(), entry)]);
            let c = convert(&s, None, Path::new("/srv"), Path::new("gunicorn.conf.py"));
            let parsed: toml::Table = toml::from_str(&c.toml).expect(&c.toml);
            let (section, field) = key.rsplit_once('.').unwrap();
            let got = parsed.get(section).and_then(|t| t.get(field)).cloned();
            let invalid = c.invalid.join("\n");
            match want {
                Ok(v) => {
                    assert_eq!(
                        got.as_ref(),
                        Some(&v),
                        "{name} = {value}: {invalid}\n{}",
                        c.toml
                    );
                    assert!(c.invalid.is_empty(), "{name} = {value}: {invalid}");
                }
                Err(why) => {
                    assert!(
                        invalid.contains(why),
                        "{name} = {value}: {why:?} not in {invalid:?}\n{}",
                        c.toml
                    );
                    assert_eq!(got, None, "{name} = {value}");
                }
            }
        }
        // An unknown level is info, as in gunicorn, and said so.
        let c = convert_json(r#"{"loglevel": "warn"}"#);
        assert!(
            c.notes
                .iter()
                .any(|n| n.starts_with("loglevel: \"warn\" is no level gunicorn knows")),
            "{:?}",
            c.notes
        );
        // daemon = "false" is no daemon to gunicorn: nothing to refuse.
        let c = convert_json(r#"{"daemon": "false"}"#);
        assert!(c.refused.is_empty(), "{:?}", c.refused);
        let c = convert_json(r#"{"daemon": "True"}"#);
        assert_eq!(c.refused.len(), 1, "{:?}", c.refused);
    }
}
