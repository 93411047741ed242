//! `[health]`, `[control]` and `[deploy]`: readiness, the status token,
//! the control socket, revisions, rollback and hooks.

use std::path::Path;

use crate::canary::Thresholds;
use crate::config::raw::{RawControl, RawDeploy, RawHealth, StringOrArray};
use crate::config::{
    Bind, BindAddr, CanaryConfig, ControlConfig, DeployConfig, HealthConfig, HumanDuration,
    MinReady, RevisionSource, Rollback, Secret, ServerConfig, Sticky, Strategy, WorkersConfig,
};
use crate::config::{DeployFlags, Overrides};

use super::*;

impl Resolver<'_> {
    pub(in crate::config) fn health(
        &mut self,
        args: &Overrides,
        raw: RawHealth,
        server: &ServerConfig,
        workers: &WorkersConfig,
        env_token: Option<&str>,
    ) -> HealthConfig {
        let status = match (&args.status_bind, &raw.status_bind) {
            (Some(addr), _) => Some((absolute_bind(self.cwd, addr), self.flag("--status-bind"))),
            (None, Some(text)) => {
                let at = self.in_file(text.span(), "health.status_bind");
                match text.get_ref().parse::<BindAddr>() {
                    Ok(addr) => Some((absolute_bind(self.file_dir(), &addr), at)),
                    Err(message) => {
                        self.fail(&at, message);
                        None
                    }
                }
            }
            (None, None) => None,
        };
        let status_bind = status.map(|(addr, at)| {
            let mut servers = server.bind.iter().chain(&server.insecure_bind);
            if let Some(taken) = servers.find(|b| overlaps(&b.addr, &addr)) {
                let message = if taken.addr == addr {
                    format!(
                        "{addr} is also a server address (at {}): give the status server its own address, like \"127.0.0.1:9000\"",
                        taken.origin
                    )
                } else {
                    format!(
                        "{addr} overlaps the server address {} (at {}) on the same port: give the status server its own port, like \"127.0.0.1:9000\"",
                        taken.addr, taken.origin
                    )
                };
                self.fail(&at, message);
            }
            Bind {
                addr,
                origin: at.origin(),
            }
        });

        let count_key = match args.workers {
            Some(_) => "--workers",
            None => "workers.count",
        };
        let (min_ready, at) = self.pick(
            (args.min_ready.as_ref(), "--min-ready"),
            (raw.min_ready.as_ref(), "health.min_ready"),
            MinReady::Count(1),
        );
        self.check_min_workers(min_ready, &at, workers.count, count_key, "100%");

        let ready_path = match (&args.ready_path, &raw.ready_path) {
            (Some(path), _) => Some((path.clone(), self.flag("--ready-path"))),
            (None, Some(path)) => {
                let at = self.in_file(path.span(), "health.ready_path");
                Some((path.get_ref().clone(), at))
            }
            (None, None) => None,
        };
        if let Some((path, at)) = &ready_path
            && let Err(message) = check_ready_path(path)
        {
            self.fail(at, message);
        }
        let keys = self.resolve_health_keys(&args.health_flags, &raw);
        let (min_in_service, at) = self.pick(
            (None, ""),
            (raw.min_in_service.as_ref(), "health.min_in_service"),
            MinReady::Percent(50),
        );
        self.check_min_workers(min_in_service, &at, workers.count, count_key, "50%");

        let status_token = self.status_token(args, &raw, env_token);

        HealthConfig {
            status_bind,
            min_ready,
            ready_path: ready_path.map(|(path, _)| path),
            status_token,
            keys,
            min_in_service,
        }
    }

    /// The status token: `--status-token-file`, else `env_token`
    /// (`$CORRAL_STATUS_TOKEN`), else `health.status_token_file`, else
    /// `health.status_token` (the two keys exclude each other). The file is
    /// read here, once.
    fn status_token(
        &mut self,
        args: &Overrides,
        raw: &RawHealth,
        env_token: Option<&str>,
    ) -> Option<Secret> {
        if let (Some(_), Some(file)) = (&raw.status_token, &raw.status_token_file) {
            let at = self.in_file(file.span(), "health.status_token_file");
            self.fail(
                &at,
                "health.status_token is set too: keep one of the two (the file keeps the \
                 token out of this config)",
            );
            return None;
        }
        let (text, at) = if let Some(path) = &args.status_token_file {
            let at = self.flag("--status-token-file");
            (self.read_token(&absolute(self.cwd, path), &at)?, at)
        } else if let Some(token) = env_token {
            (token.to_owned(), At::flag(crate::config::STATUS_TOKEN_ENV))
        } else if let Some(file) = &raw.status_token_file {
            let at = self.in_file(file.span(), "health.status_token_file");
            let path = self.file_path(file, "health.status_token_file")?;
            (self.read_token(&path, &at)?, at)
        } else if let Some(token) = &raw.status_token {
            let at = self.in_file(token.span(), "health.status_token");
            (token.get_ref().clone(), at)
        } else {
            return None;
        };
        match check_token(&text) {
            Ok(()) => Some(Secret(text)),
            Err(message) => {
                self.fail(&at, message);
                None
            }
        }
    }

    /// A token file's content without surrounding white space.
    fn read_token(&mut self, path: &Path, at: &At) -> Option<String> {
        // A link another user put in the file's folder could make root
        // take a file of root's as the token.
        let text = crate::private_fs::read_guarded(path).and_then(|bytes| {
            String::from_utf8(bytes)
                .map_err(|_| format!("{}: it is not UTF-8 text", path.display()))
        });
        match text {
            Ok(text) => Some(text.trim().to_owned()),
            Err(e) => {
                let message = format!("{e}: write the token into that file, or give another path");
                self.fail(at, message);
                None
            }
        }
    }

    /// `control.socket`: the flag (relative to the cwd), else the file's
    /// (relative to its folder), else `default` (see
    /// [`crate::config::default_socket`]).
    pub(in crate::config) fn control(
        &mut self,
        flag: Option<&Path>,
        raw: RawControl,
        default: &Path,
    ) -> ControlConfig {
        let socket = match (flag, &raw.socket) {
            (Some(path), _) => Some((absolute(self.cwd, path), self.flag("--socket"))),
            (None, Some(path)) => {
                let at = self.in_file(path.span(), "control.socket");
                self.file_path(path, "control.socket").map(|p| (p, at))
            }
            (None, None) => Some((default.to_path_buf(), At::flag("control.socket"))),
        };
        if let Some((path, at)) = &socket
            && let Err(message) = check_socket_path(path)
        {
            self.fail(at, message);
        }
        ControlConfig {
            is_default: flag.is_none() && raw.socket.is_none(),
            socket: socket.map_or_else(|| default.to_path_buf(), |(path, _)| path),
        }
    }

    /// `[deploy]`; `default_state_dir` is the default `state_dir` (see
    /// [`crate::config::default_state_dir_in`]); `chdir_given` says whether
    /// `app.chdir` (or `--chdir`) is set, which `rollback = "symlink"` needs.
    pub(in crate::config) fn deploy(
        &mut self,
        flags: &DeployFlags,
        raw: RawDeploy,
        default_state_dir: &Path,
        chdir_given: bool,
    ) -> DeployConfig {
        let keys = self.resolve_deploy_keys(flags, &raw);
        let revision = match &raw.revision {
            None => RevisionSource::Auto,
            Some(value) => {
                let at = self.in_file(value.span(), "deploy.revision");
                match value.get_ref() {
                    StringOrArray::String(name) => match name.as_str() {
                        "auto" => RevisionSource::Auto,
                        "git" => RevisionSource::Git,
                        "symlink" => RevisionSource::Symlink,
                        "none" => RevisionSource::None,
                        other => {
                            self.fail(&at, unknown_revision(other));
                            RevisionSource::Auto
                        }
                    },
                    StringOrArray::Array(words) => self
                        .file_command(words, &at, REVISION_EXAMPLE)
                        .map_or(RevisionSource::Auto, RevisionSource::Command),
                }
            }
        };
        let state_dir = raw
            .state_dir
            .as_ref()
            .and_then(|dir| self.file_path(dir, "deploy.state_dir"))
            .unwrap_or_else(|| default_state_dir.to_path_buf());
        let rollback_hook = raw.rollback_hook.as_ref().and_then(|value| {
            let at = self.in_file(value.span(), "deploy.rollback_hook");
            match value.get_ref() {
                StringOrArray::String(text) => {
                    let message = format!(
                        "is a string: write the command as an array of strings (the program, \
                         then its arguments), like {}",
                        as_array(text, HOOK_EXAMPLE)
                    );
                    self.fail(&at, message);
                    None
                }
                StringOrArray::Array(words) => self.file_command(words, &at, HOOK_EXAMPLE),
            }
        });
        let rollback = raw.rollback.as_ref().map_or(Rollback::None, |value| {
            let at = self.in_file(value.span(), "deploy.rollback");
            let rollback = match value.get_ref().as_str() {
                "none" => Rollback::None,
                "git-reset" => Rollback::GitReset,
                "symlink" => Rollback::Symlink,
                other => {
                    self.fail(&at, unknown_rollback(other));
                    Rollback::None
                }
            };
            if rollback == Rollback::Symlink && !chdir_given {
                self.fail(
                    &at,
                    "\"symlink\" needs app.chdir: set it to the `current` symlink that points at \
                     the release, like \"/srv/app/current\" (or pass --chdir)",
                );
            }
            let revision_at = raw
                .revision
                .as_ref()
                .and_then(|v| self.file.map(|f| f.location(v.span().start)));
            if rollback == Rollback::GitReset
                && let Some(message) = git_reset_conflict(&revision, revision_at.as_deref())
            {
                self.fail(&at, message);
            }
            rollback
        });
        let strategy = raw.strategy.as_ref().map_or(Strategy::AllAtOnce, |value| {
            match value.get_ref().as_str() {
                "all-at-once" => Strategy::AllAtOnce,
                "rolling" => Strategy::Rolling,
                other => {
                    let at = self.in_file(value.span(), "deploy.strategy");
                    self.fail(&at, unknown_name("strategy", other, STRATEGIES));
                    Strategy::AllAtOnce
                }
            }
        });
        let (max_surge, at) =
            self.pick((None, ""), (raw.max_surge.as_ref(), "deploy.max_surge"), 1);
        if max_surge == 0 {
            self.fail(
                &at,
                "must be at least 1 (it is the number of extra workers a rolling reload may \
                 run), like 1",
            );
        }
        let canary = self.canary(&raw);
        let canary_sticky = raw.canary_sticky.as_ref().map_or(Sticky::None, |value| {
            match parse_sticky(value.get_ref()) {
                Some(sticky) => sticky,
                None => {
                    let at = self.in_file(value.span(), "deploy.canary_sticky");
                    self.fail(
                        &at,
                        "must be \"none\", \"client-address\", \"header:NAME\" or \
                         \"cookie:NAME\", like \"cookie:sessionid\"",
                    );
                    Sticky::None
                }
            }
        });
        DeployConfig {
            canary,
            canary_sticky,
            keys,
            revision,
            state_dir,
            rollback_hook,
            rollback,
            strategy,
            max_surge,
        }
    }

    /// `deploy.canary_*`: off with a share of 0. (`canary_sticky` is read
    /// on its own: `corral reload --canary` uses it too.)
    fn canary(&mut self, raw: &RawDeploy) -> Option<CanaryConfig> {
        const DEFAULT: Thresholds = Thresholds::DEFAULT;
        let (share, at) = self.pick(
            (None, ""),
            (raw.canary_share.as_ref(), "deploy.canary_share"),
            0,
        );
        if share > 50 {
            self.fail(
                &at,
                "must be a percentage from 1 to 50 (the new generation's share of the \
                 requests), like 10, or 0 for no canary",
            );
        }
        let (duration, at) = self.pick(
            (None, ""),
            (raw.canary_duration.as_ref(), "deploy.canary_duration"),
            HumanDuration(DEFAULT.duration),
        );
        if duration.0.is_zero() {
            self.fail(&at, "must be longer than 0s, like \"60s\"");
        }
        let (min_requests, at) = self.pick(
            (None, ""),
            (
                raw.canary_min_requests.as_ref(),
                "deploy.canary_min_requests",
            ),
            DEFAULT.min_requests,
        );
        if min_requests == 0 {
            self.fail(&at, "must be at least 1, like 100");
        }
        let (confidence, at) = self.pick(
            (None, ""),
            (raw.canary_confidence.as_ref(), "deploy.canary_confidence"),
            DEFAULT.confidence,
        );
        if !(confidence > 0.5 && confidence < 1.0) {
            self.fail(&at, "must be between 0.5 and 1 (exclusive), like 0.999");
        }
        let (latency_ratio, at) = self.pick(
            (None, ""),
            (
                raw.canary_latency_ratio.as_ref(),
                "deploy.canary_latency_ratio",
            ),
            DEFAULT.latency_ratio,
        );
        if !(latency_ratio >= 1.0 && latency_ratio.is_finite()) {
            self.fail(&at, "must be at least 1, like 2.0");
        }
        let (floor, _) = self.pick(
            (None, ""),
            (
                raw.canary_latency_floor.as_ref(),
                "deploy.canary_latency_floor",
            ),
            HumanDuration(DEFAULT.latency_floor),
        );
        (share > 0).then_some(CanaryConfig {
            share,
            thresholds: Thresholds {
                duration: duration.0,
                min_requests,
                confidence,
                latency_ratio,
                latency_floor: floor.0,
            },
        })
    }

    /// A command from the file (`deploy.revision`, `deploy.rollback_hook`),
    /// checked: not empty, a program that is not empty, no NUL byte; a
    /// program path with '/' made absolute against the file's folder (a
    /// bare name stays for the PATH lookup). `example` is a command like
    /// `["cat", "REVISION"]` for the messages.
    pub(super) fn file_command(
        &mut self,
        words: &[String],
        at: &At,
        example: &str,
    ) -> Option<Vec<String>> {
        let Some((program, args)) = words.split_first() else {
            let message = format!("is empty: give a command like {example}, or leave the key out");
            self.fail(at, message);
            return None;
        };
        if program.is_empty() {
            let message =
                format!("the program (the first string) is empty: give a command like {example}");
            self.fail(at, message);
            return None;
        }
        if let Some(word) = words.iter().find(|w| w.contains('\0')) {
            let message = format!("\"{}\" holds a NUL byte", word.escape_debug());
            self.fail(at, message);
            return None;
        }
        let program = match command_path(self.file_dir(), Path::new(program))
            .into_os_string()
            .into_string()
        {
            Ok(program) => program,
            Err(path) => {
                let message = format!(
                    "the program \"{program}\" is relative to this file's folder {}, which is \
                     not valid UTF-8: give an absolute path",
                    Path::new(&path).display()
                );
                self.fail(at, message);
                return None;
            }
        };
        let argv: Vec<String> = [program].into_iter().chain(args.iter().cloned()).collect();
        // Checked where the command will run: the app's folder.
        let run_dir = self.flag_dir().to_path_buf();
        if let Some(why) = crate::private_fs::untrusted_command(&argv, Some(&run_dir)) {
            self.fail(at, why);
            return None;
        }
        Some(argv)
    }

    /// Checks a number of workers in service (`min_ready`,
    /// `min_in_service`): at least 1 (or 1%), a count at most `count`
    /// (`count_key` names where that came from; `percent` is the percentage
    /// the message suggests instead). `count` 0 is reported elsewhere.
    fn check_min_workers(
        &mut self,
        value: MinReady,
        at: &At,
        count: usize,
        count_key: &str,
        percent: &str,
    ) {
        match value {
            MinReady::Count(0) => self.fail(
                at,
                "must be at least 1: use a count like 2 or a percentage like \"50%\"",
            ),
            MinReady::Percent(0) => self.fail(
                at,
                "must be at least 1%: use a percentage like \"50%\" or a count like 2",
            ),
            MinReady::Count(n) if count > 0 && n > count => {
                let message = format!(
                    "needs {n} workers in service but {count_key} is {count}: lower it to {count} or less, or use a percentage like \"{percent}\""
                );
                self.fail(at, message);
            }
            _ => {}
        }
    }
}

/// `deploy.canary_sticky`: None when it is none of the forms.
fn parse_sticky(text: &str) -> Option<Sticky> {
    let valid_name =
        |name: &str| !name.is_empty() && http::HeaderName::from_bytes(name.as_bytes()).is_ok();
    match text.split_once(':') {
        None if text == "none" => Some(Sticky::None),
        None if text == "client-address" => Some(Sticky::ClientAddress),
        Some(("header", name)) if valid_name(name) => {
            Some(Sticky::Header(name.to_ascii_lowercase()))
        }
        Some(("cookie", name)) if valid_name(name) => Some(Sticky::Cookie(name.to_string())),
        _ => None,
    }
}
