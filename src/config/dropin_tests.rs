//! Unit tests of what makes corral a drop-in where gunicorn runs: the
//! workers' environment (`app.env_allow`, the deprecated `app.pass_env`),
//! `$PORT`, `$WEB_CONCURRENCY`, `workers = "auto"`, app factories,
//! `app.root_path`, `app.proc_name`, the workers' Python logging
//! (`app.logconfig*`), gunicorn's worker hooks (`app.gunicorn_hooks`),
//! `$FORWARDED_ALLOW_IPS` and flags set from the environment.

use std::path::Path;

use super::tests::{env, resolve_text};
use super::*;

fn app() -> Overrides {
    Overrides {
        app: Some("m:a".into()),
        ..Overrides::default()
    }
}

fn problems(text: &str, args: &Overrides) -> String {
    resolve_text(text, args).unwrap_err().to_string()
}

#[test]
fn workers_inherit_everything_by_default_or_only_what_env_allow_names() {
    let config = resolve_text("", &app()).unwrap();
    assert_eq!(config.app.env_allow, None);
    assert!(config.warnings.is_empty());
    let text = "[app]\nenv_allow = [\"PATH\", \"LC_*\", \"DATABASE_URL\"]\n";
    let allow = resolve_text(text, &app()).unwrap().app.env_allow.unwrap();
    for (name, allowed) in [
        ("PATH", true),
        ("LC_ALL", true),
        ("LC_", true),
        ("DATABASE_URL", true),
        ("DATABASE_URL2", false),
        ("HOME", false),
        ("XLC_ALL", false),
    ] {
        assert_eq!(allow.allows(name), allowed, "{name}");
    }
    let glob = EnvAllow(vec!["*_URL".into(), "A*B*C".into()]);
    for (name, allowed) in [
        ("SENTRY_URL", true),
        ("_URL", true),
        ("URL", false),
        ("ABC", true),
        ("AxxBxxC", true),
        ("AxxCxxB", false),
        ("ABCD", false),
    ] {
        assert_eq!(glob.allows(name), allowed, "{name}");
    }
    assert!(EnvAllow(vec!["*".into()]).allows("ANYTHING"));
    assert!(!EnvAllow(vec![]).allows("PATH"));
}

#[test]
fn corral_and_service_manager_variables_are_never_inherited() {
    for name in [
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "CORRAL_STATUS_TOKEN",
        "CORRAL_WORKERS",
        "CORRAL_INHERIT",
    ] {
        assert!(is_corral_own_env(name), "{name}");
    }
    for name in ["PATH", "DATABASE_URL", "LISTEN_ADDR", "CORRAL"] {
        assert!(!is_corral_own_env(name), "{name}");
    }
    // Allowing one of them is a mistake that says so.
    let text = "[app]\nenv_allow = [\"PATH\",\n  \"CORRAL_STATUS_TOKEN\", \"\"]\n";
    let err = problems(text, &app());
    assert!(
        err.contains("corral.toml:3: app.env_allow: CORRAL_STATUS_TOKEN belongs to corral"),
        "{err}"
    );
    assert!(
        err.contains("corral.toml:3: app.env_allow: \"\" is not a variable name"),
        "{err}"
    );
}

#[test]
fn pass_env_keeps_its_old_meaning_with_a_warning() {
    let text = "[app]\npass_env = [\"DATABASE_URL\"]\n";
    let config = resolve_text(text, &app()).unwrap();
    let allow = config.app.env_allow.unwrap();
    for name in ["PATH", "HOME", "LC_ALL", "VIRTUAL_ENV", "DATABASE_URL"] {
        assert!(allow.allows(name), "{name}");
    }
    assert!(!allow.allows("SECRET_KEY"));
    assert_eq!(config.warnings.len(), 1);
    assert!(
        config.warnings[0].starts_with("corral.toml:2 (key app.pass_env): pass_env is deprecated")
            && config.warnings[0].contains("env_allow = [\"PATH\", \"HOME\"")
            && config.warnings[0].contains("\"DATABASE_URL\"]"),
        "{}",
        config.warnings[0]
    );
    // ["*"] was gunicorn's behaviour and is the default now.
    let config = resolve_text("[app]\npass_env = [\"*\"]\n", &app()).unwrap();
    assert_eq!(config.app.env_allow, None);
    assert!(config.warnings[0].contains("the default now"));
    // Not both.
    let err = problems(
        "[app]\nenv_allow = [\"PATH\"]\npass_env = [\"HOME\"]\n",
        &app(),
    );
    assert_eq!(
        err,
        "corral.toml:3: app.pass_env: is the old name of env_allow: move its names into env_allow and remove it"
    );
}

fn with_env(text: &str, args: &Overrides, env: &Env) -> Result<Config, ConfigError> {
    let file = ConfigFile::new(
        Path::new("corral.toml"),
        Path::new("/nonexistent/srv/app"),
        text.into(),
    );
    resolve(args, Some(&file), Path::new("/cwd"), env)
}

#[test]
fn port_is_the_default_bind_on_all_interfaces() {
    let paas = Env {
        port: Some("5000".into()),
        ..env()
    };
    let config = with_env("", &app(), &paas).unwrap();
    assert_eq!(
        config.server.bind[0].addr,
        "0.0.0.0:5000".parse::<BindAddr>().unwrap()
    );
    assert_eq!(config.server.bind.len(), 1);
    // A bind in the file or on the command line wins.
    let config = with_env("[server]\nbind = [\"127.0.0.1:81\"]\n", &app(), &paas).unwrap();
    assert_eq!(
        config.server.bind[0].addr,
        "127.0.0.1:81".parse::<BindAddr>().unwrap()
    );
    let args = Overrides {
        bind: vec!["unix:/s".parse().unwrap()],
        ..app()
    };
    let config = with_env("", &args, &paas).unwrap();
    assert_eq!(config.server.bind[0].addr, BindAddr::Unix("/s".into()));
    // A bad PORT is an error only when it is used.
    let bad = Env {
        port: Some("http".into()),
        ..env()
    };
    let err = with_env("", &app(), &bad).unwrap_err().to_string();
    assert!(
        err.starts_with("PORT (environment): \"http\" is not a port number"),
        "{err}"
    );
    assert!(with_env("[server]\nbind = [\"127.0.0.1:81\"]\n", &app(), &bad).is_ok());
}

#[test]
fn web_concurrency_is_the_default_worker_count() {
    let paas = Env {
        web_concurrency: Some("3".into()),
        ..env()
    };
    let config = with_env("", &app(), &paas).unwrap();
    assert_eq!(config.workers.count, 3);
    assert_eq!(config.workers.count_origin, "WEB_CONCURRENCY (environment)");
    let config = with_env("[workers]\ncount = 2\n", &app(), &paas).unwrap();
    assert_eq!(config.workers.count, 2);
    assert_eq!(
        config.workers.count_origin,
        "corral.toml:2 (key workers.count)"
    );
    let bad = Env {
        web_concurrency: Some("lots".into()),
        ..env()
    };
    let err = with_env("", &app(), &bad).unwrap_err().to_string();
    assert_eq!(
        err,
        "WEB_CONCURRENCY (environment): \"lots\" is not a number of workers: use a number of workers like 4, or \"auto\" for one per CPU; it is used because no --workers or workers.count is given"
    );
    assert!(with_env("[workers]\ncount = 1\n", &app(), &bad).is_ok());
    let zero = Env {
        web_concurrency: Some("0".into()),
        ..env()
    };
    let err = with_env("", &app(), &zero).unwrap_err().to_string();
    assert!(
        err.starts_with("WEB_CONCURRENCY (environment): must be at least 1"),
        "{err}"
    );
}

#[test]
fn auto_workers_are_the_usable_cpus_and_say_why() {
    let two = Env {
        usable_cpus: crate::cpus::Usable {
            count: 2,
            why: "affinity mask: 64 CPUs; cgroup v2 cpu.max 200000/100000 = 2.00 CPUs in /sys/fs/cgroup".into(),
        },
        ..env()
    };
    let config = with_env("[workers]\ncount = \"auto\"\n", &app(), &two).unwrap();
    assert_eq!(config.workers.count, 2);
    assert_eq!(
        config.workers.count_origin,
        "corral.toml:2 (key workers.count) = auto: affinity mask: 64 CPUs; cgroup v2 cpu.max 200000/100000 = 2.00 CPUs in /sys/fs/cgroup"
    );
    let args = Overrides {
        workers: Some(WorkerCount::Auto),
        ..app()
    };
    assert_eq!(
        with_env("[workers]\ncount = 8\n", &args, &two)
            .unwrap()
            .workers
            .count,
        2
    );
    let paas = Env {
        web_concurrency: Some("auto".into()),
        ..two
    };
    assert_eq!(with_env("", &app(), &paas).unwrap().workers.count, 2);
}

#[test]
fn app_factories() {
    let args = Overrides {
        app: Some("main:create_app('prod', debug=False)".into()),
        ..Overrides::default()
    };
    let config = resolve_text("", &args).unwrap();
    assert_eq!(config.app.module, "main:create_app('prod', debug=False)");
    assert!(!config.app.factory);
    let config = resolve_text(
        "[app]\nmodule = \"main:create_app\"\nfactory = true\n",
        &Overrides::default(),
    )
    .unwrap();
    assert!(config.app.factory);
    let args = Overrides {
        factory: true,
        ..args
    };
    assert_eq!(
        problems("", &args),
        "--factory: \"main:create_app('prod', debug=False)\" already calls its factory with arguments: drop --factory or the parentheses"
    );
    for (spec, reason) in [
        ("main:create_app(", "does not end with ')'"),
        ("main:create app()", "is not a Python attribute name"),
        ("main:(lambda: 1)()", "is not a Python attribute name"),
    ] {
        let args = Overrides {
            app: Some(spec.into()),
            ..Overrides::default()
        };
        let err = problems("", &args);
        assert!(err.contains(reason), "{spec}: {err}");
    }
}

#[test]
fn root_path_from_the_flag_the_file_or_script_name() {
    let root = |text: &str, args: &Overrides, script_name: Option<&str>| {
        let env = Env {
            script_name: script_name.map(str::to_owned),
            ..env()
        };
        with_env(text, args, &env).map(|c| c.app.root_path)
    };
    assert_eq!(root("", &app(), None).unwrap(), "");
    assert_eq!(root("", &app(), Some("/legacy")).unwrap(), "/legacy");
    let text = "[app]\nroot_path = \"/api/\"\n";
    assert_eq!(root(text, &app(), Some("/legacy")).unwrap(), "/api");
    let args = Overrides {
        root_path: Some("/v2".into()),
        ..app()
    };
    assert_eq!(root(text, &args, None).unwrap(), "/v2");
    assert_eq!(
        root("[app]\nroot_path = \"/\"\n", &app(), None).unwrap(),
        ""
    );
    for (bad, reason) in [
        ("api", "does not start with '/'"),
        ("/a b", "holds ' '"),
        ("/a?b", "holds '?'"),
        ("/%41", "holds '%'"),
    ] {
        let text = format!("[app]\nroot_path = \"{bad}\"\n");
        let err = root(&text, &app(), None).unwrap_err().to_string();
        assert!(
            err.starts_with("corral.toml:2: app.root_path: ") && err.contains(reason),
            "{bad}: {err}"
        );
    }
}

#[test]
fn a_value_from_the_environment_is_named_by_its_variable() {
    let args = Overrides {
        workers: Some(WorkerCount::Count(0)),
        from_env: vec![("--workers".into(), "CORRAL_WORKERS".into())],
        ..app()
    };
    assert_eq!(
        problems("", &args),
        "CORRAL_WORKERS: must be at least 1 (it is the number of worker processes), or \"auto\""
    );
    let args = Overrides {
        workers: Some(WorkerCount::Count(0)),
        from_env: vec![("--workers".into(), "--workers in GUNICORN_CMD_ARGS".into())],
        ..app()
    };
    assert!(
        problems("", &args).starts_with("--workers in GUNICORN_CMD_ARGS: must be at least 1"),
        "{}",
        problems("", &args)
    );
    let args = Overrides {
        workers: Some(WorkerCount::Count(0)),
        ..app()
    };
    assert!(problems("", &args).starts_with("--workers: "));
}

#[test]
fn proc_name_from_the_flag_or_the_file_and_checked() {
    let cfg = resolve_text("", &app()).unwrap();
    assert_eq!(cfg.app.proc_name, None);
    let text = "[app]\nproc_name = \"shop\"\n";
    assert_eq!(
        resolve_text(text, &app()).unwrap().app.proc_name.as_deref(),
        Some("shop")
    );
    let args = Overrides {
        proc_name: Some("shop api".into()),
        ..app()
    };
    assert_eq!(
        resolve_text(text, &args).unwrap().app.proc_name.as_deref(),
        Some("shop api")
    );
    let err = problems("[app]\nproc_name = \"a\\nb\"\n", &app());
    assert!(
        err.starts_with("corral.toml:2: app.proc_name: holds the control character"),
        "{err}"
    );
    let args = Overrides {
        proc_name: Some(" ".into()),
        ..app()
    };
    assert!(problems("", &args).starts_with("--name: is empty"));
    let args = Overrides {
        proc_name: Some("x".repeat(65)),
        ..app()
    };
    assert!(problems("", &args).contains("keep it to 64"));
}

#[test]
fn forwarded_allow_ips_from_the_environment_below_the_flag_and_the_file() {
    let allow = |text: &str, args: &Overrides, var: Option<&str>| {
        let env = Env {
            forwarded_allow_ips: var.map(str::to_owned),
            ..env()
        };
        with_env(text, args, &env).map(|c| c.server.forwarded_allow_ips.clone())
    };
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    // gunicorn's and uvicorn's variable, as in a container behind an ingress.
    let from_env = allow("", &app(), Some("*")).unwrap();
    assert!(from_env.allows(ip("10.1.2.3")));
    let from_env = allow("", &app(), Some("10.0.0.0/8, 192.168.1.1")).unwrap();
    assert!(from_env.allows(ip("10.1.2.3")) && !from_env.allows(ip("127.0.0.1")));
    // The file's key and the flag win.
    let file = "[server]\nforwarded_allow_ips = [\"192.168.0.0/16\"]\n";
    assert!(
        !allow(file, &app(), Some("*"))
            .unwrap()
            .allows(ip("10.1.2.3"))
    );
    let args = Overrides {
        forwarded_allow_ips: Some("172.16.0.1".into()),
        ..app()
    };
    let flag = allow("", &args, Some("*")).unwrap();
    assert!(flag.allows(ip("172.16.0.1")) && !flag.allows(ip("10.1.2.3")));
    // Unset: the default, loopback.
    assert!(allow("", &app(), None).unwrap().allows(ip("127.0.0.1")));
    let err = allow("", &app(), Some("10.0.0.0/99"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("FORWARDED_ALLOW_IPS (environment): "),
        "{err}"
    );
}

#[test]
fn the_workers_python_logging_from_a_flag_or_one_file_key() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("logging.ini");
    std::fs::write(&ini, "[loggers]\nkeys=root\n").unwrap();
    let ini_text = ini.display().to_string();
    assert_eq!(resolve_text("", &app()).unwrap().app.logging, None);

    let text = format!("[app]\nlogconfig = \"{ini_text}\"\n");
    let cfg = resolve_text(&text, &app()).unwrap();
    assert_eq!(cfg.app.logging, Some(PythonLogging::Ini(ini.clone())));
    assert_eq!(
        cfg.app.logging.unwrap().for_worker(),
        format!("ini:{ini_text}")
    );

    // A table becomes the JSON the worker hands dictConfig.
    let text =
        "[app.logconfig_dict]\nversion = 1\n[app.logconfig_dict.loggers.shop]\nlevel = \"DEBUG\"\n";
    let Some(PythonLogging::Dict(json)) = resolve_text(text, &app()).unwrap().app.logging else {
        panic!("no dictionary");
    };
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["loggers"]["shop"]["level"], "DEBUG");
    assert_eq!(json["version"], 1);

    // The flag replaces what the file says.
    let args = Overrides {
        logconfig_json: Some(ini.clone()),
        ..app()
    };
    assert_eq!(
        resolve_text(text, &args).unwrap().app.logging,
        Some(PythonLogging::Json(ini.clone()))
    );

    let both = format!("[app]\nlogconfig = \"{ini_text}\"\nlogconfig_json = \"{ini_text}\"\n");
    let err = problems(&both, &app());
    assert!(
        err.starts_with("corral.toml:3: app.logconfig_json: is given beside app.logconfig"),
        "{err}"
    );
    let err = problems("[app]\nlogconfig = \"missing.ini\"\n", &app());
    assert!(
        err.starts_with(
            "corral.toml:2: app.logconfig: /nonexistent/srv/app/missing.ini is no file"
        ),
        "{err}"
    );
    let args = Overrides {
        logconfig: Some("gone.ini".into()),
        ..app()
    };
    assert!(problems("", &args).starts_with("--log-config: /cwd/gone.ini is no file"));
    let err = problems(
        "[app.logconfig_dict]\nversion = 1\nsince = 2026-12-05\n",
        &app(),
    );
    assert!(
        err.contains("app.logconfig_dict: since is a TOML date or time"),
        "{err}"
    );
}

#[test]
fn a_paste_app_from_a_flag_or_the_file_in_place_of_a_module() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("production.ini");
    std::fs::write(&ini, "[app:main]\nuse = call:shop:main\n").unwrap();
    let ini_text = ini.display().to_string();
    let no_app = Overrides::default();

    let text =
        format!("[app]\npaste = \"{ini_text}#shop\"\n[app.paste_global]\ndb = \"sqlite://\"\n");
    let cfg = resolve_text(&text, &no_app).unwrap();
    let paste = cfg.app.paste.clone().unwrap();
    assert_eq!(paste.file, ini);
    assert_eq!(paste.name.as_deref(), Some("shop"));
    assert_eq!(
        paste.global.get("db").map(String::as_str),
        Some("sqlite://")
    );
    assert_eq!(paste.uri(), format!("config:{ini_text}#shop"));
    // The log, `corral check` and /status name it.
    assert_eq!(cfg.app.module, format!("paste:{ini_text}#shop"));

    // A flag's app replaces the file's Paste app, and the other way round.
    let cfg = resolve_text(&text, &app()).unwrap();
    assert_eq!((cfg.app.paste, cfg.app.module.as_str()), (None, "m:a"));
    let args = Overrides {
        paste: Some(ini_text.clone()),
        paste_global: vec![("db".into(), "postgresql://".into())],
        ..Overrides::default()
    };
    let cfg = resolve_text("[app]\nmodule = \"m:a\"\n", &args).unwrap();
    let paste = cfg.app.paste.unwrap();
    assert_eq!(
        (paste.name, paste.global["db"].as_str()),
        (None, "postgresql://")
    );

    let both = format!("[app]\nmodule = \"m:a\"\npaste = \"{ini_text}\"\n");
    let err = problems(&both, &no_app);
    assert!(
        err.starts_with("corral.toml:2: app.module: is given beside app.paste: serve the module or the Paste app, not both"),
        "{err}"
    );
    let err = problems("[app]\npaste = \"nope.ini\"\n", &no_app);
    assert!(
        err.starts_with("corral.toml:2: app.paste: /nonexistent/srv/app/nope.ini is no file"),
        "{err}"
    );
    let err = problems(&format!("[app]\npaste = \"{ini_text}#\"\n"), &no_app);
    assert!(err.contains("name the app after '#'"), "{err}");
    let err = problems(
        &format!("[app]\npaste = \"{ini_text}\"\nfactory = true\n"),
        &no_app,
    );
    assert!(
        err.contains("app.factory: is for a module's app factory, not a Paste app"),
        "{err}"
    );
}

#[test]
fn gunicorns_config_locations() {
    let conf = |s: &str| gunicorn_location(Path::new(s));
    assert_eq!(conf("corral.toml"), Ok(None));
    assert_eq!(
        conf("file:deploy.conf").unwrap().unwrap(),
        GunicornConf {
            path: "deploy.conf".into(),
            module: None,
            hypercorn: false
        }
    );
    assert_eq!(conf("g.py").unwrap().unwrap().location(), "g.py");
    for bad in ["python:1st", "python:a..b", "python:", "python:a-b.c"] {
        let err = conf(bad).unwrap_err();
        assert!(err.contains("not a module name"), "{bad}: {err}");
    }
    // Looked up below the current folder (the tests' is the crate's).
    let found = conf("python:src.import_gunicorn.read_conf")
        .unwrap()
        .unwrap();
    assert_eq!(found.path, Path::new("src/import_gunicorn/read_conf.py"));
    assert_eq!(found.location(), "python:src.import_gunicorn.read_conf");
}

#[test]
fn a_pid_file_named_like_a_port_is_daphnes_p_and_refused() {
    let args = Overrides {
        pid: Some("8001".into()),
        ..Overrides::default()
    };
    let err = resolve_text("[app]\nmodule = \"m:a\"\n", &args)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--pid: \"8001\" is a number: -p/--pid is gunicorn's pid file; for daphne's -b HOST -p 8001, give --host HOST --port 8001"),
        "{err}"
    );
    let args = Overrides {
        pid: Some("./8001.pid".into()),
        ..Overrides::default()
    };
    assert!(resolve_text("[app]\nmodule = \"m:a\"\n", &args).is_ok());
}

#[test]
fn gunicorn_hooks_names_a_file_beside_the_config_or_a_python_module() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("gunicorn.conf.py");
    std::fs::write(&conf, "def post_fork(server, worker):\n    pass\n").unwrap();
    assert_eq!(resolve_text("", &app()).unwrap().app.gunicorn_hooks, None);
    for given in [
        conf.display().to_string(),
        format!("file:{}", conf.display()),
    ] {
        let text = format!("[app]\ngunicorn_hooks = \"{given}\"\n");
        let hooks = resolve_text(&text, &app()).unwrap().app.gunicorn_hooks;
        let hooks = hooks.expect("the key names a file");
        assert_eq!(hooks.path, conf);
        assert_eq!(hooks.module, None);
        let json: serde_json::Value = serde_json::from_str(&hooks.for_worker()).unwrap();
        assert_eq!(json["path"], conf.display().to_string());
        assert_eq!(json["module"], serde_json::Value::Null);
    }
    // Relative to the file's folder; a missing one is named with its key.
    let err = problems("[app]\ngunicorn_hooks = \"gunicorn.conf.py\"\n", &app());
    assert!(
        err.starts_with(
            "corral.toml:2: app.gunicorn_hooks: /nonexistent/srv/app/gunicorn.conf.py is no file"
        ),
        "{err}"
    );
    let err = problems("[app]\ngunicorn_hooks = \"\"\n", &app());
    assert!(err.contains("app.gunicorn_hooks: is empty"), "{err}");
    let err = problems(
        "[app]\ngunicorn_hooks = \"python:no.such.module\"\n",
        &app(),
    );
    assert!(
        err.contains("app.gunicorn_hooks: python:no.such.module: neither no/such/module.py nor"),
        "{err}"
    );
    let err = problems("[app]\ngunicorn_hooks = \"python:not-a-name\"\n", &app());
    assert!(err.contains("not a module name"), "{err}");
}
