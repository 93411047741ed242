//! A worker's stdout and stderr, read line by line and logged tagged with
//! its slot and pid: whole lines only (no interleaved halves), at most
//! [`MAX_LINE`] bytes each (longer ones are cut and marked). With `[log]
//! app_output = "raw"` ([`set_raw`]) each line is written as the app wrote
//! it instead, its stdout to corral's stdout and its stderr to corral's
//! stderr, as under gunicorn. A line the worker marks as the report of an
//! error it caught (a request's traceback, one line with its line breaks
//! encoded) is one record at ERROR, with its line breaks, as gunicorn logs
//! "Error handling request". A line it marks as what the app wrote in one
//! call (a logging record with its traceback: Flask's "Exception on /path",
//! Django's "Internal Server Error"; a text of several lines) is one record
//! too, its line breaks kept, at the logging record's level (WARN, ERROR),
//! INFO as the app's other lines otherwise.

use std::io::Write as _;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// The target of the lines a worker prints: they pass corral's log level
/// (see `init_logging` in main.rs).
pub const TARGET: &str = "app";

/// Longest line kept; the rest of a longer one is dropped.
pub const MAX_LINE: usize = 16 * 1024;

/// How the worker marks a line of its own: RS, then [`mark`], then a space
/// (the report of an error it caught) or the level of what the app wrote
/// in one call (`I`, `W` or `E`: `RecordWriter` in its protocol.py); and
/// what stands for each line break in it (US).
const MARKED: u8 = 0x1e;
const LINE_BREAK: u8 = 0x1f;

/// What a marked line is.
#[derive(Debug, PartialEq)]
enum Marked {
    /// An error the worker caught: one record at ERROR.
    Report,
    /// What the app wrote in one call (a logging record with its
    /// traceback, a text of several lines): one record, at the level of
    /// the logging record that wrote it, INFO for any other write.
    Lines(tracing::Level),
}

/// This corral's mark for its workers' error reports (`CORRAL_LOG_MARK`):
/// 16 random hex digits, so that a line an app prints (a client's input
/// among it: `print(request.args["q"])`) cannot pass for a report, whose
/// line breaks become real ones and could forge lines of corral's own.
pub fn mark() -> &'static str {
    static MARK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    MARK.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        // Keys the OS's random source seeded.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        format!("{:016x}", h.finish())
    })
}

/// What `line` is, if it carries the mark, and what follows the mark, its
/// line breaks back.
fn marked(line: &[u8]) -> Option<(Marked, Vec<u8>)> {
    let rest = line.strip_prefix(&[MARKED])?;
    let rest = rest.strip_prefix(mark().as_bytes())?;
    let (kind, rest) = match rest.split_first()? {
        (b' ', rest) => (Marked::Report, rest),
        (b'I', rest) => (Marked::Lines(tracing::Level::INFO), rest),
        (b'W', rest) => (Marked::Lines(tracing::Level::WARN), rest),
        (b'E', rest) => (Marked::Lines(tracing::Level::ERROR), rest),
        _ => return None,
    };
    let rest = rest
        .iter()
        .map(|&b| if b == LINE_BREAK { b'\n' } else { b })
        .collect();
    Some((kind, rest))
}

/// Whether lines are written as the app wrote them (see the module docs);
/// set once at start.
static RAW: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `[log] app_output = "raw"`.
pub fn set_raw(raw: bool) {
    RAW.store(raw, std::sync::atomic::Ordering::Relaxed);
}

/// Whether lines are written as the app wrote them (see [`set_raw`]).
pub fn raw() -> bool {
    RAW.load(std::sync::atomic::Ordering::Relaxed)
}

/// Logs every line of `stream` as coming from worker `slot` (`pid`).
pub fn forward<R: AsyncRead + Unpin + Send + 'static>(
    stream: R,
    slot: usize,
    pid: u32,
    name: &'static str,
) {
    forward_as(stream, format!("worker {slot}"), pid, name);
}

/// [`forward`] for a process named `who` ("gunicorn hooks").
pub fn forward_as<R: AsyncRead + Unpin + Send + 'static>(
    stream: R,
    who: String,
    pid: u32,
    name: &'static str,
) {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::with_capacity(256);
        loop {
            line.clear();
            match read_line_capped(&mut reader, &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if raw() {
                // As the app wrote it (its worker has no mark, so nothing
                // is marked). One write per line, queued whole: lines of
                // several workers never interleave.
                if !line.ends_with(b"\n") {
                    line.push(b'\n');
                }
                let _ = if name == "stdout" {
                    crate::stdio::stdout().write_all(&line)
                } else {
                    crate::stdio::stderr().write_all(&line)
                };
                continue;
            }
            // The worker's own report of an error it caught (a request's
            // traceback, `log_error` in its protocol.py), or lines the app
            // wrote in one call: one record, at ERROR for a report.
            if let Some((kind, rest)) = marked(&line) {
                let text = String::from_utf8_lossy(&rest);
                let text = log_lines(text.trim_end_matches(['\n', '\r']));
                match kind {
                    Marked::Report => {
                        tracing::error!(target: TARGET, "{who} (pid {pid}): {text}")
                    }
                    Marked::Lines(tracing::Level::ERROR) => {
                        tracing::error!(target: TARGET, "{who} (pid {pid}) {name}: {text}")
                    }
                    Marked::Lines(tracing::Level::WARN) => {
                        tracing::warn!(target: TARGET, "{who} (pid {pid}) {name}: {text}")
                    }
                    Marked::Lines(_) => {
                        tracing::info!(target: TARGET, "{who} (pid {pid}) {name}: {text}")
                    }
                }
                continue;
            }
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            let text = String::from_utf8_lossy(&line);
            let text = printable(&text);
            tracing::info!(target: TARGET, "{who} (pid {pid}) {name}: {text}");
        }
    });
}

/// The line with control characters (but tab) shown as `\xHH` or
/// `\u{HHHH}`: what an app prints (user input included) cannot move the
/// cursor, clear the screen or fake a line of corral's own on a terminal.
/// So are Unicode's line and paragraph separators (U+2028, U+2029), which
/// some log viewers break lines at, and its bidirectional controls, which
/// make a terminal show the text after them in another order than it was
/// written ("Trojan source").
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| hidden(c) && c != '\t') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => out.push(c),
            c if hidden(c) && (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if hidden(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Whether `c` is shown escaped by [`printable`].
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Whether corral's log is JSON (`--log-format json`); set once at start.
static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--log-format json`: see [`log_lines`].
pub fn set_json(json: bool) {
    JSON.store(json, std::sync::atomic::Ordering::Relaxed);
}

/// Text of several lines a worker wrote (a traceback), for one record of
/// corral's log: [`printable_lines`], with every line after the first
/// indented by two spaces in a text log, so that none of them starts a
/// line of the log, where it could pass for a record of corral's own (a
/// timestamp and a level the app wrote in its exception's message). A
/// JSON record escapes its line breaks, and keeps the lines as they were:
/// a traceback as Python wrote it, for tools that parse tracebacks out of
/// a log.
pub fn log_lines(text: &str) -> String {
    let text = printable_lines(text);
    if JSON.load(std::sync::atomic::Ordering::Relaxed) {
        text
    } else {
        text.replace('\n', "\n  ")
    }
}

/// [`printable`] for text of several lines (a traceback): its line breaks
/// stay line breaks (a `\r\n` too), every other control character is
/// escaped.
pub fn printable_lines(text: &str) -> String {
    text.split('\n')
        .map(|line| printable(line.strip_suffix('\r').unwrap_or(line)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads one line into `buf`, keeping at most MAX_LINE bytes of it.
async fn read_line_capped<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut total = 0;
    let mut cut = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(total);
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let n = chunk.len();
        let room = MAX_LINE.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..n.min(room)]);
        if n > room && !cut {
            cut = true;
            buf.extend_from_slice(" [line cut]".as_bytes());
        }
        reader.consume(n);
        total += n;
        if done {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(printable("plain\ttext"), "plain\ttext");
        assert_eq!(
            printable("\x1b[2Jcleared\r2026 INFO fake"),
            "\\x1b[2Jcleared\\x0d2026 INFO fake"
        );
        assert_eq!(printable("a\u{85}b"), "a\\x85b");
        assert_eq!(
            printable("a\u{2028}b\u{2029}c\u{202e}d\u{2066}e"),
            "a\\u{2028}b\\u{2029}c\\u{202e}d\\u{2066}e"
        );
        assert_eq!(printable("caf\u{e9} \u{1f600}"), "caf\u{e9} \u{1f600}");
    }

    #[test]
    fn only_lines_with_this_corrals_mark_are_marked() {
        let line = |kind: &str, text: &[u8]| {
            let mut l = vec![MARKED];
            l.extend_from_slice(mark().as_bytes());
            l.extend_from_slice(kind.as_bytes());
            l.extend_from_slice(text);
            l
        };
        assert_eq!(
            marked(&line(" ", b"Error handling request\x1fTraceback")),
            Some((
                Marked::Report,
                b"Error handling request\nTraceback".to_vec()
            ))
        );
        assert_eq!(
            marked(&line("E", b"ERROR in app\x1fTraceback\x1f  File")),
            Some((
                Marked::Lines(tracing::Level::ERROR),
                b"ERROR in app\nTraceback\n  File".to_vec()
            ))
        );
        assert_eq!(
            marked(&line("W", b"disk almost full")),
            Some((
                Marked::Lines(tracing::Level::WARN),
                b"disk almost full".to_vec()
            ))
        );
        assert_eq!(
            marked(&line("I", b"two\x1flines")),
            Some((Marked::Lines(tracing::Level::INFO), b"two\nlines".to_vec()))
        );
        assert_eq!(marked(&line("?", b"a\x1fb")), None);
        assert_eq!(marked(&line("", b"")), None);
        assert_eq!(marked(b"\x1e0123456789abcdefE forged\x1fline"), None);
        assert_eq!(marked(b"plain line"), None);
    }

    #[tokio::test]
    async fn lines_are_whole_and_capped() {
        let long = "x".repeat(MAX_LINE + 10);
        let input = format!("one\ntwo\n{long}\nlast");
        let mut r = BufReader::new(input.as_bytes());
        let mut lines = Vec::new();
        loop {
            let mut buf = Vec::new();
            if read_line_capped(&mut r, &mut buf).await.unwrap() == 0 {
                break;
            }
            lines.push(String::from_utf8(buf).unwrap());
        }
        assert_eq!(lines[0], "one\n");
        assert_eq!(lines[1], "two\n");
        assert!(lines[2].ends_with("[line cut]") && lines[2].len() == MAX_LINE + 11);
        assert_eq!(lines[3], "last");
    }
}
