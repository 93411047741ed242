use super::*;
use crate::config::tests::{env, resolve_text};
use crate::config::{
    ByteSize, Env, HumanDuration, Limits, MinReady, Overrides, WorkerCount, resolve,
};

#[test]
fn modules() {
    assert_eq!(check_module("main:app"), Ok("main:app".into()));
    assert_eq!(check_module("pkg.wsgi"), Ok("pkg.wsgi:application".into()));
    assert_eq!(check_module("m:create_app()"), Ok("m:create_app()".into()));
    assert!(
        check_module("main.py:app")
            .unwrap_err()
            .contains("\"main:app\"")
    );
    assert!(
        check_module("pkg/web:app")
            .unwrap_err()
            .contains("\"pkg.web\"")
    );
    assert!(check_module("").is_err());
    assert!(check_module(":app").is_err());
    assert!(check_module("main:").is_err());
    assert!(check_module("my-app:app").is_err());
}

#[test]
fn validation_reports_every_problem() {
    let text = "[app]\nmodule = \"\"\nenv = { \"A=B\" = \"x\" }\n\n[server]\nbind = [\"0.0.0.0\", \"[::]:80\", \"[::]:80\"]\n\
                    max_header_bytes = \"1KiB\"\n[workers]\ncount = 0\nthreads = 0\ntimeout = \"0s\"\n";
    let text = resolve_text(text, &Overrides::default())
        .unwrap_err()
        .to_string();
    let expected = [
        "8 problems in the configuration:",
        "  corral.toml:2: app.module: is empty: write it as \"module:callable\", like \"main:app\"",
        "  corral.toml:3: app.env.A=B: \"A=B\" is not a valid variable name",
        "  corral.toml:6: server.bind: invalid bind address \"0.0.0.0\": the port is missing, like \"0.0.0.0:8000\"",
        "  corral.toml:6: server.bind: [::]:80 is listed twice (first at corral.toml:6 (key server.bind))",
        "  corral.toml:7: server.max_header_bytes: must be at least \"8KiB\"",
        "  corral.toml:9: workers.count: must be at least 1",
        "  corral.toml:10: workers.threads: must be at least 1",
    ];
    for line in expected {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(
        text.contains("corral.toml:11: workers.timeout: must be longer than 0s"),
        "{text}"
    );
}

fn problems(text: &str, args: &Overrides) -> String {
    resolve_text(text, args).unwrap_err().to_string()
}

#[test]
fn boot_timeout_and_restart_backoff() {
    let text = "[app]\nmodule = \"m:a\"\n[workers]\nboot_timeout = \"0s\"\n\
                    restart_backoff = \"0ms\"\nrestart_backoff_max = \"0s\"\n";
    let text = problems(text, &Overrides::default());
    let expected = [
        "3 problems in the configuration:",
        "  corral.toml:4: workers.boot_timeout: must be longer than 0s, like \"30s\"",
        "  corral.toml:5: workers.restart_backoff: must be longer than 0s, like \"100ms\"",
        "  corral.toml:6: workers.restart_backoff_max: must be longer than 0s, like \"30s\"",
    ];
    for line in expected {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }

    let text = "[app]\nmodule = \"m:a\"\n[workers]\nrestart_backoff = \"2s\"\n\
                    restart_backoff_max = \"500ms\"\n";
    assert_eq!(
        problems(text, &Overrides::default()),
        "corral.toml:5: workers.restart_backoff_max: 500ms is shorter than workers.restart_backoff (2s): \
             make it at least as long, or shorten restart_backoff"
    );
    // Without restart_backoff_max, the problem is the key that was set.
    let text = "[app]\nmodule = \"m:a\"\n[workers]\nrestart_backoff = \"1m\"\n";
    assert_eq!(
        problems(text, &Overrides::default()),
        "corral.toml:4: workers.restart_backoff: 60s is longer than workers.restart_backoff_max (30s by default): \
             shorten it, or set restart_backoff_max to at least 60s"
    );
    let text = "[app]\nmodule = \"m:a\"\n[workers]\nrestart_backoff = \"1s\"\n\
                    restart_backoff_max = \"1s\"\n";
    let config = resolve_text(text, &Overrides::default()).unwrap();
    assert_eq!(config.workers.restart_backoff, Duration::from_secs(1));
    assert_eq!(config.workers.restart_backoff_max, Duration::from_secs(1));

    let args = Overrides {
        app: Some("m:a".into()),
        boot_timeout: Some(HumanDuration(Duration::ZERO)),
        ..Overrides::default()
    };
    assert_eq!(
        problems("", &args),
        "--boot-timeout: must be longer than 0s, like \"30s\""
    );
}

#[test]
fn status_bind_must_not_be_a_server_address() {
    let text = "[app]\nmodule = \"m:a\"\n[server]\nbind = [\"127.0.0.1:8000\", \"unix:web.sock\"]\n\
                    [health]\nstatus_bind = \"127.0.0.1:8000\"\n";
    assert_eq!(
        problems(text, &Overrides::default()),
        "corral.toml:6: health.status_bind: 127.0.0.1:8000 is also a server address \
             (at corral.toml:4 (key server.bind)): give the status server its own address, like \"127.0.0.1:9000\""
    );
    // Socket paths are compared once made absolute.
    let text = "[app]\nmodule = \"m:a\"\n[server]\nbind = [\"unix:/srv/app/web.sock\"]\n\
                    [health]\nstatus_bind = \"unix:./web.sock\"\n";
    assert!(problems(text, &Overrides::default()).starts_with(
        "corral.toml:6: health.status_bind: unix:/srv/app/web.sock is also a server address"
    ));
    // The default server address counts too.
    let text = "[app]\nmodule = \"m:a\"\n[health]\nstatus_bind = \"127.0.0.1:8000\"\n";
    assert!(
        problems(text, &Overrides::default())
            .contains("(at default (no --bind or server.bind given))")
    );
    // A wildcard address takes the port on every address of its family.
    let text = "[app]\nmodule = \"m:a\"\n[server]\nbind = [\"0.0.0.0:8000\"]\n\
                    [health]\nstatus_bind = \"127.0.0.1:8000\"\n";
    assert_eq!(
        problems(text, &Overrides::default()),
        "corral.toml:6: health.status_bind: 127.0.0.1:8000 overlaps the server address 0.0.0.0:8000 \
             (at corral.toml:4 (key server.bind)) on the same port: give the status server its own port, like \"127.0.0.1:9000\""
    );
    // Flags: both sides.
    let args = Overrides {
        app: Some("m:a".into()),
        bind: vec!["[::]:8000".parse().unwrap()],
        status_bind: Some("[::1]:8000".parse().unwrap()),
        ..Overrides::default()
    };
    assert!(problems("", &args).starts_with(
        "--status-bind: [::1]:8000 overlaps the server address [::]:8000 (at --bind)"
    ));
    let text = "[health]\nstatus_bind = \"localhost\"\n";
    let args = Overrides {
        app: Some("m:a".into()),
        ..Overrides::default()
    };
    assert!(
        problems(text, &args)
            .starts_with("corral.toml:2: health.status_bind: invalid bind address \"localhost\"")
    );

    // Different ports, families, port 0 or paths are fine.
    for (server, status) in [
        ("127.0.0.1:8000", "127.0.0.1:9000"),
        ("0.0.0.0:8000", "[::1]:8000"),
        ("127.0.0.1:0", "127.0.0.1:0"),
        ("unix:web.sock", "unix:status.sock"),
        ("127.0.0.1:8000", "unix:8000"),
    ] {
        let text = format!(
            "[app]\nmodule = \"m:a\"\n[server]\nbind = [\"{server}\"]\n[health]\nstatus_bind = \"{status}\"\n"
        );
        let config = resolve_text(&text, &Overrides::default()).unwrap();
        let status = config.health.status_bind.unwrap();
        assert_eq!(status.origin, "corral.toml:6 (key health.status_bind)");
    }
}

#[test]
fn min_ready_counts_and_percentages() {
    let min_ready = |text: &str, args: &Overrides| {
        let text = format!("[app]\nmodule = \"m:a\"\n{text}");
        resolve_text(&text, args).map(|c| c.health.min_ready)
    };
    let none = Overrides::default();
    assert_eq!(
        min_ready("[workers]\ncount = 4\n[health]\nmin_ready = 4\n", &none).unwrap(),
        MinReady::Count(4)
    );
    assert_eq!(
        min_ready("[health]\nmin_ready = \"2\"\n[workers]\ncount = 3\n", &none).unwrap(),
        MinReady::Count(2)
    );
    assert_eq!(
        min_ready("[health]\nmin_ready = \"100%\"\n", &none).unwrap(),
        MinReady::Percent(100)
    );
    let err = min_ready("[workers]\ncount = 2\n[health]\nmin_ready = 3\n", &none)
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "corral.toml:6: health.min_ready: needs 3 workers in service but workers.count is 2: \
             lower it to 2 or less, or use a percentage like \"100%\""
    );
    let args = Overrides {
        workers: Some(WorkerCount::Count(1)),
        ..Overrides::default()
    };
    let err = min_ready("[workers]\ncount = 4\n[health]\nmin_ready = 2\n", &args)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "corral.toml:6: health.min_ready: needs 2 workers in service but --workers is 1"
        ),
        "{err}"
    );
    let args = Overrides {
        min_ready: Some(MinReady::Count(3)),
        ..Overrides::default()
    };
    let err = min_ready("", &args).unwrap_err().to_string();
    assert!(
        err.starts_with("--min-ready: needs 3 workers in service but workers.count is 1"),
        "{err}"
    );
    assert_eq!(
        min_ready("[health]\nmin_ready = 0\n", &none)
            .unwrap_err()
            .to_string(),
        "corral.toml:4: health.min_ready: must be at least 1: use a count like 2 or a percentage like \"50%\""
    );
    assert_eq!(
        min_ready("[health]\nmin_ready = \"0%\"\n", &none)
            .unwrap_err()
            .to_string(),
        "corral.toml:4: health.min_ready: must be at least 1%: use a percentage like \"50%\" or a count like 2"
    );
    // workers.count = 0 is reported once, not again through min_ready.
    let err = min_ready("[workers]\ncount = 0\n[health]\nmin_ready = 2\n", &none)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("corral.toml:4: workers.count: must be at least 1"),
        "{err}"
    );
}

#[test]
fn ready_path_must_start_with_a_slash() {
    let ready_path = |path: &str| {
        let text = format!("[app]\nmodule = \"m:a\"\n[health]\nready_path = {path:?}\n");
        resolve_text(&text, &Overrides::default())
            .map(|c| c.health.ready_path.unwrap())
            .map_err(|e| e.to_string())
    };
    for good in ["/health/ready", "/", "/ready?deep=1&x=%20", "//x"] {
        assert_eq!(ready_path(good).as_deref(), Ok(good));
    }
    let at = "corral.toml:4: health.ready_path: ";
    assert_eq!(
        ready_path("health/ready").unwrap_err(),
        format!("{at}\"health/ready\" must start with \"/\", like \"/health/ready\"")
    );
    assert_eq!(
        ready_path("http://127.0.0.1:8000/healthz").unwrap_err(),
        format!(
            "{at}\"http://127.0.0.1:8000/healthz\" is a URL: it must start with \"/\"; give only the path, \
                 like \"/healthz\" (corral sends the probe to each worker itself)"
        )
    );
    assert!(
        ready_path("http://localhost")
            .unwrap_err()
            .contains("like \"/\"")
    );
    assert_eq!(
        ready_path("").unwrap_err(),
        format!(
            "{at}is empty: give a path like \"/health/ready\", or leave it out for no readiness probe"
        )
    );
    assert_eq!(
        ready_path("/health ready").unwrap_err(),
        format!(
            "{at}\"/health ready\" holds ' ', which cannot be sent in a request path: \
                 percent-encode it (a space is %20)"
        )
    );
    for bad in ["/a\tb", "/caf\u{e9}", "/ready#top", "/a\nb"] {
        assert!(
            ready_path(bad)
                .unwrap_err()
                .contains("cannot be sent in a request path"),
            "{bad:?}"
        );
    }
    let args = Overrides {
        app: Some("m:a".into()),
        ready_path: Some("ready".into()),
        ..Overrides::default()
    };
    assert_eq!(
        problems("[health]\nready_path = \"/ok\"\n", &args),
        "--ready-path: \"ready\" must start with \"/\", like \"/ready\""
    );
}

#[test]
fn probe_settings() {
    let text = "[app]\nmodule = \"m:a\"\n[health]\nprobe_interval = \"0s\"\n\
                    probe_timeout = \"0ms\"\nunhealthy_after = 0\nmin_in_service = 0\n";
    let text = problems(text, &Overrides::default());
    let expected = [
        "4 problems in the configuration:",
        "  corral.toml:4: health.probe_interval: must be longer than 0s, like \"10s\"",
        "  corral.toml:5: health.probe_timeout: must be longer than 0s, like \"5s\"",
        "  corral.toml:6: health.unhealthy_after: must be at least 1 (it is the number of failed probes in a row), like 3",
        "  corral.toml:7: health.min_in_service: must be at least 1: use a count like 2 or a percentage like \"50%\"",
    ];
    for line in expected {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // A probe may take longer than the interval; the probes do not overlap.
    let text = "[app]\nmodule = \"m:a\"\n[health]\nprobe_interval = \"1s\"\n\
                    probe_timeout = \"3s\"\nunhealthy_after = 10\n";
    let config = resolve_text(text, &Overrides::default()).unwrap();
    assert_eq!(config.health.probe_interval, Duration::from_secs(1));
    assert_eq!(config.health.probe_timeout, Duration::from_secs(3));
    assert_eq!(config.health.unhealthy_after, 10);
}

#[test]
fn min_in_service_follows_the_rules_of_min_ready() {
    let min_in_service = |text: &str, args: &Overrides| {
        let text = format!("[app]\nmodule = \"m:a\"\n{text}");
        resolve_text(&text, args)
            .map(|c| c.health.min_in_service)
            .map_err(|e| e.to_string())
    };
    let none = Overrides::default();
    assert_eq!(
        min_in_service(
            "[workers]\ncount = 4\n[health]\nmin_in_service = 4\n",
            &none
        ),
        Ok(MinReady::Count(4))
    );
    assert_eq!(
        min_in_service("[health]\nmin_in_service = \"100%\"\n", &none),
        Ok(MinReady::Percent(100))
    );
    assert_eq!(
            min_in_service("[workers]\ncount = 2\n[health]\nmin_in_service = 3\n", &none),
            Err(
                "corral.toml:6: health.min_in_service: needs 3 workers in service but workers.count is 2: \
                 lower it to 2 or less, or use a percentage like \"50%\""
                    .into()
            )
        );
    let args = Overrides {
        workers: Some(WorkerCount::Count(1)),
        ..Overrides::default()
    };
    assert!(
        min_in_service(
            "[workers]\ncount = 4\n[health]\nmin_in_service = 2\n",
            &args
        )
        .unwrap_err()
        .starts_with(
            "corral.toml:6: health.min_in_service: needs 2 workers in service but --workers is 1"
        )
    );
    // The default 50% fits any number of workers.
    assert_eq!(min_in_service("", &args), Ok(MinReady::Percent(50)));
    assert_eq!(
            min_in_service("[health]\nmin_in_service = \"0%\"\n", &none),
            Err(
                "corral.toml:4: health.min_in_service: must be at least 1%: use a percentage like \"50%\" or a count like 2"
                    .into()
            )
        );
    // Both thresholds wrong: both reported.
    let err = min_in_service(
        "[workers]\ncount = 2\n[health]\nmin_ready = 3\nmin_in_service = 5\n",
        &none,
    )
    .unwrap_err();
    assert!(err.starts_with("2 problems in the configuration:"), "{err}");
    assert!(err.contains("health.min_ready: needs 3 workers"), "{err}");
    assert!(
        err.contains("health.min_in_service: needs 5 workers"),
        "{err}"
    );
}

#[test]
fn recycling_and_heartbeat() {
    let text = "[app]\nmodule = \"m:a\"\n[workers]\nheartbeat_timeout = \"0s\"\n\
                    max_memory = 512\n";
    let text = problems(text, &Overrides::default());
    let expected = [
        "2 problems in the configuration:",
        "  corral.toml:4: workers.heartbeat_timeout: must be longer than 0s, like \"30s\"",
        "  corral.toml:5: workers.max_memory: 512 bytes is less than a Python worker needs: \
             give at least \"16MiB\", with a unit, like \"512MiB\"",
    ];
    for line in expected {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let text = "[app]\nmodule = \"m:a\"\n[workers]\nmax_memory = \"16MiB\"\n\
                    max_requests = 1\nmax_requests_jitter = 9223372036854775807\n";
    let config = resolve_text(text, &Overrides::default()).unwrap();
    assert_eq!(config.workers.max_memory, Some(16 << 20));
    assert_eq!(config.workers.max_requests, 1);
    assert_eq!(config.workers.max_requests_jitter, i64::MAX as u64);
    // A jitter without max_requests is ignored, as in gunicorn.
    let text = "[app]\nmodule = \"m:a\"\n[workers]\nmax_requests_jitter = 50\n";
    let config = resolve_text(text, &Overrides::default()).unwrap();
    assert_eq!(config.workers.max_requests, 0);
    assert_eq!(config.workers.max_requests_jitter, 50);

    let args = Overrides {
        app: Some("m:a".into()),
        max_requests: Some(u64::MAX),
        max_requests_jitter: Some(1),
        max_memory: Some(ByteSize(0)),
        ..Overrides::default()
    };
    let text = problems("", &args);
    assert!(
            text.contains(
                "--max-requests-jitter: max_requests + max_requests_jitter is more than 18446744073709551615: lower them"
            ),
            "{text}"
        );
    assert!(
        text.contains("--max-memory: 0 bytes is less than a Python worker needs"),
        "{text}"
    );
}

#[test]
fn user_and_group() {
    let workers = |text: &str, args: &Overrides| {
        let text = format!("[app]\nmodule = \"m:a\"\n[workers]\n{text}");
        resolve_text(&text, args)
            .map(|c| c.workers)
            .map_err(|e| e.to_string())
    };
    let none = Overrides::default();
    assert_eq!(workers("", &none).unwrap().identity, None);
    // By name or uid; the group defaults to the user's primary group,
    // and the groups are the user's (root's include its own group).
    for user in ["\"root\"", "\"0\"", "\"00\""] {
        let identity = workers(&format!("user = {user}\n"), &none)
            .unwrap()
            .identity
            .unwrap();
        assert_eq!(identity.user, "root", "{user}");
        assert_eq!((identity.uid, identity.gid), (0, 0), "{user}");
        assert!(identity.groups.contains(&0), "{identity:?}");
    }
    let with_group = |text: &str| workers(text, &none).unwrap().identity.unwrap();
    let identity = with_group("user = \"root\"\ngroup = \"0\"\n");
    assert_eq!((identity.uid, identity.gid), (0, 0));
    assert!(identity.groups.contains(&0), "{identity:?}");
    // Only a group: corral's own user, with just that group.
    let identity = with_group("group = \"root\"\n");
    let own = nix::unistd::getuid().as_raw();
    assert_eq!((identity.uid, identity.gid), (own, 0));
    assert_eq!(identity.groups, [0]);
    assert!(!identity.user.is_empty());
    // The flags win over the file (the file's user is not looked up).
    let args = Overrides {
        user: Some("0".into()),
        group: Some("root".into()),
        ..Overrides::default()
    };
    let text = "user = \"corral-no-such-user\"\ngroup = \"corral-no-such-group\"\n";
    let identity = workers(text, &args).unwrap().identity.unwrap();
    assert_eq!(
        (identity.user.as_str(), identity.uid, identity.gid),
        ("root", 0, 0)
    );

    // Unknown users and groups name the key (or the flag); both are
    // reported.
    assert_eq!(
        workers(text, &none).unwrap_err(),
        "2 problems in the configuration:\n  \
             corral.toml:4: workers.user: unknown user \"corral-no-such-user\": give a user that \
             exists on this machine (see `getent passwd`), by name or uid\n  \
             corral.toml:5: workers.group: unknown group \"corral-no-such-group\": give a group \
             that exists on this machine (see `getent group`), by name or gid"
    );
    let args = Overrides {
        user: Some("4294967294".into()),
        ..Overrides::default()
    };
    assert_eq!(
        workers("group = \"root\"\n", &args).unwrap_err(),
        "--user: no user has uid 4294967294: give a user that exists on this machine \
             (see `getent passwd`), by name or uid"
    );
    let args = Overrides {
        group: Some("4294967294".into()),
        ..Overrides::default()
    };
    assert_eq!(
        workers("user = \"root\"\n", &args).unwrap_err(),
        "--group: no group has gid 4294967294: give a group that exists on this machine \
             (see `getent group`), by name or gid"
    );
    assert_eq!(
        workers("user = \"\"\n", &none).unwrap_err(),
        "corral.toml:4: workers.user: is empty: give a user name like \"www-data\" or a \
             uid, or leave it out"
    );
    assert_eq!(
        workers("group = \"99999999999\"\n", &none).unwrap_err(),
        "corral.toml:4: workers.group: 99999999999 is too large for a gid (at most 4294967295)"
    );
    assert!(
        workers("user = \"root\\u0000\"\n", &none)
            .unwrap_err()
            .starts_with("corral.toml:4: workers.user: unknown user \"root\\0\"")
    );
}

#[test]
fn limits() {
    let limits = |text: &str| {
        let text = format!("[app]\nmodule = \"m:a\"\n[workers.limits]\n{text}");
        resolve_text(&text, &Overrides::default())
            .map(|c| c.workers.limits)
            .map_err(|e| e.to_string())
    };
    assert_eq!(limits(""), Ok(Limits::default()));
    let text = "nofile = 1024\naddress_space = \"1.5GiB\"\ncore = 0\numask = \"077\"\n";
    assert_eq!(
        limits(text),
        Ok(Limits {
            nofile: Some(1024),
            address_space: Some(3 << 29),
            core: Some(0),
            umask: Some(0o077),
        })
    );
    let text = "nofile = 64\naddress_space = \"16MiB\"\ncore = \"1GiB\"\numask = \"0\"\n";
    assert_eq!(
        limits(text),
        Ok(Limits {
            nofile: Some(64),
            address_space: Some(16 << 20),
            core: Some(1 << 30),
            umask: Some(0),
        })
    );
    // Too low to run Python; a plain number is bytes. Both reported,
    // with the other [workers] problems.
    let text = "[app]\nmodule = \"m:a\"\n[workers]\ncount = 0\nuser = \"corral-no-such-user\"\n\
                    [workers.limits]\nnofile = 0\naddress_space = 2048\n";
    let text = problems(text, &Overrides::default());
    let expected = [
        "4 problems in the configuration:",
        "  corral.toml:4: workers.count: must be at least 1",
        "  corral.toml:5: workers.user: unknown user \"corral-no-such-user\"",
        "  corral.toml:7: workers.limits.nofile: 0 is too few open files for a Python worker: \
             give at least 64, like 65536",
        "  corral.toml:8: workers.limits.address_space: 2048 bytes is less than a Python \
             worker needs: give at least \"16MiB\", with a unit, like \"2GiB\"",
    ];
    for line in expected {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

#[test]
fn missing_app_and_flag_problems() {
    let err = resolve(&Overrides::default(), None, Path::new("/cwd"), &env()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no app given: pass it as `corral main:app` or set [app] module in corral.toml"
    );
    let args = Overrides {
        app: Some("main:app".into()),
        workers: Some(WorkerCount::Count(0)),
        ..Overrides::default()
    };
    let err = resolve(&args, None, Path::new("/cwd"), &env()).unwrap_err();
    assert!(
        err.to_string().starts_with("--workers: must be at least 1"),
        "{err}"
    );
}

#[test]
fn client_timeouts_and_connection_cap() {
    let text = "[app]\nmodule = \"m:a\"\n[server]\nbody_timeout = \"0s\"\n\
                    send_timeout = \"0ms\"\nmax_connections = 0\n";
    let text = problems(text, &Overrides::default());
    let expected = [
        "3 problems in the configuration:",
        "  corral.toml:4: server.body_timeout: must be longer than 0s, like \"20s\"",
        "  corral.toml:5: server.send_timeout: must be longer than 0s, like \"20s\"",
        "  corral.toml:6: server.max_connections: must be at least 1 (it is the number of \
             client connections open at once), like 10000",
    ];
    for line in expected {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let args = Overrides {
        app: Some("m:a".into()),
        body_timeout: Some(HumanDuration(Duration::ZERO)),
        ..Overrides::default()
    };
    assert_eq!(
        problems("", &args),
        "--body-timeout: must be longer than 0s, like \"20s\""
    );
    // Flags win over the file; the defaults fill the rest.
    let args = Overrides {
        send_timeout: Some(HumanDuration(Duration::from_secs(3))),
        max_connections: Some(7),
        ..Overrides::default()
    };
    let text = "[app]\nmodule = \"m:a\"\n[server]\nsend_timeout = \"9s\"\nmax_connections = 9\n\
                    shutdown_delay = \"15s\"\n";
    let config = resolve_text(text, &args).unwrap();
    assert_eq!(config.server.send_timeout, Duration::from_secs(3));
    assert_eq!(config.server.shutdown_delay, Duration::from_secs(15));
    assert_eq!(config.server.max_connections, 7);
    assert_eq!(config.server.body_timeout, DEFAULT_CLIENT_TIMEOUT);
    let args = Overrides {
        shutdown_delay: Some(HumanDuration(Duration::from_secs(2))),
        ..Overrides::default()
    };
    let config = resolve_text(text, &args).unwrap();
    assert_eq!(config.server.shutdown_delay, Duration::from_secs(2));
}

#[test]
fn status_token_from_the_file_a_token_file_or_the_environment() {
    let app = "[app]\nmodule = \"m:a\"\n[health]\n";
    let token = "0123456789abcdef0123";
    let config = resolve_text(
        &format!("{app}status_token = \"{token}\"\n"),
        &Overrides::default(),
    )
    .unwrap();
    let got = config.health.status_token.clone().unwrap();
    assert_eq!(got.expose(), token);
    // It never shows in debug output.
    assert!(!format!("{config:?}").contains(token));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("  {token}\n")).unwrap();
    let text = format!("{app}status_token_file = \"{}\"\n", file.display());
    let config = resolve_text(&text, &Overrides::default()).unwrap();
    assert_eq!(config.health.status_token.unwrap().expose(), token);

    // The environment wins over the file's keys; the flag over all.
    let from_env = Env {
        status_token: Some("from-the-environment".into()),
        ..env()
    };
    let f = ConfigFile::new(Path::new("corral.toml"), Path::new("/srv/app"), text);
    let config = resolve(
        &Overrides::default(),
        Some(&f),
        Path::new("/cwd"),
        &from_env,
    )
    .unwrap();
    assert_eq!(
        config.health.status_token.unwrap().expose(),
        "from-the-environment"
    );
    let flag_file = dir.path().join("flag-token");
    std::fs::write(&flag_file, "from-the-flag-file\n").unwrap();
    let args = Overrides {
        status_token_file: Some(flag_file),
        ..Overrides::default()
    };
    let config = resolve(&args, Some(&f), Path::new("/cwd"), &from_env).unwrap();
    assert_eq!(
        config.health.status_token.unwrap().expose(),
        "from-the-flag-file"
    );
}

#[test]
fn status_token_problems_say_where_and_how() {
    let app = "[app]\nmodule = \"m:a\"\n[health]\n";
    let hint = "like the output of `openssl rand -hex 32`";
    assert_eq!(
        problems(
            &format!("{app}status_token = \"short\"\n"),
            &Overrides::default()
        ),
        format!(
            "corral.toml:4: health.status_token: is 5 characters long: use at least 16, {hint}"
        )
    );
    assert_eq!(
        problems(
            &format!("{app}status_token = \"with a space in it\"\n"),
            &Overrides::default()
        ),
        format!(
            "corral.toml:4: health.status_token: holds ' ': use visible ASCII only (no spaces), {hint}"
        )
    );
    let both = format!("{app}status_token = \"0123456789abcdef\"\nstatus_token_file = \"token\"\n");
    assert_eq!(
        problems(&both, &Overrides::default()),
        "corral.toml:5: health.status_token_file: health.status_token is set too: keep one \
             of the two (the file keeps the token out of this config)"
    );
    let missing = problems(
        &format!("{app}status_token_file = \"no-such-token\"\n"),
        &Overrides::default(),
    );
    assert!(
        missing.starts_with(
            "corral.toml:4: health.status_token_file: cannot read /srv/app/no-such-token: "
        ) && missing.ends_with("write the token into that file, or give another path"),
        "{missing}"
    );
    let from_env = Env {
        status_token: Some("tiny".into()),
        ..env()
    };
    let args = Overrides {
        app: Some("m:a".into()),
        ..Overrides::default()
    };
    assert_eq!(
        resolve(&args, None, Path::new("/cwd"), &from_env)
            .unwrap_err()
            .to_string(),
        format!("CORRAL_STATUS_TOKEN: is 4 characters long: use at least 16, {hint}")
    );
}

#[test]
fn forwarded_allow_ips_problems_name_each_bad_entry() {
    let how = "is not an IP address or network: use e.g. \"127.0.0.1\", \"10.0.0.0/8\" \
                   or \"*\"";
    let text = "[app]\nmodule = \"m:a\"\n[server]\nforwarded_allow_ips = [\"10.0.0.300\"]\n";
    assert_eq!(
        problems(text, &Overrides::default()),
        format!("corral.toml:4: server.forwarded_allow_ips: \"10.0.0.300\" {how}")
    );
    // Every bad entry, each at its own line.
    let text = "[app]\nmodule = \"m:a\"\n[server]\nforwarded_allow_ips = [\n  \"127.0.0.1\",\n  \
                    \"localhost\",\n  \"10.0.0.0/33\",\n]\n";
    let text = problems(text, &Overrides::default());
    let expected = [
        "2 problems in the configuration:",
        &format!("  corral.toml:6: server.forwarded_allow_ips: \"localhost\" {how}"),
        "  corral.toml:7: server.forwarded_allow_ips: \"10.0.0.0/33\" has a bad prefix \
             length: write 0 to 32 after the \"/\", like \"10.0.0.0/8\"",
    ];
    for line in expected {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // The flag is named, and the file's entries are not checked then.
    let args = Overrides {
        app: Some("m:a".into()),
        forwarded_allow_ips: Some("127.0.0.1, 10.0.0.300,::1,nginx".into()),
        ..Overrides::default()
    };
    let text = problems("[server]\nforwarded_allow_ips = [\"bad\"]\n", &args);
    assert_eq!(
        text,
        format!(
            "2 problems in the configuration:\n  \
                 --forwarded-allow-ips: \"10.0.0.300\" {how}\n  \
                 --forwarded-allow-ips: \"nginx\" {how}"
        )
    );
}

#[test]
fn concurrency_must_be_at_least_one() {
    let text = "[app]\nmodule = \"m:a\"\n[server]\nmax_queued = 0\n[workers]\n\
                    threads = 0\nconcurrency = 0\n";
    let text = problems(text, &Overrides::default());
    let expected = [
        "2 problems in the configuration:",
        "  corral.toml:6: workers.threads: must be at least 1",
        "  corral.toml:7: workers.concurrency: must be at least 1 (it is the number of \
             requests one ASGI worker holds at once), like 1000",
    ];
    for line in expected {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // max_queued = 0 is fine: no request ever waits.
    assert!(!text.contains("max_queued"), "{text}");
    // The flag is named when it is the one at fault, and wins over the
    // file.
    let args = Overrides {
        app: Some("main:app".into()),
        concurrency: Some(0),
        ..Overrides::default()
    };
    let err = problems("[workers]\nconcurrency = 8\n", &args);
    assert_eq!(
        err,
        "--concurrency: must be at least 1 (it is the number of requests one ASGI worker \
             holds at once), like 1000"
    );
    let args = Overrides {
        concurrency: Some(8),
        ..args
    };
    let config = resolve_text("[workers]\nconcurrency = 0\n", &args).unwrap();
    assert_eq!(config.workers.concurrency, 8);
}

#[test]
fn auto_io_threads_is_half_the_cpus_at_least_one() {
    let threads: Vec<usize> = (0..=9).map(auto_io_threads).collect();
    assert_eq!(threads, [1, 1, 1, 1, 2, 2, 3, 3, 4, 4]);
    // 0 in the file is fine (automatic), and never stays 0.
    let args = Overrides {
        app: Some("m:a".into()),
        ..Overrides::default()
    };
    let config = resolve_text("[server]\nio_threads = 0\n", &args).unwrap();
    assert_eq!(config.server.io_threads, auto_io_threads(env().cpus));
}

#[test]
fn control_socket_and_deploy_problems() {
    let long = format!("/{}.sock", "s".repeat(110));
    let text = format!(
        "[app]\nmodule = \"m:a\"\n[control]\nsocket = {long:?}\n[deploy]\nready_timeout = \"0s\"\n"
    );
    let text = problems(&text, &Overrides::default());
    let expected = [
        "2 problems in the configuration:".to_owned(),
        format!(
            "  corral.toml:4: control.socket: \"{long}\" is 116 bytes long, more than the 107 \
                 that a Unix socket path may hold: use a shorter path"
        ),
        "  corral.toml:6: deploy.ready_timeout: must be longer than 0s, like \"60s\"".to_owned(),
    ];
    for line in expected {
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
    // A relative path counts once made absolute.
    let name = "s".repeat(100);
    let text = format!("[app]\nmodule = \"m:a\"\n[control]\nsocket = \"{name}\"\n");
    assert!(problems(&text, &Overrides::default()).contains("is 109 bytes long"));
    let args = Overrides {
        app: Some("m:a".into()),
        socket: Some(long.clone().into()),
        ..Overrides::default()
    };
    assert!(problems("", &args).starts_with(&format!("--socket: \"{long}\" is 116 bytes long")),);
    // Exactly 107 bytes fit.
    let fits = format!("/{}", "s".repeat(106));
    let args = Overrides {
        socket: Some(fits.clone().into()),
        ..args
    };
    let config = resolve_text("", &args).unwrap();
    assert_eq!(config.control.socket, PathBuf::from(fits));
}

#[test]
fn revision_and_hook_problems() {
    let text = "[app]\nmodule = \"m:a\"\n[deploy]\nrevision = \"gti\"\nstate_dir = \"\"\n\
                    rollback_hook = []\nhook_timeout = \"0s\"\n";
    let text = problems(text, &Overrides::default());
    let expected = [
        "4 problems in the configuration:",
        "  corral.toml:4: deploy.revision: unknown revision source \"gti\": use \"auto\", \"git\", \
             \"symlink\" or \"none\", or a command as an array of strings, like [\"cat\", \"REVISION\"]",
        "  corral.toml:5: deploy.state_dir: is empty: give a path or leave the key out",
        "  corral.toml:6: deploy.rollback_hook: is empty: give a command like \
             [\"./rollback.sh\", \"--notify\"], or leave the key out",
        "  corral.toml:7: deploy.hook_timeout: must be longer than 0s, like \"60s\"",
    ];
    for line in expected {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }

    let deploy = |text: &str| {
        let text = format!("[app]\nmodule = \"m:a\"\n[deploy]\n{text}");
        resolve_text(&text, &Overrides::default())
            .map(|c| c.deploy)
            .map_err(|e| e.to_string())
    };
    let at = "corral.toml:4: deploy.";
    // Names are exact.
    assert!(
        deploy("revision = \"Git\"\n")
            .unwrap_err()
            .starts_with(&format!("{at}revision: unknown revision source \"Git\""))
    );
    // A command written as a string: the array to write instead.
    assert_eq!(
        deploy("revision = \"git rev-parse HEAD\"\n").unwrap_err(),
        format!(
            "{at}revision: \"git rev-parse HEAD\" is not \"auto\", \"git\", \"symlink\" or \"none\": \
                 to run a command, write it as an array of strings, like [\"git\", \"rev-parse\", \"HEAD\"]"
        )
    );
    assert!(
        deploy("revision = \"./revision.sh\"\n")
            .unwrap_err()
            .ends_with("like [\"./revision.sh\"]")
    );
    assert_eq!(
        deploy("rollback_hook = \"./rollback.sh --notify\"\n").unwrap_err(),
        format!(
            "{at}rollback_hook: is a string: write the command as an array of strings (the \
                 program, then its arguments), like [\"./rollback.sh\", \"--notify\"]"
        )
    );
    assert!(
        deploy("rollback_hook = \" \"\n")
            .unwrap_err()
            .ends_with("like [\"./rollback.sh\", \"--notify\"]")
    );
    assert_eq!(
        deploy("revision = []\n").unwrap_err(),
        format!(
            "{at}revision: is empty: give a command like [\"cat\", \"REVISION\"], or leave the key out"
        )
    );
    assert_eq!(
        deploy("revision = [\"\", \"x\"]\n").unwrap_err(),
        format!(
            "{at}revision: the program (the first string) is empty: give a command like [\"cat\", \"REVISION\"]"
        )
    );
    assert_eq!(
        deploy("rollback_hook = [\"rollback\", \"a\\u0000b\"]\n").unwrap_err(),
        format!("{at}rollback_hook: \"a\\0b\" holds a NUL byte")
    );
    // An empty argument is fine.
    assert_eq!(
        deploy("rollback_hook = [\"rollback\", \"\"]\n")
            .unwrap()
            .rollback_hook,
        Some(vec!["rollback".into(), String::new()])
    );
}

#[test]
fn rollback_and_strategy_problems() {
    let text = "[app]\nmodule = \"m:a\"\n[deploy]\nrollback = \"git_reset\"\n\
                    strategy = \"canary\"\nmax_surge = 0\n";
    let text = problems(text, &Overrides::default());
    let expected = [
        "3 problems in the configuration:",
        "  corral.toml:4: deploy.rollback: unknown rollback \"git_reset\": write \"git-reset\" \
             (one of \"none\", \"git-reset\" or \"symlink\")",
        "  corral.toml:5: deploy.strategy: unknown strategy \"canary\": use \"all-at-once\" or \
             \"rolling\"",
        "  corral.toml:6: deploy.max_surge: must be at least 1 (it is the number of extra \
             workers a rolling reload may run), like 1",
    ];
    for line in expected {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }

    let deploy = |text: &str, args: &Overrides| {
        let text = format!("[app]\nmodule = \"m:a\"\n[deploy]\n{text}");
        resolve_text(&text, args)
            .map(|c| c.deploy)
            .map_err(|e| e.to_string())
    };
    let none = Overrides::default();
    let at = "corral.toml:4: deploy.";
    // Names are exact; close ones get the spelling to use.
    for (wrong, meant) in [
        ("GitReset", "git-reset"),
        ("git reset", "git-reset"),
        ("Symlink", "symlink"),
        ("NONE", "none"),
    ] {
        assert_eq!(
            deploy(&format!("rollback = {wrong:?}\n"), &none).unwrap_err(),
            format!(
                "{at}rollback: unknown rollback \"{wrong}\": write \"{meant}\" (one of \
                     \"none\", \"git-reset\" or \"symlink\")"
            )
        );
    }
    for (wrong, meant) in [
        ("all_at_once", "all-at-once"),
        ("AllAtOnce", "all-at-once"),
        ("Rolling", "rolling"),
    ] {
        assert!(
            deploy(&format!("strategy = {wrong:?}\n"), &none)
                .unwrap_err()
                .starts_with(&format!(
                    "{at}strategy: unknown strategy \"{wrong}\": write \"{meant}\""
                ))
        );
    }
    assert_eq!(
        deploy("rollback = \"\"\n", &none).unwrap_err(),
        format!("{at}rollback: unknown rollback \"\": use \"none\", \"git-reset\" or \"symlink\"")
    );
    // A script belongs in rollback_hook.
    assert_eq!(
        deploy("rollback = \"./rollback.sh --notify\"\n", &none).unwrap_err(),
        format!(
            "{at}rollback: \"./rollback.sh --notify\" is not \"none\", \"git-reset\" or \
                 \"symlink\": to run a script of your own, give it as rollback_hook = \
                 [\"./rollback.sh\", \"--notify\"]"
        )
    );

    // "symlink" needs app.chdir.
    assert_eq!(
        deploy("rollback = \"symlink\"\n", &none).unwrap_err(),
        format!(
            "{at}rollback: \"symlink\" needs app.chdir: set it to the `current` symlink that \
                 points at the release, like \"/srv/app/current\" (or pass --chdir)"
        )
    );
    // An app.chdir with a problem of its own is reported once.
    let text = "[app]\nmodule = \"m:a\"\nchdir = \"\"\n[deploy]\nrollback = \"symlink\"\n";
    assert_eq!(
        problems(text, &none),
        "corral.toml:3: app.chdir: is empty: give a path or leave the key out"
    );

    // "git-reset" needs a revision that is a git commit.
    let prefix = "\"git-reset\" resets the app folder to the last known good commit, so it \
                      needs deploy.revision \"git\" or \"auto\", but deploy.revision is";
    assert_eq!(
        deploy("revision = \"symlink\"\nrollback = \"git-reset\"\n", &none).unwrap_err(),
        format!(
            "corral.toml:5: deploy.rollback: {prefix} \"symlink\" (at corral.toml:4): set \
                 revision = \"git\", or use rollback = \"symlink\" to point the app folder back at \
                 the last good release"
        )
    );
    assert_eq!(
        deploy("rollback = \"git-reset\"\n\nrevision = \"none\"\n", &none).unwrap_err(),
        format!("{at}rollback: {prefix} \"none\" (at corral.toml:6): set revision = \"git\"")
    );
    assert_eq!(
        deploy(
            "rollback = \"git-reset\"\nrevision = [\"cat\", \"REVISION\"]\n",
            &none
        )
        .unwrap_err(),
        format!(
            "{at}rollback: {prefix} a command (at corral.toml:5): set revision = \"git\", or \
                 do the rollback in rollback_hook instead"
        )
    );
    // A revision with a problem of its own is reported once.
    let text = "[app]\nmodule = \"m:a\"\n[deploy]\nrevision = \"svn\"\nrollback = \"git-reset\"\n";
    assert!(
        problems(text, &none)
            .starts_with("corral.toml:4: deploy.revision: unknown revision source \"svn\""),
    );
    assert!(!problems(text, &none).contains("deploy.rollback"));

    // Every deploy problem at once.
    let text = "[app]\nmodule = \"m:a\"\n[deploy]\nrevision = \"none\"\n\
                    rollback = \"git-reset\"\nstrategy = \"\"\nmax_surge = 0\n";
    assert!(problems(text, &none).starts_with("3 problems in the configuration:"));
}
