//! The checks of `validate`: every problem reported with where it is and how
//! to fix it; `health` holds those of `[health]`, `[control]` and `[deploy]`.

use std::time::Duration;

use super::*;
use crate::config::tests::{env, resolve_text};
use crate::config::{
    ByteSize, HumanDuration, Limits, Overrides, ServerFlags, WorkerCount, WorkersFlags, resolve,
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
    let text = "[app]\nmodule = \"\"\nenv = { \"A=B\" = \"x\" }\n\n[server]\nbind = [\"0.0.0.0:http\", \"[::]:80\", \"[::]:80\"]\n\
                    max_header_bytes = \"1KiB\"\n[workers]\ncount = 0\nthreads = 0\ntimeout = \"0s\"\n";
    let text = resolve_text(text, &Overrides::default())
        .unwrap_err()
        .to_string();
    let expected = [
        "7 problems in the configuration:",
        "  corral.toml:2: app.module: is empty: write it as \"module:callable\", like \"main:app\"",
        "  corral.toml:3: app.env.A=B: \"A=B\" is not a valid variable name",
        "  corral.toml:6: server.bind: invalid bind address \"0.0.0.0:http\": use IP:PORT",
        "  corral.toml:6: server.bind: [::]:80 is listed twice (first at corral.toml:6 (key server.bind))",
        "  corral.toml:7: server.max_header_bytes: must be at least \"8KiB\"",
        "  corral.toml:9: workers.count: must be at least 1",
        "  corral.toml:10: workers.threads: must be at least 1",
    ];
    for line in expected {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // gunicorn's `timeout = 0`: no limit.
    assert!(!text.contains("workers.timeout"), "{text}");
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
        workers_flags: WorkersFlags {
            boot_timeout: Some(HumanDuration(Duration::ZERO)),
            ..WorkersFlags::default()
        },
        ..Overrides::default()
    };
    assert_eq!(
        problems("", &args),
        "--boot-timeout: must be longer than 0s, like \"30s\""
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
        server_flags: ServerFlags {
            body_timeout: Some(HumanDuration(Duration::ZERO)),
            ..ServerFlags::default()
        },
        ..Overrides::default()
    };
    assert_eq!(
        problems("", &args),
        "--body-timeout: must be longer than 0s, like \"20s\""
    );
    // Flags win over the file; the defaults fill the rest.
    let args = Overrides {
        server_flags: ServerFlags {
            send_timeout: Some(HumanDuration(Duration::from_secs(3))),
            max_connections: Some(7),
            ..ServerFlags::default()
        },
        ..Overrides::default()
    };
    let text = "[app]\nmodule = \"m:a\"\n[server]\nsend_timeout = \"9s\"\nmax_connections = 9\n\
                    shutdown_delay = \"15s\"\n";
    let config = resolve_text(text, &args).unwrap();
    assert_eq!(config.server.send_timeout, Duration::from_secs(3));
    assert_eq!(config.server.shutdown_delay, Duration::from_secs(15));
    assert_eq!(config.server.max_connections, 7);
    assert_eq!(config.server.body_timeout, Duration::from_secs(20));
    let args = Overrides {
        server_flags: ServerFlags {
            shutdown_delay: Some(HumanDuration(Duration::from_secs(2))),
            ..ServerFlags::default()
        },
        ..Overrides::default()
    };
    let config = resolve_text(text, &args).unwrap();
    assert_eq!(config.server.shutdown_delay, Duration::from_secs(2));
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
        workers_flags: WorkersFlags {
            concurrency: Some(0),
            ..WorkersFlags::default()
        },
        ..Overrides::default()
    };
    let err = problems("[workers]\nconcurrency = 8\n", &args);
    assert_eq!(
        err,
        "--concurrency: must be at least 1 (it is the number of requests one ASGI worker \
             holds at once), like 1000"
    );
    let args = Overrides {
        workers_flags: WorkersFlags {
            concurrency: Some(8),
            ..args.workers_flags
        },
        ..args
    };
    let config = resolve_text("[workers]\nconcurrency = 0\n", &args).unwrap();
    assert_eq!(config.workers.concurrency, 8);
}

#[test]
fn auto_io_threads_is_half_the_cpus_but_two_from_two_cpus_up() {
    let threads: Vec<usize> = (0..=9).map(auto_io_threads).collect();
    assert_eq!(threads, [1, 1, 2, 2, 2, 2, 3, 3, 4, 4]);
    // 0 in the file is fine (automatic), and never stays 0.
    let args = Overrides {
        app: Some("m:a".into()),
        ..Overrides::default()
    };
    let config = resolve_text("[server]\nio_threads = 0\n", &args).unwrap();
    assert_eq!(config.server.io_threads, auto_io_threads(env().cpus));
}

mod health;
mod tls;

#[test]
fn tls_problems_say_where_and_how() {
    let text = "[app]\nmodule = \"main:app\"\n[server.tls]\ncert_reqs = \"sometimes\"\nmin_version = \"1.1\"\nca_certs = \"ca.pem\"\n";
    let text = resolve_text(text, &Overrides::default())
        .unwrap_err()
        .to_string();
    for expected in [
        "corral.toml:4: server.tls.cert_reqs: \"sometimes\" is not one of \"none\", \"optional\", \"required\"",
        "corral.toml:5: server.tls.min_version: \"1.1\" is not a TLS version corral offers: use \"1.2\" or \"1.3\"",
        "corral.toml:6: server.tls.ca_certs: ca_certs is set but TLS is off: set certfile and keyfile",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    let text = "[app]\nmodule = \"main:app\"\n[server.tls]\ncertfile = \"cert.pem\"\n";
    let text = resolve_text(text, &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("corral.toml:4: server.tls.certfile: cannot open "),
        "{text}"
    );
    // Without certfile and keyfile, the example's cert_reqs and min_version
    // leave TLS off.
    let text =
        "[app]\nmodule = \"main:app\"\n[server.tls]\ncert_reqs = \"none\"\nmin_version = \"1.3\"\n";
    assert_eq!(
        resolve_text(text, &Overrides::default())
            .unwrap()
            .server
            .tls,
        None
    );
}

#[test]
fn websocket_pings_and_message_limit() {
    let text = "[app]\nmodule = \"m:a\"\n[server]\nws_ping_timeout = \"0s\"\n\
                ws_max_message = \"17MiB\"\n";
    let text = problems(text, &Overrides::default());
    let expected = [
        "2 problems in the configuration:",
        "  corral.toml:4: server.ws_ping_timeout: must be longer than 0s, like \"20s\"",
        "  corral.toml:5: server.ws_max_message: must be from \"1B\" to \"16MiB\"",
    ];
    for line in expected {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let text = "[app]\nmodule = \"m:a\"\n[server]\nws_ping_interval = \"0s\"\n\
                ws_max_message = \"1KiB\"\n";
    let config = resolve_text(text, &Overrides::default()).unwrap();
    assert_eq!(config.server.websocket.ping_interval, None);
    assert_eq!(config.server.websocket.max_message, 1024);
    let defaults = resolve_text("[app]\nmodule = \"m:a\"\n", &Overrides::default()).unwrap();
    let ws = defaults.server.websocket;
    assert_eq!(ws.ping_interval, Some(Duration::from_secs(20)));
    assert_eq!(ws.ping_timeout, Duration::from_secs(20));
    assert_eq!(ws.max_message, 16 << 20);
}

#[test]
fn hooks_are_commands_as_arrays() {
    let text = "[app]\nmodule = \"m:a\"\n[hooks]\non_worker_exit = \"./exit.sh --all\"\n\
                on_ready = []\non_reload_failed = [\"./page.sh\", \"now\"]\n";
    let text = problems(text, &Overrides::default());
    let expected = [
        "2 problems in the configuration:",
        "  corral.toml:4: hooks.on_worker_exit: is a string: write the command as an array of \
         strings (the program, then its arguments; no shell runs it), like [\"./exit.sh\", \"--all\"]",
        "  corral.toml:5: hooks.on_ready: is empty: give a command like",
    ];
    for line in expected {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let text = "[app]\nmodule = \"m:a\"\n[hooks]\non_ready = [\"./ready.sh\", \"a b\"]\n";
    let config = resolve_text(text, &Overrides::default()).unwrap();
    let ready = config.hooks.on_ready.expect("on_ready");
    assert!(ready[0].ends_with("/ready.sh") && Path::new(&ready[0]).is_absolute());
    assert_eq!(ready[1], "a b");
    assert_eq!(config.hooks.on_worker_exit, None);
}

#[test]
fn reload_sets_dev_defaults_and_checks_its_globs() {
    let text = "[app]\nmodule = \"m:a\"\n[workers]\ncount = 4\n[dev]\nreload = true\n\
                reload_include = [\"*.py\", \"a[\"]\n";
    let text = problems(text, &Overrides::default());
    assert!(
        text.starts_with("corral.toml:7: dev.reload_include: \"a[\" is not a glob: "),
        "{text}"
    );
    let text = "[app]\nmodule = \"m:a\"\n[workers]\ncount = 4\n[dev]\nreload = true\n";
    let config = resolve_text(text, &Overrides::default()).unwrap();
    assert!(config.dev.reload);
    assert_eq!(config.dev.include, ["*.py"]);
    assert!(config.dev.exclude.iter().any(|g| g == "__pycache__"));
    assert_eq!(config.workers.count, 1, "one worker unless --workers");
    assert_eq!(config.workers.graceful_timeout, Duration::from_secs(1));
    let args = Overrides {
        workers: Some(WorkerCount::Count(3)),
        reload_exclude: vec!["migrations".into()],
        ..Overrides::default()
    };
    let config = resolve_text(text, &args).unwrap();
    assert_eq!(config.workers.count, 3);
    // A flag's globs join the defaults, as uvicorn's join *.py.
    assert_eq!(config.dev.exclude.last().unwrap(), "migrations");
    assert!(config.dev.exclude.iter().any(|g| g == "__pycache__"));
    let args = Overrides {
        reload_include: vec!["*.html".into(), "*.py".into()],
        ..Overrides::default()
    };
    let file = format!("{text}reload_include = [\"*.txt\"]\n");
    let config = resolve_text(&file, &args).unwrap();
    assert_eq!(config.dev.include, ["*.txt", "*.html", "*.py"]);
    let off = resolve_text("[app]\nmodule = \"m:a\"\n", &Overrides::default()).unwrap();
    assert!(!off.dev.reload);
    assert!(off.dev.dirs.is_empty() && off.dev.extra_files.is_empty());
    assert_eq!(off.workers.graceful_timeout, Duration::from_secs(30));
}

#[test]
fn reload_folders_and_extra_files_must_be_there() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("src")).unwrap();
    let file = d.join("corral.toml");
    std::fs::write(
        &file,
        "[app]\nmodule = \"m:a\"\n[dev]\nreload = true\n\
         reload_dirs = [\"src\", \"nowhere\"]\n\
         reload_extra_files = [\"src/settings.ini\", \"gone/x.ini\"]\n",
    )
    .unwrap();
    let args = Overrides {
        config: Some(file.clone()),
        ..Overrides::default()
    };
    let text = crate::config::load(&args, None).unwrap_err().to_string();
    assert!(
        text.contains("corral.toml:5: dev.reload_dirs: ")
            && text.contains("nowhere is not a folder that exists: give one (a relative path is read from the config file's folder)"),
        "{text}"
    );
    assert!(
        text.contains("corral.toml:6: dev.reload_extra_files: ")
            && text.contains("gone/x.ini is not a file in a folder that exists"),
        "{text}"
    );
    assert!(!text.contains("src/settings.ini"), "{text}");
    std::fs::write(
        &file,
        "[app]\nmodule = \"m:a\"\n[dev]\nreload = true\nreload_dirs = [\"src\"]\n\
         reload_extra_files = [\"src/settings.ini\"]\n",
    )
    .unwrap();
    let config = crate::config::load(&args, None).unwrap();
    assert_eq!(config.dev.dirs, [d.join("src")]);
    assert_eq!(config.dev.extra_files, [d.join("src/settings.ini")]);
}

#[test]
fn response_headers_from_the_file_and_the_flags_are_checked() {
    let text = "[app]\nmodule = \"m:a\"\n[server.headers]\n\
                \"X-Frame-Options\" = \"DENY\"\n\
                \"Strict-Transport-Security\" = \"max-age=600\"\n";
    let args = Overrides {
        header: vec![
            (
                "strict-transport-security".into(),
                "max-age=63072000".into(),
            ),
            ("X-Served-By".into(), "corral, eu-1".into()),
        ],
        ..Overrides::default()
    };
    let config = resolve_text(text, &args).unwrap();
    let got: Vec<(&str, &str)> = config
        .server
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
        .collect();
    // The flag's replaces the file's of the same name.
    assert_eq!(
        got,
        [
            ("x-frame-options", "DENY"),
            ("strict-transport-security", "max-age=63072000"),
            ("x-served-by", "corral, eu-1"),
        ]
    );
    let text = "[app]\nmodule = \"m:a\"\n[server.headers]\n\
                \"Content-Length\" = \"0\"\n\"Bad Name\" = \"x\"\n\"X-Ok\" = \"a\\nb\"\n";
    let args = Overrides {
        header: vec![("Date".into(), "yesterday".into())],
        ..Overrides::default()
    };
    let text = problems(text, &args);
    for line in [
        "4 problems in the configuration:",
        "corral.toml:5: server.headers.Bad Name: \"Bad Name\" is not a header name",
        "corral.toml:4: server.headers.Content-Length: Content-Length is set by corral itself",
        "corral.toml:6: server.headers.X-Ok: the value of X-Ok, \"a\\nb\", has a character a header may not hold",
        "--header: Date is set by corral itself",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}
