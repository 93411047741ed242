//! The CPUs this process may actually use, for `workers = "auto"` and
//! `server.io_threads = 0`: the smallest of its CPU affinity mask
//! (`sched_getaffinity`), the cgroup v2 `cpu.max` quota and the cgroup v1
//! `cpu.cfs_quota_us / cpu.cfs_period_us` quota of its cgroup and every
//! ancestor, a fractional quota rounded up, at least 1. A 2-CPU container on
//! a 64-core host gets 2, not 64. Parsing is pure (unit-tested); the reads
//! of `/proc/self/cgroup`, `/proc/self/mountinfo` and the cgroup files are
//! in [`usable`].

use std::path::{Path, PathBuf};

/// How many CPUs, and what decided it ("affinity mask: 2 CPUs; cgroup v2
/// cpu.max 150000/100000 = 1.5 CPUs"), for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usable {
    /// At least 1.
    pub count: usize,
    pub why: String,
}

/// Reads the affinity mask and the cgroup quotas of this process.
pub fn usable() -> Usable {
    let affinity = affinity();
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut quotas = Vec::new();
    for (dir, version) in quota_dirs(&cgroup, &mountinfo) {
        let quota = match version {
            2 => std::fs::read_to_string(dir.join("cpu.max"))
                .ok()
                .and_then(|t| parse_cpu_max(&t)),
            _ => {
                let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
                read("cpu.cfs_quota_us")
                    .zip(read("cpu.cfs_period_us"))
                    .and_then(|(q, p)| parse_cfs(&q, &p))
            }
        };
        if let Some((quota, period)) = quota {
            quotas.push(Quota {
                version,
                dir,
                quota,
                period,
            });
        }
    }
    decide(affinity, &quotas, fallback)
}

/// One quota found on the way from the process's cgroup to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Quota {
    version: u8,
    dir: PathBuf,
    quota: u64,
    period: u64,
}

/// The CPUs `available_parallelism` reports, when the affinity mask cannot
/// be read.
fn fallback() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The smallest of the affinity mask and every quota (rounded up), at
/// least 1, with the reason.
fn decide(affinity: Option<usize>, quotas: &[Quota], fallback: fn() -> usize) -> Usable {
    let (mut count, mut why) = match affinity {
        Some(n) => (n, format!("affinity mask: {n} CPUs")),
        None => {
            let n = fallback();
            (n, format!("{n} CPUs (the affinity mask could not be read)"))
        }
    };
    for q in quotas {
        let cpus = q.quota.div_ceil(q.period).max(1) as usize;
        let file = if q.version == 2 {
            "cpu.max"
        } else {
            "cpu.cfs_quota_us"
        };
        why.push_str(&format!(
            "; cgroup v{} {file} {}/{} = {:.2} CPUs in {}",
            q.version,
            q.quota,
            q.period,
            q.quota as f64 / q.period as f64,
            q.dir.display()
        ));
        count = count.min(cpus);
    }
    Usable {
        count: count.max(1),
        why,
    }
}

/// The CPUs in this process's affinity mask.
fn affinity() -> Option<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most
    // size_of::<cpu_set_t>() bytes into it; CPU_COUNT only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        usize::try_from(libc::CPU_COUNT(&set))
            .ok()
            .filter(|&n| n > 0)
    }
}

/// `cpu.max` of cgroup v2: "QUOTA PERIOD", or "max PERIOD" for no limit.
fn parse_cpu_max(text: &str) -> Option<(u64, u64)> {
    let mut words = text.split_whitespace();
    let quota = words.next()?.parse().ok()?;
    let period = words.next().map_or(Some(100_000), |p| p.parse().ok())?;
    (quota > 0 && period > 0).then_some((quota, period))
}

/// `cpu.cfs_quota_us` and `cpu.cfs_period_us` of cgroup v1; a quota of -1
/// is no limit.
fn parse_cfs(quota: &str, period: &str) -> Option<(u64, u64)> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period: u64 = period.trim().parse().ok()?;
    (quota > 0 && period > 0).then_some((quota as u64, period))
}

/// The folders holding a CPU quota that applies to this process: its own
/// cgroup's folder and every ancestor's up to the mount point, for the
/// cgroup2 mount and for the cgroup v1 hierarchy with the `cpu`
/// controller. `cgroup` is `/proc/self/cgroup`, `mountinfo`
/// `/proc/self/mountinfo`.
fn quota_dirs(cgroup: &str, mountinfo: &str) -> Vec<(PathBuf, u8)> {
    let mut dirs = Vec::new();
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let version = if id == "0" && controllers.is_empty() {
            2
        } else if controllers.split(',').any(|c| c == "cpu") {
            1
        } else {
            continue;
        };
        let Some((root, mount)) = mount_of(mountinfo, version) else {
            continue;
        };
        // The cgroup path is relative to the hierarchy's root; the mount
        // shows the part of it under `root` (a container sees its own).
        let rel = Path::new(path)
            .strip_prefix(&root)
            .unwrap_or_else(|_| Path::new(""));
        let mut dir = mount.join(rel);
        loop {
            dirs.push((dir.clone(), version));
            if dir == mount || !dir.pop() {
                break;
            }
        }
    }
    dirs
}

/// The root and mount point of the cgroup2 mount (`version` 2) or of the
/// cgroup v1 mount with the `cpu` controller, from `/proc/self/mountinfo`:
/// "ID PARENT MAJ:MIN ROOT MOUNT OPTIONS ... - FSTYPE SOURCE SUPER_OPTIONS".
fn mount_of(mountinfo: &str, version: u8) -> Option<(PathBuf, PathBuf)> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let fields: Vec<&str> = before.split(' ').collect();
        let mut after = after.split(' ');
        let fstype = after.next()?;
        let options = after.nth(1).unwrap_or("");
        let wanted = match version {
            2 => fstype == "cgroup2",
            _ => fstype == "cgroup" && options.split(',').any(|o| o == "cpu"),
        };
        (wanted && fields.len() >= 5).then(|| (PathBuf::from(fields[3]), PathBuf::from(fields[4])))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_files() {
        assert_eq!(parse_cpu_max("150000 100000\n"), Some((150_000, 100_000)));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("200000"), Some((200_000, 100_000)));
        assert_eq!(parse_cpu_max("0 100000"), None);
        assert_eq!(parse_cpu_max(""), None);
        assert_eq!(parse_cfs("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs("50000\n", "100000\n"), Some((50_000, 100_000)));
        assert_eq!(parse_cfs("50000", "0"), None);
        assert_eq!(parse_cfs("x", "100000"), None);
    }

    #[test]
    fn the_smallest_rounded_up_at_least_one() {
        let quota = |quota, period| Quota {
            version: 2,
            dir: "/sys/fs/cgroup".into(),
            quota,
            period,
        };
        let never = || unreachable!();
        assert_eq!(decide(Some(64), &[], never).count, 64);
        let u = decide(Some(64), &[quota(150_000, 100_000)], never);
        assert_eq!(u.count, 2);
        assert!(
            u.why.contains("cpu.max 150000/100000 = 1.50 CPUs"),
            "{}",
            u.why
        );
        assert_eq!(decide(Some(1), &[quota(400_000, 100_000)], never).count, 1);
        assert_eq!(decide(Some(8), &[quota(1_000, 100_000)], never).count, 1);
        let two = [quota(400_000, 100_000), quota(300_000, 100_000)];
        assert_eq!(decide(Some(8), &two, never).count, 3);
        let u = decide(None, &[], || 6);
        assert_eq!(u.count, 6);
        assert!(u.why.contains("could not be read"), "{}", u.why);
    }

    #[test]
    fn cgroup_folders_up_to_the_mount() {
        let v2 = "0::/kubepods/pod1/c1\n";
        let mounts = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            quota_dirs(v2, mounts),
            [
                ("/sys/fs/cgroup/kubepods/pod1/c1".into(), 2),
                ("/sys/fs/cgroup/kubepods/pod1".into(), 2),
                ("/sys/fs/cgroup/kubepods".into(), 2),
                ("/sys/fs/cgroup".into(), 2),
            ]
        );
        // A container with its own cgroup namespace sees "/".
        assert_eq!(
            quota_dirs("0::/\n", mounts),
            [(PathBuf::from("/sys/fs/cgroup"), 2)]
        );
        // cgroup v1: the hierarchy holding the cpu controller, mounted at
        // the container's own cgroup (root /docker/abc).
        let v1 = "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n";
        let mounts =
            "32 31 0:29 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro - cgroup cgroup rw,cpu,cpuacct\n";
        assert_eq!(
            quota_dirs(v1, mounts),
            [(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"), 1)]
        );
        assert!(quota_dirs("garbage\n", "").is_empty());
    }
}
