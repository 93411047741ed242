//! Starting a worker process: fork+exec of the configured interpreter running
//! the embedded worker script ([`super::script`]), with its end of a
//! private socket pair as fd 3.
//! Its environment is corral's (or the part `[app] env_allow` names) minus
//! the service manager's and corral's own variables
//! ([`crate::config::is_corral_own_env`]), then `[app] env` and the
//! `CORRAL_WORKER_*` hand-over variables the worker script reads.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use tokio::net::UnixStream;

use super::pidfd::Process;
use super::ring::Ring;
use super::stacks::Stacks;
use crate::config::{Config, Interface, LogLevel};

/// The fd number the worker finds its channel on.
const CHANNEL_FD: i32 = 3;
/// The fd number of its stack dump file ([`Stacks`]).
const STACKS_FD: i32 = 4;
/// The fd numbers of its rings' memory file and eventfds
/// ([`super::ring::ChildFds`]), when it gets the ring.
const RING_FDS: [i32; 5] = [5, 6, 7, 8, 9];
/// The fds passed on are moved above this number before the fork, so
/// that putting them at 3 to 9 in the child never overwrites one another.
const HIGH_FD: i32 = 16;

/// What one generation runs.
#[derive(Debug, Clone, Default)]
pub struct GenerationInfo {
    /// The app folder with symlinks resolved when the generation started: a
    /// generation keeps running the release it started from even after a
    /// `current` symlink moves.
    pub chdir: Option<PathBuf>,
    pub revision: Option<String>,
}

/// Everything needed to start workers, computed once before any fork.
#[derive(Clone)]
pub struct Launcher {
    python: PathBuf,
    script: PathBuf,
    chdir: Option<PathBuf>,
    env: Vec<(String, String)>,
    /// Read the workers' stdout/stderr into corral's log (else inherit them).
    capture: bool,
    /// The only variables of corral's environment the workers inherit;
    /// `None`: all but corral's own.
    env_allow: Option<crate::config::EnvAllow>,
    /// Who the workers run as: uid, gid, supplementary groups.
    identity: Option<(u32, u32, Vec<libc::gid_t>)>,
    limits: crate::config::Limits,
    /// Offer workers the shared-memory rings ([`super::ring`]).
    ring: bool,
    /// `[NAME]` for the workers' command lines (`app.proc_name`, else the
    /// instance's).
    label: String,
    /// Starts the process that runs gunicorn's arbiter hooks, not a worker
    /// ([`Launcher::spawn_arbiter`]).
    arbiter: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot create the worker channel: {0}")]
    Channel(#[source] std::io::Error),
    #[error("cannot create the worker's shared-memory rings: {0}")]
    Ring(#[source] std::io::Error),
    #[error("cannot create the worker's stack dump file: {0}")]
    Stacks(#[source] std::io::Error),
    #[error(
        "cannot start `{python}` for the worker: {source}{}",
        limit_hint(source)
    )]
    Exec {
        python: String,
        #[source]
        source: std::io::Error,
    },
}

/// What a fork that failed with EAGAIN ran into: a process limit, which
/// the error alone ("Resource temporarily unavailable") does not name.
fn limit_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EAGAIN) => {
            " (the limit on processes was reached: the user's `ulimit -u` (RLIMIT_NPROC, systemd's LimitNPROC=), or the cgroup's pids.max (systemd's TasksMax=, a container's --pids-limit); count the user's processes, or raise it)"
        }
        _ => "",
    }
}

// The worker script gets its settings in `CORRAL_WORKER_*` variables
// (it removes them before it imports the app), so that none is also a
// `run` flag's variable (`CORRAL_THREADS` is `--threads`); a unit test in
// `cli.rs` keeps it so.

pub struct Spawned {
    pub child: tokio::process::Child,
    pub pid: u32,
    /// Signals go through this, never by pid.
    pub process: Process,
    /// A second handle on the same process, for the task that waits for
    /// its exit (and then stops its process group, see [`Process::exited`]).
    pub watch: Process,
    /// Registered with the orphan reaper until the exit has been awaited.
    pub ours: crate::reaper::Ours,
    pub sock: UnixStream,
    /// The shared-memory rings, when the worker is offered them
    /// ([`super::ring`]).
    pub ring: Option<Ring>,
    /// Where the worker dumps its stacks on SIGUSR1.
    pub stacks: Stacks,
}

impl Launcher {
    /// Let workers write to corral's own stdout/stderr (`corral check`).
    pub fn inherit_output(mut self) -> Launcher {
        self.capture = false;
        self
    }

    /// The same launcher for workers of another config (a reload's).
    pub fn with_config(&self, cfg: &Config) -> Launcher {
        Launcher {
            capture: self.capture,
            ..Launcher::new(cfg, &self.script)
        }
    }

    /// `script` is where the worker script was written (a private runtime dir).
    pub fn new(cfg: &Config, script: &Path) -> Launcher {
        let mut env: Vec<(String, String)> = cfg
            .app
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let pythonpath = std::env::join_paths(&cfg.app.pythonpath)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        env.extend([
            ("CORRAL_WORKER_FD".into(), CHANNEL_FD.to_string()),
            ("CORRAL_WORKER_APP".into(), cfg.app.module.clone()),
            (
                "CORRAL_WORKER_FACTORY".into(),
                if cfg.app.factory { "1" } else { "" }.into(),
            ),
            ("CORRAL_WORKER_ROOT_PATH".into(), cfg.app.root_path.clone()),
            (
                "CORRAL_WORKER_SERVER_SOFTWARE".into(),
                concat!("corral/", env!("CARGO_PKG_VERSION")).into(),
            ),
            (
                "CORRAL_WORKER_THREADS".into(),
                cfg.workers.threads.to_string(),
            ),
            (
                "CORRAL_WORKER_INTERFACE".into(),
                match cfg.app.interface {
                    Interface::Wsgi => "wsgi",
                    Interface::Asgi => "asgi",
                    Interface::Auto => "auto",
                }
                .into(),
            ),
            ("CORRAL_WORKER_PYTHONPATH".into(), pythonpath),
            (
                "CORRAL_WORKER_GEVENT".into(),
                if cfg.workers.gevent { "1" } else { "" }.into(),
            ),
            (
                "CORRAL_WORKER_GRACEFUL_TIMEOUT".into(),
                cfg.workers.graceful_timeout.as_secs_f64().to_string(),
            ),
            (
                "CORRAL_WORKER_ASGI_LOOP".into(),
                cfg.app.asgi_loop.name().into(),
            ),
            (
                "CORRAL_WORKER_ASGI_LIFESPAN".into(),
                cfg.app.asgi_lifespan.name().into(),
            ),
            (
                "CORRAL_WORKER_ENV_FILE".into(),
                cfg.app
                    .env_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            (
                "CORRAL_WORKER_PASTE".into(),
                cfg.app.paste.as_ref().map(|p| p.uri()).unwrap_or_default(),
            ),
            (
                "CORRAL_WORKER_PASTE_GLOBAL".into(),
                cfg.app
                    .paste
                    .as_ref()
                    .and_then(|p| serde_json::to_string(&p.global).ok())
                    .unwrap_or_default(),
            ),
            (
                "CORRAL_WORKER_LOGCONFIG".into(),
                cfg.app
                    .logging
                    .as_ref()
                    .map(|l| l.for_worker())
                    .unwrap_or_default(),
            ),
            (
                "CORRAL_WORKER_GUNICORN_HOOKS".into(),
                cfg.app
                    .gunicorn_hooks
                    .as_ref()
                    .map(|h| h.for_worker())
                    .unwrap_or_default(),
            ),
            (
                "CORRAL_WORKER_GUNICORN_CFG".into(),
                cfg.app
                    .gunicorn_hooks
                    .as_ref()
                    .map(|_| gunicorn_cfg(cfg).to_string())
                    .unwrap_or_default(),
            ),
            (
                "CORRAL_WORKER_LOG_LEVEL".into(),
                match cfg.log.level {
                    LogLevel::Error => "error",
                    LogLevel::Warn => "warning",
                    LogLevel::Info => "info",
                    LogLevel::Debug | LogLevel::Trace => "debug",
                }
                .into(),
            ),
            // gunicorn's wsgi.multiprocess: more than one worker configured.
            (
                "CORRAL_WORKER_MULTIPROCESS".into(),
                if cfg.workers.count > 1 { "1" } else { "0" }.into(),
            ),
            ("PYTHONUNBUFFERED".into(), "1".into()),
            ("CORRAL_WORKER_STACKS_FD".into(), STACKS_FD.to_string()),
            (
                "CORRAL_WORKER_HEARTBEAT".into(),
                (cfg.workers.heartbeat_timeout.as_secs_f64() / 4.0).to_string(),
            ),
        ]);
        let ring = super::ring::SUPPORTED && cfg.workers.shared_memory;
        if ring {
            // Where the worker finds its rings: the fds, then their size.
            let fds = RING_FDS.map(|fd| fd.to_string()).join(",");
            env.push((
                "CORRAL_WORKER_RING".into(),
                format!("{fds},{}", super::ring::RING_BYTES),
            ));
        }
        Launcher {
            python: cfg.app.python.clone(),
            script: script.to_path_buf(),
            chdir: cfg.app.chdir.clone(),
            env,
            env_allow: cfg.app.env_allow.clone(),
            capture: true,
            // When corral already became that user, workers inherit it.
            identity: cfg
                .workers
                .identity
                .as_ref()
                .filter(|_| !cfg.server.drop_privileges)
                .map(|i| {
                    (
                        i.uid,
                        i.gid,
                        i.groups.iter().map(|g| *g as libc::gid_t).collect(),
                    )
                }),
            limits: cfg.workers.limits.clone(),
            ring,
            label: format!("[{}]", cfg.app.proc_name.as_ref().unwrap_or(&cfg.instance)),
            arbiter: false,
        }
    }

    /// Starts the process that runs gunicorn's arbiter hooks
    /// (`corral_worker/arbiter.py`): the workers' interpreter, user,
    /// environment and folder, the channel as its only fd beside the
    /// standard ones, no rings; `ps` shows it as "... [NAME] gunicorn-hooks".
    pub fn spawn_arbiter(&self, info: &GenerationInfo) -> Result<Spawned, SpawnError> {
        let mut launcher = self.clone();
        launcher.arbiter = true;
        launcher.ring = false;
        launcher.env.retain(|(k, _)| k != "CORRAL_WORKER_RING");
        launcher
            .env
            .push(("CORRAL_WORKER_ROLE".into(), "arbiter".into()));
        launcher.spawn(0, 0, info)
    }

    /// Starts a worker for `slot` of `generation`, in the generation's
    /// resolved folder.
    pub fn spawn(
        &self,
        slot: usize,
        generation: u64,
        info: &GenerationInfo,
    ) -> Result<Spawned, SpawnError> {
        let (ours, theirs): (OwnedFd, OwnedFd) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .map_err(|e| SpawnError::Channel(e.into()))?;
        // The worker side must block: Python reads it with plain recv().
        set_blocking(&theirs).map_err(SpawnError::Channel)?;
        let theirs = dup_above(theirs.as_fd(), HIGH_FD).map_err(SpawnError::Channel)?;
        let child_fd = theirs.as_raw_fd();
        let stacks = Stacks::new().map_err(SpawnError::Stacks)?;
        let stacks_copy = stacks.dup_above(HIGH_FD).map_err(SpawnError::Stacks)?;
        let stacks_fd = stacks_copy.as_raw_fd();
        let (ring, ring_copies) = if self.ring {
            let (ring, fds) = Ring::create().map_err(SpawnError::Ring)?;
            let copies = fds.dup_above(HIGH_FD).map_err(SpawnError::Ring)?;
            (Some(ring), Some(copies))
        } else {
            (None, None)
        };
        let ring_fds: Option<[i32; 5]> = ring_copies
            .as_ref()
            .map(|c| c.each_ref().map(|fd| fd.as_raw_fd()));
        // The first fd number the worker does not get from us.
        let first_free = if ring_fds.is_some() {
            RING_FDS[4] + 1
        } else {
            STACKS_FD + 1
        };
        let parent_pid = std::process::id() as libc::pid_t;
        // Everything the child needs is computed here, before the fork.
        let identity = self.identity.clone();
        let mut rlimits: Vec<(_, u64, u64)> = [
            (libc::RLIMIT_NOFILE, self.limits.nofile),
            (libc::RLIMIT_AS, self.limits.address_space),
            (libc::RLIMIT_CORE, self.limits.core),
        ]
        .into_iter()
        .filter_map(|(r, v)| v.map(|v| (r, v, v)))
        .collect();
        if self.limits.nofile.is_none()
            && let Some(&(soft, hard)) = STARTING_NOFILE.get()
        {
            rlimits.push((libc::RLIMIT_NOFILE, soft, hard));
        }
        let umask = self.limits.umask;

        let mut cmd = tokio::process::Command::new(&self.python);
        // What the app inherits: corral's environment (or the part
        // `app.env_allow` names), never the service manager's variables nor
        // corral's own CORRAL_* (the status token is corral's secret, never
        // the app's); then `app.env` and the hand-over variables on top.
        cmd.env_clear();
        for (key, value) in std::env::vars_os() {
            let name = key.to_string_lossy();
            let allowed = self.env_allow.as_ref().is_none_or(|a| a.allows(&name));
            if allowed && !crate::config::is_corral_own_env(&name) {
                cmd.env(&key, &value);
            }
        }
        // What `ps` shows: "... corral_worker.py [shop-5c1e0a3f] worker 0
        // generation 1" (the worker drops these from `sys.argv`).
        cmd.arg(&self.script).arg(&self.label);
        if self.arbiter {
            cmd.arg("gunicorn-hooks");
        } else {
            cmd.args([
                "worker",
                &slot.to_string(),
                "generation",
                &generation.to_string(),
            ]);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("CORRAL_SLOT", slot.to_string())
            .env("CORRAL_GENERATION", generation.to_string())
            .env("CORRAL_REVISION", info.revision.as_deref().unwrap_or(""))
            .stdin(Stdio::null())
            .stdout(if self.capture {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .stderr(if self.capture {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .kill_on_drop(false)
            .process_group(0);
        // The mark of the lines corral logs (see `output`); a worker whose
        // output goes straight to corral's (`corral check`), or whose lines
        // corral passes on as written (`app_output = "raw"`), gets none and
        // writes its lines as they are, through Python's own streams.
        if self.capture && !super::output::raw() {
            cmd.env("CORRAL_LOG_MARK", super::output::mark());
        } else {
            cmd.env_remove("CORRAL_LOG_MARK");
        }
        if let Some(dir) = info.chdir.as_ref().or(self.chdir.as_ref()) {
            cmd.current_dir(dir);
        }
        let max_fd = open_max();
        // SAFETY: between fork and exec the closure only makes
        // async-signal-safe calls (open, ioctl, close, dup2, close_range, fcntl, setrlimit,
        // umask, setgroups, setgid, setuid, prctl, getppid, _exit) on values
        // computed before the fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                // No controlling terminal: a worker started from an
                // operator's shell (as another user, `-u`) could otherwise
                // push keystrokes into it (TIOCSTI). It gives it up rather
                // than lead a session of its own, which would make it an
                // autogroup of its own for the scheduler, with as much CPU
                // as corral and all its other workers together (0.88x the
                // requests/s on `hello`). Not being a session leader, it
                // cannot take a terminal again.
                let tty = libc::open(
                    c"/dev/tty".as_ptr(),
                    libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
                );
                if tty >= 0 {
                    libc::ioctl(tty, libc::TIOCNOTTY);
                    libc::close(tty);
                }
                // Both are above HIGH_FD, so neither dup2 overwrites the
                // other; dup2 leaves the copies inheritable.
                if libc::dup2(child_fd, CHANNEL_FD) < 0 || libc::dup2(stacks_fd, STACKS_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(fds) = ring_fds {
                    for (from, to) in fds.iter().zip(RING_FDS) {
                        if libc::dup2(*from, to) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                }
                // Nothing else of corral's reaches the worker: not the other
                // workers' channels, not fds corral itself inherited.
                // Close-on-exec rather than closed, so that the standard
                // library's own exec-error pipe keeps working until the exec.
                // The system call itself, not glibc's close_range (2.34):
                // the release wheel links against glibc 2.17.
                let first = first_free as libc::c_uint;
                if libc::syscall(
                    libc::SYS_close_range,
                    first,
                    libc::c_uint::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                ) != 0
                {
                    for fd in first as i32..max_fd {
                        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                    }
                }
                for &(resource, soft, hard) in &rlimits {
                    let lim = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(resource, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(mask) = umask {
                    libc::umask(mask as libc::mode_t);
                }
                // Groups first, the user last: after setuid there is no
                // privilege left to change groups.
                if let Some((uid, gid, groups)) = &identity
                    && (libc::setgroups(groups.len(), groups.as_ptr()) != 0
                        || libc::setgid(*gid) != 0
                        || libc::setuid(*uid) != 0)
                {
                    return Err(std::io::Error::last_os_error());
                }
                // (After the credential change, which would clear it.)
                // No worker outlives corral: the kernel kills it when the
                // supervisor dies, and if it already has, we stop here.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != parent_pid {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let (child, registered) =
            crate::reaper::spawn(|| cmd.spawn(), |c| c.id()).map_err(|source| {
                SpawnError::Exec {
                    python: self.python.display().to_string(),
                    source,
                }
            })?;
        drop(theirs);
        drop(stacks_copy);
        drop(ring_copies);
        let pid = child.id().unwrap_or(0);
        // Not reaped yet (nothing waits on `child` before we return), so
        // the pid is still this child's.
        let process = Process::open(pid);
        let watch = Process::open(pid);
        let std_sock = std::os::unix::net::UnixStream::from(ours);
        let sock = UnixStream::from_std(std_sock).map_err(SpawnError::Channel)?;
        Ok(Spawned {
            child,
            pid,
            process,
            watch,
            ours: registered,
            sock,
            ring,
            stacks,
        })
    }
}

/// corral's own open-file limit as it started, before [`raise_nofile`].
static STARTING_NOFILE: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();

/// Raises corral's soft open-file limit to its hard limit (as Go programs
/// do): each connection costs an fd, and the soft limit is often 1024,
/// far below `[server] max_connections`. Workers get the limit corral
/// started with back (unless `[workers.limits] nofile` says otherwise), so
/// an app that uses select() is not handed fds above 1023. Call once, at
/// start-up. Returns the new soft limit.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    let _ = STARTING_NOFILE.set((soft, hard));
    // A hard limit of "unlimited" is capped where the kernel caps fds.
    let target = hard.min(1 << 20);
    if target > soft && setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
        return target;
    }
    soft
}

/// A close-on-exec copy of `fd` numbered at least `min` (for the fds a
/// worker gets at fixed numbers after the fork).
pub(super) fn dup_above(fd: BorrowedFd<'_>, min: i32) -> std::io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_DUPFD_CLOEXEC on a live fd returns a new fd or -1.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The fd limit, for marking fds close-on-exec one by one where the kernel
/// has no close_range (before Linux 5.11).
fn open_max() -> i32 {
    let lim = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    lim.min(1 << 20) as i32
}

fn set_blocking(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: fcntl on an fd we own, with no pointers involved.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
/// The settings gunicorn's hooks read from `server.cfg`, under gunicorn's
/// names, as this corral runs them (its config file and flags): hooks
/// that read `cfg.timeout` or `cfg.workers` see what gunicorn would show,
/// whether the gunicorn.conf.py set them or a flag did.
fn gunicorn_cfg(cfg: &Config) -> serde_json::Value {
    let w = &cfg.workers;
    let secs = |d: std::time::Duration| serde_json::json!(d.as_secs_f64().round() as u64);
    let class = match (cfg.app.interface, w.gevent) {
        (crate::config::Interface::Asgi, _) => "uvicorn.workers.UvicornWorker",
        (_, true) => "gevent",
        _ if w.threads > 1 => "gthread",
        _ => "sync",
    };
    serde_json::json!({
        "bind": cfg.server.bind.iter().map(|b| b.addr.to_string()).collect::<Vec<_>>(),
        "workers": w.count,
        "threads": w.threads,
        "worker_connections": w.concurrency,
        "worker_class": class,
        "worker_class_str": class,
        "timeout": secs(w.timeout),
        "graceful_timeout": secs(w.graceful_timeout),
        "keepalive": secs(cfg.server.keepalive),
        "max_requests": w.max_requests,
        "max_requests_jitter": w.max_requests_jitter,
        "chdir": cfg.app.chdir.as_ref().map(|p| p.display().to_string()),
        "proc_name": cfg.app.proc_name.as_ref().unwrap_or(&cfg.instance),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fork_refused_for_a_process_limit_says_which_limits_to_look_at() {
        let exec = |errno| SpawnError::Exec {
            python: "/srv/app/.venv/bin/python".into(),
            source: std::io::Error::from_raw_os_error(errno),
        };
        let text = exec(libc::EAGAIN).to_string();
        assert!(text.contains("Resource temporarily unavailable"), "{text}");
        assert!(
            text.contains("ulimit -u") && text.contains("pids.max"),
            "{text}"
        );
        let text = exec(libc::ENOENT).to_string();
        assert!(
            text.ends_with("No such file or directory (os error 2)"),
            "{text}"
        );
    }
}
