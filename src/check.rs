//! `corral check`: boots one worker exactly as `run` would (same
//! interpreter, environment, folder, worker script), runs the readiness
//! check if one is configured, prints `OK` or the failure, and exits 0 or 1
//! (2 for what `corral run` would refuse before starting a worker: no
//! interpreter, an access log or pid file it could not write).
//! No listen socket is bound. The drop-in for `python -c "from main import
//! app"` in a deploy pipeline, which also catches errors that only appear at
//! start-up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::config::Config;
use crate::runtime_dir::{Owner, RuntimeDir};
use crate::worker::channel::{Channel, ControlEvent, Ident};
use crate::worker::output::printable_lines;
use crate::worker::process::Launcher;

/// Exit code when the app failed the check.
pub const EXIT_FAILED: u8 = 1;

/// What the check found.
#[derive(Debug)]
pub enum Outcome {
    Ok {
        import_ms: f64,
        /// What the worker found the app to be and how it runs it: "WSGI
        /// app", "ASGI app" (", without lifespan: ..." when the app refused
        /// the protocol), or "WSGI app in gevent's greenlets".
        interface: String,
        boot: Duration,
        ready: Option<String>,
    },
    Failed(String),
}

pub async fn run(cfg: Arc<Config>) -> u8 {
    let mistakes = start_mistakes(&cfg);
    if !mistakes.is_empty() {
        for m in &mistakes {
            eprintln!("error: {m}");
        }
        print_interpreter(&cfg);
        return crate::EXIT_CONFIG;
    }
    match check(&cfg).await {
        Ok(Outcome::Ok {
            import_ms,
            interface,
            boot,
            ready,
        }) => {
            println!(
                "OK: {} imported in {import_ms:.0} ms ({}; worker booted in {} ms){}",
                cfg.app.module,
                interface,
                boot.as_millis(),
                ready
                    .map(|p| format!("; readiness GET {p} passed"))
                    .unwrap_or_default()
            );
            println!(
                "`corral run` would start {} worker(s): {}",
                cfg.workers.count, cfg.workers.count_origin
            );
            print_interpreter(&cfg);
            0
        }
        Ok(Outcome::Failed(why)) => {
            println!(
                "FAILED: {} does not boot:\n{}",
                cfg.app.module,
                printable_lines(why.trim_end())
            );
            // A module missing is often the wrong interpreter (another
            // virtualenv than the app's): say which one ran it.
            print_interpreter(&cfg);
            EXIT_FAILED
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}

/// Why the workers' interpreter cannot be run at all (not on `PATH`, no
/// such file, not a file, or not executable), said with the fix: a
/// mistake `run` refuses at its start. (Whether the workers' user may
/// reach it is warned about once it is known to exist.)
pub fn no_interpreter(cfg: &Config) -> Option<String> {
    let why = why_no_interpreter(&cfg.app.python)?;
    Some(format!(
        "the interpreter {} ({}) {why}: give the virtualenv's python, e.g. --python /srv/app/.venv/bin/python or [app] python",
        cfg.app.python.display(),
        cfg.app.python_origin
    ))
}

/// The app's folder (`--chdir`, `app.chdir`) when it is no folder: said
/// at the start, as gunicorn says "can't chdir", where every worker
/// failed to start blaming the interpreter and the port answered 503 for
/// good.
pub fn no_app_folder(cfg: &Config) -> Option<String> {
    let dir = cfg.app.chdir.as_ref()?;
    let why = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => return None,
        Ok(_) => "is not a folder".to_string(),
        Err(e) => format!("cannot be entered: {e}"),
    };
    Some(format!(
        "the app's folder {} (--chdir, app.chdir) {why}: give the folder the app is in",
        dir.display()
    ))
}

fn why_no_interpreter(python: &std::path::Path) -> Option<String> {
    let Some(path) = crate::private_fs::which(python) else {
        return Some("is not on PATH".into());
    };
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("does not exist".into()),
        Err(e) => Some(format!("cannot be read: {e}")),
        Ok(m) if !m.is_file() => Some("is not a file".into()),
        Ok(_) => nix::unistd::access(&path, nix::unistd::AccessFlags::X_OK)
            .err()
            .map(|e| format!("is not executable ({})", e.desc())),
    }
}

/// What `corral run` would refuse at its start before any worker does,
/// found without creating anything: the interpreter, and the folders of
/// the access log and the pid file (`run` exits 2 for each).
fn start_mistakes(cfg: &Config) -> Vec<String> {
    let mut found: Vec<String> = no_app_folder(cfg)
        .into_iter()
        .chain(no_interpreter(cfg))
        .collect();
    let access = cfg.log.access.as_ref().and_then(|a| match &a.target {
        crate::config::AccessTarget::File(path) => Some(path),
        _ => None,
    });
    // The access log is opened where it is (appended to, made when it is
    // not there); the pid file is replaced (written beside it, renamed).
    let files = [
        ("the access log", access, false),
        ("the pid file", cfg.server.pid_file.as_ref(), true),
    ];
    for (what, path, replaced) in files {
        if let Some(path) = path
            && let Some(why) = not_writable(path, replaced)
        {
            found.push(format!("{what} {}: {why}", path.display()));
        }
    }
    found
}

/// Why corral could not write `path` (a file it appends to, or one it
/// replaces when `replaced`): its folder is missing, no folder, or not
/// writable (for a file appended to, only when the file is not there to
/// be opened: a log file made for corral's user in a folder of root's
/// serves); or the file is there and not writable.
fn not_writable(path: &std::path::Path, replaced: bool) -> Option<String> {
    use nix::unistd::{AccessFlags, access};
    let dir = crate::private_fs::folder_of(path);
    match std::fs::metadata(dir) {
        Err(e) => return Some(format!("its folder {}: {e}", dir.display())),
        Ok(m) if !m.is_dir() => return Some(format!("{} is not a folder", dir.display())),
        Ok(_) => {}
    }
    let there = std::fs::symlink_metadata(path).ok();
    if (replaced || there.is_none())
        && let Err(e) = access(dir, AccessFlags::W_OK | AccessFlags::X_OK)
    {
        return Some(format!(
            "its folder {} is not writable ({})",
            dir.display(),
            e.desc()
        ));
    }
    match there {
        Some(m) if m.is_dir() => Some("is a folder".into()),
        Some(_) => access(path, AccessFlags::W_OK)
            .err()
            .map(|e| format!("is not writable ({})", e.desc())),
        None => None,
    }
}

fn print_interpreter(cfg: &Config) {
    println!(
        "interpreter: {} ({})",
        cfg.app.python.display(),
        cfg.app.python_origin
    );
}

async fn check(cfg: &Config) -> Result<Outcome, String> {
    // As `run` makes it, so that workers running as [workers] user can
    // read the script (corral check never drops its own privileges).
    let dir = RuntimeDir::create(
        "corral-check-",
        Owner {
            identity: cfg.workers.identity.as_ref(),
            drop_privileges: false,
        },
        cfg.workers.tmp_dir.as_deref(),
    )
    .map_err(|e| format!("cannot create a private runtime directory: {e}"))?;
    let launcher = Launcher::new(cfg, dir.script()).inherit_output();
    let info = crate::deploy::resolve(cfg);
    let spawned = launcher.spawn(0, 1, &info).map_err(|e| e.to_string())?;
    let pid = spawned.pid;
    let process = spawned.process;
    let mut stacks = spawned.stacks;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let capacity = crate::worker::channel::Capacity {
        threads: 1,
        concurrency: 1,
    };
    let channel = Channel::start(
        Ident {
            serial: 1,
            slot: 0,
            pid,
            shard: 0,
        },
        spawned.sock,
        spawned.ring,
        tx,
        capacity,
    );
    let mut child = spawned.child;
    let started = Instant::now();
    let deadline = started + cfg.workers.boot_timeout;
    let outcome = tokio::select! {
        ev = boot_report(&mut rx) => match ev {
            // A report from a process the worker forked, the worker gone
            // (an app that forks at import and exits, to daemonize): `run`
            // sees the worker's exit and fails its boot, so does check.
            Some((_, ControlEvent::Booted(_))) if matches!(child.try_wait(), Ok(Some(_))) => {
                let how = match child.try_wait() {
                    Ok(Some(st)) => crate::supervisor::core::exit_of(st).describe(),
                    _ => "exited".to_string(),
                };
                Outcome::Failed(format!(
                    "the worker {how} while booting; a process it forked (at the app's import) reported in its place, and corral serves only through the worker it started: don't fork and exit at import"
                ))
            }
            Some((_, ControlEvent::Booted(info))) => {
                let boot = started.elapsed();
                let green = if info.green == "gevent" { " in gevent's greenlets" } else { "" };
                let lifespan = if info.lifespan == "unsupported" {
                    ", without lifespan: the app does not support it"
                } else {
                    ""
                };
                let interface = format!("{} app{green}{lifespan}", info.interface.to_uppercase());
                match &cfg.health.ready_path {
                    None => Outcome::Ok { import_ms: info.import_ms, interface, boot, ready: None },
                    Some(path) => match ready(&channel, path, cfg, deadline).await {
                        Ok(()) => Outcome::Ok { import_ms: info.import_ms, interface, boot, ready: Some(path.clone()) },
                        Err(why) => Outcome::Failed(format!("the app booted, but its readiness check failed: {why}")),
                    },
                }
            }
            Some((_, ControlEvent::BootFailed(tb))) => Outcome::Failed(tb),
            Some((_, ControlEvent::Closed(_) | ControlEvent::Heartbeat | ControlEvent::AtLimit(_))) | None => {
                let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                let how = match status {
                    Ok(Ok(st)) => crate::supervisor::core::exit_of(st).describe(),
                    _ => "closed its channel".to_string(),
                };
                Outcome::Failed(format!("the worker {how} while booting, before it could report"))
            }
        },
        _ = tokio::time::sleep_until(deadline.into()) => {
            // Show where it hangs before giving up.
            process.signal(libc::SIGUSR1);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let stacks = stacks
                .take()
                .map(|s| format!("\n\nPython stacks at that moment:\n{}", s.trim_end()))
                .unwrap_or_default();
            Outcome::Failed(format!(
                "timed out after {:?} while booting (importing the app){stacks}",
                cfg.workers.boot_timeout
            ))
        }
    };
    process.signal(libc::SIGTERM);
    if tokio::time::timeout(Duration::from_secs(3), child.wait())
        .await
        .is_err()
    {
        process.signal(libc::SIGKILL);
        let _ = child.wait().await;
    }
    Ok(outcome)
}

/// The worker's first word that is not a heartbeat.
async fn boot_report(
    rx: &mut mpsc::UnboundedReceiver<(u64, ControlEvent)>,
) -> Option<(u64, ControlEvent)> {
    loop {
        match rx.recv().await {
            Some((_, ControlEvent::Heartbeat)) => continue,
            other => return other,
        }
    }
}

/// Probes until a 2xx or the deadline.
async fn ready(
    channel: &Channel,
    path: &str,
    cfg: &Config,
    deadline: Instant,
) -> Result<(), String> {
    loop {
        let last = crate::worker::probe::probe(channel, path, cfg.health.probe_timeout).await;
        match last {
            Ok(()) => return Ok(()),
            Err(why) if Instant::now() + Duration::from_millis(500) >= deadline => return Err(why),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}
