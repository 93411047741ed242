use std::path::{Path, PathBuf};

use super::*;
use crate::config::Overrides;
use crate::config::tests::{env, resolve_text};
use crate::config::{ConfigFile, Limits, RevisionSource, Rollback, Strategy, resolve};

fn error_text(text: &str) -> String {
    resolve_text(text, &Overrides::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn example_config_parses_and_validates() {
    let file = ConfigFile::new(
        Path::new("config/example.toml"),
        Path::new("/repo"),
        EXAMPLE.into(),
    );
    let config = resolve(
        &Overrides::default(),
        Some(&file),
        Path::new("/repo"),
        &env(),
    )
    .unwrap();
    assert_eq!(
        config.source,
        Some(PathBuf::from("/repo/config/example.toml"))
    );
    assert_eq!(config.app.module, "app:app");
    assert_eq!(config.app.chdir, Some(PathBuf::from("/repo/example")));
    // The example shows the defaults.
    let defaults = resolve(
        &Overrides {
            app: Some("app:app".into()),
            ..Overrides::default()
        },
        None,
        Path::new("/repo"),
        &env(),
    )
    .unwrap();
    assert_eq!(config.server.backlog, defaults.server.backlog);
    assert_eq!(config.server.keepalive, defaults.server.keepalive);
    assert_eq!(
        config.server.max_header_bytes,
        defaults.server.max_header_bytes
    );
    assert_eq!(config.server.max_body_bytes, defaults.server.max_body_bytes);
    assert_eq!(config.server.body_timeout, defaults.server.body_timeout);
    assert_eq!(config.server.send_timeout, defaults.server.send_timeout);
    assert!(config.server.shutdown_delay.is_zero());
    assert!(defaults.server.shutdown_delay.is_zero());
    assert_eq!(
        config.server.max_connections,
        defaults.server.max_connections
    );
    assert!(config.health.status_token.is_none());
    assert!(defaults.health.status_token.is_none());
    assert_eq!(config.server.max_queued, defaults.server.max_queued);
    assert_eq!(config.server.io_threads, defaults.server.io_threads);
    assert_eq!(
        config.server.forwarded_allow_ips,
        defaults.server.forwarded_allow_ips
    );
    assert_eq!(config.server.bind[0].addr, defaults.server.bind[0].addr);
    assert_eq!(config.workers.count, defaults.workers.count);
    assert_eq!(config.workers.threads, defaults.workers.threads);
    assert_eq!(config.workers.concurrency, defaults.workers.concurrency);
    assert_eq!(config.workers.timeout, defaults.workers.timeout);
    assert_eq!(
        config.workers.graceful_timeout,
        defaults.workers.graceful_timeout
    );
    assert_eq!(config.app.interface, defaults.app.interface);
    assert_eq!(config.workers.boot_timeout, defaults.workers.boot_timeout);
    assert_eq!(
        config.workers.restart_backoff,
        defaults.workers.restart_backoff
    );
    assert_eq!(
        config.workers.restart_backoff_max,
        defaults.workers.restart_backoff_max
    );
    assert_eq!(
        config.workers.heartbeat_timeout,
        defaults.workers.heartbeat_timeout
    );
    assert_eq!(config.workers.max_requests, defaults.workers.max_requests);
    assert_eq!(
        config.workers.max_requests_jitter,
        defaults.workers.max_requests_jitter
    );
    assert!(config.workers.max_memory.is_none());
    assert!(defaults.workers.max_memory.is_none());
    assert_eq!(config.workers.identity, None);
    assert_eq!(defaults.workers.identity, None);
    assert_eq!(config.workers.limits, Limits::default());
    assert_eq!(defaults.workers.limits, Limits::default());
    assert!(config.health.status_bind.is_none());
    assert!(defaults.health.status_bind.is_none());
    assert_eq!(config.health.min_ready, defaults.health.min_ready);
    assert!(config.health.ready_path.is_none());
    assert!(defaults.health.ready_path.is_none());
    assert_eq!(config.health.probe_interval, defaults.health.probe_interval);
    assert_eq!(config.health.probe_timeout, defaults.health.probe_timeout);
    assert_eq!(
        config.health.unhealthy_after,
        defaults.health.unhealthy_after
    );
    assert_eq!(config.health.min_in_service, defaults.health.min_in_service);
    assert_eq!(config.control.socket, defaults.control.socket);
    assert_eq!(config.deploy.ready_timeout, defaults.deploy.ready_timeout);
    assert_eq!(config.deploy.revision, defaults.deploy.revision);
    assert_eq!(config.deploy.state_dir, defaults.deploy.state_dir);
    assert_eq!(config.deploy.rollback_hook, None);
    assert_eq!(defaults.deploy.rollback_hook, None);
    assert_eq!(config.deploy.hook_timeout, defaults.deploy.hook_timeout);
    assert_eq!(config.deploy.rollback, defaults.deploy.rollback);
    assert_eq!(
        config.deploy.exit_on_boot_failure,
        defaults.deploy.exit_on_boot_failure
    );
    assert_eq!(config.deploy.strategy, defaults.deploy.strategy);
    assert_eq!(config.deploy.max_surge, defaults.deploy.max_surge);
    // The commented-out examples are valid too.
    let uncommented = EXAMPLE
        .replace("# ready_path = ", "ready_path = ")
        .replace("# max_memory = ", "max_memory = ")
        // www-data may not exist on the machine running the tests;
        // root exists everywhere.
        .replace("# user = \"www-data\"", "user = \"root\"")
        .replace("# group = \"www-data\"", "group = \"root\"")
        .replace("# nofile = ", "nofile = ")
        .replace("# address_space = ", "address_space = ")
        .replace("# core = ", "core = ")
        .replace("# umask = ", "umask = ")
        .replace("\nmax_request_line = 0", "\n# max_request_line = 0")
        .replace("# max_request_line = 4094", "max_request_line = 4094")
        .replace(
            "\nmax_header_field_bytes = 0",
            "\n# max_header_field_bytes = 0",
        )
        .replace(
            "# max_header_field_bytes = 8190",
            "max_header_field_bytes = 8190",
        )
        .replace("# pid_file = ", "pid_file = ")
        .replace("\nerror_file = \"-\"", "\n# error_file = \"-\"")
        .replace("# error_file = \"/var", "error_file = \"/var")
        .replace("# access_file = ", "access_file = ")
        .replace("# access_format = ", "access_format = ")
        .replace("# socket = ", "socket = ")
        .replace("\nrevision = \"auto\"", "\n# revision = \"auto\"")
        .replace("# revision = [", "revision = [")
        .replace("# state_dir = ", "state_dir = ")
        .replace("# rollback_hook = ", "rollback_hook = ")
        .replace("\nrollback = \"none\"", "\n# rollback = \"none\"")
        .replace("# rollback = \"symlink\"", "rollback = \"symlink\"")
        .replace(
            "\nstrategy = \"all-at-once\"",
            "\n# strategy = \"all-at-once\"",
        )
        .replace("# strategy = \"rolling\"", "strategy = \"rolling\"")
        .replace("\nmax_surge = 1", "\n# max_surge = 1")
        .replace("# max_surge = 2", "max_surge = 2")
        .replace("# status_token = ", "status_token = ")
        .replace("\nio_threads = 0", "\n# io_threads = 0")
        .replace("# io_threads = 4", "io_threads = 4")
        .replace("\nforwarded_allow_ips = ", "\n# forwarded_allow_ips = ")
        .replace(
            "# forwarded_allow_ips = [\"10.",
            "forwarded_allow_ips = [\"10.",
        );
    let file = ConfigFile::new(
        Path::new("config/example.toml"),
        Path::new("/repo"),
        uncommented,
    );
    let config = resolve(
        &Overrides::default(),
        Some(&file),
        Path::new("/repo"),
        &env(),
    )
    .unwrap();
    assert_eq!(config.health.ready_path.as_deref(), Some("/health/ready"));
    assert_eq!(config.workers.max_memory, Some(512 << 20));
    assert_eq!(config.server.head_limits.request_line, Some(4094));
    assert_eq!(config.server.pid_file, Some("/run/app/corral.pid".into()));
    assert_eq!(config.log.error_file, Some("/var/log/app/error.log".into()));
    assert!(config.log.access.is_some());
    let identity = config.workers.identity.unwrap();
    assert_eq!(
        (identity.user.as_str(), identity.uid, identity.gid),
        ("root", 0, 0)
    );
    assert_eq!(
        config.workers.limits,
        Limits {
            nofile: Some(65536),
            address_space: Some(2 << 30),
            core: Some(0),
            umask: Some(0o027),
        }
    );
    assert_eq!(
        config.control.socket,
        PathBuf::from("/run/corral/shop.sock")
    );
    assert_eq!(
        config.deploy.revision,
        RevisionSource::Command(vec!["cat".into(), "REVISION".into()])
    );
    assert_eq!(config.deploy.state_dir, PathBuf::from("/var/lib/shop"));
    assert_eq!(
        config.deploy.rollback_hook,
        Some(vec!["/repo/config/rollback.sh".into(), "--notify".into()])
    );
    assert_eq!(config.deploy.rollback, Rollback::Symlink);
    assert_eq!(config.deploy.strategy, Strategy::Rolling);
    assert_eq!(config.deploy.max_surge, 2);
    assert_eq!(config.server.io_threads, 4);
    assert_eq!(
        config.health.status_token.unwrap().expose(),
        "0123456789abcdef0123456789abcdef"
    );
    assert_eq!(
        config.server.forwarded_allow_ips,
        crate::config::ForwardedAllow::Networks(vec![
            "10.0.0.0/8".parse().unwrap(),
            "fd00::/8".parse().unwrap()
        ])
    );
    // And so is the git-reset rollback, with the default revision.
    let git_reset = EXAMPLE.replace("# rollback = \"git-reset\"", "rollback = \"git-reset\"");
    let git_reset = git_reset.replace("\nrollback = \"none\"", "\n");
    let file = ConfigFile::new(
        Path::new("config/example.toml"),
        Path::new("/repo"),
        git_reset,
    );
    let config = resolve(
        &Overrides::default(),
        Some(&file),
        Path::new("/repo"),
        &env(),
    )
    .unwrap();
    assert_eq!(config.deploy.rollback, Rollback::GitReset);
}

#[test]
fn parse_errors_name_file_line_and_key() {
    assert_eq!(
        error_text("[app]\nmodule = \"a:b\"\n[server]\nkeepalive = \"5x\"\n"),
        "corral.toml:4: server.keepalive: invalid duration \"5x\": use a number with a unit, like \"30s\", \"500ms\", \"2m\""
    );
    let unknown = error_text("[server]\nbind = []\nkeepalvie = \"5s\"\n");
    assert!(
            unknown.starts_with("corral.toml:3: server.keepalvie: unknown key `keepalvie`, expected one of `bind`, `insecure_bind`, `reuse_port`, `backlog`, `keepalive`"),
            "{unknown}"
        );
    let wrong_type = error_text("[workers]\n\nthreads = \"4\"\n");
    assert_eq!(
        wrong_type,
        "corral.toml:3: workers.threads: invalid type: string \"4\", expected a whole number of 0 or more; for example: threads = 1"
    );
    assert_eq!(
        error_text("[workers]\ncount = \"many\"\n"),
        "corral.toml:2: workers.count: \"many\" is not a number of workers: use a number of workers like 4, or \"auto\" for one per CPU"
    );
    assert_eq!(
        error_text("[workers]\ncount = -2\n"),
        "corral.toml:2: workers.count: -2 is not a number of workers: use a number of workers like 4, or \"auto\" for one per CPU"
    );
    let bind_type = error_text("[server]\nbind = \"0.0.0.0:80\"\n");
    assert!(
        bind_type.contains("expected an array; for example: bind = [\"127.0.0.1:8000\"]"),
        "{bind_type}"
    );
    assert!(error_text("[sever]\n").starts_with("corral.toml:1: sever: unknown key `sever`"));
    assert!(
        error_text("[workers]\ntimeout = 30\n")
            .contains("workers.timeout: invalid duration 30: add a unit")
    );
    let syntax = error_text("[app]\nmodule = main:app\n");
    assert!(
        syntax.starts_with("corral.toml:2: invalid TOML: "),
        "{syntax}"
    );
    assert!(syntax.ends_with(" (in `module = main:app`)"), "{syntax}");
    let env = error_text("[app.env]\nPORT = 8000\n");
    assert!(
        env.ends_with(
            "app.env.PORT: invalid type: integer `8000`, expected a string; put the value in quotes"
        ),
        "{env}"
    );
    assert!(
        error_text("[app]\ninterface = \"wgsi\"\n")
            .contains("corral.toml:2: app.interface: unknown variant `wgsi`")
    );
}

#[test]
fn concurrency_and_max_queued_parse_errors() {
    assert_eq!(
        error_text("[workers]\nconcurrency = \"many\"\n"),
        "corral.toml:2: workers.concurrency: invalid type: string \"many\", expected a whole number of 0 or more; \
             for example: concurrency = 1000"
    );
    assert_eq!(
        error_text("[server]\n\nmax_queued = -1\n"),
        "corral.toml:3: server.max_queued: invalid value: integer `-1`, expected a whole number of 0 or more; \
             for example: max_queued = 1024"
    );
    assert_eq!(
        error_text("[server]\nmax_queued = 1.5\n"),
        "corral.toml:2: server.max_queued: invalid type: floating point `1.5`, expected a \
             whole number of 0 or more; for example: max_queued = 1024"
    );
    let unknown = error_text("[server]\nmax_queue = 10\n");
    assert!(
        unknown.starts_with("corral.toml:2: server.max_queue: unknown key `max_queue`"),
        "{unknown}"
    );
    assert!(unknown.contains("`max_queued`"), "{unknown}");
    let unknown = error_text("[workers]\nconcurency = 10\n");
    assert!(unknown.contains("`concurrency`"), "{unknown}");
}

#[test]
fn io_threads_parse_errors() {
    assert_eq!(
        error_text("[server]\nio_threads = \"auto\"\n"),
        "corral.toml:2: server.io_threads: invalid type: string \"auto\", expected a whole number of 0 or more; \
             for example: io_threads = 0"
    );
    assert_eq!(
        error_text("[server]\n\nio_threads = -1\n"),
        "corral.toml:3: server.io_threads: invalid value: integer `-1`, expected a whole number of 0 or more; \
             for example: io_threads = 0"
    );
    let unknown = error_text("[server]\nio_thread = 2\n");
    assert!(
        unknown.starts_with("corral.toml:2: server.io_thread: unknown key `io_thread`"),
        "{unknown}"
    );
    assert!(unknown.contains("`io_threads`"), "{unknown}");
}

#[test]
fn forwarded_allow_ips_parse_errors() {
    let example = "for example: forwarded_allow_ips = [\"127.0.0.1\", \"::1\"]";
    assert_eq!(
        error_text("[server]\nforwarded_allow_ips = \"127.0.0.1\"\n"),
        format!(
            "corral.toml:2: server.forwarded_allow_ips: invalid type: string \"127.0.0.1\", \
                 expected an array; {example}"
        )
    );
    assert_eq!(
        error_text("[server]\n\nforwarded_allow_ips = [\"10.0.0.1\", 10]\n"),
        format!(
            "corral.toml:3: server.forwarded_allow_ips[1]: invalid type: integer `10`, \
                 expected a string; {example}"
        )
    );
    let unknown = error_text("[server]\nforwarded_allow_ip = []\n");
    assert!(
        unknown.starts_with(
            "corral.toml:2: server.forwarded_allow_ip: unknown key `forwarded_allow_ip`"
        ),
        "{unknown}"
    );
    assert!(unknown.contains("`forwarded_allow_ips`"), "{unknown}");
}

#[test]
fn health_parse_errors() {
    let how = "use a count like 2 or a percentage like \"50%\"";
    assert_eq!(
        error_text("[health]\nmin_ready = \"half\"\n"),
        format!("corral.toml:2: health.min_ready: \"half\" is not a count or a percentage: {how}")
    );
    assert_eq!(
        error_text("[health]\n\nmin_ready = -1\n"),
        format!("corral.toml:3: health.min_ready: -1 is not a count or a percentage: {how}")
    );
    assert_eq!(
        error_text("[health]\nmin_ready = 0.5\n"),
        format!("corral.toml:2: health.min_ready: 0.5 is not a count or a percentage: {how}")
    );
    assert!(
        error_text("[health]\nmin_ready = \"200%\"\n")
            .starts_with("corral.toml:2: health.min_ready: \"200%\" is more than 100%")
    );
    let wrong_type = error_text("[health]\nmin_ready = true\n");
    assert_eq!(
        wrong_type,
        "corral.toml:2: health.min_ready: invalid type: boolean `true`, expected a count like 2 or a percentage like \"50%\"; for example: min_ready = 1"
    );
    let bind_type = error_text("[health]\nstatus_bind = 9000\n");
    assert_eq!(
        bind_type,
        "corral.toml:2: health.status_bind: invalid type: integer `9000`, expected a string; put the value in quotes"
    );
    let unknown = error_text("[health]\nmin_redy = 1\n");
    assert!(
            unknown.starts_with("corral.toml:2: health.min_redy: unknown key `min_redy`, expected one of `status_bind`, `status_token`, `status_token_file`, `min_ready`, `ready_path`"),
            "{unknown}"
        );
    assert!(
        unknown.ends_with("`unhealthy_after`, `min_in_service`; did you mean `min_ready`?"),
        "{unknown}"
    );
    assert!(
        error_text("[workers]\nboot_timeout = 30\n")
            .contains("corral.toml:2: workers.boot_timeout: invalid duration 30: add a unit")
    );
}

#[test]
fn control_and_deploy_parse_errors() {
    assert_eq!(
        error_text("[deploy]\nready_timeout = 60\n"),
        "corral.toml:2: deploy.ready_timeout: invalid duration 60: add a unit and quotes, like \"60s\" or \"60ms\""
    );
    assert_eq!(
        error_text("[deploy]\nready_timout = \"1m\"\n"),
        "corral.toml:2: deploy.ready_timout: unknown key `ready_timout`, expected one of \
             `ready_timeout`, `revision`, `state_dir`, `rollback_hook`, `hook_timeout`, \
             `rollback`, `exit_on_boot_failure`, `strategy`, `max_surge`, `canary_share`, \
             `canary_duration`, `canary_min_requests`, `canary_confidence`, \
             `canary_latency_ratio`, `canary_latency_floor`, `canary_sticky`; did you mean `ready_timeout`?"
    );
    assert_eq!(
        error_text("[deploy]\nrollback = true\n"),
        "corral.toml:2: deploy.rollback: invalid type: boolean `true`, expected a string; \
             for example: rollback = \"none\""
    );
    assert_eq!(
        error_text("[deploy]\nrollback = [\"./rollback.sh\"]\n"),
        "corral.toml:2: deploy.rollback: invalid type: array, expected a string; \
             for example: rollback = \"none\""
    );
    assert_eq!(
        error_text("[deploy]\nexit_on_boot_failure = \"yes\"\n"),
        "corral.toml:2: deploy.exit_on_boot_failure: invalid type: string \"yes\", expected a \
             boolean; for example: exit_on_boot_failure = false"
    );
    assert_eq!(
        error_text("[deploy]\nexit_on_boot_failure = 1\n"),
        "corral.toml:2: deploy.exit_on_boot_failure: invalid type: integer `1`, expected a \
             boolean; for example: exit_on_boot_failure = false"
    );
    assert_eq!(
        error_text("[deploy]\nstrategy = 2\n"),
        "corral.toml:2: deploy.strategy: invalid type: integer `2`, expected a string; \
             for example: strategy = \"all-at-once\""
    );
    assert_eq!(
        error_text("[deploy]\nmax_surge = -1\n"),
        "corral.toml:2: deploy.max_surge: invalid value: integer `-1`, expected a whole number of 0 or more; \
             for example: max_surge = 1"
    );
    assert_eq!(
        error_text("[deploy]\n\nmax_surge = \"25%\"\n"),
        "corral.toml:3: deploy.max_surge: invalid type: string \"25%\", expected a whole number of 0 or more; \
             for example: max_surge = 1"
    );
    assert_eq!(
        error_text("[deploy]\nhook_timeout = 60\n"),
        "corral.toml:2: deploy.hook_timeout: invalid duration 60: add a unit and quotes, like \"60s\" or \"60ms\""
    );
    assert_eq!(
        error_text("[deploy]\nrevision = true\n"),
        "corral.toml:2: deploy.revision: invalid type: boolean `true`, expected a string or an \
             array of strings; for example: revision = \"auto\""
    );
    assert_eq!(
        error_text("[deploy]\n\nrevision = [\"cat\", 1]\n"),
        "corral.toml:3: deploy.revision[1]: invalid type: integer `1`, expected a string; \
             for example: revision = \"auto\""
    );
    assert_eq!(
        error_text("[deploy]\nrollback_hook = { program = \"x\" }\n"),
        "corral.toml:2: deploy.rollback_hook: invalid type: table, expected a string or an array of strings"
    );
    assert_eq!(
        error_text("[deploy]\nrollback_hook = [\"./rollback.sh\", 2]\n"),
        "corral.toml:2: deploy.rollback_hook[1]: invalid type: integer `2`, expected a string; put the value in quotes"
    );
    assert_eq!(
        error_text("[deploy]\nstate_dir = [\"/var/lib/x\"]\n"),
        "corral.toml:2: deploy.state_dir: invalid type: array, expected a string; put the value in quotes"
    );
    assert_eq!(
        error_text("[control]\nsocket = [\"a\"]\n"),
        "corral.toml:2: control.socket: invalid type: array, expected a string; put the value in quotes"
    );
    assert_eq!(
        error_text("[control]\nbind = \"unix:/run/c.sock\"\n"),
        "corral.toml:2: control.bind: unknown key `bind`, expected `socket`; `bind` is a key of [server]: if it is meant, move it below a `[server]` line"
    );
}

#[test]
fn probe_and_recycling_parse_errors() {
    assert_eq!(
        error_text("[health]\nprobe_interval = 10\n"),
        "corral.toml:2: health.probe_interval: invalid duration 10: add a unit and quotes, like \"10s\" or \"10ms\""
    );
    assert!(
        error_text("[health]\nprobe_timeout = \"5 seconds\"\n")
            .starts_with("corral.toml:2: health.probe_timeout: invalid duration \"5 seconds\"")
    );
    assert_eq!(
        error_text("[health]\nunhealthy_after = -1\n"),
        "corral.toml:2: health.unhealthy_after: invalid value: integer `-1`, expected a whole number of 0 or more; for example: unhealthy_after = 3"
    );
    assert_eq!(
        error_text("[health]\nready_path = 1\n"),
        "corral.toml:2: health.ready_path: invalid type: integer `1`, expected a string; put the value in quotes"
    );
    assert!(
        error_text("[health]\nmin_in_service = \"half\"\n").starts_with(
            "corral.toml:2: health.min_in_service: \"half\" is not a count or a percentage"
        )
    );
    assert_eq!(
        error_text("[health]\nmin_in_service = false\n"),
        "corral.toml:2: health.min_in_service: invalid type: boolean `false`, expected a count like 2 or a percentage like \"50%\"; for example: min_in_service = \"50%\""
    );
    assert_eq!(
        error_text("[workers]\nmax_requests = \"1000\"\n"),
        "corral.toml:2: workers.max_requests: invalid type: string \"1000\", expected a whole number of 0 or more; for example: max_requests = 0"
    );
    assert!(
            error_text("[workers]\nmax_requests_jitter = -5\n").contains(
                "workers.max_requests_jitter: invalid value: integer `-5`, expected a whole number of 0 or more; for example: max_requests_jitter = 0"
            )
        );
    assert!(
            error_text("[workers]\nmax_memory = \"512M\"\n").starts_with(
                "corral.toml:2: workers.max_memory: invalid size \"512M\": write \"512MiB\" (1024-based)"
            )
        );
    assert!(
        error_text("[workers]\nheartbeat_timeout = 30\n")
            .contains("corral.toml:2: workers.heartbeat_timeout: invalid duration 30: add a unit")
    );
    let unknown = error_text("[workers]\nmax_request = 10\n");
    assert!(
        unknown.starts_with(
            "corral.toml:2: workers.max_request: unknown key `max_request`, expected one of"
        ),
        "{unknown}"
    );
    assert!(unknown.contains("`max_requests`"), "{unknown}");
}

#[test]
fn identity_and_limits_parse_errors() {
    assert_eq!(
        error_text("[workers]\nuser = 33\n"),
        "corral.toml:2: workers.user: invalid type: integer `33`, expected a string; put the value in quotes"
    );
    assert_eq!(
        error_text("[workers]\n\ngroup = [\"www-data\"]\n"),
        "corral.toml:3: workers.group: invalid type: array, expected a string; put the value in quotes"
    );
    assert_eq!(
        error_text("[workers]\nlimits = 1024\n"),
        "corral.toml:2: workers.limits: invalid type: integer `1024`, expected a table; write it as a section of its own, one key a line: `[workers.limits]` then its keys, as config/example.toml shows them"
    );
    assert_eq!(
        error_text("[workers.limits]\nnofiles = 1024\n"),
        "corral.toml:2: workers.limits.nofiles: unknown key `nofiles`, expected one of \
             `nofile`, `address_space`, `core`, `umask`; did you mean `nofile`?"
    );
    assert_eq!(
        error_text("[workers.limits]\nnofile = \"1024\"\n"),
        "corral.toml:2: workers.limits.nofile: invalid type: string \"1024\", expected a whole number of 0 or more"
    );
    assert_eq!(
        error_text("[workers.limits]\nnofile = -1\n"),
        "corral.toml:2: workers.limits.nofile: invalid value: integer `-1`, expected a whole number of 0 or more"
    );
    assert!(
            error_text("[workers]\nlimits = { address_space = \"2G\" }\n").starts_with(
                "corral.toml:2: workers.limits.address_space: invalid size \"2G\": write \"2GiB\" (1024-based)"
            )
        );
    assert_eq!(
        error_text("[workers.limits]\ncore = -1\n"),
        "corral.toml:2: workers.limits.core: invalid size -1: must not be negative"
    );
    // A TOML number loses the octal digits (0o27 is 23): the umask is
    // a string.
    let how = "write the octal digits in quotes, like \"027\"";
    assert_eq!(
        error_text("[workers.limits]\numask = 27\n"),
        format!("corral.toml:2: workers.limits.umask: invalid umask 27: {how}")
    );
    assert_eq!(
        error_text("[workers.limits]\numask = 0o27\n"),
        format!("corral.toml:2: workers.limits.umask: invalid umask 23: {how}")
    );
    assert_eq!(
        error_text("[workers.limits]\n\numask = \"0o027\"\n"),
        "corral.toml:3: workers.limits.umask: invalid umask \"0o027\": write only the octal \
             digits, like \"027\""
    );
    assert!(
        error_text("[workers.limits]\numask = \"1000\"\n").starts_with(
            "corral.toml:2: workers.limits.umask: invalid umask \"1000\": it is more than \"777\""
        )
    );
    assert_eq!(
        error_text("[workers.limits]\numask = true\n"),
        "corral.toml:2: workers.limits.umask: invalid type: boolean `true`, expected a umask like \"027\""
    );
}

/// Errors in the file's words, with the fix: a section given a value, a
/// key outside its section, a Rust type's name, a table written as an
/// array, a negative duration.
#[test]
fn parse_errors_say_how_to_fix_them() {
    for (text, want) in [
        (
            "workers = 4\n[server]\nbind = [\"127.0.0.1:8000\"]\n",
            "corral.toml:1: workers: is a section, not a value: write its keys below a `[workers]` line, like `[workers]`, then `count = 4`",
        ),
        (
            "bind = [\"127.0.0.1:8000\"]\n[workers]\ncount = 2\n",
            "corral.toml:1: bind: `bind` is not a key outside any section: it belongs in [server]; move it below a `[server]` line: `[server]` then `bind = [\"127.0.0.1:8000\"]`",
        ),
        (
            "[workers]\nthreads = \"8\"\n",
            "corral.toml:2: workers.threads: invalid type: string \"8\", expected a whole number of 0 or more; for example: threads = 1",
        ),
        (
            "[app]\nenv = [\"A=1\"]\n",
            "corral.toml:2: app.env: invalid type: array, expected a table; write it as a section of its own, one key a line: `[app.env]` then `A = \"1\"`",
        ),
        (
            "[workers]\ntimeout = -1\n",
            "corral.toml:2: workers.timeout: invalid duration -1: a duration is 0 or more, with a unit and quotes, like \"30s\"",
        ),
        (
            "[server]\nthreads = 4\n",
            "corral.toml:2: server.threads: unknown key `threads`, expected one of",
        ),
    ] {
        let got = error_text(text);
        assert!(got.starts_with(want), "{text}:\n{got}\nwanted:\n{want}");
    }
    assert!(error_text("[server]\nthreads = 4\n").ends_with(
        "; `threads` is a key of [workers]: if it is meant, move it below a `[workers]` line"
    ));
}
