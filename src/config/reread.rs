//! A reload reads the config file again, as gunicorn's HUP does: what the
//! next generation of workers runs with (`[app]` and most of `[workers]`)
//! is taken from it; what lives in corral's own process (the listen
//! sockets, the front, the status server, the control socket, the log,
//! the deploy policy) keeps the value corral started with until a `USR2`
//! re-exec or a restart, and the log names each such key that changed.
//!
//! [`merge`] is pure: the config corral runs with and the one just read
//! give the config the next generation runs with and what was taken.

use std::fmt::Debug;

use super::Config;

/// What a reload takes from a config file read again.
#[derive(Debug)]
pub struct Reread {
    /// The config from here on: the new `[app]` and `[workers]` over the
    /// old one, but for who the workers run as and where their private
    /// folder is (made once, at start, owned by that user).
    pub cfg: Config,
    /// The settings taken from the file that differ from before
    /// ("app", "workers.count", ...).
    pub applied: Vec<&'static str>,
    /// The settings that differ but keep their old value until a re-exec
    /// or restart ("server", "workers.timeout", ...).
    pub kept: Vec<&'static str>,
}

/// The next generation's config: `new`'s `[app]` and `[workers]` over
/// `old`, with the instance and everything else of `old`.
pub fn merge(old: &Config, new: Config) -> Reread {
    let mut applied = Vec::new();
    let mut kept = Vec::new();
    let (o, n) = (old, &new);
    // Where a value came from (a file line, a flag) is not the value:
    // moving a key down the file changes nothing.
    if differs(&o.app, &n.app, |a| a.python_origin.clear()) {
        applied.push("app");
    }
    let w = |w: &mut super::WorkersConfig| {
        w.count_origin.clear();
        w.count = 0;
        w.identity = None;
        w.tmp_dir = None;
    };
    if differs(&o.workers, &n.workers, w) {
        applied.push("workers");
    }
    if o.workers.count != n.workers.count {
        applied.push("workers.count");
    }
    if o.workers.identity != n.workers.identity {
        kept.push("workers.user/group");
    }
    if o.workers.tmp_dir != n.workers.tmp_dir {
        kept.push("workers.tmp_dir");
    }
    let binds = |s: &mut super::ServerConfig| {
        for b in s.bind.iter_mut().chain(s.insecure_bind.iter_mut()) {
            b.origin.clear();
        }
    };
    if differs(&o.server, &n.server, binds) {
        kept.push("server");
    }
    let status = |h: &mut super::HealthConfig| {
        if let Some(b) = &mut h.status_bind {
            b.origin.clear();
        }
    };
    if differs(&o.health, &n.health, status) {
        kept.push("health");
    }
    if differs(&o.control, &n.control, |_| {}) {
        kept.push("control");
    }
    if differs(&o.deploy, &n.deploy, |_| {}) {
        kept.push("deploy");
    }
    if differs(&o.log, &n.log, |_| {}) {
        kept.push("log");
    }
    if differs(&o.hooks, &n.hooks, |_| {}) {
        kept.push("hooks");
    }
    if differs(&o.dev, &n.dev, |_| {}) {
        kept.push("dev");
    }
    let mut cfg = old.clone();
    let Config { app, workers, .. } = new;
    cfg.app = app;
    let (identity, tmp_dir) = (cfg.workers.identity.take(), cfg.workers.tmp_dir.take());
    cfg.workers = workers;
    cfg.workers.identity = identity;
    cfg.workers.tmp_dir = tmp_dir;
    Reread { cfg, applied, kept }
}

/// Whether two sections differ once `blank` has cleared what does not
/// count in each.
fn differs<T: Clone + Debug>(a: &T, b: &T, blank: impl Fn(&mut T)) -> bool {
    let (mut a, mut b) = (a.clone(), b.clone());
    blank(&mut a);
    blank(&mut b);
    format!("{a:?}") != format!("{b:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;
    use crate::config::tests::resolve_text;

    fn config(text: &str) -> Config {
        resolve_text(text, &Overrides::default()).expect("config")
    }

    #[test]
    fn the_app_and_the_workers_come_from_the_file_read_again() {
        let old = config("[app]\nmodule = \"a:app\"\n[workers]\ncount = 2\nthreads = 1\n");
        let new = config("[app]\nmodule = \"b:app\"\n[workers]\ncount = 3\nthreads = 4\n");
        let r = merge(&old, new);
        assert_eq!(r.cfg.app.module, "b:app");
        assert_eq!(r.cfg.workers.count, 3);
        assert_eq!(r.cfg.workers.threads, 4);
        assert_eq!(r.applied, ["app", "workers", "workers.count"]);
        assert!(r.kept.is_empty(), "{:?}", r.kept);
        assert_eq!(r.cfg.instance, old.instance, "the instance stays");
    }

    #[test]
    fn what_lives_in_corral_keeps_its_value_and_is_named() {
        let old = config(
            "[app]\nmodule = \"a:app\"\n[server]\nbind = [\"127.0.0.1:8000\"]\nkeepalive = \"5s\"\n",
        );
        let new = config(
            "[app]\nmodule = \"a:app\"\n[server]\nbind = [\"127.0.0.1:9000\"]\nkeepalive = \"5s\"\n",
        );
        let r = merge(&old, new);
        assert_eq!(r.kept, ["server"]);
        assert!(r.applied.is_empty(), "{:?}", r.applied);
        assert_eq!(r.cfg.server.bind[0].addr.to_string(), "127.0.0.1:8000");
    }

    #[test]
    fn keys_moved_within_the_file_change_nothing() {
        let old = config(
            "[server]\nbind = [\"127.0.0.1:8000\"]\n[app]\nmodule = \"a:app\"\n[workers]\ncount = 2\n",
        );
        let new = config(
            "# a comment\n\n[app]\nmodule = \"a:app\"\n[workers]\ncount = 2\n[server]\nbind = [\"127.0.0.1:8000\"]\n",
        );
        let r = merge(&old, new);
        assert!(r.applied.is_empty(), "{:?}", r.applied);
        assert!(r.kept.is_empty(), "{:?}", r.kept);
    }
}
