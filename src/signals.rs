//! Signals: the handlers only enqueue. A thread owned by signal-hook waits
//! for them and forwards each one to the supervisor's channel, where the
//! main loop dispatches it (as gunicorn's arbiter does).

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;

use crate::supervisor::{Msg, Signal as Sig, SupervisorHandle};

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
