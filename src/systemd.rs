//! systemd's notify protocol (sd_notify): `READY=1` once enough workers are
//! in service, `RELOADING=1` around reloads, `STOPPING=1`, a one-line
//! `STATUS=`, `WATCHDOG=1` from the supervisor loop, and `MAINPID=` when a
//! USR2 re-exec hands over. Nothing is sent when `NOTIFY_SOCKET` is unset.
//! The variables are taken out of the environment at start-up
//! ([`NotifySocket::take`], in `main`), so workers never see them.
//! [`Notifier`] decides what to say when (pure, unit tested);
//! [`NotifySocket::send`] sends it.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where notifications go and how often systemd's watchdog wants one:
/// taken out of the environment once, in `main`, and passed down to the
/// supervisor (which sends) and to a USR2 re-exec (which hands it on).
/// The default sends nothing.
#[derive(Debug, Clone, Default)]
pub struct NotifySocket {
    socket: Option<String>,
    watchdog: Option<Duration>,
}

impl NotifySocket {
    /// Takes NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID from the
    /// environment. Call at the start of main, before any thread exists.
    pub fn take() -> NotifySocket {
        let socket = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|s| !s.is_empty());
        let pid_ok = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && pid_ok)
            .map(Duration::from_micros);
        // SAFETY: at the start of main, before the runtime or any other thread
        // exists, so nothing reads the environment concurrently.
        unsafe {
            for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
                std::env::remove_var(var);
            }
        }
        NotifySocket { socket, watchdog }
    }

    /// NOTIFY_SOCKET and WATCHDOG_USEC as received, to hand to a re-executed
    /// corral (USR2), which becomes the main process.
    pub fn inherited_env(&self) -> Vec<(&'static str, String)> {
        let mut env = Vec::new();
        if let Some(s) = &self.socket {
            env.push(("NOTIFY_SOCKET", s.clone()));
        }
        if let Some(w) = self.watchdog {
            env.push(("WATCHDOG_USEC", w.as_micros().to_string()));
        }
        env
    }

    /// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// Sends one notification (several `KEY=VALUE` lines); errors are
    /// ignored, as sd_notify's are.
    pub fn send(&self, message: &str) {
        let Some(path) = self.socket.as_deref() else {
            return;
        };
        let Ok(sock) = UnixDatagram::unbound() else {
            return;
        };
        let addr = match path.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
            None => SocketAddr::from_pathname(path),
        };
        if let Ok(addr) = addr {
            let _ = sock.send_to_addr(message.as_bytes(), &addr);
        }
    }
}

/// `MONOTONIC_USEC` for `RELOADING=1`: CLOCK_MONOTONIC in microseconds.
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass and nothing else.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// What systemd has been told, and what to tell it next. The supervisor
/// calls [`Notifier::update`] after each round of events and sends what it
/// returns.
#[derive(Debug, Default)]
pub struct Notifier {
    ready: bool,
    reloading: Option<u64>,
    stopping: bool,
    status: String,
}

/// The service as systemd should see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub active: usize,
    /// Workers of the serving generation in service.
    pub in_service: usize,
    /// In service needed for READY=1 (`[health] min_ready`, at least 1).
    pub required: usize,
    pub generation: u64,
    pub revision: Option<String>,
    /// The generation a reload is starting, if one is.
    pub reloading: Option<u64>,
    /// Workers of that generation in service so far.
    pub reloading_in_service: usize,
    /// A stop began (TERM, INT, QUIT).
    pub stopping: bool,
    /// A USR2 re-exec hands over to this pid: it is the service now.
    pub handing_over_to: Option<u32>,
    /// CLOCK_MONOTONIC in microseconds, for `RELOADING=1`.
    pub monotonic_usec: u64,
    /// While a canary runs: "canary 10%: 0.4% errors vs 0.3%" (new, old).
    pub canary: Option<String>,
    /// The last reload failed: its generation and why, until the next one.
    pub failed: Option<(u64, String)>,
}

impl Notifier {
    /// READY=1 once `required` workers are in service (so `systemctl start`
    /// waits, and fails on a broken deploy), RELOADING=1/READY=1 around
    /// reloads, STOPPING=1 (or MAINPID= at a hand-over), and STATUS= when it
    /// changes. None: nothing to say.
    pub fn update(&mut self, s: &Service) -> Option<String> {
        if s.stopping {
            if self.stopping {
                return None;
            }
            self.stopping = true;
            return Some(match s.handing_over_to {
                Some(pid) => format!("MAINPID={pid}"),
                None => "STOPPING=1".into(),
            });
        }
        let mut status = format!(
            "STATUS={}/{} workers in service, generation {}, rev {}",
            s.in_service,
            s.active,
            s.generation,
            s.revision.as_deref().unwrap_or("unknown")
        );
        if let Some(g) = s.reloading {
            status += &format!(
                "; generation {g} starting: {}/{} in service",
                s.reloading_in_service, s.active
            );
        } else if let Some((g, why)) = &s.failed {
            status += &format!("; reload to generation {g} failed: {}", first_line(why));
        }
        if let Some(c) = &s.canary {
            status += &format!("; {c}");
        }
        let mut msg = Vec::new();
        if !self.ready && s.in_service >= s.required {
            self.ready = true;
            msg.push("READY=1".to_string());
        }
        match (s.reloading, self.reloading) {
            (Some(generation), None) => {
                self.reloading = Some(generation);
                msg.push("RELOADING=1".into());
                msg.push(format!("MONOTONIC_USEC={}", s.monotonic_usec));
            }
            (None, Some(_)) => {
                self.reloading = None;
                msg.push("READY=1".into());
            }
            _ => {}
        }
        if status != self.status || !msg.is_empty() {
            self.status = status.clone();
            msg.push(status);
        }
        (!msg.is_empty() && (self.ready || msg.iter().any(|m| m.starts_with("STATUS"))))
            .then(|| msg.join("\n"))
    }
}

/// The first line of `text`, cut to 120 characters: STATUS= is one line.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(120) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(in_service: usize) -> Service {
        Service {
            active: 2,
            in_service,
            required: 2,
            generation: 1,
            revision: Some("abc".into()),
            reloading: None,
            reloading_in_service: 0,
            stopping: false,
            handing_over_to: None,
            monotonic_usec: 42,
            canary: None,
            failed: None,
        }
    }

    #[test]
    fn ready_once_enough_workers_are_in_service_and_status_only_when_it_changes() {
        let mut n = Notifier::default();
        assert_eq!(
            n.update(&service(1)).as_deref(),
            Some("STATUS=1/2 workers in service, generation 1, rev abc")
        );
        assert_eq!(n.update(&service(1)), None, "nothing new");
        assert_eq!(
            n.update(&service(2)).as_deref(),
            Some("READY=1\nSTATUS=2/2 workers in service, generation 1, rev abc")
        );
        assert_eq!(n.update(&service(2)), None);
    }

    #[test]
    fn a_reload_is_bracketed_by_reloading_and_ready() {
        let mut n = Notifier::default();
        n.update(&service(2));
        let reloading = Service {
            reloading: Some(2),
            ..service(2)
        };
        assert_eq!(
            n.update(&reloading).as_deref(),
            Some(
                "RELOADING=1\nMONOTONIC_USEC=42\nSTATUS=2/2 workers in service, generation 1, rev abc; generation 2 starting: 0/2 in service"
            )
        );
        assert_eq!(n.update(&reloading), None);
        // The new generation's workers are counted apart from the ones
        // that serve: never "3/2".
        let one_new = Service {
            reloading_in_service: 1,
            ..reloading.clone()
        };
        assert_eq!(
            n.update(&one_new).as_deref(),
            Some(
                "STATUS=2/2 workers in service, generation 1, rev abc; generation 2 starting: 1/2 in service"
            )
        );
        let canary = Service {
            canary: Some("canary 10%: 0.4% errors vs 0.3%".into()),
            ..one_new.clone()
        };
        assert_eq!(
            n.update(&canary).as_deref(),
            Some(
                "STATUS=2/2 workers in service, generation 1, rev abc; generation 2 starting: 1/2 in service; canary 10%: 0.4% errors vs 0.3%"
            )
        );
        let done = Service {
            generation: 2,
            revision: Some("def".into()),
            ..service(2)
        };
        assert_eq!(
            n.update(&done).as_deref(),
            Some("READY=1\nSTATUS=2/2 workers in service, generation 2, rev def")
        );
    }

    #[test]
    fn a_failed_reload_is_said_in_status_until_the_next_one() {
        let mut n = Notifier::default();
        n.update(&service(2));
        n.update(&Service {
            reloading: Some(2),
            ..service(2)
        });
        let failed = Service {
            failed: Some((2, "slot 0 did not boot: ImportError: x\nTraceback".into())),
            ..service(2)
        };
        assert_eq!(
            n.update(&failed).as_deref(),
            Some(
                "READY=1\nSTATUS=2/2 workers in service, generation 1, rev abc; reload to generation 2 failed: slot 0 did not boot: ImportError: x"
            )
        );
        // While the next reload runs, it is not said.
        let next = Service {
            reloading: Some(3),
            ..failed
        };
        assert!(!n.update(&next).unwrap().contains("failed"));
    }

    #[test]
    fn stopping_is_said_once_and_a_hand_over_names_the_new_main_pid() {
        let mut n = Notifier::default();
        let stopping = Service {
            stopping: true,
            ..service(2)
        };
        assert_eq!(n.update(&stopping).as_deref(), Some("STOPPING=1"));
        assert_eq!(n.update(&stopping), None);
        let mut n = Notifier::default();
        let handing_over = Service {
            handing_over_to: Some(4242),
            ..stopping
        };
        assert_eq!(n.update(&handing_over).as_deref(), Some("MAINPID=4242"));
    }
}
