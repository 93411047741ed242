//! The checks of `[health]`, `[control]` and `[deploy]`.

use super::*;
use crate::config::tests::{env, resolve_text};
use crate::config::{Env, MinReady, Overrides, Sticky, WorkerCount, resolve};

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
    let text = "[app]\nmodule = \"m:a\"\n[server]\nbind = [\"unix:/nonexistent/srv/app/web.sock\"]\n\
                    [health]\nstatus_bind = \"unix:./web.sock\"\n";
    assert!(problems(text, &Overrides::default()).starts_with(
        "corral.toml:6: health.status_bind: unix:/nonexistent/srv/app/web.sock is also a server address"
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
    let f = ConfigFile::new(
        Path::new("corral.toml"),
        Path::new("/nonexistent/srv/app"),
        text,
    );
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
            "corral.toml:4: health.status_token_file: cannot open /nonexistent/srv/app/no-such-token: "
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
    assert!(problems(&text, &Overrides::default()).contains("is 121 bytes long"));
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

#[test]
fn canary_keys_and_their_problems() {
    let deploy = |text: &str| {
        let text = format!("[app]\nmodule = \"m:a\"\n[deploy]\n{text}");
        resolve_text(&text, &Overrides::default())
            .map(|c| c.deploy)
            .map_err(|e| e.to_string())
    };
    assert_eq!(deploy("").unwrap().canary, None, "off by default");
    assert_eq!(deploy("canary_share = 0\n").unwrap().canary, None);
    let on =
        deploy("canary_share = 10\ncanary_duration = \"2m\"\ncanary_latency_floor = \"20ms\"\n")
            .unwrap()
            .canary
            .unwrap();
    assert_eq!(on.share, 10);
    assert_eq!(on.thresholds.duration, Duration::from_secs(120));
    assert_eq!(on.thresholds.latency_floor, Duration::from_millis(20));
    assert_eq!(on.thresholds.min_requests, 100);
    assert_eq!(on.thresholds.confidence, 0.999);
    for (text, sticky) in [
        ("none", Sticky::None),
        ("client-address", Sticky::ClientAddress),
        ("header:X-User", Sticky::Header("x-user".into())),
        ("cookie:sessionid", Sticky::Cookie("sessionid".into())),
    ] {
        let got = deploy(&format!("canary_sticky = \"{text}\"\n")).unwrap();
        assert_eq!(got.canary_sticky, sticky, "{text}");
    }
    for bad in ["ip", "header:", "cookie:a b", "header"] {
        let err = deploy(&format!("canary_sticky = \"{bad}\"\n")).unwrap_err();
        assert!(
            err.contains(
                "corral.toml:4: deploy.canary_sticky: must be \"none\", \"client-address\""
            ),
            "{bad}: {err}"
        );
    }
    let text = problems(
        "[app]\nmodule = \"m:a\"\n[deploy]\ncanary_share = 60\ncanary_duration = \"0s\"\n\
         canary_min_requests = 0\ncanary_confidence = 1.5\ncanary_latency_ratio = 0.5\n",
        &Overrides::default(),
    );
    for line in [
        "5 problems in the configuration:",
        "  corral.toml:4: deploy.canary_share: must be a percentage from 1 to 50",
        "  corral.toml:5: deploy.canary_duration: must be longer than 0s, like \"60s\"",
        "  corral.toml:6: deploy.canary_min_requests: must be at least 1, like 100",
        "  corral.toml:7: deploy.canary_confidence: must be between 0.5 and 1 (exclusive), like 0.999",
        "  corral.toml:8: deploy.canary_latency_ratio: must be at least 1, like 2.0",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}
