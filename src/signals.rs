//! Signals: the handlers only enqueue. A thread owned by signal-hook waits
//! for them and forwards each one to the supervisor's channel, where the
//! main loop dispatches it (as gunicorn's arbiter does).

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;
use tokio::sync::mpsc;

use crate::supervisor::Msg;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    Term,
    Int,
    Quit,
    Hup,
    /// One more worker.
    Ttin,
    /// One worker less.
    Ttou,
    /// Reopen log files.
    Usr1,
    /// Re-execute the binary without closing the listen sockets.
    Usr2,
}

impl Sig {
    pub fn name(self) -> &'static str {
        match self {
            Sig::Term => "SIGTERM",
            Sig::Int => "SIGINT",
            Sig::Quit => "SIGQUIT",
            Sig::Hup => "SIGHUP",
            Sig::Ttin => "SIGTTIN",
            Sig::Ttou => "SIGTTOU",
            Sig::Usr1 => "SIGUSR1",
            Sig::Usr2 => "SIGUSR2",
        }
    }
}

/// Starts forwarding signals to `tx`.
pub fn forward(tx: mpsc::UnboundedSender<Msg>) -> std::io::Result<()> {
    let mut signals = Signals::new([
        SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2,
    ])?;
    std::thread::Builder::new()
        .name("corral-signals".into())
        .spawn(move || {
            for raw in signals.forever() {
                let sig = match raw {
                    SIGTERM => Sig::Term,
                    SIGINT => Sig::Int,
                    SIGQUIT => Sig::Quit,
                    SIGHUP => Sig::Hup,
                    SIGTTIN => Sig::Ttin,
                    SIGTTOU => Sig::Ttou,
                    SIGUSR1 => Sig::Usr1,
                    SIGUSR2 => Sig::Usr2,
                    _ => continue,
                };
                if tx.send(Msg::Signal(sig)).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}
