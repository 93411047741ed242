//! corral's stdout and stderr, each written by a thread of its own, so
//! that no front thread ever waits on a reader of them. A log reader that
//! stalls (a container runtime's logging driver in blocking mode, a pipe
//! nobody drains) made the front thread that logged a line wait, with
//! every connection and worker channel it serves: the port stopped
//! answering, and a worker whose heartbeats that thread carried was killed
//! as wedged. Lines queue instead, at most [`QUEUED_LINES`] for each
//! stream; past that they are dropped and counted ([`dropped`]), and
//! corral says how many once its reader takes lines again.
//!
//! Until [`start`] runs (the subcommands, and the tests), lines go to the
//! process's own streams as they come.

use std::io::Write;
use std::sync::OnceLock;

use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Lines (one write each: a log record, an access line, a line of the
/// app's) that may wait for a stream's reader: at most 64 MiB of the
/// app's longest lines, a few MiB of typical ones.
pub const QUEUED_LINES: usize = 4096;

static OUT: OnceLock<NonBlocking> = OnceLock::new();
static ERR: OnceLock<NonBlocking> = OnceLock::new();

/// Starts the writer threads. The guards flush what is queued when
/// dropped: keep them until exit.
pub fn start() -> [WorkerGuard; 2] {
    let make = |name: &str| {
        NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(QUEUED_LINES)
            .thread_name(name)
    };
    let (out, out_guard) = make("corral-stdout").finish(std::io::stdout());
    let (err, err_guard) = make("corral-stderr").finish(std::io::stderr());
    let _ = OUT.set(out);
    let _ = ERR.set(err);
    [out_guard, err_guard]
}

/// A writer to corral's stdout or stderr: one `write` is one line
/// queued whole (or, before [`start`], written to the stream itself).
pub enum Out {
    Queued(NonBlocking),
    Stdout,
    Stderr,
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Out::Queued(q) => q.write(buf),
            Out::Stdout => std::io::stdout().write(buf),
            Out::Stderr => std::io::stderr().write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Out::Queued(q) => q.write_all(buf),
            Out::Stdout => std::io::stdout().lock().write_all(buf),
            Out::Stderr => std::io::stderr().lock().write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Out::Queued(q) => q.flush(),
            Out::Stdout => std::io::stdout().flush(),
            Out::Stderr => std::io::stderr().flush(),
        }
    }
}

/// A writer to corral's stdout.
pub fn stdout() -> Out {
    OUT.get().map_or(Out::Stdout, |q| Out::Queued(q.clone()))
}

/// A writer to corral's stderr.
pub fn stderr() -> Out {
    ERR.get().map_or(Out::Stderr, |q| Out::Queued(q.clone()))
}

/// Lines dropped so far because a stream's reader did not keep up.
pub fn dropped() -> usize {
    [&OUT, &ERR]
        .iter()
        .filter_map(|s| s.get())
        .map(|s| s.error_counter().dropped_lines())
        .sum()
}

/// Says, at most every `every`, how many lines were dropped since it last
/// said so (the notice itself waits its turn in the queue).
pub async fn report_drops(every: std::time::Duration) {
    let mut said = 0;
    loop {
        tokio::time::sleep(every).await;
        let now = dropped();
        if now > said {
            tracing::warn!(
                "{} log lines dropped: nothing read corral's stdout or stderr fast enough",
                now - said
            );
            said = now;
        }
    }
}
