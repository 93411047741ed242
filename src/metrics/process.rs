//! What Linux says about a process, from /proc, read at scrape time (never
//! on the request path): CPU seconds and resident memory for corral and
//! for each worker, and for corral also its file descriptors and start
//! time, as Prometheus' standard `process_*` metrics.

use std::fmt::Write;

use super::scalar;

/// CPU time and memory of one process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    /// Seconds after boot at which the process started.
    pub started_after_boot: f64,
}

/// Usage of `pid` ("self" for corral), or None when it is gone.
pub fn usage(pid: &str) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat, clock_ticks()?, page_size()?)
}

/// The fields of /proc/PID/stat after the command name (which is in
/// parentheses and may hold spaces or parentheses itself): utime and stime
/// are fields 14 and 15, starttime 22, rss 24 (proc(5)).
fn parse_stat(stat: &str, hz: f64, page: u64) -> Option<Usage> {
    let after: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let field = |n: usize| -> Option<f64> { after.get(n - 3)?.parse().ok() };
    Some(Usage {
        cpu_seconds: (field(14)? + field(15)?) / hz,
        rss_bytes: field(24)? as u64 * page,
        started_after_boot: field(22)? / hz,
    })
}

fn clock_ticks() -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then_some(hz as f64)
}

fn page_size() -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (page > 0).then_some(page as u64)
}

/// The system's boot time (Unix seconds), from /proc/stat.
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Prometheus' standard process metrics for corral itself; a family whose
/// source cannot be read is left out.
pub fn render_own(out: &mut String) {
    if let Some(u) = usage("self") {
        scalar(
            out,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            u.cpu_seconds,
        );
        scalar(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            u.rss_bytes,
        );
        if let Some(boot) = boot_time() {
            scalar(
                out,
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                boot + u.started_after_boot,
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        // The listing's own descriptor is among them: one less.
        let open = fds.count().saturating_sub(1);
        scalar(
            out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            open,
        );
    }
    if let Ok((soft, _)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let _ = writeln!(
            out,
            "# HELP process_max_fds Maximum number of open file descriptors.\n\
             # TYPE process_max_fds gauge\nprocess_max_fds {soft}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a ')' of its own.
        let stat = "4242 (py (x) y) S 1 4242 4242 0 -1 4194304 100 0 0 0 \
                    250 150 0 0 20 0 1 0 5000 10000000 300 18446744073709551615";
        let u = parse_stat(stat, 100.0, 4096).unwrap();
        assert_eq!(u.cpu_seconds, 4.0);
        assert_eq!(u.rss_bytes, 300 * 4096);
        assert_eq!(u.started_after_boot, 50.0);
        assert!(parse_stat("4242 (x) S 1", 100.0, 4096).is_none());
    }

    #[test]
    fn corral_reads_its_own_usage() {
        let u = usage("self").unwrap();
        assert!(u.rss_bytes > 0 && u.started_after_boot > 0.0);
        let mut out = String::new();
        render_own(&mut out);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "process_open_fds",
            "process_max_fds",
        ] {
            assert!(out.contains(&format!("\n{name} ")), "{name}: {out}");
        }
    }
}
