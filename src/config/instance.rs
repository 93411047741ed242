//! Which corral instance this is, and the defaults that belong to one
//! instance: its control socket and its state folder. Several corrals run
//! side by side on one host with no config, as several gunicorn services
//! do, and never see each other's sockets or last known good revisions.
//!
//! An instance is named after what identifies it: its config file (the
//! absolute path) with the app folder when one is given (`--chdir`,
//! `app.chdir`), the app and the first bind address; without a file, the
//! app folder (else the current folder), the app and the first bind
//! address. So two services that share one config file and differ in
//! their flags (`-c /etc/gunicorn/common.conf.py --chdir /srv/a -b :8001`)
//! are two instances, as they are two gunicorns. The name is a readable
//! part (the config file's name up to its first '.', or its folder when
//! that name says nothing of the app, as `corral.toml` and
//! `gunicorn.conf.py`; else the app) and a hash of the whole, e.g.
//! `shop-5c1e0a3f` for `/etc/corral/shop.toml` or `/srv/shop/corral.toml`,
//! or `main-91d2b7e0` for `corral main:app -b 127.0.0.1:8000` run in
//! `/srv/api`. The hash is
//! FNV-1a (64 bits, the first 32 shown): stable across versions, so the
//! same command finds the same instance after an upgrade. A client command
//! given only the config file (`corral reload -c FILE`) resolves it as the
//! server would; when that names no running instance (the server had flags
//! of its own), it asks the running ones which runs with that file.
//!
//! The defaults, when `[control] socket` and `[deploy] state_dir` are not
//! set: systemd's `RuntimeDirectory=`/`StateDirectory=` are already one
//! unit's own and are used as they are; the shared places get one folder
//! per instance:
//!
//! | | control socket | state |
//! |---|---|---|
//! | systemd unit | `$RUNTIME_DIRECTORY/corral.sock` | `$STATE_DIRECTORY` |
//! | root | `/run/corral/NAME/corral.sock` | `/var/lib/corral/NAME` |
//! | a user | `$XDG_RUNTIME_DIR/corral/NAME/corral.sock`, else `/tmp/corral-UID/NAME/corral.sock` | `$XDG_STATE_HOME/corral/NAME`, else `~/.local/state/corral/NAME` (a `$HOME` that is a folder of the user's own), else `/tmp/corral-UID-state/NAME` |

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::BindAddr;

/// The file name of a control socket.
pub const SOCKET_NAME: &str = "corral.sock";

/// Where a default lives: given as is, or one folder per instance under a
/// shared root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Fixed(PathBuf),
    PerInstance(PathBuf),
}

impl Place {
    /// The path for `instance`: `root/instance/leaf` (or `root/instance`).
    /// A folder of the same instance under an older readable part (the
    /// same hash: `corral-5c1e0a3f` for `/etc/corral/shop.toml` before
    /// names came from the file's own name) is the instance's while it is
    /// there: a corral started before an upgrade is found by the new
    /// client, and keeps its state folder.
    pub fn for_instance(&self, instance: &str, leaf: Option<&str>) -> PathBuf {
        match self {
            Place::Fixed(path) => path.clone(),
            Place::PerInstance(root) => {
                let dir = earlier_name(root, instance).unwrap_or_else(|| root.join(instance));
                match leaf {
                    Some(leaf) => dir.join(leaf),
                    None => dir,
                }
            }
        }
    }
}

/// The folder in `root` of `instance` under another readable part, when
/// `root/instance` is not there and one is.
fn earlier_name(root: &Path, instance: &str) -> Option<PathBuf> {
    if root.join(instance).exists() {
        return None;
    }
    let (_, hash) = instance.rsplit_once('-')?;
    let suffix = format!("-{hash}");
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(&suffix))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    found.sort();
    found.into_iter().next()
}

/// The instance's name from its config file, app folder (`dir`: with a
/// config file, empty unless a folder is given), app (`module`, as the log
/// names it) and first bind address, readable by the config file's folder,
/// else by the app's `label` ([`crate::config::AppConfig::label`]).
pub fn name(
    config: Option<&Path>,
    dir: &Path,
    module: &str,
    label: &str,
    bind: Option<&BindAddr>,
) -> String {
    let bind = match bind {
        Some(BindAddr::Tcp(a)) => a.to_string(),
        Some(BindAddr::Unix(p)) => format!("unix:{}", p.display()),
        None => String::new(),
    };
    let mut key = Vec::new();
    if let Some(file) = config {
        key.extend_from_slice(file.as_os_str().as_bytes());
        key.push(0);
    }
    key.extend_from_slice(dir.as_os_str().as_bytes());
    for part in [module.as_bytes(), bind.as_bytes()] {
        key.push(0);
        key.extend_from_slice(part);
    }
    let readable = match config {
        Some(file) => readable_of(file),
        None => label.to_string(),
    };
    format!("{}-{:08x}", slug(&readable), fnv1a(&key) >> 32)
}

/// The readable part of a config file's instance name: the file's own
/// name up to its first '.' (`/etc/corral/shop.toml`: `shop`, so that
/// apps whose files share one folder are told apart in `ps` and `corral
/// status`), unless that says nothing of the app (`corral.toml`,
/// `gunicorn.conf.py`, `config.toml`): then the folder it is in
/// (`/srv/shop/corral.toml`: `shop`).
fn readable_of(file: &Path) -> String {
    const GENERIC: [&str; 6] = ["corral", "gunicorn", "config", "conf", "settings", ""];
    let stem = file
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let stem = stem.split('.').next().unwrap_or_default();
    if !GENERIC.contains(&stem.to_ascii_lowercase().as_str()) {
        return stem.to_string();
    }
    file.parent()
        .and_then(Path::file_name)
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_else(|| "corral".into())
}

/// Letters, digits, '.', '_' and '-' of `text` (others become '-'), at
/// most 32 of them; "corral" when nothing is left.
fn slug(text: &str) -> String {
    let s: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(32)
        .collect();
    let s = s.trim_matches(|c| c == '-' || c == '.').to_string();
    if s.is_empty() { "corral".into() } else { s }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The first folder of a systemd `*_DIRECTORY` variable (':'-separated).
fn first_dir(dirs: &OsStr) -> &OsStr {
    OsStr::from_bytes(
        dirs.as_bytes()
            .split(|&b| b == b':')
            .next()
            .unwrap_or_default(),
    )
}

fn absolute(value: Option<&OsStr>) -> Option<PathBuf> {
    value
        .map(Path::new)
        .filter(|dir| dir.is_absolute())
        .map(Path::to_path_buf)
}

/// The default control socket, from this process's environment and user.
pub fn default_socket() -> Place {
    default_socket_in(
        std::env::var_os("RUNTIME_DIRECTORY").as_deref(),
        std::env::var_os("XDG_RUNTIME_DIR").as_deref(),
        nix::unistd::getuid().as_raw(),
    )
}

/// The default control socket (see the table in the module docs). Empty
/// or relative values count as unset, as the XDG base directory spec asks.
pub(super) fn default_socket_in(
    runtime_directory: Option<&OsStr>,
    xdg_runtime_dir: Option<&OsStr>,
    uid: u32,
) -> Place {
    if let Some(dir) = absolute(runtime_directory.map(first_dir)) {
        return Place::Fixed(dir.join(SOCKET_NAME));
    }
    Place::PerInstance(match (absolute(xdg_runtime_dir), uid) {
        (Some(dir), _) => dir.join("corral"),
        (None, 0) => PathBuf::from("/run/corral"),
        (None, uid) => PathBuf::from(format!("/tmp/corral-{uid}")),
    })
}

/// The runtime folder systemd made for this process's unit
/// (`RuntimeDirectory=`, `$RUNTIME_DIRECTORY`), where the default control
/// socket is.
pub fn unit_runtime_directory() -> Option<PathBuf> {
    absolute(
        std::env::var_os("RUNTIME_DIRECTORY")
            .as_deref()
            .map(first_dir),
    )
}

/// The default `deploy.state_dir`, from this process's environment and
/// user.
pub fn default_state_dir() -> Place {
    let uid = nix::unistd::getuid().as_raw();
    let home = std::env::var_os("HOME");
    default_state_dir_in(
        std::env::var_os("STATE_DIRECTORY").as_deref(),
        std::env::var_os("XDG_STATE_HOME").as_deref(),
        home.as_deref()
            .filter(|home| own_folder(Path::new(home), uid)),
        uid,
    )
}

/// Whether `dir` is a folder that belongs to `uid`: a home corral may
/// keep its state in. A container's user often has none: `nobody`'s is
/// `/nonexistent`, and `docker run --user 1000` with no such user in the
/// image's passwd sets `HOME=/`, which is root's.
fn own_folder(dir: &Path, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == uid)
}

/// The default `deploy.state_dir` (see the table in the module docs).
/// Empty or relative values count as unset.
pub(super) fn default_state_dir_in(
    state_directory: Option<&OsStr>,
    xdg_state_home: Option<&OsStr>,
    home: Option<&OsStr>,
    uid: u32,
) -> Place {
    if let Some(dir) = absolute(state_directory.map(first_dir)) {
        return Place::Fixed(dir);
    }
    if uid == 0 {
        return Place::PerInstance(PathBuf::from("/var/lib/corral"));
    }
    Place::PerInstance(
        absolute(xdg_state_home)
            .map(|dir| dir.join("corral"))
            .or_else(|| absolute(home).map(|home| home.join(".local/state/corral")))
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/corral-{uid}-state"))),
    )
}

/// A socket file no process listens on (its corral was killed): the
/// kernel refuses a connection at once.
fn stale(socket: &Path) -> bool {
    matches!(
        std::os::unix::net::UnixStream::connect(socket),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// The control sockets of the instances under the default root (for the
/// client commands given neither a config file nor `--socket`, or a file
/// whose own socket has no corral behind it): the root and, sorted, every
/// `NAME/corral.sock` in it that a corral listens on (a killed corral's
/// socket file is left out). Beside a root named `corral` (`/run/corral`,
/// `$XDG_RUNTIME_DIR/corral`) are the runtime folders systemd makes for
/// units (`RuntimeDirectory=NAME`: `/run/NAME`), where a unit's corral
/// puts its socket: those count too, so that `sudo corral status -c
/// FILE` finds the corral of a unit run as another user. (Not beside
/// `/tmp/corral-UID`: the folders in `/tmp` are anyone's; nor a folder
/// there that group or others may write to, as the sticky `/run/lock`.)
pub fn running_sockets() -> (Place, Vec<PathBuf>) {
    let place = default_socket();
    let found = match &place {
        Place::Fixed(path) => vec![path.clone()],
        Place::PerInstance(root) => {
            let mut found = sockets_in(root);
            if let Some(units) = root
                .parent()
                .filter(|_| root.file_name() == Some(OsStr::new("corral")))
            {
                // Only folders that group and others may not write to: a
                // sticky one (/run/lock) is anyone's to put a socket in.
                found.extend(sockets_in(units).into_iter().filter(|socket| {
                    socket.parent().is_some_and(|folder| {
                        std::fs::symlink_metadata(folder).is_ok_and(|m| {
                            use std::os::unix::fs::MetadataExt;
                            m.is_dir() && m.mode() & 0o022 == 0
                        })
                    })
                }));
            }
            found.sort();
            found.dedup();
            found
        }
    };
    (place, found)
}

/// The `NAME/corral.sock` in `root` that a corral listens on.
fn sockets_in(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(SOCKET_NAME))
        .filter(|p| crate::private_fs::is_socket(p) && !stale(p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_readable_stable_and_distinct() {
        let tcp = |s: &str| BindAddr::Tcp(s.parse().unwrap());
        let bind = tcp("127.0.0.1:8000");
        let shop = |dir: &str, module: &str, bind: &BindAddr| {
            name(
                Some(Path::new("/srv/shop/corral.toml")),
                Path::new(dir),
                module,
                "label",
                Some(bind),
            )
        };
        let a = shop("", "x:app", &bind);
        assert!(
            a.starts_with("shop-") && a.len() == "shop-".len() + 8,
            "{a}"
        );
        assert_eq!(a, shop("", "x:app", &bind), "the same file and flags");
        // One file shared by two services that differ in their flags
        // (gunicorn's common.conf.py): two instances.
        for other in [
            shop("/srv/a", "x:app", &bind),
            shop("", "y:app", &bind),
            shop("", "x:app", &tcp("127.0.0.1:8001")),
        ] {
            assert_ne!(a, other);
        }
        assert_ne!(
            a,
            name(
                Some(Path::new("/srv/blog/corral.toml")),
                Path::new(""),
                "x:app",
                "label",
                Some(&bind),
            )
        );
        // Several apps' files in one folder (/etc/corral/shop.toml,
        // /etc/corral/blog.toml, the template unit's layout): named after
        // the file, not the folder they share; a file whose name says
        // nothing of the app, after its folder.
        let of = |file: &str| {
            let n = name(Some(Path::new(file)), Path::new(""), "x:app", "x", None);
            n[..n.rfind('-').unwrap()].to_string()
        };
        assert_eq!(of("/etc/corral/shop.toml"), "shop");
        assert_eq!(of("/etc/corral/blog.toml"), "blog");
        assert_eq!(of("/etc/gunicorn/blog.conf.py"), "blog");
        assert_eq!(of("/srv/shop/corral.toml"), "shop");
        assert_eq!(of("/srv/shop/gunicorn.conf.py"), "shop");
        assert_eq!(of("/srv/shop/config.toml"), "shop");
        assert_eq!(of("/srv/shop/.corral.toml"), "shop");
        // A folder of the same instance under its earlier name is found.
        let root = tempfile::tempdir().unwrap();
        let place = Place::PerInstance(root.path().to_path_buf());
        let shop = name(
            Some(Path::new("/etc/corral/shop.toml")),
            Path::new(""),
            "",
            "",
            None,
        );
        let hash = &shop[shop.rfind('-').unwrap()..];
        assert_eq!(place.for_instance(&shop, None), root.path().join(&shop));
        std::fs::create_dir(root.path().join(format!("corral{hash}"))).unwrap();
        std::fs::create_dir(root.path().join("blog-0badcafe")).unwrap();
        assert_eq!(
            place.for_instance(&shop, Some("corral.sock")),
            root.path().join(format!("corral{hash}/corral.sock"))
        );
        std::fs::create_dir(root.path().join(&shop)).unwrap();
        assert_eq!(place.for_instance(&shop, None), root.path().join(&shop));
        // The hash is the file's path, as before: the same file, the same
        // instance after an upgrade.
        assert!(
            name(
                Some(Path::new("/etc/corral/shop.toml")),
                Path::new(""),
                "",
                "",
                None
            )
            .ends_with(&format!(
                "-{:08x}",
                fnv1a(b"/etc/corral/shop.toml\0\0\0") >> 32
            ))
        );
        let tcp = |s: &str| BindAddr::Tcp(s.parse().unwrap());
        let api = name(
            None,
            Path::new("/srv/api"),
            "main:app",
            "main",
            Some(&tcp("127.0.0.1:8000")),
        );
        assert!(api.starts_with("main-"), "{api}");
        // Another port, folder or app is another instance.
        for other in [
            name(
                None,
                Path::new("/srv/api"),
                "main:app",
                "main",
                Some(&tcp("127.0.0.1:8001")),
            ),
            name(
                None,
                Path::new("/srv/web"),
                "main:app",
                "main",
                Some(&tcp("127.0.0.1:8000")),
            ),
            name(
                None,
                Path::new("/srv/api"),
                "main:api",
                "main",
                Some(&tcp("127.0.0.1:8000")),
            ),
        ] {
            assert_ne!(api, other);
        }
        // Stable across versions: the same command finds the same instance.
        // The published FNV-1a test vectors.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(slug("../we ird/"), "we-ird");
        assert_eq!(slug("///"), "corral");
    }

    #[test]
    fn default_socket_order() {
        let os = |s: &'static str| Some(OsStr::new(s));
        let fixed = |s: &str| Place::Fixed(PathBuf::from(s));
        let per = |s: &str| Place::PerInstance(PathBuf::from(s));
        assert_eq!(
            default_socket_in(os("/run/app"), os("/run/user/1000"), 1000),
            fixed("/run/app/corral.sock")
        );
        // systemd joins several RuntimeDirectory= folders with ':'.
        assert_eq!(
            default_socket_in(os("/run/app:/run/other"), None, 0),
            fixed("/run/app/corral.sock")
        );
        assert_eq!(
            default_socket_in(None, os("/run/user/1000"), 1000),
            per("/run/user/1000/corral")
        );
        assert_eq!(default_socket_in(None, None, 0), per("/run/corral"));
        assert_eq!(default_socket_in(None, None, 1000), per("/tmp/corral-1000"));
        // Empty or relative values count as unset.
        assert_eq!(
            default_socket_in(os(""), os("run/user"), 42),
            per("/tmp/corral-42")
        );
        assert_eq!(
            default_socket_in(os("relative"), os("/run/user/42"), 42),
            per("/run/user/42/corral")
        );
        assert_eq!(
            per("/run/corral").for_instance("shop-0badf00d", Some(SOCKET_NAME)),
            PathBuf::from("/run/corral/shop-0badf00d/corral.sock")
        );
        assert_eq!(
            fixed("/run/app/corral.sock").for_instance("shop-0badf00d", Some(SOCKET_NAME)),
            PathBuf::from("/run/app/corral.sock")
        );
    }

    #[test]
    fn default_state_dir_order() {
        let os = |s: &'static str| Some(OsStr::new(s));
        let fixed = |s: &str| Place::Fixed(PathBuf::from(s));
        let per = |s: &str| Place::PerInstance(PathBuf::from(s));
        let home = os("/home/u");
        assert_eq!(
            default_state_dir_in(os("/var/lib/app"), os("/home/u/.state"), home, 1000),
            fixed("/var/lib/app")
        );
        // systemd joins several StateDirectory= folders with ':'; it wins
        // over root's default too.
        assert_eq!(
            default_state_dir_in(os("/var/lib/app:/var/lib/other"), None, None, 0),
            fixed("/var/lib/app")
        );
        // Root without STATE_DIRECTORY: /var/lib/corral/NAME, even with
        // XDG_STATE_HOME or HOME set.
        assert_eq!(
            default_state_dir_in(None, os("/root/.state"), os("/root"), 0),
            per("/var/lib/corral")
        );
        assert_eq!(
            default_state_dir_in(None, os("/home/u/.state"), home, 1000),
            per("/home/u/.state/corral")
        );
        assert_eq!(
            default_state_dir_in(None, None, home, 1000),
            per("/home/u/.local/state/corral")
        );
        assert_eq!(
            default_state_dir_in(None, None, None, 1000),
            per("/tmp/corral-1000-state")
        );
        // Empty or relative values count as unset.
        assert_eq!(
            default_state_dir_in(os(""), os("state"), os(""), 42),
            per("/tmp/corral-42-state")
        );
    }

    #[test]
    fn a_home_counts_only_when_it_is_the_users_own_folder() {
        let me = nix::unistd::getuid().as_raw();
        let home = tempfile::tempdir().unwrap();
        assert!(own_folder(home.path(), me));
        // nobody's /nonexistent, and root's / as `docker run --user 1000`
        // sets HOME for a uid the image's passwd does not know.
        assert!(!own_folder(Path::new("/nonexistent-home-of-nobody"), me));
        assert!(!own_folder(Path::new("/"), me + 1));
        let file = home.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(!own_folder(&file, me));
    }
}
