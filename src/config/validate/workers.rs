//! `[workers]`: counts, timeouts, recycling, the workers' user and limits.

use std::ffi::CString;
use std::time::Duration;

use nix::unistd::{Gid, User};

use crate::config::Overrides;
use crate::config::raw::{RawLimits, RawWorkers};
use crate::config::{
    ByteSize, Env, HumanDuration, Identity, Interface, Limits, WorkerCount, WorkersConfig,
    WorkersKeys,
};

use super::*;

impl Resolver<'_> {
    /// `env`: `$WEB_CONCURRENCY` and the CPUs for `count = "auto"`.
    pub(in crate::config) fn workers(
        &mut self,
        args: &Overrides,
        raw: RawWorkers,
        env: &Env,
        dev_reload: bool,
        interface: Option<Interface>,
    ) -> WorkersConfig {
        let web_concurrency = env
            .web_concurrency
            .as_deref()
            .map(|text| text.parse::<WorkerCount>());
        let env_at = || At::flag("WEB_CONCURRENCY (environment)");
        let (count, at) = match (args.workers, &raw.count, web_concurrency) {
            (Some(n), _, _) => (Some(n), self.flag("--workers")),
            // Development: one worker unless the command line asks for more.
            _ if dev_reload => (
                Some(WorkerCount::Count(1)),
                At::flag("--reload: 1 unless --workers is given"),
            ),
            (None, Some(n), _) => (Some(*n.get_ref()), self.in_file(n.span(), "workers.count")),
            (None, None, Some(Ok(n))) => (Some(n), env_at()),
            (None, None, Some(Err(message))) => {
                let message =
                    format!("{message}; it is used because no --workers or workers.count is given");
                self.fail(&env_at(), message);
                (None, env_at())
            }
            (None, None, None) => (
                Some(WorkerCount::Count(1)),
                At::flag("default: no --workers, workers.count or WEB_CONCURRENCY given"),
            ),
        };
        let (count, count_origin) = match count {
            Some(WorkerCount::Count(n)) => (n, at.origin()),
            Some(WorkerCount::Auto) => (
                env.usable_cpus.count,
                format!("{} = auto: {}", at.origin(), env.usable_cpus.why),
            ),
            None => (1, at.origin()),
        };
        if count == 0 {
            self.fail(
                &at,
                "must be at least 1 (it is the number of worker processes), or \"auto\"",
            );
        }
        let mut keys = self.resolve_workers_keys(&args.workers_flags, &raw);
        self.gevent(args, &raw, &mut keys, interface);
        // gunicorn's timeout is also how long a worker may take to start
        // and go silent: a `--timeout 120` that let a slow import or a long
        // C call through under gunicorn does here too, unless these are set.
        if args.workers_flags.boot_timeout.is_none() && raw.boot_timeout.is_none() {
            keys.boot_timeout = keys.boot_timeout.max(keys.timeout);
        }
        if args.workers_flags.heartbeat_timeout.is_none() && raw.heartbeat_timeout.is_none() {
            keys.heartbeat_timeout = keys.heartbeat_timeout.max(keys.timeout);
        }
        let (graceful_timeout, _) = self.pick(
            (args.graceful_timeout.as_ref(), "--graceful-timeout"),
            (raw.graceful_timeout.as_ref(), "workers.graceful_timeout"),
            // Development: an old generation should not linger.
            HumanDuration(Duration::from_secs(if dev_reload { 1 } else { 30 })),
        );
        let (backoff, backoff_at) = self.pick(
            (None, ""),
            (raw.restart_backoff.as_ref(), "workers.restart_backoff"),
            HumanDuration(Duration::from_millis(100)),
        );
        if backoff.0.is_zero() {
            self.fail(&backoff_at, "must be longer than 0s, like \"100ms\"");
        }
        let (backoff_max, max_at) = self.pick(
            (None, ""),
            (
                raw.restart_backoff_max.as_ref(),
                "workers.restart_backoff_max",
            ),
            HumanDuration(Duration::from_secs(30)),
        );
        if backoff_max.0.is_zero() {
            self.fail(&max_at, "must be longer than 0s, like \"30s\"");
        } else if backoff_max.0 < backoff.0 {
            let (initial, max) = (backoff.0, backoff_max.0);
            if raw.restart_backoff_max.is_some() {
                let message = format!(
                    "{max:?} is shorter than workers.restart_backoff ({initial:?}): \
                     make it at least as long, or shorten restart_backoff"
                );
                self.fail(&max_at, message);
            } else {
                let message = format!(
                    "{initial:?} is longer than workers.restart_backoff_max ({max:?} by default): \
                     shorten it, or set restart_backoff_max to at least {initial:?}"
                );
                self.fail(&backoff_at, message);
            }
        }
        let (max_requests, _) = self.pick(
            (args.max_requests.as_ref(), "--max-requests"),
            (raw.max_requests.as_ref(), "workers.max_requests"),
            0,
        );
        let (max_requests_jitter, at) = self.pick(
            (args.max_requests_jitter.as_ref(), "--max-requests-jitter"),
            (
                raw.max_requests_jitter.as_ref(),
                "workers.max_requests_jitter",
            ),
            0,
        );
        if max_requests.checked_add(max_requests_jitter).is_none() {
            let message = format!(
                "max_requests + max_requests_jitter is more than {}: lower them",
                u64::MAX
            );
            self.fail(&at, message);
        }
        let max_memory = match (&args.max_memory, &raw.max_memory) {
            (Some(size), _) => Some((*size, self.flag("--max-memory"))),
            (None, Some(size)) => Some((
                *size.get_ref(),
                self.in_file(size.span(), "workers.max_memory"),
            )),
            (None, None) => None,
        };
        if let Some((ByteSize(bytes), at)) = &max_memory
            && *bytes < MIN_MAX_MEMORY
        {
            let message = format!(
                "{bytes} bytes is less than a Python worker needs: give at least \"16MiB\", \
                 with a unit, like \"512MiB\""
            );
            self.fail(at, message);
        }
        let user = match (&args.user, &raw.user) {
            (Some(user), _) => Some((user.clone(), self.flag("--user"))),
            (None, Some(user)) => Some((
                user.get_ref().clone(),
                self.in_file(user.span(), "workers.user"),
            )),
            (None, None) => None,
        };
        let group = match (&args.group, &raw.group) {
            (Some(group), _) => Some((group.clone(), self.flag("--group"))),
            (None, Some(group)) => Some((
                group.get_ref().clone(),
                self.in_file(group.span(), "workers.group"),
            )),
            (None, None) => None,
        };
        let at = user.as_ref().or(group.as_ref()).map(|(_, at)| at.clone());
        let identity = self.identity(user, group);
        let identity = match (identity, at) {
            (Some(identity), Some(at)) => self.switchable(identity, &at),
            _ => None,
        };
        let limits = self.limits(&raw.limits);
        WorkersConfig {
            tmp_dir: args
                .worker_tmp_dir
                .as_deref()
                .map(|d| absolute(self.flag_dir(), d)),
            count,
            keys,
            count_origin,
            graceful_timeout: graceful_timeout.0,
            restart_backoff: backoff.0,
            restart_backoff_max: backoff_max.0,
            max_requests,
            max_requests_jitter,
            max_memory: max_memory.map(|(size, _)| size.0),
            identity,
            limits,
        }
    }

    /// `workers.gevent`, which `-k gevent` sets too: WSGI only, and it
    /// takes `concurrency` requests at a time where threads take `threads`.
    fn gevent(
        &mut self,
        args: &Overrides,
        raw: &RawWorkers,
        keys: &mut WorkersKeys,
        interface: Option<Interface>,
    ) {
        let at = if args.worker_class.is_some_and(|k| k.gevent) {
            keys.gevent = true;
            self.flag("--worker-class")
        } else if let Some(g) = raw.gevent.as_ref().filter(|g| *g.get_ref()) {
            self.in_file(g.span(), "workers.gevent")
        } else {
            return;
        };
        if interface == Some(Interface::Asgi) {
            self.fail(
                &at,
                "gevent runs WSGI apps, but the app's interface is asgi: an ASGI app has \
                 its own event loop (leave gevent out), or set interface = \"wsgi\"",
            );
        }
        if keys.threads > 1 {
            self.warnings.push(format!(
                "{}: with gevent, threads = {} is not used: a gevent worker runs up to \
                 workers.concurrency ({}) requests at once, one greenlet each",
                at.origin(),
                keys.threads,
                keys.concurrency
            ));
        }
    }

    /// `workers.user` and `workers.group` (each with where it came from),
    /// looked up; `None` when neither is given or one is unknown (reported).
    fn identity(
        &mut self,
        user: Option<(String, At)>,
        group: Option<(String, At)>,
    ) -> Option<Identity> {
        // Outer `None`: not given; inner `None`: unknown (reported).
        let user = user.map(|(name, at)| match find_user(&name) {
            Ok(user) => Some((user, at)),
            Err(message) => {
                self.fail(&at, message);
                None
            }
        });
        let group = group.map(|(name, at)| {
            find_group(&name)
                .map_err(|message| self.fail(&at, message))
                .ok()
        });
        match (user, group) {
            (None, None) | (Some(None), _) | (_, Some(None)) => None,
            (Some(Some((user, at))), group) => {
                let gid = group.flatten().map_or(user.gid, |group| group.gid);
                let groups = CString::new(user.name.as_bytes())
                    .map_err(|_| format!("the name {:?} holds a NUL byte", user.name))
                    .and_then(|name| {
                        nix::unistd::getgrouplist(&name, gid).map_err(|errno| {
                            format!("cannot read the groups of user {:?}: {errno}", user.name)
                        })
                    });
                match groups {
                    Ok(groups) => Some(Identity {
                        user: user.name,
                        uid: user.uid.as_raw(),
                        gid: gid.as_raw(),
                        groups: groups.into_iter().map(Gid::as_raw).collect(),
                    }),
                    Err(message) => {
                        self.fail(&at, message);
                        None
                    }
                }
            }
            (None, Some(Some(group))) => {
                let uid = nix::unistd::getuid();
                let user = match User::from_uid(uid) {
                    Ok(Some(user)) => user.name,
                    _ => uid.to_string(),
                };
                Some(Identity {
                    user,
                    uid: uid.as_raw(),
                    gid: group.gid.as_raw(),
                    groups: vec![group.gid.as_raw()],
                })
            }
        }
    }

    /// `identity`, if corral can run its workers as it: as root, any; else
    /// only its own user and group, which is no switch at all (`None`;
    /// setgroups(2) would fail even with its own groups). Another is an
    /// error now, not a worker that fails to start again and again.
    fn switchable(&mut self, identity: Identity, at: &At) -> Option<Identity> {
        let (euid, egid) = (nix::unistd::geteuid(), nix::unistd::getegid());
        if euid.is_root() {
            return Some(identity);
        }
        if identity.uid != euid.as_raw() || identity.gid != egid.as_raw() {
            let me = User::from_uid(euid)
                .ok()
                .flatten()
                .map_or_else(|| euid.to_string(), |u| u.name);
            self.fail(
                at,
                format!(
                    "corral runs as {me} (uid {euid}, gid {egid}), not as root, so it cannot run its workers as {} (uid {}, gid {}): start corral as root (it binds the ports, then runs the workers as that user), or leave the user and group out",
                    identity.user, identity.uid, identity.gid
                ),
            );
        }
        None
    }

    /// `[workers.limits]`, checked.
    fn limits(&mut self, raw: &RawLimits) -> Limits {
        if let Some(nofile) = &raw.nofile
            && *nofile.get_ref() < MIN_NOFILE
        {
            let at = self.in_file(nofile.span(), "workers.limits.nofile");
            let message = format!(
                "{} is too few open files for a Python worker: give at least {MIN_NOFILE}, \
                 like 65536",
                nofile.get_ref()
            );
            self.fail(&at, message);
        }
        if let Some(size) = &raw.address_space
            && size.get_ref().0 < MIN_ADDRESS_SPACE
        {
            let at = self.in_file(size.span(), "workers.limits.address_space");
            let message = format!(
                "{} bytes is less than a Python worker needs: give at least \"16MiB\", with a \
                 unit, like \"2GiB\"",
                size.get_ref().0
            );
            self.fail(&at, message);
        }
        Limits {
            nofile: raw.nofile.as_ref().map(|n| *n.get_ref()),
            address_space: raw.address_space.as_ref().map(|size| size.get_ref().0),
            core: raw.core.as_ref().map(|size| size.get_ref().0),
            umask: raw.umask.as_ref().map(|u| u.get_ref().0),
        }
    }
}
