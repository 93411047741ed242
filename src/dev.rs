//! `--reload` (`[dev] reload`): development mode. A watcher (inotify,
//! through the `notify` crate) on the app folder and `app.pythonpath` (or
//! `dev.reload_dirs`), and on the folders of `dev.reload_extra_files`,
//! sends the supervisor a reload when a file that [`Filter`] lets through
//! changes, after [`QUIET`] without further changes (an editor's save is
//! several events; a `git checkout` is many).
//!
//! The reload is the ordinary one: the new generation takes traffic only
//! once it is in service, so a broken save keeps the last good code
//! serving, and its error is logged once (by the supervisor); the next
//! save is the retry. A change seen while a reload is still under way is
//! not lost: the watcher waits for that reload to end, then asks again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::config::{Config, DevConfig};
use crate::supervisor::{Msg, Snapshot, SupervisorHandle};

/// How long the folder must stay quiet after a change before the reload.
const QUIET: Duration = Duration::from_millis(150);
/// The longest a stream of changes delays the reload.
const MOST: Duration = Duration::from_secs(1);

/// Which changed paths count: one of the extra files, or below one of the
/// watched roots, matching an include glob, and neither matching an
/// exclude glob nor inside a virtualenv.
#[derive(Debug)]
pub struct Filter {
    roots: Vec<PathBuf>,
    include: GlobSet,
    exclude: GlobSet,
    extra_files: Vec<PathBuf>,
}

impl Filter {
    pub fn new(roots: Vec<PathBuf>, dev: &DevConfig) -> Filter {
        Filter {
            roots,
            include: set(&dev.include),
            exclude: set(&dev.exclude),
            extra_files: dev.extra_files.iter().map(|f| canonical(f)).collect(),
        }
    }

    /// Whether a change of `path` starts a new generation.
    pub fn counts(&self, path: &Path) -> bool {
        if self.extra_files.iter().any(|f| f == path) {
            return true;
        }
        let Some(root) = self
            .roots
            .iter()
            .filter(|r| path.starts_with(r))
            .max_by_key(|r| r.as_os_str().len())
        else {
            return false;
        };
        let Ok(rel) = path.strip_prefix(root) else {
            return false;
        };
        if self.exclude.is_match(rel)
            || rel
                .components()
                .any(|c| self.exclude.is_match(Path::new(c.as_os_str())))
        {
            return false;
        }
        // A virtualenv inside the app folder, whatever its name.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if !d.starts_with(root) {
                break;
            }
            if d.join("pyvenv.cfg").exists() {
                return false;
            }
            dir = d.parent();
        }
        self.include.is_match(rel)
    }
}

/// The globs, which validation has compiled once already.
fn set(globs: &[String]) -> GlobSet {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        if let Ok(glob) = Glob::new(g) {
            b.add(glob);
        }
    }
    b.build().unwrap_or_else(|_| GlobSet::empty())
}

/// `path` with its links resolved (the watcher reports real paths), its
/// folder's when the file is not there yet; else as it is.
fn canonical(path: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_owned()),
        _ => path.to_owned(),
    }
}

/// The folders `--reload` watches with all below them: `dev.reload_dirs`,
/// else the app folder and `app.pythonpath` (absolute, each once).
fn roots(cfg: &Config) -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = if cfg.dev.dirs.is_empty() {
        let app = cfg
            .app
            .chdir
            .clone()
            .unwrap_or_else(|| std::env::current_dir().unwrap_or_default());
        std::iter::once(app)
            .chain(cfg.app.pythonpath.iter().cloned())
            .collect()
    } else {
        cfg.dev.dirs.clone()
    };
    let mut roots: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        let dir = canonical(&dir);
        if !roots.contains(&dir) {
            roots.push(dir);
        }
    }
    roots
}

/// Starts watching, when `[dev] reload` is on; logs the one-line banner
/// (`url`: where the app is served). The watcher lives as long as corral.
pub fn start(
    cfg: &Config,
    url: &str,
    handle: SupervisorHandle,
    snapshots: watch::Receiver<Snapshot>,
) {
    if !cfg.dev.reload {
        return;
    }
    let roots = roots(cfg);
    let (tx, rx) = mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !matches!(event.kind, EventKind::Access(_))
        {
            let _ = tx.send(event.paths);
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::error!("--reload: cannot watch for changes: {e}");
            return;
        }
    };
    let mut watched = Vec::new();
    for root in &roots {
        match watcher.watch(root, RecursiveMode::Recursive) {
            Ok(()) => watched.push(root.display().to_string()),
            Err(e) => tracing::warn!("--reload: cannot watch {}: {e}", root.display()),
        }
    }
    let filter = Filter::new(roots, &cfg.dev);
    // Each extra file through its folder (the file itself may be replaced
    // by an editor's rename, or not exist yet).
    let mut folders: Vec<&Path> = Vec::new();
    for file in &filter.extra_files {
        let Some(dir) = file.parent() else { continue };
        if folders.contains(&dir) || filter.roots.iter().any(|r| dir.starts_with(r)) {
            continue;
        }
        folders.push(dir);
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!("--reload: cannot watch {}: {e}", dir.display());
        }
    }
    let extra = match filter.extra_files.is_empty() {
        true => String::new(),
        false => format!(
            " or to {}",
            filter
                .extra_files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    tracing::info!(
        "--reload: serving {} on {url} with {} worker(s); a change to {} in {}{extra} starts a new generation",
        cfg.app.module,
        cfg.workers.count,
        cfg.dev.include.join(", "),
        watched.join(", ")
    );
    tokio::spawn(follow(watcher, filter, rx, handle, snapshots));
}

/// Turns the watcher's events into reloads. Owns the watcher, so watching
/// stops when this task does.
async fn follow(
    _watcher: notify::RecommendedWatcher,
    filter: Filter,
    mut events: mpsc::UnboundedReceiver<Vec<PathBuf>>,
    handle: SupervisorHandle,
    mut snapshots: watch::Receiver<Snapshot>,
) {
    while let Some(paths) = events.recv().await {
        let Some(first) = paths.into_iter().find(|p| filter.counts(p)) else {
            continue;
        };
        // Let the burst of events of one save (or many) settle.
        let deadline = tokio::time::Instant::now() + MOST;
        while let Ok(Some(_)) = tokio::time::timeout(QUIET, events.recv()).await {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        // A reload under way would ignore this one: wait for its end.
        let stopping = match snapshots
            .wait_for(|s| s.reloading.is_none() || s.stopping)
            .await
        {
            Ok(s) => s.stopping,
            Err(_) => true,
        };
        if stopping {
            return;
        }
        tracing::info!("--reload: {} changed", first.display());
        if handle.send(Msg::Reload(None, None, None)).is_err() {
            return;
        }
        // Let the snapshot show the new reload before the next change
        // waits on it.
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            snapshots.wait_for(|s| s.reloading.is_some()),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RELOAD_EXCLUDE, RELOAD_INCLUDE};

    fn dev(include: &[&str], exclude: &[&str]) -> DevConfig {
        DevConfig {
            reload: true,
            include: include.iter().map(|s| (*s).to_owned()).collect(),
            exclude: exclude.iter().map(|s| (*s).to_owned()).collect(),
            dirs: Vec::new(),
            extra_files: Vec::new(),
        }
    }

    #[test]
    fn python_files_count_and_tool_folders_do_not() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let f = Filter::new(vec![r.to_owned()], &dev(RELOAD_INCLUDE, RELOAD_EXCLUDE));
        assert!(f.counts(&r.join("app.py")));
        assert!(f.counts(&r.join("pkg/sub/views.py")));
        assert!(!f.counts(&r.join("README.md")));
        assert!(!f.counts(&r.join("pkg/__pycache__/views.cpython-311.pyc")));
        assert!(!f.counts(&r.join("pkg/__pycache__/odd.py")));
        assert!(!f.counts(&r.join(".git/hooks/x.py")));
        assert!(!f.counts(&r.join("node_modules/a/b.py")));
        assert!(!f.counts(&r.join(".venv/lib/site.py")));
        assert!(!f.counts(Path::new("/elsewhere/app.py")));
        // A virtualenv under any name.
        std::fs::create_dir_all(r.join("myenv/lib")).unwrap();
        std::fs::write(r.join("myenv/pyvenv.cfg"), "home = /usr\n").unwrap();
        assert!(!f.counts(&r.join("myenv/lib/site.py")));
    }

    #[test]
    fn include_and_exclude_globs_say_what_counts() {
        let r = Path::new("/srv/app");
        let f = Filter::new(
            vec![r.to_owned()],
            &dev(&["*.py", "templates/**"], &["migrations"]),
        );
        assert!(f.counts(&r.join("templates/base.html")));
        assert!(f.counts(&r.join("templates/mail/welcome.txt")));
        assert!(!f.counts(&r.join("static/site.css")));
        assert!(!f.counts(&r.join("shop/migrations/0001_initial.py")));
        assert!(f.counts(&r.join("shop/models.py")));
    }

    #[test]
    fn an_extra_file_counts_wherever_it_is() {
        let root = tempfile::tempdir().unwrap();
        let r = std::fs::canonicalize(root.path()).unwrap();
        std::fs::create_dir_all(r.join("app/static")).unwrap();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/settings.toml"), "").unwrap();
        let mut d = dev(RELOAD_INCLUDE, &["static"]);
        d.extra_files = vec![
            r.join("etc/settings.toml"),
            r.join("app/static/version.txt"),
            r.join("etc/not-yet.ini"),
        ];
        let f = Filter::new(vec![r.join("app")], &d);
        // Outside the watched folder, not a *.py, excluded, or not there yet.
        assert!(f.counts(&r.join("etc/settings.toml")));
        assert!(f.counts(&r.join("app/static/version.txt")));
        assert!(f.counts(&r.join("etc/not-yet.ini")));
        assert!(!f.counts(&r.join("etc/other.toml")));
        assert!(!f.counts(&r.join("app/static/other.txt")));
        assert!(f.counts(&r.join("app/views.py")));
    }
}
