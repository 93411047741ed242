//! corral: a pre-fork supervisor for Python web apps (a gunicorn replacement).
//!
//! `main` parses the command line, loads the configuration, binds the listen
//! sockets, writes the embedded worker script into a private runtime
//! directory and hands over to the [`supervisor`], which owns the workers,
//! while the [`front`] serves HTTP and the [`router`] picks workers.

mod access_log;
mod activation;
mod canary;
mod check;
mod cli;
mod config;
mod control;
mod cpus;
mod deploy;
mod dev;
mod front;
mod history;
mod hooks;
mod import_gunicorn;
mod limits;
mod log_json;
mod logfile;
mod memory;
mod metrics;
mod private_fs;
mod reaper;
mod reexec;
mod router;
mod runtime_dir;
mod shards;
mod signals;
mod statsd;
mod status;
mod status_cmd;
mod stdio;
mod supervisor;
mod syslog;
mod systemd;
mod tls;
mod worker;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

/// Exit code for a configuration or start-up mistake.
pub(crate) const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    // Before anything changes the working folder: where a USR2 finds the
    // new binary.
    reexec::remember_exe();
    // Before any thread: the sockets this process inherited and systemd's
    // notify socket, out of the environment and into values passed down.
    let inherited = front::listeners::Inherited::take();
    let systemd = systemd::NotifySocket::take();
    let (args, check) = match cli::parse(import_gunicorn::refused_flag).into_action() {
        cli::Action::Run(args) => (args, false),
        cli::Action::Check(args) => (args, true),
        cli::Action::Status(args) => return ExitCode::from(status_cmd::run(&args)),
        cli::Action::Reload(args) => {
            return ExitCode::from(with_socket(&args.control, |s| {
                control::reload_cmd(
                    s,
                    args.wait,
                    args.timeout.map(|t| t.0),
                    args.canary
                        .map(|share| (share, args.canary_for.map(|f| f.0))),
                )
            }));
        }
        cli::Action::Scale(args) => {
            return ExitCode::from(with_socket(&args.control, |s| {
                control::simple_cmd(
                    s,
                    control::ControlRequest::Scale { count: args.count },
                    &format!("scaling to {} workers", args.count),
                )
            }));
        }
        cli::Action::Stop(args) => {
            return ExitCode::from(with_socket(&args, |s| {
                control::simple_cmd(s, control::ControlRequest::Stop, "stopping")
            }));
        }
        cli::Action::Promote(args) => {
            return ExitCode::from(with_socket(&args, |s| {
                control::simple_cmd(s, control::ControlRequest::Promote, "canary promoted")
            }));
        }
        cli::Action::Abort(args) => {
            return ExitCode::from(with_socket(&args, |s| {
                control::simple_cmd(s, control::ControlRequest::Abort, "canary aborted")
            }));
        }
        cli::Action::ImportGunicorn(args) => return ExitCode::from(import_gunicorn::run(&args)),
    };
    let (cfg, gunicorn) = match read_config(&args) {
        Ok((cfg, gunicorn)) => (Arc::new(cfg), gunicorn),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    worker::output::set_raw(cfg.log.app_output == config::AppOutput::Raw);
    worker::output::set_json(cfg.log.format == config::LogFormat::Json);
    private_fs::set_worker_groups(
        cfg.workers
            .identity
            .as_ref()
            .map(|i| i.groups.iter().copied().chain([i.gid]).collect())
            .unwrap_or_default(),
    );
    // Serving: no thread but these waits on whoever reads the log.
    let _stdio = (!check).then(stdio::start);
    let tag = syslog::default_prefix(cfg.app.proc_name.as_deref(), &cfg.instance);
    if let Err(e) = init_logging(&cfg.log, &tag) {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    if let Some((conf, c)) = &gunicorn {
        tracing::info!(
            "read {0}'s {1} as {0} would; `{2}` converts it for good",
            conf.server(),
            conf.path.display(),
            import_gunicorn::convert_command(&conf.location(), &conf.path)
        );
        for (hooks, where_) in [
            (
                &c.hooks,
                "in each worker, as under gunicorn: the file runs once more in each worker, before the app's import",
            ),
            (
                &c.arbiter_hooks,
                "in a Python process of corral's beside the workers, as in gunicorn's arbiter: the file runs once more there",
            ),
        ] {
            if !hooks.is_empty() {
                let verb = if hooks.len() == 1 { "runs" } else { "run" };
                tracing::info!(
                    "{}'s {} {verb} {where_}",
                    conf.path.display(),
                    hooks.join(", ")
                );
            }
        }
        for note in &c.notes {
            tracing::warn!("{}: not carried over: {note}", conf.path.display());
        }
    }
    for warning in &cfg.warnings {
        tracing::warn!("{warning}");
    }
    if cfg.server.forwarded_allow_ips == config::ForwardedAllow::Any {
        tracing::warn!(
            "forwarded_allow_ips is \"*\": the client address the app and the access log see is the leftmost X-Forwarded-For entry, which any client may write (as under uvicorn; gunicorn takes only the scheme); every client is also taken for a proxy in front, with at least 75 s between its requests and for a request head; behind a proxy that appends to X-Forwarded-For, list its networks instead (\"10.0.0.0/8\") to get the address it saw"
        );
    }
    if let Ok(text) = std::env::var("GUNICORN_CMD_ARGS") {
        tracing::info!(
            "GUNICORN_CMD_ARGS read as gunicorn reads it (the command line's flags win): {text}"
        );
    }
    for (flag, from, why) in &args.peer_no_ops {
        tracing::info!(
            "{flag} accepted ({}'s) and changes nothing: {why}",
            from.replace(", ", "'s, ")
        );
    }
    for line in &args.peer_env {
        tracing::info!("{line}");
    }
    for var in &args.unknown_env {
        tracing::warn!(
            "{var} is set but names no flag of corral's, so it is not read (corral --help lists each flag's CORRAL_ variable)"
        );
    }
    for (flag, from, what) in &args.peer_meanings {
        tracing::info!("{flag} ({from}'s) taken as {what}");
    }
    if let Some(dir) = &args.worker_tmp_dir {
        tracing::info!(
            "--worker-tmp-dir {}: the worker script's private folder goes there (corral's workers send heartbeats over their channel, not through a file)",
            dir.display()
        );
    }
    if !check {
        let nofile = worker::process::raise_nofile();
        if (nofile as usize) < cfg.server.max_connections + 64 {
            tracing::warn!(
                "the open-file limit ({nofile}) is below server.max_connections ({}): connections beyond it fail; raise LimitNOFILE (systemd) or ulimit -n",
                cfg.server.max_connections
            );
        }
    }
    // One thread: front shard 0 beside the supervisor; the other shards
    // get runtimes of their own (`shards`).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(1)
        .thread_name("corral")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = if check {
        runtime.block_on(check::run(cfg))
    } else {
        // Each reload reads the file again, with the same flags.
        // Not once corral has given up root: the file, and the files it
        // names (a status token's), are often root's alone.
        let reread: Option<supervisor::ReadConfig> =
            (cfg.source.is_some() && !cfg.server.drop_privileges).then(|| {
                let args = args.clone();
                Arc::new(move || read_config(&args).map(|(cfg, _)| cfg)) as supervisor::ReadConfig
            });
        runtime.block_on(run(cfg, reread, inherited, systemd))
    };
    // Workers are reaped or killed by now; do not wait for idle connections.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    ExitCode::from(code)
}

/// The configuration as `corral run` reads it: the TOML file, or a
/// gunicorn.conf.py run and converted as `corral import-gunicorn` would,
/// read in place of a corral.toml. Read at start and again at each reload.
/// Err: what to print after "error: " (a converted file's error is
/// followed by the converted text).
fn read_config(
    args: &config::Overrides,
) -> Result<
    (
        config::Config,
        Option<(config::GunicornConf, import_gunicorn::Conversion)>,
    ),
    String,
> {
    let gunicorn = match config::gunicorn_file(args)? {
        None => None,
        Some(conf) => {
            config::trusted(&conf.path).map_err(|e| e.to_string())?;
            let python = args
                .python
                .clone()
                .unwrap_or_else(config::default_interpreter);
            let c = import_gunicorn::convert_file(&conf, args.app.as_deref(), &python)?;
            // As a mistake in a corral.toml: gunicorn refuses these too.
            if !c.invalid.is_empty() {
                return Err(c.invalid.join("\nerror: "));
            }
            // Refused as its flag is: carrying on would leave whoever
            // started corral waiting for something it never does.
            if !c.refused.is_empty() {
                return Err(format!("{}: {}", conf.path.display(), c.refused.join("; ")));
            }
            Some((conf, c))
        }
    };
    let converted = gunicorn
        .as_ref()
        .map(|(conf, c)| (conf.path.as_path(), c.toml.as_str(), c.lines.as_slice()));
    match config::load(args, converted) {
        Ok(cfg) => {
            root_workers_files(&cfg)?;
            Ok((cfg, gunicorn))
        }
        Err(e) => Err(match &gunicorn {
            Some((conf, c)) => format!("{e}\n{} converted reads:\n{}", conf.path.display(), c.toml),
            None => e.to_string(),
        }),
    }
}

/// Workers that run as root run or load these files: the gunicorn hooks'
/// file, the env file (its `PYTHONPATH` or `PYTHONSTARTUP` reach the app's
/// subprocesses), the Python logging configuration (it names classes to
/// build) and a Paste ini. Then, as for a gunicorn.conf.py corral runs
/// itself, each must be one that no one else may change, nor its folder:
/// at start and at each reload, which reads them anew.
fn root_workers_files(cfg: &config::Config) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root()
        || cfg.workers.identity.as_ref().is_some_and(|i| i.uid != 0)
    {
        return Ok(());
    }
    let logging = cfg.app.logging.as_ref().and_then(|l| match l {
        config::PythonLogging::Ini(p)
        | config::PythonLogging::Json(p)
        | config::PythonLogging::Uvicorn(p) => Some(p),
        config::PythonLogging::Dict(_) => None,
    });
    let files = [
        (
            "app.gunicorn_hooks",
            cfg.app.gunicorn_hooks.as_ref().map(|h| &h.path),
        ),
        ("app.env_file", cfg.app.env_file.as_ref()),
        ("app.logconfig", logging),
        ("app.paste", cfg.app.paste.as_ref().map(|p| &p.file)),
    ];
    for (key, path) in files {
        if let Some(path) = path
            && let Some(why) = private_fs::changeable_by_others(path)
        {
            return Err(format!(
                "refusing {key} {}: {why}, and the workers would run or load it as root; chown it and its folder to root and chmod go-w them, or run the workers as another user ([workers] user, -u)",
                path.display()
            ));
        }
    }
    Ok(())
}

/// With `--reuse-port`, a second corral of the same instance (the same
/// command, started beside the first to take over its address) has a
/// control socket of its own: the instance's folder with `-2` (up to
/// `-16`) when the default one is in use. None otherwise.
fn twin_socket(cfg: &config::Config, takeover: bool) -> Option<std::path::PathBuf> {
    let socket = &cfg.control.socket;
    let dir = socket.parent()?;
    let per_instance = dir.file_name().is_some_and(|n| n == cfg.instance.as_str());
    if takeover
        || !cfg.server.reuse_port
        || !cfg.control.is_default
        || !per_instance
        || !control::in_use(socket)
    {
        return None;
    }
    let (root, leaf) = (dir.parent()?, socket.file_name()?);
    (2..=16)
        .map(|n| root.join(format!("{}-{n}", cfg.instance)).join(leaf))
        .find(|path| !control::in_use(path))
}

async fn run(
    cfg: Arc<config::Config>,
    reread: Option<supervisor::ReadConfig>,
    inherited: front::listeners::Inherited,
    systemd: systemd::NotifySocket,
) -> u8 {
    tokio::spawn(stdio::report_drops(std::time::Duration::from_secs(10)));
    tokio::spawn(memory::give_back(std::time::Duration::from_secs(10)));
    let json_log = cfg.log.format == config::LogFormat::Json;
    let access = match cfg
        .log
        .access
        .as_ref()
        .map(|a| front::access::Logger::new(a, json_log))
    {
        None => None,
        Some(Ok(logger)) => Some(Arc::new(logger)),
        Some(Err(e)) => {
            eprintln!("error: access log: {e}");
            return EXIT_CONFIG;
        }
    };
    // Not a worker that fails to start again and again, with corral
    // answering 503 for good: a configuration mistake, said before binding.
    if let Some(why) = check::no_app_folder(&cfg).or_else(|| check::no_interpreter(&cfg)) {
        eprintln!("error: {why}");
        return EXIT_CONFIG;
    }
    // gunicorn's -m/--umask and -u/-g apply to the app's Unix sockets.
    let unix_access = front::listeners::UnixAccess {
        mode: cfg
            .server
            .socket_umask
            .or(cfg.workers.limits.umask)
            .map(|m| 0o777 & !m),
        owner: cfg.workers.identity.as_ref().map(|i| (i.uid, i.gid)),
    };
    let listeners = match front::listeners::Listeners::open(
        &cfg.server.bind,
        &cfg.server.insecure_bind,
        front::listeners::Listen {
            backlog: cfg.server.backlog,
            reuse_port: cfg.server.reuse_port,
        },
        cfg.health.status_bind.as_ref(),
        &inherited,
        &unix_access,
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_CONFIG;
        }
    };
    if listeners.activated {
        tracing::info!(
            "socket activation: serving on {} inherited socket(s)",
            listeners.server.len()
        );
        // Said once, or the binds given would seem to be served.
        let unused: Vec<String> = cfg
            .server
            .bind
            .iter()
            .chain(&cfg.server.insecure_bind)
            .filter(|b| !b.origin.starts_with("default"))
            .map(|b| format!("{} ({})", b.addr, b.origin))
            .collect();
        if !unused.is_empty() {
            tracing::warn!(
                "socket activation: not binding {}: the sockets came from systemd, whose .socket unit (ListenStream=) sets the addresses served",
                unused.join(", ")
            );
        }
    }
    front::listeners::explain_unix_access(cfg.server.bind.iter().chain(&cfg.server.insecure_bind));
    // Removed when `run` returns, by whichever path. A corral started by
    // USR2 takes it over once it is in service (the supervisor's takeover).
    let pid_file = cfg.server.pid_file.as_deref();
    let pid_file =
        pid_file.map(|p| logfile::PidFile::create(p, inherited.parent, cfg.server.reuse_port));
    let pid_file = match pid_file {
        None => None,
        Some(Ok(guard)) => Some(Arc::new(guard)),
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return EXIT_CONFIG;
        }
    };
    let takeover = inherited.parent.is_some();
    let cfg = match twin_socket(&cfg, takeover) {
        Some(path) => {
            tracing::info!(
                "another corral runs as instance {} here (--reuse-port beside it): this one's control socket is {}",
                cfg.instance,
                path.display()
            );
            let mut twin = (*cfg).clone();
            twin.control.socket = path;
            Arc::new(twin)
        }
        None => cfg,
    };
    // The default socket in the unit's RuntimeDirectory=, served by another
    // corral: two units share the folder (a copied unit file), and their
    // StateDirectory= too, likely. Name that, not [control] socket: a
    // socket of its own would leave the state shared, and systemd removes
    // the folder when the other unit stops.
    if cfg.control.is_default
        && !takeover
        && control::in_use(&cfg.control.socket)
        && let Some(dir) = config::unit_runtime_directory()
        && cfg.control.socket.parent() == Some(dir.as_path())
    {
        eprintln!(
            "error: another corral already serves the control socket {} in this unit's runtime folder {} ($RUNTIME_DIRECTORY): another unit has the same RuntimeDirectory= (a copied unit file?), and likely the same StateDirectory=, where each app's rollback would read the other's last good release, and systemd removes the folder when either unit stops; give each unit folders of its own (RuntimeDirectory=corral/NAME and StateDirectory=corral/NAME, as systemd/corral@.service has them with %i)",
            cfg.control.socket.display(),
            dir.display()
        );
        return EXIT_CONFIG;
    }
    // The state folder another running corral keeps its state in (two
    // units with one StateDirectory=, or one [deploy] state_dir): a
    // rollback would read the other app's last good release. Not beside a
    // --reuse-port twin, which is the same instance.
    if !cfg.server.reuse_port
        && let Some(other) =
            deploy::claimed_by_other(&cfg.deploy.state_dir, &cfg.control.socket, control::in_use)
    {
        eprintln!(
            "error: the state folder {} is another running corral's (control socket {}): two units share StateDirectory= (a copied unit file?), or two configs one [deploy] state_dir, and each app's rollback would read the other's last good release; give each unit folders of its own (StateDirectory=corral/NAME and RuntimeDirectory=corral/NAME, as systemd/corral@.service has them with %i), or each config its own [deploy] state_dir",
            cfg.deploy.state_dir.display(),
            other.display()
        );
        return EXIT_CONFIG;
    }
    // After drop_privileges, corral must still be able to remove it.
    let owner = cfg
        .workers
        .identity
        .as_ref()
        .filter(|_| cfg.server.drop_privileges)
        .map(|id| (id.uid, id.gid));
    // The default place, made first by another local user (/tmp/corral-UID
    // without XDG_RUNTIME_DIR): serve without a socket rather than let that
    // user stop corral from starting. One named explicitly must be usable.
    let squatted = cfg
        .control
        .is_default
        .then(|| control::folder_not_private(&cfg.control.socket, owner))
        .flatten();
    let control = match squatted.map_or_else(
        || control::bind(&cfg.control.socket, takeover, owner).map(Some),
        |why| {
            tracing::warn!(
                "no control socket: the default one, {}, is unsafe to use ({why}; another local user may have made it first), so `corral reload`, `scale`, `stop` and `status` cannot reach this corral; signals still work (HUP reloads, TTIN and TTOU scale, TERM stops); for a control socket, set XDG_RUNTIME_DIR to a folder of your own, or --socket or [control] socket to a place only corral's user can write to",
                cfg.control.socket.display()
            );
            Ok(None)
        },
    ) {
        Ok(l) => l,
        // A read-only container: serve without one rather than not at all.
        Err(e) if cfg.control.is_default && private_fs::read_only(&cfg.control.socket) => {
            tracing::warn!(
                "no control socket ({e}): the file system is read-only, so `corral reload`, `scale`, `stop` and `status` cannot reach this corral; signals still work (HUP reloads, TTIN and TTOU scale, TERM stops); for a control socket, set --socket or [control] socket to a writable place, like /dev/shm/corral.sock"
            );
            None
        }
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_CONFIG;
        }
    };
    let (control_listener, control_made_dir, control_staged) = match control {
        Some(bound) => (Some(bound.listener), bound.made_dir, bound.staged),
        None => (None, None, None),
    };
    if control_listener.is_some() && !cfg.server.reuse_port {
        deploy::claim(&cfg.deploy.state_dir, &cfg.control.socket);
    }
    let control_inode = control_listener
        .as_ref()
        .and_then(|_| inode(control_staged.as_deref().unwrap_or(&cfg.control.socket)));
    // Where the socket is, for the clean-up at exit: the control server
    // makes it again if it goes, with a new inode.
    let control_ino = Arc::new(std::sync::atomic::AtomicU64::new(
        control_inode.unwrap_or(0),
    ));
    let runtime_dir = match runtime_dir::RuntimeDir::create(
        "corral-",
        runtime_dir::Owner {
            identity: cfg.workers.identity.as_ref(),
            drop_privileges: cfg.server.drop_privileges,
        },
        cfg.workers.tmp_dir.as_deref(),
    ) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "error: cannot create a private runtime directory for the worker script: {e}"
            );
            return 1;
        }
    };
    if cfg.server.drop_privileges {
        match drop_privileges(&cfg) {
            Ok(who) => tracing::info!("dropped privileges: corral now runs as {who}"),
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_CONFIG;
            }
        }
    }
    reaper::start();
    let launcher = worker::process::Launcher::new(&cfg, runtime_dir.script());
    let router = router::Router::new(cfg.server.max_queued);
    // `server.io_threads`, but no more than workers: a shard without a
    // worker of its own would send every request to another's thread
    // (0.92x the requests/s with one worker).
    let shards = match shards::Shards::start(cfg.server.io_threads.min(cfg.workers.count)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot start the front's threads: {e}");
            return 1;
        }
    };
    let mut sup = supervisor::Supervisor::new(cfg.clone(), launcher, router.clone(), systemd);
    sup.set_reread(reread);
    sup.set_shards(shards.clone());
    sup.set_sockets(listeners.handover());
    let socket_files = listeners.made();
    sup.set_reexec_parent(inherited.parent);
    if inherited.parent.is_some() {
        // In service: the pid file and the control socket, made ready
        // beside their paths at start, replace the old corral's.
        let (pid_file, staged) = (pid_file.clone(), control_staged.clone());
        let socket = cfg.control.socket.clone();
        sup.set_takeover(Box::new(move || {
            if let Some(Err(e)) = pid_file.as_ref().map(|p| p.take_over()) {
                tracing::error!("re-exec: {e}");
            }
            if let Some(staged) = &staged {
                match control::take_over(staged, &socket) {
                    Ok(()) => tracing::info!(
                        "re-exec: the control socket {} is this corral's now",
                        socket.display()
                    ),
                    Err(e) => tracing::error!("re-exec: {e}"),
                }
            }
        }));
    }
    let handle = sup.handle();
    if let Err(e) = signals::forward(handle.clone()) {
        eprintln!("error: cannot install signal handlers: {e}");
        return 1;
    }
    // Each app listener as the log and /status show it, and its
    // certificate set (`None`: plain HTTP).
    let served: Vec<(String, Option<usize>)> = listeners
        .server
        .iter()
        .map(|l| {
            let set = match (&cfg.server.tls, l.insecure) {
                (Some(tls), false) => Some(tls.set_of(l.addr.as_ref())),
                _ => None,
            };
            let addr = l.listener.describe();
            match (set, addr.strip_prefix("http://")) {
                (Some(_), Some(rest)) => (format!("https://{rest}"), set),
                _ => (addr, set),
            }
        })
        .collect();
    // Read again here (the config check read them too): they may have
    // changed in between.
    let tls = match cfg
        .server
        .tls
        .as_ref()
        .map(|c| tls::Tls::new(c.sets(), served.clone()))
        .transpose()
    {
        Ok(tls) => tls.map(Arc::new),
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if let Some(tls) = &tls {
        sup.set_tls(tls.clone());
    }
    let metrics = Arc::new(metrics::Metrics::new(shards.len()));
    let statsd = cfg
        .log
        .statsd
        .as_ref()
        .map(|s| Arc::new(statsd::Statsd::new(s, shards.len())));
    if let Some(statsd) = &statsd {
        let snapshots = sup.snapshots();
        if let Err(e) = statsd::run(statsd.clone(), move || snapshots.borrow().in_service) {
            eprintln!("error: cannot start the statsd thread: {e}");
            return 1;
        }
    }
    let shared = Arc::new(front::handler::Shared {
        router: router.clone(),
        // `timeout = 0`: no limit, as gunicorn's.
        timeout: match cfg.workers.timeout {
            t if t.is_zero() => front::handler::NO_DEADLINE,
            t => t,
        },
        max_body_bytes: cfg.server.max_body_bytes,
        body_timeout: cfg.server.body_timeout,
        body_min_rate: cfg.server.body_min_rate,
        send_timeout: cfg.server.send_timeout,
        replace: handle.replace_requests(),
        metrics: metrics.clone(),
        statsd: statsd.clone(),
        access,
        head_limits: cfg.server.head_limits,
        drain: front::Drain::new(),
        forwarded_allow: cfg.server.forwarded_allow_ips.clone(),
        proxy_protocol: cfg.server.proxy_protocol,
        proxy_allow: cfg.server.proxy_allow_ips.clone(),
        canary_sticky: cfg.deploy.canary_sticky.clone(),
        websocket: cfg.server.websocket,
        headers: cfg.server.headers.clone(),
        read_ahead: front::upload::ReadAhead::for_queue(cfg.server.max_queued),
        unfinished: front::websocket::Unfinished::new(cfg.server.websocket.max_message),
        outbox: front::body::Budget::outbox(cfg.server.max_queued),
        windows: front::body::Budget::windows(cfg.server.max_queued),
    });
    // What /status, `corral status` and `corral reload -b ADDR` know this
    // corral by: the sockets systemd passed, not the addresses configured
    // (the default 127.0.0.1:8000 among them), which are not bound.
    // The supervisor keeps the configured ones: a reload compares the file
    // read again with them, and a gunicorn hook's cfg.bind is what was
    // configured, as under gunicorn with LISTEN_FDS.
    let status_cfg = if listeners.activated {
        let mut served = (*cfg).clone();
        let of = |insecure: bool| -> Vec<config::Bind> {
            listeners
                .server
                .iter()
                .filter(|l| l.insecure == insecure)
                .filter_map(|l| l.addr.clone())
                .map(|addr| config::Bind {
                    addr,
                    origin: "socket activation (LISTEN_FDS)".into(),
                })
                .collect()
        };
        served.server.bind = of(false);
        served.server.insecure_bind = of(true);
        Arc::new(served)
    } else {
        cfg.clone()
    };
    let state = Arc::new(status::StatusState {
        snapshots: sup.snapshots(),
        metrics,
        supervisor: handle.clone(),
        cfg: status_cfg,
        router,
        tls: tls.clone(),
    });
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
    // A re-executed corral, and a socket-activated one, accept once their
    // workers are in service: connections wait in the kernel's queue, not
    // for a 503.
    let gate = (inherited.parent.is_some() || listeners.activated).then_some(gate_rx);
    sup.set_accept_gate(gate_tx);
    if let Some(status) = listeners.status {
        tracing::info!("status server on {}", status.describe());
        status::start(status, state.clone(), gate.clone());
    }
    tracing::info!(
        "instance {}: control socket {}, state {}",
        cfg.instance,
        match control_listener {
            Some(_) => cfg.control.socket.display().to_string(),
            None => "none".to_owned(),
        },
        cfg.deploy.state_dir.display()
    );
    if let Some(listener) = control_listener {
        // Not in a new corral of a USR2 before it takes the old one's
        // socket over: its own is beside the path until then.
        let remake = control_staged.is_none().then(|| control::Remake {
            path: cfg.control.socket.clone(),
            owner,
            inode: control_ino.clone(),
        });
        control::serve(listener, state, remake);
    }
    for (addr, set) in &served {
        match (set, &cfg.server.tls) {
            (Some(0), _) => tracing::info!("listening on {addr} (TLS, HTTP/2 and HTTP/1.1)"),
            (Some(_), _) => tracing::info!(
                "listening on {addr} (TLS with its own [server.tls.bind] certificate set, HTTP/2 and HTTP/1.1)"
            ),
            (None, Some(_)) => tracing::info!("listening on {addr} (plain HTTP: insecure_bind)"),
            (None, None) => tracing::info!("listening on {addr}"),
        }
    }
    // gunicorn's default address is loopback, which in a container no
    // client outside it reaches: say so, and how to listen for them.
    if let [only] = cfg.server.bind.as_slice()
        && served.len() == 1
        && only.origin.starts_with("default")
        && let config::BindAddr::Tcp(addr) = &only.addr
        && addr.ip().is_loopback()
        // Not a socket systemd handed over in its place.
        && served[0].0 == format!("http://{addr}")
        && let Some(sign) = in_a_container()
    {
        tracing::warn!(
            "listening on {addr} only, the default (as gunicorn's), but this looks like a container ({sign}): nothing outside it can connect there (`docker run -p`, a Kubernetes Service and a PaaS router reach the container's own address); give --bind 0.0.0.0:{port} (or [server] bind, or set PORT)",
            port = addr.port()
        );
    }
    tracing::info!(
        "starting {} worker(s) ({}) for {} with {} ({}){}",
        cfg.workers.count,
        cfg.workers.count_origin,
        cfg.app.module,
        cfg.app.python.display(),
        cfg.app.python_origin,
        cfg.source
            .as_ref()
            .map(|p| format!(" (config {})", p.display()))
            .unwrap_or_default()
    );
    // Root can get anywhere; the workers' user may not: a folder it may
    // not enter fails every worker's start (ModuleNotFoundError, or
    // "Permission denied" for the interpreter) without saying whose.
    if let Some(id) = &cfg.workers.identity {
        let python = private_fs::which(&cfg.app.python);
        let folder = cfg
            .app
            .chdir
            .clone()
            .or_else(|| std::env::current_dir().ok());
        let places = [
            (python.as_deref(), true, "the interpreter"),
            (folder.as_deref(), false, "the app folder"),
        ];
        for (path, exec, what) in places {
            if let Some(why) =
                path.and_then(|p| private_fs::unreachable_for(p, id.uid, id.gid, &id.groups, exec))
            {
                tracing::warn!(
                    "the workers run as {} (uid {}), and {why}: {what} is out of their reach, so they will fail to start; give that user access, or choose another [workers] user",
                    id.user,
                    id.uid
                );
            }
        }
    }
    if cfg.workers.gevent {
        tracing::info!(
            "each worker runs its requests in gevent's greenlets, up to {} at once (workers.concurrency)",
            cfg.workers.concurrency
        );
    }
    tracing::info!(
        "the front runs {} shard(s): server.io_threads {}, no more than workers",
        shards.len(),
        cfg.server.io_threads
    );
    if let Some((first, _)) = served.first() {
        dev::start(&cfg, first, handle, sup.snapshots());
    }
    let app_listeners = listeners
        .server
        .into_iter()
        .zip(&served)
        .map(|(l, (_, set))| {
            let bind_tls = tls
                .clone()
                .zip(*set)
                .map(|(tls, set)| tls::BindTls { tls, set });
            (l.listener, bind_tls)
        })
        .collect();
    let front = front::Front::start(app_listeners, &cfg.server, shared, gate, &shards);
    let stopped = sup.run(front).await;
    let code = stopped.code;
    // The last second's counts.
    if let Some(statsd) = &statsd {
        statsd.flush(None);
    }
    // Remove the control socket unless a re-executed corral took it over
    // (or, from one started by USR2 that never took the old corral's
    // over, the one it bound beside it).
    let control_inode =
        Some(control_ino.load(std::sync::atomic::Ordering::Relaxed)).filter(|&ino| ino != 0);
    if control_inode.is_some() && control_inode == inode(&cfg.control.socket) {
        if let Err(e) = std::fs::remove_file(&cfg.control.socket) {
            tracing::warn!(
                "cannot remove the control socket {}: {e}",
                cfg.control.socket.display()
            );
        }
        if let Some(dir) = &control_made_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
    if let Some(staged) = &control_staged
        && control_inode.is_some()
        && control_inode == inode(staged)
    {
        let _ = std::fs::remove_file(staged);
    }
    // The app's socket files go with corral, as gunicorn's do, unless
    // another corral serves on them.
    if !stopped.sockets_live_on {
        for file in &socket_files {
            file.remove();
        }
    }
    tracing::info!("stopped");
    drop(runtime_dir);
    code as u8
}

/// corral itself becomes the workers' user, its sockets already bound.
/// glibc applies the change to every thread of the process.
fn drop_privileges(cfg: &config::Config) -> Result<String, String> {
    use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};
    let id = cfg.workers.identity.as_ref().ok_or(
        "server.drop_privileges needs [workers] user (or group): the user corral switches to",
    )?;
    let groups: Vec<Gid> = id.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    setgroups(&groups)
        .and_then(|()| setgid(Gid::from_raw(id.gid)))
        .and_then(|()| setuid(Uid::from_raw(id.uid)))
        .map_err(|e| {
            format!(
                "cannot switch to user {} (uid {}): {e}; run corral as root",
                id.user, id.uid
            )
        })?;
    Ok(format!("{} (uid {}, gid {})", id.user, id.uid, id.gid))
}

fn inode(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Runs a client command against the control socket the args point at.
fn with_socket(args: &cli::ControlArgs, f: impl FnOnce(&std::path::Path) -> u8) -> u8 {
    match control::socket_for(args) {
        Ok(path) => f(&path),
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_CONFIG
        }
    }
}

/// corral's own log: to stderr, or to `[log] error_file` (reopened on
/// SIGUSR1, see [`logfile`]); to a syslog daemon as well with `[log]
/// syslog` ([`syslog`], tagged with `tag` unless `syslog_prefix`: see
/// [`syslog::default_prefix`]).
fn init_logging(cfg: &config::LogConfig, tag: &str) -> Result<(), String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level: tracing::level_filters::LevelFilter = cfg.level.into();
    let file = cfg
        .error_file
        .as_deref()
        .map(logfile::LogFile::open)
        .transpose()?;
    let to_stdout = cfg.error_to_stdout;
    let writer = tracing_subscriber::fmt::writer::BoxMakeWriter::new({
        let file = file.clone();
        move || -> Box<dyn std::io::Write> {
            match &file {
                Some(f) => Box::new(logfile::Writer(f.clone())),
                None if to_stdout => Box::new(stdio::stdout()),
                None => Box::new(stdio::stderr()),
            }
        }
    });
    // The level filters corral's own lines. What the app prints and the
    // access lines pass whatever it is, as under gunicorn, whose
    // `loglevel` filters only gunicorn's logger: `--log-level warning`
    // must not hide an app's tracebacks.
    // Those lines are all INFO: the most verbose level any line needs is
    // INFO or the level, so that trace and debug callsites (h2 has many
    // per frame) stay off as cheaply as before.
    let info = tracing::level_filters::LevelFilter::INFO;
    // rustls warns of what clients send (an invalid SNI name, up to 64
    // KiB, once per handshake): anyone could fill the log. A failed
    // handshake is counted in /metrics instead.
    let rustls = level.min(tracing::level_filters::LevelFilter::ERROR);
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(level)
        .with_target(worker::output::TARGET, info)
        .with_target(front::access::TARGET, info)
        .with_target("rustls", rustls);
    let builder = tracing_subscriber::fmt()
        .with_max_level(level.max(info))
        .with_target(false)
        .with_writer(writer);
    // Under systemd (JOURNAL_STREAM set) the journal stamps every line; a
    // file gets timestamps and no colours.
    let (out, err) = (std::io::stdout(), std::io::stderr());
    use std::os::fd::AsFd as _;
    let stream = if to_stdout { out.as_fd() } else { err.as_fd() };
    let (journal, terminal) = (is_the_journal(stream), stream.is_terminal());
    let journal = journal && file.is_none();
    let colour = file.is_none() && terminal && std::env::var_os("NO_COLOR").is_none();
    // Counts warnings and errors for StatsD's `gunicorn.log.*`.
    let counter = statsd::LogCounter;
    // The same lines, plain text, one datagram each.
    let syslog = cfg
        .syslog
        .as_ref()
        .map(|settings| syslog::Syslog::open(settings, tag))
        .transpose()?;
    match (cfg.format, journal) {
        (config::LogFormat::Json, _) => builder
            .event_format(log_json::JsonRecord)
            .finish()
            .with(filter.clone())
            .with(counter)
            .with(syslog::layer(syslog.clone()))
            .init(),
        (config::LogFormat::Text, true) => builder
            .with_ansi(false)
            .event_format(JournalPriority(
                tracing_subscriber::fmt::format()
                    .with_target(false)
                    .with_ansi(false)
                    .without_time(),
            ))
            .finish()
            .with(filter.clone())
            .with(counter)
            .with(syslog::layer(syslog.clone()))
            .init(),
        (config::LogFormat::Text, false) => builder
            .with_ansi(colour)
            .finish()
            .with(filter.clone())
            .with(counter)
            .with(syslog::layer(syslog.clone()))
            .init(),
    }
    // A panic is a bug: one ERROR record (JSON stays JSON), not raw text.
    std::panic::set_hook(Box::new(|info| {
        let backtrace = std::backtrace::Backtrace::force_capture();
        tracing::error!("corral panicked (a bug; please report it): {info}\n{backtrace}");
    }));
    Ok(())
}

/// Whether `stream` (corral's log's: stderr, or stdout) is the journal's:
/// the device and inode systemd gives in `JOURNAL_STREAM` (`DEV:INODE`)
/// are its own, as systemd asks a program to check (a shell in the unit
/// may have sent it elsewhere, the variable staying).
fn is_the_journal(stream: impl std::os::fd::AsFd) -> bool {
    let Some(journal) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = journal.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<libc::dev_t>(), ino.parse::<libc::ino_t>()) else {
        return false;
    };
    nix::sys::stat::fstat(stream).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// Each line for the journal begins with its level as syslog's priority
/// (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug), which journald
/// takes and strips (systemd's `SyslogLevelPrefix=`, on by default), so
/// that `journalctl -p warning -u app` shows corral's warnings and errors,
/// every line of a traceback included.
struct JournalPriority<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalPriority<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        // journald makes an entry of every line: each line of a record of
        // several (a traceback) carries the priority, or `journalctl -p
        // err` would show a traceback's first line alone.
        let mut record = String::new();
        self.0.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut record),
            event,
        )?;
        for line in record.strip_suffix('\n').unwrap_or(&record).split('\n') {
            writeln!(writer, "<{priority}>{line}")?;
        }
        Ok(())
    }
}

/// Why corral seems to run in a container, if it does: PID 1 of its PID
/// namespace, the files Docker and Podman put in every container, or the
/// variable Kubernetes sets in every pod.
fn in_a_container() -> Option<&'static str> {
    if reaper::is_init() {
        Some("corral is PID 1")
    } else if std::path::Path::new("/.dockerenv").exists() {
        Some("/.dockerenv exists")
    } else if std::path::Path::new("/run/.containerenv").exists() {
        Some("/run/.containerenv exists")
    } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        Some("KUBERNETES_SERVICE_HOST is set")
    } else {
        None
    }
}
