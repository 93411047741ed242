//! The supervisor: one task that owns the worker table. It starts workers,
//! reaps them (each child is awaited once, by its own task), puts booted
//! workers in service, replaces dead or timed-out ones with back-off, and
//! runs the stop sequences. Everything else talks to it through its channel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::config::Config;
use crate::front::Front;
use crate::router::Router;
use crate::signals::Sig;
use crate::worker::channel::{Channel, ControlEvent};
use crate::worker::process::Launcher;

/// Everything that reaches the supervisor.
#[derive(Debug)]
pub enum Msg {
    Control(u64, ControlEvent),
    Exited(u64, std::process::ExitStatus),
    Replace(u64, String),
    Signal(Sig),
    Respawn(usize),
    FrontDrained(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Booting,
    InService,
    Stopping,
}

struct Worker {
    serial: u64,
    pid: u32,
    state: State,
    started: Instant,
    channel: Arc<Channel>,
}

struct Slot {
    worker: Option<Worker>,
    /// Boot failures or early deaths in a row, for the back-off.
    failures: u32,
    respawn_pending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Draining,
    Stopping { fast: bool },
}

pub struct Supervisor {
    cfg: Arc<Config>,
    launcher: Launcher,
    router: Arc<Router>,
    slots: Vec<Slot>,
    next_serial: u64,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    control_tx: mpsc::UnboundedSender<(u64, ControlEvent)>,
    phase: Phase,
    front: Option<Front>,
}

/// Back-off before restarting a slot after `failures` failures in a row.
pub fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let ms = 100u64.saturating_mul(1 << (failures - 1).min(10));
    Duration::from_millis(ms.min(10_000))
}

impl Supervisor {
    pub fn new(cfg: Arc<Config>, launcher: Launcher, router: Arc<Router>) -> Supervisor {
        let (tx, rx) = mpsc::unbounded_channel();
        let (control_tx, mut control_rx) = mpsc::unbounded_channel();
        let fwd = tx.clone();
        tokio::spawn(async move {
            while let Some((serial, ev)) = control_rx.recv().await {
                if fwd.send(Msg::Control(serial, ev)).is_err() {
                    return;
                }
            }
        });
        let slots = (0..cfg.workers.count)
            .map(|_| Slot {
                worker: None,
                failures: 0,
                respawn_pending: false,
            })
            .collect();
        Supervisor {
            cfg,
            launcher,
            router,
            slots,
            next_serial: 1,
            tx,
            rx,
            control_tx,
            phase: Phase::Running,
            front: None,
        }
    }

    pub fn sender(&self) -> mpsc::UnboundedSender<Msg> {
        self.tx.clone()
    }

    /// Runs until corral has stopped; returns the process exit code.
    pub async fn run(mut self, front: Front) -> i32 {
        self.front = Some(front);
        for slot in 0..self.slots.len() {
            self.spawn(slot);
        }
        while let Some(msg) = self.rx.recv().await {
            self.on_msg(msg);
            if self.finished() {
                break;
            }
        }
        0
    }

    fn finished(&self) -> bool {
        matches!(self.phase, Phase::Stopping { .. })
            && self.slots.iter().all(|s| s.worker.is_none())
    }

    fn on_msg(&mut self, msg: Msg) {
        match msg {
            Msg::Control(serial, ev) => self.on_control(serial, ev),
            Msg::Exited(serial, status) => self.on_exit(serial, status),
            Msg::Replace(serial, reason) => self.replace(serial, &reason),
            Msg::Signal(sig) => self.on_signal(sig),
            Msg::Respawn(slot) => {
                self.slots[slot].respawn_pending = false;
                if self.phase == Phase::Running && self.slots[slot].worker.is_none() {
                    self.spawn(slot);
                }
            }
            Msg::FrontDrained(in_time) => {
                if !in_time {
                    tracing::warn!(
                        "graceful_timeout ({:?}) ran out with requests still in flight",
                        self.cfg.workers.graceful_timeout
                    );
                }
                self.stop_workers(false);
            }
        }
    }

    fn find(&mut self, serial: u64) -> Option<(usize, &mut Worker)> {
        self.slots.iter_mut().enumerate().find_map(|(i, s)| {
            s.worker
                .as_mut()
                .filter(|w| w.serial == serial)
                .map(|w| (i, w))
        })
    }

    fn spawn(&mut self, slot: usize) {
        let serial = self.next_serial;
        self.next_serial += 1;
        let spawned = match self.launcher.spawn(slot) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("worker {slot}: {e}");
                self.slots[slot].failures += 1;
                self.schedule_respawn(slot);
                return;
            }
        };
        let pid = spawned.pid;
        let channel = Channel::start(serial, slot, pid, spawned.sock, self.control_tx.clone());
        let tx = self.tx.clone();
        let mut child = spawned.child;
        tokio::spawn(async move {
            if let Ok(status) = child.wait().await {
                let _ = tx.send(Msg::Exited(serial, status));
            }
        });
        tracing::debug!("worker {slot} (pid {pid}) starting");
        self.slots[slot].worker = Some(Worker {
            serial,
            pid,
            state: State::Booting,
            started: Instant::now(),
            channel,
        });
    }

    fn on_control(&mut self, serial: u64, ev: ControlEvent) {
        let stopping = matches!(self.phase, Phase::Stopping { .. });
        let Some((slot, w)) = self.find(serial) else {
            return;
        };
        match ev {
            ControlEvent::Booted(info) => {
                if w.state != State::Booting || stopping {
                    return;
                }
                w.state = State::InService;
                tracing::info!(
                    "worker {slot} (pid {}) booted in {:.0} ms ({} import {:.0} ms)",
                    info.pid,
                    w.started.elapsed().as_secs_f64() * 1000.0,
                    info.interface,
                    info.import_ms
                );
                self.publish();
                let n = self.router.in_service();
                if n == self.slots.len() {
                    tracing::info!("all {n} workers in service");
                }
            }
            ControlEvent::BootFailed(tb) => {
                tracing::error!(
                    "worker {slot} (pid {}) failed to boot:\n{}",
                    w.pid,
                    tb.trim_end()
                );
            }
            ControlEvent::Closed => {
                if w.state == State::InService {
                    w.state = State::Stopping;
                    self.publish();
                }
            }
        }
    }

    fn on_exit(&mut self, serial: u64, status: std::process::ExitStatus) {
        let phase = self.phase;
        let Some((slot, w)) = self.find(serial) else {
            return;
        };
        let was = w.state;
        let lived = w.started.elapsed();
        let pid = w.pid;
        self.slots[slot].worker = None;
        if was == State::InService {
            self.publish();
        }
        let how = describe_exit(status);
        if phase != Phase::Running {
            tracing::info!("worker {slot} (pid {pid}) {how}");
            return;
        }
        let early = was == State::Booting || lived < Duration::from_secs(1);
        if early {
            self.slots[slot].failures += 1;
        } else {
            self.slots[slot].failures = 0;
        }
        if was == State::Stopping {
            tracing::info!("worker {slot} (pid {pid}) {how}; starting its replacement");
        } else {
            tracing::warn!("worker {slot} (pid {pid}) {how}; starting its replacement");
        }
        self.schedule_respawn(slot);
    }

    fn schedule_respawn(&mut self, slot: usize) {
        let delay = backoff(self.slots[slot].failures);
        if delay.is_zero() {
            self.spawn(slot);
            return;
        }
        if self.slots[slot].respawn_pending {
            return;
        }
        self.slots[slot].respawn_pending = true;
        tracing::info!("worker {slot}: next start in {:?}", delay);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Msg::Respawn(slot));
        });
    }

    /// Takes a worker out of service and kills it after dumping its stacks.
    fn replace(&mut self, serial: u64, reason: &str) {
        let Some((slot, w)) = self.find(serial) else {
            return;
        };
        if w.state == State::Stopping {
            return;
        }
        tracing::error!(
            "worker {slot} (pid {}): {reason}; dumping its Python stacks and replacing it",
            w.pid
        );
        w.state = State::Stopping;
        let pid = w.pid;
        self.publish();
        tokio::spawn(async move {
            signal(pid, libc::SIGUSR1);
            tokio::time::sleep(Duration::from_millis(200)).await;
            signal(pid, libc::SIGKILL);
        });
    }

    fn publish(&self) {
        let list = self
            .slots
            .iter()
            .filter_map(|s| s.worker.as_ref())
            .filter(|w| w.state == State::InService)
            .map(|w| w.channel.clone())
            .collect();
        self.router.publish(list);
    }

    fn on_signal(&mut self, sig: Sig) {
        match sig {
            Sig::Term => {
                if self.phase != Phase::Running {
                    return;
                }
                tracing::info!(
                    "SIGTERM: graceful stop (finishing requests in flight, up to {:?})",
                    self.cfg.workers.graceful_timeout
                );
                self.phase = Phase::Draining;
                if let Some(front) = self.front.take() {
                    let grace = self.cfg.workers.graceful_timeout;
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        let in_time = front.shutdown(grace).await;
                        let _ = tx.send(Msg::FrontDrained(in_time));
                    });
                }
            }
            Sig::Int | Sig::Quit => {
                tracing::info!("{}: fast stop", sig.name());
                self.front = None;
                self.stop_workers(true);
            }
            Sig::Hup => {
                tracing::warn!("SIGHUP: reload is not implemented yet; ignoring");
            }
        }
    }

    fn stop_workers(&mut self, fast: bool) {
        if matches!(self.phase, Phase::Stopping { fast: true }) {
            return;
        }
        self.phase = Phase::Stopping { fast };
        self.router.publish(Vec::new());
        let sig = if fast { libc::SIGQUIT } else { libc::SIGTERM };
        let mut pids = Vec::new();
        for s in &mut self.slots {
            if let Some(w) = &mut s.worker {
                w.state = State::Stopping;
                signal(w.pid, sig);
                pids.push(w.pid);
            }
        }
        // Whatever has not exited by then is killed.
        let grace = if fast {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        };
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            for pid in pids {
                signal(pid, libc::SIGKILL);
            }
        });
    }
}

fn signal(pid: u32, sig: i32) {
    if pid == 0 {
        return;
    }
    // SAFETY: kill(2) with a pid of a child we started and have not reaped
    // yet (its waiting task has not reported the exit), so it is not reused.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

pub fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exited with code {code}")
    } else if let Some(sig) = status.signal() {
        let name = nix::sys::signal::Signal::try_from(sig)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| format!("signal {sig}"));
        if sig == libc::SIGKILL {
            format!("was killed by {name} (by corral, or the OOM killer)")
        } else {
            format!("was killed by {name}")
        }
    } else {
        "exited".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(30), Duration::from_secs(10));
    }
}
