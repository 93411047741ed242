use std::time::Duration;

use super::validate::DEFAULT_BIND;
use super::*;

/// The environment of the tests: no virtualenv, and the default socket
/// and state folder of uid 1000 without a runtime or state directory,
/// with HOME=/home/u, on 4 CPUs.
pub(super) fn env() -> Env {
    Env {
        virtual_env: None,
        installed_in: None,
        launched_by: None,
        default_socket: Place::Fixed("/tmp/corral-1000/corral.sock".into()),
        default_state_dir: Place::Fixed("/home/u/.local/state/corral".into()),
        cpus: 4,
        status_token: None,
        port: None,
        web_concurrency: None,
        script_name: None,
        forwarded_allow_ips: None,
        usable_cpus: crate::cpus::Usable {
            count: 4,
            why: "affinity mask: 4 CPUs".into(),
        },
    }
}

/// Resolves `text` as "corral.toml" in /nonexistent/srv/app, run from /cwd.
pub(super) fn resolve_text(text: &str, args: &Overrides) -> Result<Config, ConfigError> {
    let file = ConfigFile::new(
        Path::new("corral.toml"),
        Path::new("/nonexistent/srv/app"),
        text.into(),
    );
    resolve(args, Some(&file), Path::new("/cwd"), &env())
}

/// The default interpreter: the venv corral is installed in, then
/// `$VIRTUAL_ENV`, then `python3`; a flag or the file always wins; the
/// origin says which.
#[test]
fn the_default_interpreter_is_the_venv_corral_is_installed_in() {
    let args = Overrides {
        app: Some("main:app".into()),
        ..Overrides::default()
    };
    let both = Env {
        virtual_env: Some("/activated".into()),
        installed_in: Some("/nonexistent/srv/app/.venv".into()),
        launched_by: None,
        ..env()
    };
    let app = resolve(&args, None, Path::new("/cwd"), &both).unwrap().app;
    assert_eq!(
        app.python,
        PathBuf::from("/nonexistent/srv/app/.venv/bin/python")
    );
    assert!(
        app.python_origin
            .contains("installed in (/nonexistent/srv/app/.venv)"),
        "{}",
        app.python_origin
    );
    let activated = Env {
        installed_in: None,
        launched_by: None,
        ..both
    };
    let app = resolve(&args, None, Path::new("/cwd"), &activated)
        .unwrap()
        .app;
    assert_eq!(app.python, PathBuf::from("/activated/bin/python"));
    assert!(
        app.python_origin.starts_with("$VIRTUAL_ENV"),
        "{}",
        app.python_origin
    );
    let app = resolve(&args, None, Path::new("/cwd"), &env()).unwrap().app;
    assert_eq!(app.python, PathBuf::from("python3"));
    assert!(
        app.python_origin.starts_with("python3 on PATH"),
        "{}",
        app.python_origin
    );

    let installed = Env {
        installed_in: Some("/nonexistent/srv/app/.venv".into()),
        launched_by: None,
        ..env()
    };
    let flag = Overrides {
        python: Some("/usr/bin/python3.12".into()),
        ..args.clone()
    };
    let app = resolve(&flag, None, Path::new("/cwd"), &installed)
        .unwrap()
        .app;
    assert_eq!(
        (app.python.to_str(), app.python_origin.as_str()),
        (Some("/usr/bin/python3.12"), "--python")
    );
    let file = ConfigFile::new(
        Path::new("corral.toml"),
        Path::new("/nonexistent/srv/app"),
        "[app]\npython = \"py/bin/python\"\n".into(),
    );
    let app = resolve(&args, Some(&file), Path::new("/cwd"), &installed)
        .unwrap()
        .app;
    assert_eq!(
        app.python,
        PathBuf::from("/nonexistent/srv/app/py/bin/python")
    );
    assert!(
        app.python_origin.contains("app.python"),
        "{}",
        app.python_origin
    );
}

#[test]
fn defaults_without_a_file() {
    let args = Overrides {
        app: Some("main".into()),
        ..Overrides::default()
    };
    let venv = Env {
        virtual_env: Some("/venv".into()),
        installed_in: None,
        launched_by: None,
        ..env()
    };
    let config = resolve(&args, None, Path::new("/cwd"), &venv).unwrap();
    assert_eq!(config.source, None);
    assert_eq!(config.app.module, "main:application");
    assert_eq!(config.app.interface, Interface::Auto);
    assert_eq!(config.app.python, PathBuf::from("/venv/bin/python"));
    assert_eq!(config.app.chdir, None);
    assert_eq!(config.server.bind.len(), 1);
    assert_eq!(config.server.bind[0].addr, BindAddr::Tcp(DEFAULT_BIND));
    assert_eq!(config.server.backlog, 2048);
    assert_eq!(config.server.keepalive, Duration::from_secs(5));
    assert_eq!(config.server.max_header_bytes, 64 * 1024);
    assert_eq!(config.server.max_body_bytes, 100 << 20);
    assert_eq!(config.server.max_queued, 1024);
    // Half of the 4 CPUs of `env()`.
    assert_eq!(config.server.io_threads, 2);
    assert_eq!(
        config.server.forwarded_allow_ips,
        ForwardedAllow::Networks(vec![
            "127.0.0.1/32".parse().unwrap(),
            "::1/128".parse().unwrap()
        ])
    );
    assert_eq!(config.workers.count, 1);
    assert_eq!(config.workers.threads, 1);
    assert_eq!(config.workers.concurrency, 1000);
    assert_eq!(config.workers.timeout, Duration::from_secs(30));
    assert_eq!(config.workers.graceful_timeout, Duration::from_secs(30));
    assert_eq!(config.workers.boot_timeout, Duration::from_secs(30));
    assert_eq!(config.workers.restart_backoff, Duration::from_millis(100));
    assert_eq!(config.workers.restart_backoff_max, Duration::from_secs(30));
    assert_eq!(config.workers.heartbeat_timeout, Duration::from_secs(30));
    assert_eq!(config.workers.max_requests, 0);
    assert_eq!(config.workers.max_requests_jitter, 0);
    assert_eq!(config.workers.max_memory, None);
    assert_eq!(config.workers.identity, None);
    assert_eq!(config.workers.limits, Limits::default());
    assert!(config.health.status_bind.is_none());
    assert_eq!(config.health.min_ready, MinReady::Count(1));
    assert_eq!(config.health.ready_path, None);
    assert_eq!(config.health.probe_interval, Duration::from_secs(10));
    assert_eq!(config.health.probe_timeout, Duration::from_secs(5));
    assert_eq!(config.health.unhealthy_after, 3);
    assert_eq!(config.health.min_in_service, MinReady::Percent(50));
    assert_eq!(
        config.control.socket,
        PathBuf::from("/tmp/corral-1000/corral.sock")
    );
    assert_eq!(config.deploy.ready_timeout, Duration::from_secs(60));
    assert_eq!(config.deploy.revision, RevisionSource::Auto);
    assert_eq!(
        config.deploy.state_dir,
        PathBuf::from("/home/u/.local/state/corral")
    );
    assert_eq!(config.deploy.rollback_hook, None);
    assert_eq!(config.deploy.hook_timeout, Duration::from_secs(60));
    assert_eq!(config.deploy.rollback, Rollback::None);
    assert!(!config.deploy.exit_on_boot_failure);
    assert_eq!(config.deploy.strategy, Strategy::AllAtOnce);
    assert_eq!(config.deploy.max_surge, 1);
    let config = resolve(&args, None, Path::new("/cwd"), &env()).unwrap();
    assert_eq!(config.app.python, PathBuf::from("python3"));
}

#[test]
fn file_values_and_relative_paths() {
    let text = r#"
[app]
module = "pkg.web:app"
interface = "asgi"
python = ".venv/bin/python"
chdir = "src"
pythonpath = ["lib", "/abs"]
env = { A = "1" }

[server]
bind = ["0.0.0.0:9000", "unix:run/web.sock"]
keepalive = "1m30s"
max_body_bytes = 1024

[workers]
count = 4
timeout = "2m"
boot_timeout = "1m"
restart_backoff = "250ms"
restart_backoff_max = "10s"
heartbeat_timeout = "1m"
max_requests = 5000
max_requests_jitter = 500
max_memory = "1.5GiB"
user = "root"

[workers.limits]
nofile = 4096
umask = "022"

[health]
status_bind = "unix:run/status.sock"
min_ready = "75%"
ready_path = "/health/ready?full=1"
probe_interval = "2s"
probe_timeout = "500ms"
unhealthy_after = 1
min_in_service = 2
"#;
    let config = resolve_text(text, &Overrides::default()).unwrap();
    assert_eq!(
        config.app.python,
        PathBuf::from("/nonexistent/srv/app/.venv/bin/python")
    );
    assert_eq!(
        config.app.chdir,
        Some(PathBuf::from("/nonexistent/srv/app/src"))
    );
    assert_eq!(
        config.app.pythonpath,
        [PathBuf::from("/nonexistent/srv/app/lib"), "/abs".into()]
    );
    assert_eq!(config.app.interface, Interface::Asgi);
    assert_eq!(
        config.server.bind[0].origin,
        "corral.toml:11 (key server.bind)"
    );
    assert_eq!(
        config.server.bind[1].addr,
        BindAddr::Unix("/nonexistent/srv/app/run/web.sock".into())
    );
    assert_eq!(config.server.keepalive, Duration::from_secs(90));
    assert_eq!(config.server.max_body_bytes, 1024);
    assert_eq!(config.workers.count, 4);
    assert_eq!(config.workers.timeout, Duration::from_secs(120));
    assert_eq!(config.workers.boot_timeout, Duration::from_secs(60));
    assert_eq!(config.workers.restart_backoff, Duration::from_millis(250));
    assert_eq!(config.workers.restart_backoff_max, Duration::from_secs(10));
    let status = config.health.status_bind.clone().unwrap();
    assert_eq!(
        status.addr,
        BindAddr::Unix("/nonexistent/srv/app/run/status.sock".into())
    );
    assert_eq!(status.origin, "corral.toml:32 (key health.status_bind)");
    assert_eq!(config.health.min_ready, MinReady::Percent(75));
    assert_eq!(config.health.min_ready.required(config.workers.count), 3);
    assert_eq!(config.workers.heartbeat_timeout, Duration::from_secs(60));
    assert_eq!(config.workers.max_requests, 5000);
    assert_eq!(config.workers.max_requests_jitter, 500);
    assert_eq!(config.workers.max_memory, Some(3 << 29));
    let identity = config.workers.identity.unwrap();
    assert_eq!(
        (identity.user.as_str(), identity.uid, identity.gid),
        ("root", 0, 0)
    );
    assert_eq!(
        config.workers.limits,
        Limits {
            nofile: Some(4096),
            umask: Some(0o022),
            ..Limits::default()
        }
    );
    assert_eq!(
        config.health.ready_path.as_deref(),
        Some("/health/ready?full=1")
    );
    assert_eq!(config.health.probe_interval, Duration::from_secs(2));
    assert_eq!(config.health.probe_timeout, Duration::from_millis(500));
    assert_eq!(config.health.unhealthy_after, 1);
    assert_eq!(config.health.min_in_service, MinReady::Count(2));
}

#[test]
fn flags_override_the_file() {
    let text = "[app]\nmodule = \"a:app\"\nenv = { A = \"file\", B = \"file\" }\n\
                    [server]\nbind = [\"0.0.0.0:9000\"]\n[workers]\ncount = 4\nboot_timeout = \"1m\"\nmax_requests = 10\nmax_requests_jitter = 2\n\
                    max_memory = \"1GiB\"\n\
                    [health]\nstatus_bind = \"127.0.0.1:9100\"\nmin_ready = 4\nready_path = \"/file\"\n";
    let args = Overrides {
        app: Some("b:app".into()),
        bind: vec!["unix:web.sock".parse().unwrap()],
        workers: Some(WorkerCount::Count(2)),
        chdir: Some("x".into()),
        python: Some("python3.12".into()),
        env: vec![("B".into(), "flag".into())],
        status_bind: Some("unix:status.sock".parse().unwrap()),
        min_ready: Some(MinReady::Count(2)),
        ready_path: Some("/flag".into()),
        max_requests: Some(0),
        max_requests_jitter: Some(5),
        max_memory: Some(ByteSize(64 << 20)),
        workers_flags: WorkersFlags {
            boot_timeout: Some(HumanDuration(Duration::from_secs(5))),
            ..WorkersFlags::default()
        },
        ..Overrides::default()
    };
    let config = resolve_text(text, &args).unwrap();
    assert_eq!(config.app.module, "b:app");
    assert_eq!(config.app.chdir, Some(PathBuf::from("/cwd/x")));
    assert_eq!(config.app.python, PathBuf::from("python3.12"));
    assert_eq!(config.app.env["A"], "file");
    assert_eq!(config.app.env["B"], "flag");
    assert_eq!(config.server.bind.len(), 1);
    // As under gunicorn, which binds after its chdir; corral's own
    // --status-bind stays in the current folder.
    assert_eq!(
        config.server.bind[0].addr,
        BindAddr::Unix("/cwd/x/web.sock".into())
    );
    assert_eq!(config.server.bind[0].origin, "--bind");
    assert_eq!(config.workers.count, 2);
    assert_eq!(config.workers.boot_timeout, Duration::from_secs(5));
    let status = config.health.status_bind.clone().unwrap();
    assert_eq!(status.addr, BindAddr::Unix("/cwd/status.sock".into()));
    assert_eq!(status.origin, "--status-bind");
    assert_eq!(config.health.min_ready, MinReady::Count(2));
    assert_eq!(config.health.ready_path.as_deref(), Some("/flag"));
    assert_eq!(config.workers.max_requests, 0);
    assert_eq!(config.workers.max_requests_jitter, 5);
    assert_eq!(config.workers.max_memory, Some(64 << 20));
}

#[test]
fn concurrency_and_max_queued_flag_then_file_then_default() {
    let app = Overrides {
        app: Some("m:a".into()),
        ..Overrides::default()
    };
    let text = "[server]\nmax_queued = 0\n[workers]\nconcurrency = 64\n";
    let config = resolve_text(text, &app).unwrap();
    // 0 is allowed: no request ever waits.
    assert_eq!(config.server.max_queued, 0);
    assert_eq!(config.workers.concurrency, 64);
    let args = Overrides {
        server_flags: ServerFlags {
            max_queued: Some(10_000),
            ..ServerFlags::default()
        },
        workers_flags: WorkersFlags {
            concurrency: Some(1),
            ..WorkersFlags::default()
        },
        ..app.clone()
    };
    let config = resolve_text(text, &args).unwrap();
    assert_eq!(config.server.max_queued, 10_000);
    assert_eq!(config.workers.concurrency, 1);
    let config = resolve_text("[workers]\nthreads = 4\n", &app).unwrap();
    assert_eq!(config.server.max_queued, 1024);
    assert_eq!(config.workers.concurrency, 1000);
}

#[test]
fn io_threads_flag_then_file_then_automatic() {
    let app = Overrides {
        app: Some("m:a".into()),
        ..Overrides::default()
    };
    let text = "[server]\nio_threads = 3\n";
    assert_eq!(resolve_text(text, &app).unwrap().server.io_threads, 3);
    let args = Overrides {
        io_threads: Some(1),
        ..app.clone()
    };
    assert_eq!(resolve_text(text, &args).unwrap().server.io_threads, 1);
    // 0, written or left out, is resolved now: half the CPUs, but two
    // from 2 CPUs up.
    for text in ["[server]\nio_threads = 0\n", ""] {
        for (cpus, threads) in [(1, 1), (2, 2), (3, 2), (4, 2), (8, 4), (64, 32)] {
            let env = Env { cpus, ..env() };
            let file = ConfigFile::new(Path::new("corral.toml"), Path::new("/srv"), text.into());
            let config = resolve(&app, Some(&file), Path::new("/cwd"), &env).unwrap();
            assert_eq!(config.server.io_threads, threads, "{cpus} CPUs, {text:?}");
        }
    }
    // The flag's 0 is automatic too, over a number in the file.
    let args = Overrides {
        io_threads: Some(0),
        ..app
    };
    assert_eq!(resolve_text(text, &args).unwrap().server.io_threads, 2);
}

#[test]
fn forwarded_allow_ips_flag_then_file_then_default() {
    let app = Overrides {
        app: Some("m:a".into()),
        ..Overrides::default()
    };
    let allow =
        |text: &str, args: &Overrides| resolve_text(text, args).unwrap().server.forwarded_allow_ips;
    let nets =
        |nets: &[&str]| ForwardedAllow::Networks(nets.iter().map(|n| n.parse().unwrap()).collect());
    let text = "[server]\nforwarded_allow_ips = [\"10.0.0.0/8\", \"fd00::/8\", \"192.0.2.1\"]\n";
    assert_eq!(
        allow(text, &app),
        nets(&["10.0.0.0/8", "fd00::/8", "192.0.2.1/32"])
    );
    assert_eq!(
        allow("[server]\nforwarded_allow_ips = [\"*\"]\n", &app),
        ForwardedAllow::Any
    );
    // An empty array trusts nobody (not the default).
    let nobody = allow("[server]\nforwarded_allow_ips = []\n", &app);
    assert_eq!(nobody, nets(&[]));
    assert!(!nobody.allows("127.0.0.1".parse().unwrap()));
    assert_eq!(allow("", &app), nets(&["127.0.0.1/32", "::1/128"]));
    // The flag (comma-separated, spaces allowed) wins over the file.
    let flag = |list: &str| Overrides {
        forwarded_allow_ips: Some(list.into()),
        ..app.clone()
    };
    assert_eq!(
        allow(text, &flag("127.0.0.1, ::ffff:10.1.1.1,fd00::/16")),
        nets(&["127.0.0.1/32", "10.1.1.1/32", "fd00::/16"])
    );
    assert_eq!(allow(text, &flag("*")), ForwardedAllow::Any);
    // "" (or only commas) trusts nobody.
    assert_eq!(allow(text, &flag("")), nets(&[]));
    assert_eq!(allow("", &flag(" , ")), nets(&[]));
}

#[test]
fn proxy_protocol_and_its_peers_flag_then_file_then_default() {
    let app = Overrides {
        app: Some("m:a".into()),
        ..Overrides::default()
    };
    let server = |text: &str, args: &Overrides| resolve_text(text, args).unwrap().server;
    let nets =
        |nets: &[&str]| ForwardedAllow::Networks(nets.iter().map(|n| n.parse().unwrap()).collect());
    let none = server("", &app);
    assert_eq!(none.proxy_protocol, ProxyProtocol::Off);
    assert_eq!(none.proxy_allow_ips, nets(&["127.0.0.1/32", "::1/128"]));
    let text = "[server]\nproxy_protocol = \"v2\"\nproxy_allow_ips = [\"10.0.0.0/8\"]\n";
    let file = server(text, &app);
    assert_eq!(file.proxy_protocol, ProxyProtocol::V2);
    assert_eq!(file.proxy_allow_ips, nets(&["10.0.0.0/8"]));
    // Its own list: forwarded_allow_ips keeps its default.
    assert_eq!(file.forwarded_allow_ips, nets(&["127.0.0.1/32", "::1/128"]));
    let flag = Overrides {
        proxy_protocol: Some("auto".into()),
        proxy_allow_from: Some("*".into()),
        ..app.clone()
    };
    let both = server(text, &flag);
    assert_eq!(both.proxy_protocol, ProxyProtocol::Auto);
    assert_eq!(both.proxy_allow_ips, ForwardedAllow::Any);
    // Mistakes say where and what to write.
    let text = "[server]\nproxy_protocol = \"yes\"\nproxy_allow_ips = [\"10.0.0.0/33\"]\n";
    let err = resolve_text(text, &app).unwrap_err().to_string();
    assert!(
        err.contains("corral.toml:2: server.proxy_protocol: \"yes\" is not a PROXY protocol mode: use \"off\", \"v1\", \"v2\" or \"auto\""),
        "{err}"
    );
    assert!(
        err.contains(
            "corral.toml:3: server.proxy_allow_ips: \"10.0.0.0/33\" has a bad prefix length"
        ),
        "{err}"
    );
    let bad_flag = Overrides {
        proxy_allow_from: Some("10.0.0.1, nope".into()),
        ..app.clone()
    };
    let err = resolve_text("", &bad_flag).unwrap_err().to_string();
    assert!(
        err.contains("--proxy-allow-from: \"nope\" is not an IP address"),
        "{err}"
    );
}

#[test]
fn deploy_revision_state_dir_and_hook() {
    let app = Overrides {
        app: Some("m:a".into()),
        ..Overrides::default()
    };
    let deploy = |text: &str| resolve_text(text, &app).unwrap().deploy;
    for (name, source) in [
        ("auto", RevisionSource::Auto),
        ("git", RevisionSource::Git),
        ("symlink", RevisionSource::Symlink),
        ("none", RevisionSource::None),
    ] {
        let text = format!("[deploy]\nrevision = \"{name}\"\n");
        assert_eq!(deploy(&text).revision, source, "{name}");
    }
    let text = r#"
[deploy]
revision = ["bin/../revision.sh", "--short", "./x"]
state_dir = "state"
rollback_hook = ["./hooks/rollback", "", "a b"]
hook_timeout = "1m30s"
"#;
    let config = deploy(text);
    // A relative program path is resolved against the file's folder;
    // the arguments are passed as they are.
    assert_eq!(
        config.revision,
        RevisionSource::Command(vec![
            "/nonexistent/srv/app/revision.sh".into(),
            "--short".into(),
            "./x".into()
        ])
    );
    assert_eq!(
        config.state_dir,
        PathBuf::from("/nonexistent/srv/app/state")
    );
    assert_eq!(
        config.rollback_hook,
        Some(vec![
            "/nonexistent/srv/app/hooks/rollback".into(),
            String::new(),
            "a b".into()
        ])
    );
    assert_eq!(config.hook_timeout, Duration::from_secs(90));
    // A bare program name stays for the PATH lookup; absolute paths stay.
    let text = "[deploy]\nrevision = [\"cat\", \"REVISION\"]\nstate_dir = \"/var/lib/x/\"\n\
                    rollback_hook = [\"/usr/local/bin/rollback\"]\n";
    let config = deploy(text);
    assert_eq!(
        config.revision,
        RevisionSource::Command(vec!["cat".into(), "REVISION".into()])
    );
    assert_eq!(config.state_dir, PathBuf::from("/var/lib/x"));
    assert_eq!(
        config.rollback_hook,
        Some(vec!["/usr/local/bin/rollback".into()])
    );
    // The default state folder comes from the environment.
    let systemd = Env {
        default_state_dir: Place::Fixed("/var/lib/app".into()),
        ..env()
    };
    let config = resolve(&app, None, Path::new("/cwd"), &systemd).unwrap();
    assert_eq!(config.deploy.state_dir, PathBuf::from("/var/lib/app"));
}

#[test]
fn deploy_rollback_strategy_and_surge() {
    let app = Overrides {
        app: Some("m:a".into()),
        ..Overrides::default()
    };
    let deploy = |text: &str, args: &Overrides| resolve_text(text, args).unwrap().deploy;
    let text = r#"
[app]
chdir = "current"

[deploy]
rollback = "symlink"
rollback_hook = ["./notify.sh"]
exit_on_boot_failure = true
strategy = "rolling"
max_surge = 3
"#;
    let config = deploy(text, &app);
    assert_eq!(config.rollback, Rollback::Symlink);
    // A hook and a built-in rollback go together.
    assert_eq!(
        config.rollback_hook,
        Some(vec!["/nonexistent/srv/app/notify.sh".into()])
    );
    assert!(config.exit_on_boot_failure);
    assert_eq!(config.strategy, Strategy::Rolling);
    assert_eq!(config.max_surge, 3);
    // "symlink" takes the app folder from --chdir too.
    let args = Overrides {
        chdir: Some("/nonexistent/srv/app/current".into()),
        ..app.clone()
    };
    let config = deploy("[deploy]\nrollback = \"symlink\"\n", &args);
    assert_eq!(config.rollback, Rollback::Symlink);
    // "git-reset" with the default revision ("auto") or "git", with or
    // without app.chdir (the app folder is then the cwd).
    for text in [
        "[deploy]\nrollback = \"git-reset\"\n",
        "[deploy]\nrevision = \"git\"\nrollback = \"git-reset\"\n",
        "[deploy]\nrollback = \"git-reset\"\nrevision = \"auto\"\n",
        "[app]\nchdir = \"src\"\n[deploy]\nrollback = \"git-reset\"\n",
    ] {
        assert_eq!(deploy(text, &app).rollback, Rollback::GitReset, "{text}");
    }
    let config = deploy(
        "[deploy]\nrollback = \"none\"\nexit_on_boot_failure = false\n",
        &app,
    );
    assert_eq!(config.rollback, Rollback::None);
    assert!(!config.exit_on_boot_failure);
    // max_surge with all-at-once is kept but ignored; the default
    // strategy is all-at-once.
    let config = deploy("[deploy]\nmax_surge = 4\n", &app);
    assert_eq!(config.strategy, Strategy::AllAtOnce);
    assert_eq!(config.max_surge, 4);
    let config = deploy(
        "[deploy]\nstrategy = \"all-at-once\"\nmax_surge = 2\n",
        &app,
    );
    assert_eq!(config.strategy, Strategy::AllAtOnce);
    assert_eq!(config.max_surge, 2);
    // More than workers.count is fine too.
    let config = deploy(
        "[workers]\ncount = 2\n[deploy]\nstrategy = \"rolling\"\nmax_surge = 8\n",
        &app,
    );
    assert_eq!(config.strategy, Strategy::Rolling);
    assert_eq!(config.max_surge, 8);
}

#[test]
fn control_socket_and_ready_timeout() {
    let app = Overrides {
        app: Some("m:a".into()),
        ..Overrides::default()
    };
    let text = "[control]\nsocket = \"run/../ctl.sock\"\n[deploy]\nready_timeout = \"2m\"\n";
    let config = resolve_text(text, &app).unwrap();
    assert_eq!(
        config.control.socket,
        PathBuf::from("/nonexistent/srv/app/ctl.sock")
    );
    assert_eq!(config.deploy.ready_timeout, Duration::from_secs(120));
    // The flag wins, relative to the cwd.
    let args = Overrides {
        socket: Some("ctl.sock".into()),
        ..app.clone()
    };
    let config = resolve_text(text, &args).unwrap();
    assert_eq!(config.control.socket, PathBuf::from("/cwd/ctl.sock"));
    let args = Overrides {
        socket: Some("/abs/ctl.sock".into()),
        ..app.clone()
    };
    let config = resolve(&args, None, Path::new("/cwd"), &env()).unwrap();
    assert_eq!(config.control.socket, PathBuf::from("/abs/ctl.sock"));
    // The default comes from the environment.
    let runtime = Env {
        default_socket: Place::Fixed("/run/app/corral.sock".into()),
        ..env()
    };
    let config = resolve(&app, None, Path::new("/cwd"), &runtime).unwrap();
    assert_eq!(config.control.socket, PathBuf::from("/run/app/corral.sock"));
}

#[test]
fn each_instance_gets_its_own_socket_and_state_folder_by_default() {
    let shared = Env {
        default_socket: Place::PerInstance("/run/corral".into()),
        default_state_dir: Place::PerInstance("/var/lib/corral".into()),
        ..env()
    };
    let run = |app: &str, bind: &str| {
        let args = Overrides {
            app: Some(app.into()),
            bind: vec![bind.parse().unwrap()],
            ..Overrides::default()
        };
        resolve(&args, None, Path::new("/srv/api"), &shared).unwrap()
    };
    let a = run("main:app", "127.0.0.1:8000");
    let b = run("main:app", "127.0.0.1:8001");
    assert_ne!(a.instance, b.instance);
    assert_eq!(
        a.control.socket,
        Path::new("/run/corral")
            .join(&a.instance)
            .join("corral.sock")
    );
    assert_eq!(
        a.deploy.state_dir,
        Path::new("/var/lib/corral").join(&a.instance)
    );
    assert_ne!(a.control.socket, b.control.socket);
    assert_ne!(a.deploy.state_dir, b.deploy.state_dir);
    // The same command names the same instance again.
    assert_eq!(a.instance, run("main:app", "127.0.0.1:8000").instance);
    // A config file names it with the flags that change what it serves,
    // not with the folder it is started from.
    let text = "[app]\nmodule = \"main:app\"\n[server]\nbind = [\"127.0.0.1:8000\"]\n";
    let file = ConfigFile::new(
        Path::new("corral.toml"),
        Path::new("/srv/shop"),
        text.into(),
    );
    let with = |args: &Overrides, cwd: &str| {
        resolve(args, Some(&file), Path::new(cwd), &shared)
            .unwrap()
            .instance
    };
    let c = with(&Overrides::default(), "/cwd");
    assert!(c.starts_with("shop-"), "{c}");
    assert_eq!(c, with(&Overrides::default(), "/elsewhere"));
    for args in [
        Overrides {
            chdir: Some("/srv/other".into()),
            ..Overrides::default()
        },
        Overrides {
            bind: vec!["127.0.0.1:8001".parse().unwrap()],
            ..Overrides::default()
        },
        Overrides {
            app: Some("other:app".into()),
            ..Overrides::default()
        },
    ] {
        assert_ne!(c, with(&args, "/cwd"), "{args:?}");
    }
}

#[test]
fn the_client_finds_the_socket_without_an_app() {
    let default = Path::new("/tmp/corral-1000/corral.sock");
    let find = |socket: Option<&str>, text: Option<&str>| {
        let file = text.map(|text| {
            ConfigFile::new(
                Path::new("corral.toml"),
                Path::new("/nonexistent/srv/app"),
                text.into(),
            )
        });
        resolve_socket(
            socket.map(Path::new),
            file.as_ref(),
            Path::new("/cwd"),
            default,
        )
        .map_err(|e| e.to_string())
    };
    let file = "[control]\nsocket = \"ctl.sock\"\n";
    assert_eq!(
        find(None, Some(file)),
        Ok("/nonexistent/srv/app/ctl.sock".into())
    );
    assert_eq!(find(Some("my.sock"), Some(file)), Ok("/cwd/my.sock".into()));
    assert_eq!(find(None, None), Ok(default.into()));
    // No [app] module, and problems outside [control] do not matter.
    let other = "[workers]\ncount = 0\n[health]\nmin_ready = 5\n";
    assert_eq!(find(None, Some(other)), Ok(default.into()));
    // A file that does not parse, or a bad socket, is reported as usual.
    assert_eq!(
        find(None, Some("[control]\nsokcet = \"x\"\n")),
        Err("corral.toml:2: control.sokcet: unknown key `sokcet`, expected `socket`; did you mean `socket`?".into())
    );
    assert_eq!(
            find(None, Some("[workers]\nthreads = \"4\"\n")),
            Err("corral.toml:2: workers.threads: invalid type: string \"4\", expected a whole number of 0 or more; for example: threads = 1".into())
        );
    assert_eq!(
        find(None, Some("[control]\n\nsocket = \"\"\n")),
        Err("corral.toml:3: control.socket: is empty: give a path or leave the key out".into())
    );
}

#[test]
fn control_socket_reads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prod.toml");
    std::fs::write(&config, "[control]\nsocket = \"run/ctl.sock\"\n").unwrap();
    assert_eq!(
        control_socket(Some(&config), None).unwrap(),
        dir.path().join("run/ctl.sock")
    );
    // --socket wins, and the file is not even read.
    let missing = dir.path().join("missing.toml");
    assert_eq!(
        control_socket(Some(&missing), Some(Path::new("/abs/ctl.sock"))).unwrap(),
        PathBuf::from("/abs/ctl.sock")
    );
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        control_socket(Some(&config), Some(Path::new("rel.sock"))).unwrap(),
        cwd.join("rel.sock")
    );
    let err = control_socket(Some(&missing), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("cannot read config file {}: ", missing.display())),
        "{err}"
    );
    std::fs::write(&config, "[control]\nsocket = 1\n").unwrap();
    let err = control_socket(Some(&config), None).unwrap_err().to_string();
    assert!(
            err.ends_with(
                "prod.toml:2: control.socket: invalid type: integer `1`, expected a string; put the value in quotes"
            ),
            "{err}"
        );
}

/// gunicorn changes to `--chdir` before it opens the files its flags
/// name; corral's own flags and those read before the chdir (`--config`,
/// `--env-file`) stay relative to the current folder, and the file's paths
/// to the file's folder.
#[test]
fn relative_paths_in_gunicorns_flags_are_in_the_chdir_folder() {
    let args = Overrides {
        app: Some("a:app".into()),
        chdir: Some("x".into()),
        pid: Some("run/app.pid".into()),
        access_logfile: Some("access.log".into()),
        error_logfile: Some("error.log".into()),
        worker_tmp_dir: Some("tmp".into()),
        bind: vec!["unix:web.sock".parse().unwrap()],
        socket: Some("control.sock".into()),
        ..Overrides::default()
    };
    let config = resolve_text("", &args).unwrap();
    let x = |p: &str| PathBuf::from("/cwd/x").join(p);
    assert_eq!(config.server.pid_file, Some(x("run/app.pid")));
    assert_eq!(config.log.error_file, Some(x("error.log")));
    let access = config.log.access.as_ref().unwrap();
    assert!(
        matches!(&access.target, AccessTarget::File(p) if *p == x("access.log")),
        "{:?}",
        access.target
    );
    assert_eq!(config.workers.tmp_dir, Some(x("tmp")));
    assert_eq!(config.server.bind[0].addr, BindAddr::Unix(x("web.sock")));
    assert_eq!(config.control.socket, PathBuf::from("/cwd/control.sock"));
    // The files corral reads at start are looked for there, and a problem
    // says so.
    let with_files = Overrides {
        certfile: Some("cert.pem".into()),
        keyfile: Some("key.pem".into()),
        logconfig: Some("logging.ini".into()),
        ..args.clone()
    };
    let text = resolve_text("", &with_files).unwrap_err().to_string();
    assert!(
        text.contains("/cwd/x/logging.ini is no file") && text.contains("the --chdir folder"),
        "{text}"
    );
    assert!(text.contains("/cwd/x/cert.pem"), "{text}");
    // With no --chdir they are in the current folder.
    let args = Overrides {
        chdir: None,
        ..args
    };
    let config = resolve_text("", &args).unwrap();
    assert_eq!(
        config.server.pid_file,
        Some(PathBuf::from("/cwd/run/app.pid"))
    );
}

/// gunicorn's timeout bounds a worker's start and silence too: a longer
/// `timeout` raises `boot_timeout` and `heartbeat_timeout` unless they are
/// set; `timeout = 0` (none) leaves them at 30 s.
#[test]
fn a_long_timeout_raises_the_boot_and_heartbeat_timeouts_unless_they_are_set() {
    let config = |text: &str| resolve_text(text, &Overrides::default()).expect("config");
    let long = config("[app]\nmodule = \"a:app\"\n[workers]\ntimeout = \"120s\"\n");
    assert_eq!(long.workers.boot_timeout, Duration::from_secs(120));
    assert_eq!(long.workers.heartbeat_timeout, Duration::from_secs(120));
    let set = config(
        "[app]\nmodule = \"a:app\"\n[workers]\ntimeout = \"120s\"\nboot_timeout = \"10s\"\nheartbeat_timeout = \"5s\"\n",
    );
    assert_eq!(set.workers.boot_timeout, Duration::from_secs(10));
    assert_eq!(set.workers.heartbeat_timeout, Duration::from_secs(5));
    let none = config("[app]\nmodule = \"a:app\"\n[workers]\ntimeout = \"0s\"\n");
    assert_eq!(none.workers.boot_timeout, Duration::from_secs(30));
    assert_eq!(none.workers.heartbeat_timeout, Duration::from_secs(30));
    let mut flags = Overrides::default();
    flags.workers_flags.timeout = Some(HumanDuration(Duration::from_secs(90)));
    flags.workers_flags.heartbeat_timeout = Some(HumanDuration(Duration::from_secs(45)));
    let by_flags = resolve_text("[app]\nmodule = \"a:app\"\n", &flags).expect("config");
    assert_eq!(by_flags.workers.boot_timeout, Duration::from_secs(90));
    assert_eq!(by_flags.workers.heartbeat_timeout, Duration::from_secs(45));
}
