//! The value types written as text in the config file and on the command
//! line: durations ([`HumanDuration`], "30s"), byte sizes ([`ByteSize`],
//! "64KiB"), listen addresses ([`BindAddr`], "127.0.0.1:8000" or
//! "unix:/path"), worker counts for readiness ([`MinReady`], 2 or "50%"),
//! the number of workers ([`WorkerCount`], 4 or "auto"),
//! umasks ([`Umask`], "027") and the trusted proxies ([`ForwardedAllow`],
//! "10.0.0.0/8" or "*"). Each but [`ForwardedAllow`] parses with `FromStr`
//! (used by the flags); all but [`BindAddr`] and [`ForwardedAllow`] also
//! deserialize from TOML with messages that say how to write the value.
//! [`ForwardedAllow`] is a list built one entry at a time
//! ([`ForwardedAllow::add`]), so that each bad entry is reported where it is.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// The variable a value names but holds unexpanded (`$PORT`, `${PORT}`,
/// `${PORT:-8000}`): a command line no shell read, as a Dockerfile's
/// exec-form `CMD ["corral", "app:app", "-b", "0.0.0.0:$PORT"]` or a
/// Kubernetes `args:` list passes it.
fn unexpanded(s: &str) -> Option<&str> {
    let at = s.find('$')?;
    let rest = s[at + 1..].strip_prefix('{').unwrap_or(&s[at + 1..]);
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let name = &rest[..end];
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        .then_some(name)
}

/// Why `s` is refused when it holds a variable no shell expanded, with the
/// way out: for `$PORT` and `$WEB_CONCURRENCY`, that corral reads them
/// itself, as gunicorn does.
pub fn unexpanded_variable(s: &str) -> Option<String> {
    let name = unexpanded(s)?;
    let fix = match name {
        "PORT" => "leave the address out: with PORT set, corral binds 0.0.0.0:$PORT itself, as gunicorn does".to_string(),
        "WEB_CONCURRENCY" => "leave the worker count out: corral reads WEB_CONCURRENCY itself, as gunicorn does".to_string(),
        _ => format!(
            "run the command through a shell (a Dockerfile's shell form, `CMD corral ...`, or `sh -c`), or in Kubernetes write $({name})"
        ),
    };
    Some(format!(
        "\"{s}\": ${name} was not expanded, as no shell read this command line (a Dockerfile's exec-form CMD [\"corral\", ...] and a Kubernetes args: list pass it as written): {fix}"
    ))
}

/// A port number, as uvicorn's `--port` takes it.
pub fn parse_port(s: &str) -> Result<u16, String> {
    s.trim().parse().map_err(|_| {
        unexpanded_variable(s).unwrap_or_else(|| {
            format!("\"{s}\" is not a port number: use 1 to 65535, or 0 for any free port")
        })
    })
}

impl FromStr for BindAddr {
    type Err = String;

    /// "HOST:PORT" (IPv4, "[IPv6]" or "localhost"), or "unix:/path".
    fn from_str(s: &str) -> Result<BindAddr, String> {
        if !s.starts_with("unix:")
            && let Some(why) = unexpanded_variable(s)
        {
            return Err(format!("invalid bind address {why}"));
        }
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!(
                    "invalid bind address \"{s}\": the socket path is missing, like \"unix:/run/corral.sock\""
                ));
            }
            return Ok(BindAddr::Unix(PathBuf::from(path)));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(BindAddr::Tcp(addr));
        }
        if let Some(port) = s.strip_prefix("localhost:")
            && let Ok(port) = port.parse::<u16>()
        {
            return Ok(BindAddr::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, port))));
        }
        if let Ok(ip) = s.parse::<std::net::IpAddr>() {
            let with_port = SocketAddr::new(ip, 8000);
            return Err(format!(
                "invalid bind address \"{s}\": the port is missing, like \"{with_port}\""
            ));
        }
        if s.starts_with("fd://") {
            return Err(format!(
                "invalid bind address \"{s}\": file descriptors are not supported: use systemd socket activation (a .socket unit; corral serves on the sockets systemd passes)"
            ));
        }
        // A name: what it resolves to may be several addresses, or change
        // while corral runs; the address to listen on is the admin's call.
        if let Some((host, port)) = s.rsplit_once(':')
            && port.parse::<u16>().is_ok()
            && host.starts_with(|c: char| c.is_ascii_alphabetic())
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(format!(
                "invalid bind address \"{s}\": host names other than localhost are not taken, as a name may resolve to several addresses or change: give the address to listen on, like \"0.0.0.0:{port}\" (every IPv4 interface), \"[::]:{port}\" (IPv6 and IPv4), or the name's own address (`getent hosts {host}`)"
            ));
        }
        Err(format!(
            "invalid bind address \"{s}\": use IP:PORT like \"127.0.0.1:8000\", \"0.0.0.0:8000\" or \"[::]:8000\", or \"unix:/path/to.sock\""
        ))
    }
}

impl BindAddr {
    /// A listen address as gunicorn's `--bind` reads one: besides
    /// [`FromStr`]'s forms, `tcp://HOST:PORT`, `unix://PATH`, a host with
    /// no port (gunicorn's default, 8000: Azure's `--bind=0.0.0.0`) and
    /// `:PORT` (every IPv4 interface: Cloud Run's `--bind :$PORT`). Only for
    /// the app's binds: a status server gets no default port.
    pub fn gunicorn(s: &str) -> Result<BindAddr, String> {
        if let Some(path) = s.strip_prefix("unix://") {
            return format!("unix:{path}").parse();
        }
        let addr = s.strip_prefix("tcp://").unwrap_or(s);
        if let Some(port) = addr.strip_prefix(':')
            && let Ok(port) = port.parse::<u16>()
        {
            return Ok(BindAddr::Tcp(SocketAddr::from((
                Ipv4Addr::UNSPECIFIED,
                port,
            ))));
        }
        let host = addr
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(addr);
        let ip = match host {
            "localhost" => Some(Ipv4Addr::LOCALHOST.into()),
            _ => host.parse::<std::net::IpAddr>().ok(),
        };
        match (addr.parse::<BindAddr>(), ip) {
            (Ok(bind), _) => Ok(bind),
            (Err(_), Some(ip)) => Ok(BindAddr::Tcp(SocketAddr::new(ip, GUNICORN_PORT))),
            (Err(e), None) => Err(e),
        }
    }
}

/// gunicorn's port for a bind address given without one.
const GUNICORN_PORT: u16 = 8000;

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddr::Tcp(addr) => write!(f, "{addr}"),
            BindAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A duration written like "30s", "500ms", "2m", "1h" or "1m30s".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<HumanDuration, String> {
        let bad = || {
            format!(
                "invalid duration \"{s}\": use a number with a unit, like \"30s\", \"500ms\", \"2m\""
            )
        };
        let text = s.trim();
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(format!(
                "invalid duration \"{s}\": add a unit, like \"{text}s\" or \"{text}ms\""
            ));
        }
        let mut rest = text;
        let mut nanos: u128 = 0;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let (number, after) = split_number(rest);
            let unit_len = after
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_len);
            let scale: u128 = match unit {
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60 * 1_000_000_000,
                "h" => 3600 * 1_000_000_000,
                _ => return Err(bad()),
            };
            nanos += scaled(number, scale).ok_or_else(bad)?;
            rest = after.trim_start();
        }
        u64::try_from(nanos)
            .map(|n| HumanDuration(Duration::from_nanos(n)))
            .map_err(|_| format!("invalid duration \"{s}\": too long"))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like \"30s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                if v < 0 {
                    return Err(E::custom(format!(
                        "invalid duration {v}: a duration is 0 or more, with a unit and quotes, like \"30s\""
                    )));
                }
                Err(E::custom(format!(
                    "invalid duration {v}: add a unit and quotes, like \"{v}s\" or \"{v}ms\""
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<HumanDuration, E> {
                if v < 0.0 {
                    return Err(E::custom(format!(
                        "invalid duration {v}: a duration is 0 or more, with a unit and quotes, like \"30s\""
                    )));
                }
                Err(E::custom(format!(
                    "invalid duration {v}: add a unit and quotes, like \"{v}s\""
                )))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A byte count written like "64KiB", "10MiB", "1GiB", "512KB" (1000-based),
/// "100B", or a plain number of bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<ByteSize, String> {
        let bad = || {
            format!(
                "invalid size \"{s}\": use a number of bytes or a number with a unit, like \"64KiB\", \"10MiB\", \"512KB\""
            )
        };
        let (number, unit) = split_number(s.trim());
        let unit = unit.trim_start();
        let scale: u128 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" if number.contains('.') => return Err(bad()),
            "" | "b" => 1,
            "kb" => 1000,
            "mb" => 1000_u128.pow(2),
            "gb" => 1000_u128.pow(3),
            "tb" => 1000_u128.pow(4),
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            "k" | "m" | "g" | "t" => {
                let u = unit.to_ascii_uppercase();
                return Err(format!(
                    "invalid size \"{s}\": write \"{number}{u}iB\" (1024-based) or \"{number}{u}B\" (1000-based)"
                ));
            }
            _ => return Err(bad()),
        };
        let bytes = scaled(number, scale).ok_or_else(bad)?;
        u64::try_from(bytes)
            .map(ByteSize)
            .map_err(|_| format!("invalid size \"{s}\": too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like \"64KiB\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ByteSize, E> {
                Err(E::custom(format!(
                    "invalid size {v}: use a whole number of bytes or a unit, like \"1.5MiB\""
                )))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// How many workers must be in service for the instance to count as ready:
/// a count (TOML `2`, flag `2`) or a percentage of the workers (`"50%"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinReady {
    Count(usize),
    /// 0 to 100 (validation refuses 0).
    Percent(u8),
}

impl MinReady {
    /// Workers that must be in service out of `workers`: a count as given
    /// (validation keeps it within `workers.count`), a percentage rounded up
    /// and at least 1 when `workers > 0`.
    pub fn required(&self, workers: usize) -> usize {
        match *self {
            MinReady::Count(n) => n,
            MinReady::Percent(_) if workers == 0 => 0,
            MinReady::Percent(p) => {
                let n = (workers as u128 * u128::from(p)).div_ceil(100);
                usize::try_from(n).unwrap_or(usize::MAX).max(1)
            }
        }
    }
}

impl fmt::Display for MinReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MinReady::Count(n) => write!(f, "{n}"),
            MinReady::Percent(p) => write!(f, "{p}%"),
        }
    }
}

const MIN_READY_HOW: &str = "use a count like 2 or a percentage like \"50%\"";

impl FromStr for MinReady {
    type Err = String;

    /// "2" or "50%".
    fn from_str(s: &str) -> Result<MinReady, String> {
        let bad = || format!("\"{s}\" is not a count or a percentage: {MIN_READY_HOW}");
        let text = s.trim();
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if let Some(number) = text.strip_suffix('%') {
            let number = number.trim_end();
            if !digits(number) {
                return Err(bad());
            }
            return match number.parse::<u64>() {
                Ok(p) if p <= 100 => Ok(MinReady::Percent(p as u8)),
                _ => Err(format!(
                    "\"{s}\" is more than 100%: use a percentage from 1% to 100%, like \"50%\""
                )),
            };
        }
        if !digits(text) {
            return Err(bad());
        }
        text.parse()
            .map(MinReady::Count)
            .map_err(|_| format!("\"{s}\" is too large: {MIN_READY_HOW}"))
    }
}

impl<'de> Deserialize<'de> for MinReady {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = MinReady;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a count like 2 or a percentage like \"50%\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MinReady, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MinReady, E> {
                usize::try_from(v)
                    .map(MinReady::Count)
                    .map_err(|_| E::custom(format!("{v} is too large: {MIN_READY_HOW}")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MinReady, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "{v} is not a count or a percentage: {MIN_READY_HOW}"
                    ))),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<MinReady, E> {
                Err(E::custom(format!(
                    "{v} is not a count or a percentage: {MIN_READY_HOW}"
                )))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `workers.count` and `--workers`: a number of worker processes, or
/// "auto" for the CPUs this process may use (see [`crate::cpus`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerCount {
    Count(usize),
    Auto,
}

const WORKER_COUNT_HOW: &str = "use a number of workers like 4, or \"auto\" for one per CPU";

impl FromStr for WorkerCount {
    type Err = String;

    fn from_str(s: &str) -> Result<WorkerCount, String> {
        let text = s.trim();
        if text.eq_ignore_ascii_case("auto") {
            return Ok(WorkerCount::Auto);
        }
        text.parse().map(WorkerCount::Count).map_err(|_| {
            unexpanded_variable(s).unwrap_or_else(|| {
                format!("\"{s}\" is not a number of workers: {WORKER_COUNT_HOW}")
            })
        })
    }
}

impl<'de> Deserialize<'de> for WorkerCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = WorkerCount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of workers like 4, or \"auto\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WorkerCount, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WorkerCount, E> {
                usize::try_from(v)
                    .map(WorkerCount::Count)
                    .map_err(|_| E::custom(format!("{v} is too large: {WORKER_COUNT_HOW}")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WorkerCount, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "{v} is not a number of workers: {WORKER_COUNT_HOW}"
                    ))),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<WorkerCount, E> {
                Err(E::custom(format!(
                    "{v} is not a number of workers: {WORKER_COUNT_HOW}"
                )))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A umask written as octal digits, like "027" or "0027"; at most "777"
/// (the permission bits). A TOML number is refused: it would lose the octal
/// meaning of the digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Umask(pub u32);

impl FromStr for Umask {
    type Err = String;

    fn from_str(s: &str) -> Result<Umask, String> {
        let octal = |t: &str| !t.is_empty() && t.bytes().all(|b| (b'0'..=b'7').contains(&b));
        if let Some(digits) = s.strip_prefix("0o").filter(|d| octal(d)) {
            return Err(format!(
                "invalid umask \"{s}\": write only the octal digits, like \"{digits}\""
            ));
        }
        if !octal(s) {
            return Err(format!(
                "invalid umask \"{s}\": use octal digits (0 to 7), like \"027\" or \"077\""
            ));
        }
        match u32::from_str_radix(s, 8) {
            Ok(mask) if mask <= 0o777 => Ok(Umask(mask)),
            _ => Err(format!(
                "invalid umask \"{s}\": it is more than \"777\" (the permission bits): \
                 use three octal digits, like \"027\""
            )),
        }
    }
}

impl Umask {
    /// gunicorn's `-m/--umask`, which Python's `int(value, 0)` reads:
    /// "0o027" (octal), "0x17", "23" (decimal); and corral's octal digits
    /// with a leading 0 ("027"), which gunicorn refuses.
    pub fn gunicorn(s: &str) -> Result<Umask, String> {
        let t = s.trim();
        let parsed = match t.get(..2).map(str::to_ascii_lowercase).as_deref() {
            Some("0o") => u32::from_str_radix(&t[2..], 8).ok(),
            Some("0x") => u32::from_str_radix(&t[2..], 16).ok(),
            Some("0b") => u32::from_str_radix(&t[2..], 2).ok(),
            _ if t.len() > 1 && t.starts_with('0') => return t.parse(),
            _ => t.parse::<u32>().ok(),
        };
        match parsed {
            Some(mask) if mask <= 0o777 => Ok(Umask(mask)),
            Some(_) => Err(format!(
                "invalid umask \"{s}\": it is more than 0o777 (the permission bits)"
            )),
            None => Err(format!(
                "invalid umask \"{s}\": write it as gunicorn reads it, like 0o027 (octal) or 23 (decimal), or as octal digits after a 0, like 027"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Umask {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Umask;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a umask like \"027\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Umask, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Umask, E> {
                Err(E::custom(format!(
                    "invalid umask {v}: write the octal digits in quotes, like \"027\""
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Umask, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Peers whose forwarding headers (X-Forwarded-For, X-Forwarded-Proto) are
/// trusted (`server.forwarded_allow_ips`): a reverse proxy such as nginx.
/// Connections on Unix sockets are always trusted (only local processes that
/// the socket's file permissions let in can connect); that is decided where
/// the connection is known, not here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardedAllow {
    /// "*": every peer.
    Any,
    /// The peers in these networks (an exact IP is a /32 or /128 network);
    /// empty: no peer.
    Networks(Vec<IpNet>),
}

impl ForwardedAllow {
    /// Whether a TCP peer's forwarding headers are trusted. An IPv4 peer
    /// seen on an IPv6 socket (`::ffff:127.0.0.1`) matches the IPv4 entries.
    pub fn allows(&self, ip: IpAddr) -> bool {
        match self {
            ForwardedAllow::Any => true,
            ForwardedAllow::Networks(networks) => {
                let ip = ip.to_canonical();
                networks.iter().any(|network| network.contains(&ip))
            }
        }
    }

    /// Adds one entry as written: "*" (every peer, whatever else is
    /// listed), an IP address ("127.0.0.1", "::1") or a network in CIDR form
    /// ("10.0.0.0/8", "fd00::/8"; host bits are dropped, so "10.1.2.3/8" is
    /// "10.0.0.0/8"). The error says how to write it.
    pub(super) fn add(&mut self, entry: &str) -> Result<(), String> {
        let network = if entry == "*" {
            None
        } else if let Ok(ip) = entry.parse::<IpAddr>() {
            // "::ffff:10.0.0.1" is the IPv4 peer 10.0.0.1 (see `allows`).
            Some(IpNet::from(ip.to_canonical()))
        } else if let Ok(network) = entry.parse::<IpNet>() {
            Some(network.trunc())
        } else {
            return Err(bad_forwarded_entry(entry));
        };
        match (self, network) {
            (ForwardedAllow::Any, _) => {}
            (allow, None) => *allow = ForwardedAllow::Any,
            (ForwardedAllow::Networks(networks), Some(network)) => {
                if !networks.contains(&network) {
                    networks.push(network);
                }
            }
        }
        Ok(())
    }
}

/// `server.proxy_protocol`: which PROXY protocol headers a connection may
/// begin with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// None: the first bytes are TLS or HTTP.
    #[default]
    Off,
    /// The text header ("PROXY TCP4 ...\r\n").
    V1,
    /// The binary header.
    V2,
    /// Either.
    Auto,
}

impl ProxyProtocol {
    pub fn v1(self) -> bool {
        matches!(self, ProxyProtocol::V1 | ProxyProtocol::Auto)
    }

    pub fn v2(self) -> bool {
        matches!(self, ProxyProtocol::V2 | ProxyProtocol::Auto)
    }
}

impl std::str::FromStr for ProxyProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<ProxyProtocol, String> {
        match s {
            "off" => Ok(ProxyProtocol::Off),
            "v1" => Ok(ProxyProtocol::V1),
            "v2" => Ok(ProxyProtocol::V2),
            "auto" => Ok(ProxyProtocol::Auto),
            _ => Err(format!(
                "\"{s}\" is not a PROXY protocol mode: use \"off\", \"v1\", \"v2\" or \"auto\""
            )),
        }
    }
}

/// Why `entry` is not a `server.forwarded_allow_ips` entry, and what to
/// write.
fn bad_forwarded_entry(entry: &str) -> String {
    const HOW: &str = "use e.g. \"127.0.0.1\", \"10.0.0.0/8\" or \"*\"";
    let prefix = entry
        .split_once('/')
        .and_then(|(ip, _)| ip.parse::<IpAddr>().ok());
    match prefix {
        Some(IpAddr::V4(_)) => format!(
            "\"{entry}\" has a bad prefix length: write 0 to 32 after the \"/\", like \"10.0.0.0/8\""
        ),
        Some(IpAddr::V6(_)) => format!(
            "\"{entry}\" has a bad prefix length: write 0 to 128 after the \"/\", like \"fd00::/8\""
        ),
        None => format!("\"{entry}\" is not an IP address or network: {HOW}"),
    }
}

/// Splits "1.5MiB" into ("1.5", "MiB").
fn split_number(s: &str) -> (&str, &str) {
    let len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s.split_at(len)
}

/// The decimal `number` ("12", "1.5", ".5") times `scale`, rounded down.
fn scaled(number: &str, scale: u128) -> Option<u128> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac = &frac[..frac.len().min(18)];
    let frac_part = if frac.is_empty() {
        0
    } else {
        frac.parse::<u128>().ok()? * scale / 10_u128.pow(frac.len() as u32)
    };
    int.checked_mul(scale)?.checked_add(frac_part)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(s: &str) -> Result<Duration, String> {
        s.parse::<HumanDuration>().map(|d| d.0)
    }

    fn size(s: &str) -> Result<u64, String> {
        s.parse::<ByteSize>().map(|b| b.0)
    }

    #[test]
    fn variables_no_shell_expanded_are_named() {
        assert_eq!(unexpanded("0.0.0.0:$PORT"), Some("PORT"));
        assert_eq!(unexpanded(":${PORT}"), Some("PORT"));
        assert_eq!(unexpanded("0.0.0.0:${PORT:-8000}"), Some("PORT"));
        assert_eq!(unexpanded("$WEB_CONCURRENCY"), Some("WEB_CONCURRENCY"));
        // A `$` that starts no name is no variable.
        assert_eq!(unexpanded("0.0.0.0:80$"), None);
        assert_eq!(unexpanded("$1"), None);
        assert_eq!(unexpanded("127.0.0.1:8000"), None);
        let bind = "0.0.0.0:${PORT}".parse::<BindAddr>().unwrap_err();
        assert!(bind.contains("corral binds 0.0.0.0:$PORT itself"), "{bind}");
        // A socket's path may hold a `$`.
        assert!("unix:/run/$app.sock".parse::<BindAddr>().is_ok());
        let port = parse_port("$PORT").unwrap_err();
        assert!(port.contains("$PORT was not expanded"), "{port}");
        assert_eq!(parse_port("8080"), Ok(8080));
        let err = parse_port("http").unwrap_err();
        assert!(err.contains("is not a port number"), "{err}");
        let workers = "$WEB_CONCURRENCY".parse::<WorkerCount>().unwrap_err();
        assert!(
            workers.contains("corral reads WEB_CONCURRENCY itself"),
            "{workers}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(dur("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(dur("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(dur("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(dur("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(dur("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(dur("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(dur("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(dur(".25s"), Ok(Duration::from_millis(250)));
        assert_eq!(dur("0s"), Ok(Duration::ZERO));
        for bad in ["", "5x", "s", "-5s", "1.2.3s", "5 s x", "1m30"] {
            let err = dur(bad).unwrap_err();
            assert!(err.contains("use a number with a unit"), "{bad}: {err}");
        }
        assert_eq!(
            dur("30").unwrap_err(),
            "invalid duration \"30\": add a unit, like \"30s\" or \"30ms\""
        );
        assert!(dur("999999999999h").unwrap_err().contains("too long"));
    }

    #[test]
    fn sizes() {
        assert_eq!(size("64KiB"), Ok(64 * 1024));
        assert_eq!(size("10MiB"), Ok(10 << 20));
        assert_eq!(size("1GiB"), Ok(1 << 30));
        assert_eq!(size("512KB"), Ok(512_000));
        assert_eq!(size("100B"), Ok(100));
        assert_eq!(size("100"), Ok(100));
        assert_eq!(size("1.5 MiB"), Ok(3 << 19));
        assert_eq!(size("64kib"), Ok(64 * 1024));
        for bad in ["", "1.5", "10XB", "MiB", "-1KiB"] {
            assert!(size(bad).unwrap_err().contains("invalid size"), "{bad}");
        }
        assert!(size("64K").unwrap_err().contains("\"64KiB\" (1024-based)"));
        assert!(size("99999999TiB").unwrap_err().contains("too large"));
    }

    #[test]
    fn min_ready_values() {
        let parse = |s: &str| s.parse::<MinReady>();
        assert_eq!(parse("2"), Ok(MinReady::Count(2)));
        assert_eq!(parse(" 3 "), Ok(MinReady::Count(3)));
        assert_eq!(parse("0"), Ok(MinReady::Count(0)));
        assert_eq!(parse("50%"), Ok(MinReady::Percent(50)));
        assert_eq!(parse("100 %"), Ok(MinReady::Percent(100)));
        assert_eq!(parse("0%"), Ok(MinReady::Percent(0)));
        for bad in [
            "",
            "%",
            "two",
            "-1",
            "1.5",
            "50.5%",
            "50%%",
            "%50",
            "2 workers",
        ] {
            assert_eq!(
                parse(bad).unwrap_err(),
                format!(
                    "\"{bad}\" is not a count or a percentage: use a count like 2 or a percentage like \"50%\""
                )
            );
        }
        assert!(parse("101%").unwrap_err().contains("more than 100%"));
        assert!(
            parse("99999999999999999999%")
                .unwrap_err()
                .contains("more than 100%")
        );
        assert!(
            parse("99999999999999999999")
                .unwrap_err()
                .contains("too large")
        );
        assert_eq!(MinReady::Percent(50).to_string(), "50%");
        assert_eq!(MinReady::Count(2).to_string(), "2");
    }

    #[test]
    fn min_ready_required_rounds_percentages_up() {
        assert_eq!(MinReady::Count(2).required(4), 2);
        assert_eq!(MinReady::Count(3).required(0), 3);
        assert_eq!(MinReady::Percent(50).required(4), 2);
        assert_eq!(MinReady::Percent(50).required(5), 3);
        assert_eq!(MinReady::Percent(1).required(3), 1);
        assert_eq!(MinReady::Percent(0).required(3), 1);
        assert_eq!(MinReady::Percent(100).required(7), 7);
        assert_eq!(MinReady::Percent(34).required(3), 2);
        assert_eq!(MinReady::Percent(50).required(0), 0);
        assert_eq!(MinReady::Percent(100).required(usize::MAX), usize::MAX);
    }

    #[test]
    fn umasks() {
        let parse = |s: &str| s.parse::<Umask>();
        assert_eq!(parse("027"), Ok(Umask(0o027)));
        assert_eq!(parse("0027"), Ok(Umask(0o027)));
        assert_eq!(parse("22"), Ok(Umask(0o022)));
        assert_eq!(parse("0"), Ok(Umask(0)));
        assert_eq!(parse("777"), Ok(Umask(0o777)));
        for bad in ["", "089", "u=rwx", "-022", "+022", " 022", "0x1f", "02 7"] {
            assert_eq!(
                parse(bad).unwrap_err(),
                format!(
                    "invalid umask \"{bad}\": use octal digits (0 to 7), like \"027\" or \"077\""
                )
            );
        }
        assert_eq!(
            parse("0o027").unwrap_err(),
            "invalid umask \"0o027\": write only the octal digits, like \"027\""
        );
        for big in ["1000", "1777", "77777777777777777777777"] {
            assert_eq!(
                parse(big).unwrap_err(),
                format!(
                    "invalid umask \"{big}\": it is more than \"777\" (the permission bits): \
                     use three octal digits, like \"027\""
                )
            );
        }
    }

    /// The entries added one by one, as `server.forwarded_allow_ips`.
    fn allow(entries: &[&str]) -> Result<ForwardedAllow, String> {
        let mut allow = ForwardedAllow::Networks(Vec::new());
        for entry in entries {
            allow.add(entry)?;
        }
        Ok(allow)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_allow_exact_ips() {
        let local = allow(&["127.0.0.1", "::1"]).unwrap();
        assert_eq!(
            local,
            ForwardedAllow::Networks(vec![
                "127.0.0.1/32".parse().unwrap(),
                "::1/128".parse().unwrap()
            ])
        );
        assert!(local.allows(ip("127.0.0.1")));
        assert!(local.allows(ip("::1")));
        assert!(!local.allows(ip("127.0.0.2")));
        assert!(!local.allows(ip("10.0.0.1")));
        assert!(!local.allows(ip("::2")));
        // An IPv4 peer on an IPv6 socket matches the IPv4 entry; ::1 is not
        // 127.0.0.1.
        assert!(local.allows(ip("::ffff:127.0.0.1")));
        assert!(!local.allows(ip("::ffff:127.0.0.2")));
        let v4 = allow(&["127.0.0.1"]).unwrap();
        assert!(!v4.allows(ip("::1")));
        // A mapped entry is the IPv4 address.
        let mapped = allow(&["::ffff:10.0.0.1"]).unwrap();
        assert_eq!(mapped, allow(&["10.0.0.1"]).unwrap());
        assert!(mapped.allows(ip("10.0.0.1")));
        assert!(mapped.allows(ip("::ffff:10.0.0.1")));
    }

    #[test]
    fn forwarded_allow_networks() {
        let nets = allow(&["10.0.0.0/8", "fd00::/8", "192.168.1.7/24"]).unwrap();
        for yes in [
            "10.0.0.1",
            "10.255.255.255",
            "::ffff:10.1.2.3",
            "fd12::1",
            "192.168.1.200",
        ] {
            assert!(nets.allows(ip(yes)), "{yes}");
        }
        for no in ["11.0.0.1", "127.0.0.1", "fe80::1", "::1", "192.168.2.1"] {
            assert!(!nets.allows(ip(no)), "{no}");
        }
        // Host bits are dropped; a duplicate counts once.
        assert_eq!(
            allow(&["10.1.2.3/8", "10.0.0.0/8"]).unwrap(),
            ForwardedAllow::Networks(vec!["10.0.0.0/8".parse().unwrap()])
        );
        // /0 is every peer of that family.
        let all_v4 = allow(&["0.0.0.0/0"]).unwrap();
        assert!(all_v4.allows(ip("203.0.113.7")));
        assert!(all_v4.allows(ip("::ffff:203.0.113.7")));
        assert!(!all_v4.allows(ip("2001:db8::1")));
    }

    #[test]
    fn forwarded_allow_any_and_none() {
        for entries in [&["*"][..], &["127.0.0.1", "*"], &["*", "10.0.0.0/8"]] {
            let any = allow(entries).unwrap();
            assert_eq!(any, ForwardedAllow::Any, "{entries:?}");
            for peer in ["203.0.113.7", "2001:db8::1", "::ffff:1.2.3.4"] {
                assert!(any.allows(ip(peer)), "{peer}");
            }
        }
        let none = allow(&[]).unwrap();
        assert_eq!(none, ForwardedAllow::Networks(Vec::new()));
        for peer in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert!(!none.allows(ip(peer)), "{peer}");
        }
    }

    #[test]
    fn forwarded_allow_bad_entries() {
        for bad in [
            "10.0.0.300",
            "",
            " 127.0.0.1",
            "localhost",
            "127.0.0.1:8000",
            "[::1]",
            "**",
            "fe80::1%eth0",
        ] {
            assert_eq!(
                allow(&[bad]).unwrap_err(),
                format!(
                    "\"{bad}\" is not an IP address or network: use e.g. \"127.0.0.1\", \
                     \"10.0.0.0/8\" or \"*\""
                )
            );
        }
        assert_eq!(
            allow(&["10.0.0.0/33"]).unwrap_err(),
            "\"10.0.0.0/33\" has a bad prefix length: write 0 to 32 after the \"/\", like \
             \"10.0.0.0/8\""
        );
        assert_eq!(
            allow(&["fd00::/abc"]).unwrap_err(),
            "\"fd00::/abc\" has a bad prefix length: write 0 to 128 after the \"/\", like \
             \"fd00::/8\""
        );
    }

    #[test]
    fn binds() {
        let tcp = |s: &str| BindAddr::Tcp(s.parse().unwrap());
        assert_eq!("127.0.0.1:8000".parse(), Ok(tcp("127.0.0.1:8000")));
        assert_eq!("[::1]:80".parse(), Ok(tcp("[::1]:80")));
        assert_eq!("localhost:9".parse(), Ok(tcp("127.0.0.1:9")));
        assert_eq!(
            "unix:/run/a.sock".parse(),
            Ok(BindAddr::Unix("/run/a.sock".into()))
        );
        let missing_port = "0.0.0.0".parse::<BindAddr>().unwrap_err();
        assert!(
            missing_port.contains("like \"0.0.0.0:8000\""),
            "{missing_port}"
        );
        for bad in ["unix:", "example.com:80", "1.2.3.4:99999", ""] {
            assert!(bad.parse::<BindAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn umasks_as_gunicorns_flag_reads_them() {
        for (text, mask) in [
            ("0o027", 0o027),
            ("0O22", 0o022),
            ("23", 23),
            ("0", 0),
            ("0x12", 0o022),
            ("027", 0o027),
            ("0b111", 7),
        ] {
            assert_eq!(Umask::gunicorn(text), Ok(Umask(mask)), "{text}");
        }
        for bad in ["", "0o9", "x", "1000", "0o1000", "-1", "089"] {
            assert!(Umask::gunicorn(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn binds_as_gunicorn_reads_them() {
        let tcp = |s: &str| Ok(BindAddr::Tcp(s.parse().unwrap()));
        // Cloud Run's and Azure's documented command lines.
        assert_eq!(BindAddr::gunicorn(":8080"), tcp("0.0.0.0:8080"));
        assert_eq!(BindAddr::gunicorn("0.0.0.0"), tcp("0.0.0.0:8000"));
        assert_eq!(BindAddr::gunicorn("localhost"), tcp("127.0.0.1:8000"));
        assert_eq!(BindAddr::gunicorn("[::]"), tcp("[::]:8000"));
        assert_eq!(BindAddr::gunicorn("::1"), tcp("[::1]:8000"));
        assert_eq!(BindAddr::gunicorn("tcp://127.0.0.1:9"), tcp("127.0.0.1:9"));
        assert_eq!(BindAddr::gunicorn("10.0.0.1:80"), tcp("10.0.0.1:80"));
        assert_eq!(
            BindAddr::gunicorn("unix://run/a.sock"),
            Ok(BindAddr::Unix("run/a.sock".into()))
        );
        assert_eq!(
            BindAddr::gunicorn("unix:/run/a.sock"),
            Ok(BindAddr::Unix("/run/a.sock".into()))
        );
        for bad in ["unix://", "example.com:80", ":", ":99999", "", "tcp://"] {
            let err = BindAddr::gunicorn(bad).unwrap_err();
            assert!(err.contains("invalid bind address"), "{bad}: {err}");
        }
    }
}
