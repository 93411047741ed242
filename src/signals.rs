//! Signals: the handlers only enqueue. A thread owned by signal-hook waits
//! for them and queues each one as a [`Signal`] through the
//! [`SupervisorHandle`]; the supervisor loop dispatches it to a `handle_*`
//! method (`supervisor/handlers.rs`), as gunicorn's arbiter does.

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;

use crate::supervisor::{Msg, Signal, SupervisorHandle};

/// Starts forwarding signals to the supervisor loop.
pub fn forward(tx: SupervisorHandle) -> std::io::Result<()> {
    let mut signals = Signals::new([
        SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2,
    ])?;
    std::thread::Builder::new()
        .name("corral-signals".into())
        .spawn(move || {
            for raw in signals.forever() {
                let sig = match raw {
                    SIGTERM => Signal::Term,
                    SIGINT => Signal::Int,
                    SIGQUIT => Signal::Quit,
                    SIGHUP => Signal::Hup,
                    SIGTTIN => Signal::Ttin,
                    SIGTTOU => Signal::Ttou,
                    SIGUSR1 => Signal::Usr1,
                    SIGUSR2 => Signal::Usr2,
                    _ => continue,
                };
                if tx.send(Msg::Signal(sig)).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}
