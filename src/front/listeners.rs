//! The listen sockets, in one table: each is adopted from what this process
//! inherited or bound here, keyed by its role (`bind`, `insecure_bind`,
//! `status_bind`) and address as configured. An app socket knows whether it
//! is plain (`insecure_bind`) and its address, which picks its TLS
//! certificate set.
//!
//! What a process inherits is read from the environment once, at the start
//! of `main`, into an explicit [`Inherited`] that is passed down (nothing
//! here reads a global):
//! - systemd socket activation ([`crate::activation`]): corral serves on
//!   the sockets systemd passed instead of binding `[server] bind` and
//!   `insecure_bind`; the one named `status` serves the status server, and
//!   one bound to an `insecure_bind` address serves plain HTTP;
//! - a USR2 re-exec ([`crate::reexec`]): the parent hands its sockets down
//!   under the keys of [`Listeners::handover`], and each configured address
//!   adopts the socket of its key instead of binding again.
//!
//! [`Listeners::open`] does one or the other for every socket; the table
//! then knows the keys and fds to hand to the next corral on USR2.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::path::PathBuf;

use tokio::net::{TcpListener, UnixListener};

use crate::config::{Bind, BindAddr};

/// The listen queue of the status server's socket.
const STATUS_BACKLOG: u32 = 128;

/// The sockets this process was handed when it started: from systemd, from
/// the corral that re-executed it, or none.
#[derive(Debug, Default)]
pub struct Inherited {
    /// systemd socket activation: each fd with its `FileDescriptorName`.
    pub activated: Vec<(RawFd, String)>,
    /// From a USR2 parent: each fd under its key (see [`Listeners::handover`]).
    pub from_parent: HashMap<String, RawFd>,
    /// The pid of the corral that re-executed this one (USR2).
    pub parent: Option<u32>,
}

impl Inherited {
    /// Takes what this process inherited out of the environment, so that
    /// workers see none of it. Call at the start of main, before any thread
    /// exists.
    pub fn take() -> Inherited {
        let handover = crate::reexec::take_handover();
        Inherited {
            activated: crate::activation::take_sockets(),
            from_parent: handover.fds,
            parent: handover.parent,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "cannot listen on {addr} (set by {origin}): {source}{hint}",
        hint = hint(addr, source)
    )]
    Listen {
        addr: String,
        origin: String,
        #[source]
        source: std::io::Error,
    },
}

fn hint(addr: &str, e: &std::io::Error) -> String {
    if let Some(path) = addr.strip_prefix("unix:") {
        let folder = crate::private_fs::folder_of(std::path::Path::new(path)).display();
        return match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "\n  the folder {folder} does not exist: make it (mkdir, or systemd's RuntimeDirectory=), or choose another path"
            ),
            std::io::ErrorKind::PermissionDenied => format!(
                "\n  corral's user may not make a socket in the folder {folder}: give it a folder it may write to (systemd's RuntimeDirectory=), or start corral as root"
            ),
            _ => String::new(),
        };
    }
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            "\n  another process already listens there: stop it, or choose another address with --bind or [server] bind"
        }
        std::io::ErrorKind::PermissionDenied => {
            "\n  ports below 1024 need root or CAP_NET_BIND_SERVICE; choose a port above 1024"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "\n  no local interface has that address: use 127.0.0.1, 0.0.0.0 or one of this machine's addresses"
        }
        _ => "",
    }
    .to_string()
}

/// A bound listen socket.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// The address as a user would type it, e.g. `http://127.0.0.1:8000`.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("http://{a}"),
                Err(_) => "tcp".into(),
            },
            Listener::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }

    /// The address the socket is bound to, as a bind entry would name it.
    fn local_addr(&self) -> Option<BindAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok().map(BindAddr::Tcp),
            Listener::Unix(l, _) => l
                .local_addr()
                .ok()?
                .as_pathname()
                .map(|p| BindAddr::Unix(p.to_owned())),
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }

    /// Another handle on the same listen socket (a `dup`), registered with
    /// the runtime this is called in: each front shard accepts on its own,
    /// and the kernel gives each new connection to one of them.
    pub fn try_clone(&self) -> std::io::Result<Listener> {
        use std::os::fd::AsFd;
        Ok(match self {
            Listener::Tcp(l) => {
                let l = std::net::TcpListener::from(l.as_fd().try_clone_to_owned()?);
                l.set_nonblocking(true)?;
                Listener::Tcp(TcpListener::from_std(l)?)
            }
            Listener::Unix(l, path) => {
                let l = std::os::unix::net::UnixListener::from(l.as_fd().try_clone_to_owned()?);
                l.set_nonblocking(true)?;
                Listener::Unix(UnixListener::from_std(l)?, path.clone())
            }
        })
    }
}

/// One socket the app is served on.
pub struct AppListener {
    pub listener: Listener,
    /// Its address as configured; for a socket systemd passed, its own
    /// (`None` when it cannot be read). Picks its `[server.tls.bind]` set.
    pub addr: Option<BindAddr>,
    /// From `[server] insecure_bind` (or a socket systemd passed at one of
    /// its addresses): plain HTTP even with `[server.tls]`.
    pub insecure: bool,
}

/// Every listen socket of this corral.
pub struct Listeners {
    /// The `[server] bind` sockets in their order, then the
    /// `insecure_bind` ones, or the ones systemd passed.
    pub server: Vec<AppListener>,
    /// The status server's socket (`[health] status_bind`, or the one
    /// systemd passed named `status`).
    pub status: Option<Listener>,
    /// Whether they came from systemd socket activation (directly, or
    /// through the corral that re-executed this one).
    pub activated: bool,
    /// The key of each socket for a USR2 hand-over, with its fd.
    handover: Vec<(String, RawFd)>,
    /// The Unix socket files of `[server] bind` and the status server,
    /// bound here or by a USR2 parent (not systemd's).
    made: Vec<SocketFile>,
}

/// A Unix socket file this corral bound: its path, and its device and
/// inode as bound, so that only that node is removed at exit.
#[derive(Debug, Clone)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn of(path: &std::path::Path) -> Option<SocketFile> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path).ok()?;
        Some(SocketFile {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Removes the socket file, as gunicorn does when it stops, if the
    /// node at its path is still the one this corral bound (unlink(2)
    /// never follows a link).
    pub fn remove(&self) {
        use std::os::unix::fs::MetadataExt;
        let same = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino);
        if !same {
            return;
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::info!("cannot remove the socket file {}: {e}", self.path.display());
        }
    }
}

impl Listeners {
    /// Adopts the sockets systemd passed (directly or through a USR2
    /// parent) when there are any; else, for each configured address,
    /// adopts the socket a USR2 parent handed down for it or binds it.
    /// Call before any worker starts.
    /// `binds` and `insecure` are `[server] bind` and `insecure_bind`,
    /// bound as `listen` says.
    pub fn open(
        binds: &[Bind],
        insecure: &[Bind],
        listen: Listen,
        status_bind: Option<&Bind>,
        inherited: &Inherited,
        access: &UnixAccess,
    ) -> Result<Listeners, BindError> {
        if let Some(listeners) = Self::activated(inherited, insecure) {
            return Ok(listeners);
        }
        let mut handover = Vec::new();
        let mut server = Vec::new();
        let mut made = Vec::new();
        let roles = binds
            .iter()
            .enumerate()
            .map(|(i, b)| (b, format!("server{i}"), false))
            .chain(
                insecure
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (b, format!("insecure{i}"), true)),
            );
        // `[::]:P` takes IPv4 too (dual stack, as under gunicorn), unless
        // an IPv4 address of the same port is bound beside it.
        let all: Vec<&Bind> = binds.iter().chain(insecure).chain(status_bind).collect();
        let v6_only = |bind: &Bind| match bind.addr {
            BindAddr::Tcp(a) if a.is_ipv6() => all
                .iter()
                .any(|o| matches!(o.addr, BindAddr::Tcp(b) if b.is_ipv4() && b.port() == a.port())),
            _ => false,
        };
        for (bind, role, insecure) in roles {
            let key = key(bind, &role);
            let (listener, file) =
                adopt_or_bind(bind, listen, v6_only(bind), &key, inherited, access)?;
            made.extend(file);
            handover.push((key, listener.raw_fd()));
            server.push(AppListener {
                listener,
                addr: Some(bind.addr.clone()),
                insecure,
            });
        }
        let status = match status_bind {
            None => None,
            Some(bind) => {
                let key = key(bind, "status");
                let (listener, file) = adopt_or_bind(
                    bind,
                    Listen {
                        backlog: STATUS_BACKLOG,
                        reuse_port: false,
                    },
                    v6_only(bind),
                    &key,
                    inherited,
                    &UnixAccess::default(),
                )?;
                made.extend(file);
                handover.push((key, listener.raw_fd()));
                Some(listener)
            }
        };
        Ok(Listeners {
            server,
            status,
            activated: false,
            handover,
            made,
        })
    }

    /// The sockets of systemd socket activation: handed down by a USR2
    /// parent that was itself socket-activated (under `activated-*` keys),
    /// else passed by systemd. `None` when there are none, or one cannot be
    /// adopted (then the configured addresses are bound). A socket at one
    /// of the `insecure` addresses serves plain HTTP.
    fn activated(inherited: &Inherited, insecure: &[Bind]) -> Option<Listeners> {
        let mut from_parent: Vec<(&String, &RawFd)> = inherited
            .from_parent
            .iter()
            .filter(|(k, _)| k.starts_with("activated"))
            .collect();
        let pairs: Vec<(RawFd, String)> = if !from_parent.is_empty() {
            from_parent.sort();
            from_parent
                .into_iter()
                .map(|(k, fd)| (*fd, k.trim_start_matches("activated-").to_string()))
                .collect()
        } else {
            inherited.activated.clone()
        };
        if pairs.is_empty() {
            return None;
        }
        let mut server = Vec::new();
        let mut status = None;
        for (fd, name) in pairs {
            // Its file as the log and /status name it (systemd's
            // ListenStream=), or the fd for one without a path.
            let unix_path = crate::activation::is_unix(fd).then(|| {
                crate::activation::unix_path(fd)
                    .unwrap_or_else(|| PathBuf::from(format!("(fd {fd})")))
            });
            let l = adopt_fd(fd, unix_path)?;
            if name == "status" {
                status = Some(l);
            } else {
                let addr = l.local_addr();
                let insecure = addr
                    .as_ref()
                    .is_some_and(|a| insecure.iter().any(|b| b.addr == *a));
                server.push(AppListener {
                    listener: l,
                    addr,
                    insecure,
                });
            }
        }
        let mut handover: Vec<(String, RawFd)> = server
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("activated-{i:03}"), l.listener.raw_fd()))
            .collect();
        if let Some(s) = &status {
            handover.push(("activated-status".into(), s.raw_fd()));
        }
        Some(Listeners {
            server,
            status,
            activated: true,
            handover,
            made: Vec::new(),
        })
    }

    /// The sockets to hand to a new corral on USR2: each under its key (its
    /// role and address as configured, see [`key`]) with its fd.
    pub fn handover(&self) -> Vec<(String, RawFd)> {
        self.handover.clone()
    }

    /// The Unix socket files corral bound, here or in the USR2 parent; a
    /// socket systemd passed is not among them (its file is systemd's).
    pub fn made(&self) -> Vec<SocketFile> {
        self.made.clone()
    }
}

/// The key of a listen socket in a USR2 hand-over: its role (`server0`,
/// `server1`, ..., `insecure0`, ..., `status`) and its address as configured (two
/// `127.0.0.1:0` binds must not collide).
fn key(bind: &Bind, role: &str) -> String {
    match &bind.addr {
        BindAddr::Tcp(a) => format!("{role}#{a}"),
        BindAddr::Unix(p) => format!("{role}#unix:{}", p.display()),
    }
}

/// The socket a USR2 parent handed down under `key`, else `bind` bound
/// (with its file, for a Unix socket).
/// How corral binds a TCP address of its own: listen(2)'s queue length,
/// and SO_REUSEPORT (`[server] reuse_port`, gunicorn's `--reuse-port`).
#[derive(Debug, Clone, Copy)]
pub struct Listen {
    pub backlog: u32,
    pub reuse_port: bool,
}

/// Who may connect to the app's Unix sockets, as gunicorn sets them up:
/// mode `0777 & !umask` when gunicorn's `-m/--umask` is given (else 0666
/// under corral's umask), owned by the workers' user and group when
/// `-u`/`-g` are given (else by corral's).
#[derive(Debug, Clone, Default)]
pub struct UnixAccess {
    pub mode: Option<u32>,
    pub owner: Option<(u32, u32)>,
}

/// Logs, for each app `unix:` socket only its owner may connect to, who
/// that is and how a proxy running as another user (nginx's www-data) gets
/// in, as gunicorn users do.
pub fn explain_unix_access<'a>(binds: impl Iterator<Item = &'a Bind>) {
    use std::os::unix::fs::MetadataExt;
    for bind in binds {
        if let BindAddr::Unix(path) = &bind.addr
            && let Ok(meta) = std::fs::metadata(path)
            && meta.mode() & 0o022 == 0
        {
            // Connecting takes write permission on the socket's node.
            let who = if meta.mode() & 0o020 != 0 {
                format!("uid {} and group {}", meta.uid(), meta.gid())
            } else {
                format!("uid {}", meta.uid())
            };
            tracing::info!(
                "unix:{} is mode {:04o}, owner uid {} gid {}: only {who} may connect; for a proxy running as another user (nginx), give its group as with gunicorn: -g GROUP -m 007",
                path.display(),
                meta.mode() & 0o777,
                meta.uid(),
                meta.gid()
            );
        }
    }
}

fn adopt_or_bind(
    bind: &Bind,
    listen: Listen,
    v6_only: bool,
    key: &str,
    inherited: &Inherited,
    access: &UnixAccess,
) -> Result<(Listener, Option<SocketFile>), BindError> {
    let unix_path = match &bind.addr {
        BindAddr::Tcp(_) => None,
        BindAddr::Unix(p) => Some(p.clone()),
    };
    let listener = match inherited
        .from_parent
        .get(key)
        .and_then(|fd| adopt_fd(*fd, unix_path.clone()))
    {
        Some(l) => l,
        None => bind_one(bind, listen, v6_only, access)?,
    };
    // A file a USR2 parent bound is this corral's once it serves alone.
    Ok((listener, unix_path.as_deref().and_then(SocketFile::of)))
}

/// Binds `bind` (a stale Unix socket file is replaced); an IPv6 address
/// takes IPv4 connections too unless `v6_only`.
fn bind_one(
    bind: &Bind,
    listen: Listen,
    v6_only: bool,
    access: &UnixAccess,
) -> Result<Listener, BindError> {
    let err = |source| BindError::Listen {
        addr: match &bind.addr {
            BindAddr::Tcp(a) => a.to_string(),
            BindAddr::Unix(p) => format!("unix:{}", p.display()),
        },
        origin: bind.origin.clone(),
        source,
    };
    match &bind.addr {
        BindAddr::Tcp(addr) => {
            use socket2::{Domain, Protocol, Socket, Type};
            let sock = Socket::new(
                Domain::for_address(*addr),
                Type::STREAM,
                Some(Protocol::TCP),
            )
            .map_err(err)?;
            sock.set_reuse_address(true).map_err(err)?;
            if listen.reuse_port {
                sock.set_reuse_port(true).map_err(err)?;
            }
            if addr.is_ipv6() {
                sock.set_only_v6(v6_only).map_err(err)?;
            }
            sock.bind(&(*addr).into()).map_err(err)?;
            sock.listen(listen.backlog.min(i32::MAX as u32) as i32)
                .map_err(err)?;
            sock.set_nonblocking(true).map_err(err)?;
            let std: std::net::TcpListener = sock.into();
            Ok(Listener::Tcp(TcpListener::from_std(std).map_err(err)?))
        }
        BindAddr::Unix(path) => {
            // Every folder above the socket's must be private (as root):
            // else another user could swap one for a symlink, and have
            // corral delete a stale socket, or bind one, in a folder of
            // their choosing.
            if let Some(why) = crate::private_fs::folders_above_not_private(path) {
                return Err(err(std::io::Error::other(why)));
            }
            // A socket file left by a previous run that nobody listens on is
            // stale: remove it. A live one is an error, and so is anything
            // that is not a socket (corral never deletes a regular file).
            if std::fs::symlink_metadata(path).is_ok() {
                if !crate::private_fs::is_socket(path) {
                    return Err(err(std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "a file that is not a socket is in the way; corral does not delete it: remove it yourself or choose another path",
                    )));
                }
                if std::os::unix::net::UnixStream::connect(path).is_err() {
                    let _ = std::fs::remove_file(path);
                }
            }
            // Its owner and mode set only once bound: in between nobody
            // else may connect.
            let mode = access.mode.unwrap_or_else(crate::private_fs::default_mode);
            let std = crate::private_fs::bind_unix(path, mode, access.owner).map_err(err)?;
            std.set_nonblocking(true).map_err(err)?;
            Ok(Listener::Unix(
                UnixListener::from_std(std).map_err(err)?,
                path.clone(),
            ))
        }
    }
}

/// Takes over a listening socket this process inherited (systemd socket
/// activation or a USR2 parent): a Unix socket when `unix_path` is given.
fn adopt_fd(fd: RawFd, unix_path: Option<PathBuf>) -> Option<Listener> {
    use std::os::fd::FromRawFd;
    crate::reexec::set_cloexec(fd);
    match unix_path {
        None => {
            // SAFETY: the fd is a listening TCP socket handed down to this
            // process for serving; nothing else in this process owns it.
            let std = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            std.set_nonblocking(true).ok()?;
            TcpListener::from_std(std).ok().map(Listener::Tcp)
        }
        Some(path) => {
            // SAFETY: as above, a listening Unix socket.
            let std = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
            std.set_nonblocking(true).ok()?;
            UnixListener::from_std(std)
                .ok()
                .map(|l| Listener::Unix(l, path))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::IntoRawFd;

    use super::*;

    /// [`Listeners::open`] with a backlog of 16 and the default Unix access.
    fn open(
        binds: &[Bind],
        insecure: &[Bind],
        status: Option<&Bind>,
        inherited: &Inherited,
    ) -> Result<Listeners, BindError> {
        Listeners::open(
            binds,
            insecure,
            Listen {
                backlog: 16,
                reuse_port: false,
            },
            status,
            inherited,
            &UnixAccess::default(),
        )
    }

    fn tcp(addr: &str) -> Bind {
        Bind {
            addr: BindAddr::Tcp(addr.parse().unwrap()),
            origin: "--bind".into(),
        }
    }

    /// A listening loopback socket as a parent would hand it down: its fd
    /// and its port.
    fn handed_down() -> (RawFd, u16) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        (l.into_raw_fd(), port)
    }

    fn port(l: &AppListener) -> u16 {
        port_of(&l.listener)
    }

    fn port_of(l: &Listener) -> u16 {
        match l {
            Listener::Tcp(l) => l.local_addr().unwrap().port(),
            Listener::Unix(..) => panic!("a Unix socket"),
        }
    }

    #[tokio::test]
    async fn binds_each_address_under_a_key_of_its_role_and_address() {
        let binds = [tcp("127.0.0.1:0"), tcp("127.0.0.1:0")];
        let status = tcp("127.0.0.1:0");
        let l = open(&binds, &[], Some(&status), &Inherited::default()).unwrap();
        assert!(!l.activated);
        assert_eq!(l.server.len(), 2);
        assert_ne!(port(&l.server[0]), port(&l.server[1]));
        let keys: Vec<String> = l.handover().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "server0#127.0.0.1:0",
                "server1#127.0.0.1:0",
                "status#127.0.0.1:0"
            ]
        );
        let fds: Vec<RawFd> = l.handover().into_iter().map(|(_, fd)| fd).collect();
        assert_eq!(fds[0], l.server[0].listener.raw_fd());
        assert_eq!(fds[2], l.status.as_ref().unwrap().raw_fd());
    }

    #[tokio::test]
    async fn adopts_the_socket_a_parent_handed_down_for_the_same_key() {
        let (fd, handed_port) = handed_down();
        let inherited = Inherited {
            from_parent: HashMap::from([("server1#127.0.0.1:0".to_owned(), fd)]),
            parent: Some(1),
            ..Inherited::default()
        };
        let binds = [tcp("127.0.0.1:0"), tcp("127.0.0.1:0")];
        let l = open(&binds, &[], None, &inherited).unwrap();
        // The first address has no socket handed down: bound anew.
        assert_ne!(port(&l.server[0]), handed_port);
        assert_eq!(port(&l.server[1]), handed_port);
        assert_eq!(l.server[1].listener.raw_fd(), fd);
        assert_eq!(l.handover()[1], ("server1#127.0.0.1:0".to_owned(), fd));
    }

    #[tokio::test]
    async fn systemd_sockets_replace_the_configured_ones_and_status_is_named() {
        let (web, web_port) = handed_down();
        let (status, status_port) = handed_down();
        let inherited = Inherited {
            activated: vec![(web, "web".into()), (status, "status".into())],
            ..Inherited::default()
        };
        let l = open(&[tcp("127.0.0.1:0")], &[], None, &inherited).unwrap();
        assert!(l.activated);
        assert_eq!(l.server.len(), 1);
        assert_eq!(port(&l.server[0]), web_port);
        assert_eq!(port_of(l.status.as_ref().unwrap()), status_port);
        assert_eq!(
            l.handover(),
            [
                ("activated-000".to_owned(), web),
                ("activated-status".to_owned(), status)
            ]
        );
    }

    #[tokio::test]
    async fn a_parent_that_was_socket_activated_hands_its_systemd_sockets_on() {
        let sockets: Vec<(RawFd, u16)> = (0..5).map(|_| handed_down()).collect();
        let inherited = Inherited {
            // In their order, whatever the order of the map.
            from_parent: sockets
                .iter()
                .enumerate()
                .map(|(i, (fd, _))| (format!("activated-{i:03}"), *fd))
                .collect(),
            parent: Some(1),
            ..Inherited::default()
        };
        let l = open(&[tcp("127.0.0.1:0")], &[], None, &inherited).unwrap();
        assert!(l.activated);
        let ports: Vec<u16> = l.server.iter().map(port).collect();
        let handed: Vec<u16> = sockets.iter().map(|(_, port)| *port).collect();
        assert_eq!(ports, handed);
        assert!(l.status.is_none());
    }

    #[tokio::test]
    async fn a_taken_address_names_the_flag_that_set_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let err = open(&[tcp(&addr)], &[], None, &Inherited::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with(&format!("cannot listen on {addr} (set by --bind): ")),
            "{err}"
        );
        assert!(
            err.contains("another process already listens there"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_unix_socket_in_a_missing_folder_says_which_folder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/app.sock");
        let bind = Bind {
            addr: BindAddr::Unix(path.clone()),
            origin: "--bind".into(),
        };
        let err = open(&[bind], &[], None, &Inherited::default())
            .err()
            .unwrap()
            .to_string();
        let folder = dir.path().join("missing");
        assert!(
            err.contains(&format!("the folder {} does not exist", folder.display())),
            "{err}"
        );
        assert!(!err.contains("ports below 1024"), "{err}");
    }

    #[tokio::test]
    async fn insecure_binds_follow_the_tls_ones_under_keys_of_their_own() {
        let binds = [tcp("127.0.0.1:0")];
        let insecure = [tcp("127.0.0.1:0"), tcp("127.0.0.1:0")];
        let l = open(&binds, &insecure, None, &Inherited::default()).unwrap();
        let plain: Vec<bool> = l.server.iter().map(|s| s.insecure).collect();
        assert_eq!(plain, [false, true, true]);
        let keys: Vec<String> = l.handover().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "server0#127.0.0.1:0",
                "insecure0#127.0.0.1:0",
                "insecure1#127.0.0.1:0"
            ]
        );
        assert_eq!(l.server[1].addr, Some(insecure[0].addr.clone()));
    }

    #[tokio::test]
    async fn a_systemd_socket_at_an_insecure_bind_address_is_plain() {
        let (web, _) = handed_down();
        let (plain, plain_port) = handed_down();
        let inherited = Inherited {
            activated: vec![(web, "web".into()), (plain, "plain".into())],
            ..Inherited::default()
        };
        let insecure = [tcp(&format!("127.0.0.1:{plain_port}"))];
        let l = open(&[tcp("127.0.0.1:0")], &insecure, None, &inherited).unwrap();
        assert!(l.activated);
        let plain: Vec<bool> = l.server.iter().map(|s| s.insecure).collect();
        assert_eq!(plain, [false, true]);
        assert_eq!(l.server[1].addr, Some(insecure[0].addr.clone()));
    }
}
