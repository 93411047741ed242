//! Reaping the orphans corral inherits as PID 1 (a container started without
//! `--init`, a Kubernetes pod): every process whose parent dies is given to
//! PID 1, and when PID 1 never waits for it, it stays a zombie for good. An
//! app that runs `sh -c 'job &'` leaves one per call, until the pid limit.
//!
//! The one rule: never reap a child behind the back of the code that waits
//! for it (a worker's exit task, a hook, `git`, a re-executed corral). A
//! `waitpid(-1)` loop would steal their exit statuses. So every spawn site
//! goes through [`spawn`], which holds the registry's lock across the fork
//! and records the new pid before letting go: registration is atomic with
//! the spawn. The sweep ([`sweep`]) holds the same lock while it lists
//! corral's children and reaps, by pid, only the exited ones that are not
//! registered. A child is unregistered when its owner drops its [`Ours`],
//! after it has waited for it; until then the sweep never touches it.
//!
//! A pid is reused only once reaped, so a registered number can at worst
//! name a newer orphan after its owner reaped it and before it dropped its
//! [`Ours`]; that orphan is then reaped by a later sweep (one runs on every
//! SIGCHLD and every [`SWEEP_EVERY`]), never stolen from anyone.
//!
//! Outside PID 1 corral does not make itself a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`): orphans then go to the real init (systemd,
//! tini, `docker --init`), which reaps them, and under systemd the unit's
//! cgroup ends them at stop. Taking them over would only make corral the
//! parent of daemons an app meant to detach.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Slowest pace of the sweep (it also runs on every SIGCHLD).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The pids of corral's children that some code waits for.
static OURS: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

fn registry() -> MutexGuard<'static, Option<HashSet<u32>>> {
    // A panic elsewhere while the lock was held leaves a set still valid.
    OURS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A child that its owner waits for. Drop it after the wait returned (the
/// child is reaped), never before: from then on an exited child with this
/// pid is an orphan to the sweep.
#[derive(Debug)]
pub struct Ours(u32);

impl Drop for Ours {
    fn drop(&mut self) {
        if let Some(set) = registry().as_mut() {
            set.remove(&self.0);
        }
    }
}

/// Spawns a child with `start` and registers its pid (from `pid`) before
/// any sweep can see it. Every child corral waits for is spawned this way.
pub fn spawn<C>(
    start: impl FnOnce() -> std::io::Result<C>,
    pid: impl FnOnce(&C) -> Option<u32>,
) -> std::io::Result<(C, Ours)> {
    let mut guard = registry();
    let child = start()?;
    let id = pid(&child).unwrap_or(0);
    guard.get_or_insert_with(HashSet::new).insert(id);
    Ok((child, Ours(id)))
}

/// Whether this process is the init of its PID namespace, which inherits
/// every orphan in it.
pub fn is_init() -> bool {
    std::process::id() == 1
}

/// As PID 1, reaps orphans from now on: on every SIGCHLD and every
/// [`SWEEP_EVERY`]. Does nothing otherwise.
pub fn start() {
    if !is_init() {
        return;
    }
    tracing::info!("running as PID 1: corral reaps the orphaned processes it inherits");
    let mut sigchld = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot watch SIGCHLD, orphans are reaped every {SWEEP_EVERY:?}: {e}");
            return every_interval_only();
        }
    };
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = sigchld.recv() => {}
                _ = every.tick() => {}
            }
            let _ = tokio::task::spawn_blocking(sweep).await;
        }
    });
}

fn every_interval_only() {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        loop {
            every.tick().await;
            let _ = tokio::task::spawn_blocking(sweep).await;
        }
    });
}

/// Reaps every exited child that no code waits for; returns how many.
pub fn sweep() -> usize {
    match children() {
        Some(pids) => sweep_among(pids),
        None => sweep_without_proc(),
    }
}

/// Without /proc: asks the kernel for one exited child at a time without
/// reaping it (WNOWAIT), and reaps it if it is no one's. A child that is
/// someone's ends the sweep: its owner reaps it soon, and the next sweep
/// sees past it.
fn sweep_without_proc() -> usize {
    let guard = registry();
    let mut reaped = 0;
    loop {
        // SAFETY: waitid(2) writes only into the zeroed siginfo we pass;
        // WNOWAIT leaves the child unreaped.
        let pid = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let found = libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            ) == 0;
            if !found {
                return reaped;
            }
            info.si_pid() as u32
        };
        let ours = guard.as_ref().is_some_and(|set| set.contains(&pid));
        if pid == 0 || ours || !reap(pid) {
            return reaped;
        }
        reaped += 1;
    }
}

/// Reaps those of `candidates` that exited and are not registered.
fn sweep_among(candidates: Vec<u32>) -> usize {
    let guard = registry();
    let empty = HashSet::new();
    let ours = guard.as_ref().unwrap_or(&empty);
    let mut reaped = 0;
    for pid in candidates {
        if ours.contains(&pid) {
            continue;
        }
        if reap(pid) {
            reaped += 1;
        }
    }
    reaped
}

/// Reaps `pid` if it has exited (never blocks).
fn reap(pid: u32) -> bool {
    // SAFETY: waitid(2) writes only into the zeroed siginfo we pass; P_PID
    // with WNOHANG reaps at most that one child, and only if it exited.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        ) == 0
            && info.si_pid() != 0
    }
}

/// corral's children: from each thread's `children` list, or where the
/// kernel has none (CONFIG_PROC_CHILDREN off), from every process's PPid;
/// None without /proc.
fn children() -> Option<Vec<u32>> {
    let mut pids = Vec::new();
    let mut listed = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                listed = true;
                pids.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    if listed {
        return Some(pids);
    }
    let me = std::process::id();
    let procs = std::fs::read_dir("/proc").ok()?;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if parent_of(pid) == Some(me) {
            pids.push(pid);
        }
    }
    Some(pids)
}

/// The PPid of `pid` from /proc/PID/stat (after the last ')' of the name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An exited child spawned through [`spawn`] is left to its owner; an
    /// unregistered one is reaped. (Runs in this test process, which is
    /// the children's parent; the sweep is the same code PID 1 runs.)
    #[test]
    fn the_sweep_reaps_strangers_and_never_a_registered_child() {
        let (mut mine, ours) = spawn(
            || std::process::Command::new("true").spawn(),
            |c| Some(c.id()),
        )
        .unwrap();
        // Not registered: spawned around the registry, and left to the sweep.
        #[allow(clippy::zombie_processes)]
        let stranger = std::process::Command::new("true").spawn().unwrap();
        // Other tests in this process run children of their own: the
        // sweep is shown only these two.
        let candidates = vec![mine.id(), stranger.id()];
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut reaped = 0;
        while reaped == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            reaped += sweep_among(candidates.clone());
        }
        assert_eq!(reaped, 1);
        assert!(
            parent_of(stranger.id()).is_none(),
            "the unregistered child was reaped"
        );
        // The registered one is still ours to wait for.
        assert!(mine.wait().unwrap().success());
        drop(ours);
        assert!(parent_of(mine.id()).is_none());
    }

    #[test]
    fn the_parent_is_read_past_a_name_with_parentheses() {
        assert_eq!(
            parent_of(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
    }
}
