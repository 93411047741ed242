//! Every setting in gunicorn's settings reference, with corral's equivalent
//! or why there is none. `corral import-gunicorn` names these reasons; the
//! README's migration table says the same (a test checks that it lists
//! every setting the installed gunicorn knows).

/// gunicorn's hooks that run in its workers, which corral's workers run
/// from the file itself (`[app] gunicorn_hooks`; the worker's `hooks.py`
/// lists the same).
pub const WORKER_HOOKS: [&str; 7] = [
    "post_fork",
    "post_worker_init",
    "pre_request",
    "post_request",
    "worker_int",
    "worker_abort",
    "worker_exit",
];

/// gunicorn's hooks that run in its arbiter, which a Python process of
/// corral's runs beside the workers, from the file itself (`[app]
/// gunicorn_hooks`; the worker's `arbiter.py` lists the same).
pub const ARBITER_HOOKS: [&str; 6] = [
    "on_starting",
    "when_ready",
    "on_reload",
    "nworkers_changed",
    "child_exit",
    "on_exit",
];

/// (gunicorn setting, corral's equivalent or "not supported: why").
pub const SETTINGS: &[(&str, &str)] = &[
    (
        "config",
        "`-c corral.toml`, or `-c gunicorn.conf.py` (run and converted at start, as `corral import-gunicorn` does; `./gunicorn.conf.py` is read when there is no `./corral.toml`); gunicorn's `-c file:PATH` and `-c python:MODULE` (found below the current folder, and run under its module's name) too. gunicorn runs a config file of any name as Python; corral reads one whose name ends in neither .py nor .toml as a corral.toml, and when it does not parse as one the error suggests `-c file:PATH`",
    ),
    ("wsgi_app", "`APP` argument, `[app] module`"),
    (
        "bind",
        "`-b/--bind`, `[server] bind` (`fd://N` not supported: use systemd socket activation)",
    ),
    ("backlog", "`--backlog`, `[server] backlog`"),
    ("workers", "`-w/--workers`, `[workers] count`"),
    (
        "worker_class",
        "`-k sync`/`gthread` = `--interface wsgi`; `-k gevent` = `--interface wsgi` in gevent's greenlets (`[workers] gevent`); `-k uvicorn.workers.UvicornWorker`/`asgi` = `--interface asgi`; eventlet and tornado not supported: use `-k gevent`, `--threads` or an ASGI app",
    ),
    ("threads", "`--threads`, `[workers] threads`"),
    (
        "worker_connections",
        "ASGI and `-k gevent`: `--concurrency` (or `--worker-connections`), `[workers] concurrency`; for threads it changes nothing: workers take `--threads` requests at a time, and corral holds the connections (`--max-connections`)",
    ),
    ("max_requests", "`--max-requests`, `[workers] max_requests`"),
    (
        "max_requests_jitter",
        "`--max-requests-jitter`, `[workers] max_requests_jitter`",
    ),
    (
        "timeout",
        "`-t/--timeout`, `[workers] timeout` (504, stack dump, worker replaced)",
    ),
    (
        "graceful_timeout",
        "`--graceful-timeout`, `[workers] graceful_timeout`",
    ),
    (
        "keepalive",
        "`--keep-alive`/`--keepalive`, `[server] keepalive`",
    ),
    (
        "limit_request_line",
        "`--limit-request-line`, `[server] max_request_line` (414; default 0: the head is bounded by `max_header_bytes`)",
    ),
    (
        "limit_request_fields",
        "`--limit-request-fields`, `[server] max_header_fields` (431; default 100)",
    ),
    (
        "limit_request_field_size",
        "`--limit-request-field_size`, `[server] max_header_field_bytes` (431; default 0: bounded by `max_header_bytes`)",
    ),
    (
        "reload",
        "`--reload`, `[dev] reload`: for development; a change starts a new generation, so a broken save keeps the last good code serving (watches the app folder and pythonpath for `*.py`, not the modules imported; one worker unless `-w`)",
    ),
    (
        "reload_engine",
        "accepted (`--reload-engine`), changes nothing: corral watches with inotify",
    ),
    (
        "reload_extra_files",
        "`--reload-extra-file`, `[dev] reload_extra_files`",
    ),
    (
        "spew",
        "not supported: trace with a debugger or `sys.settrace` in the app",
    ),
    (
        "check_config",
        "`corral check`, or `--check-config` (both also boot one worker and run the readiness check)",
    ),
    (
        "print_config",
        "not supported: `corral check` validates the config, boots one worker and says how many workers and which Python `run` would use; `/status` shows the config file, app, binds and instance",
    ),
    (
        "preload_app",
        "not supported: each worker imports the app itself, so a reload runs new code and a broken import never reaches the supervisor; `--preload` is refused",
    ),
    (
        "sendfile",
        "not used: responses stream through corral, which writes them to the client (`--no-sendfile` is accepted, and noted in the log)",
    ),
    (
        "reuse_port",
        "`--reuse-port`, `[server] reuse_port`: SO_REUSEPORT on the TCP sockets corral binds, so that another process of the same user may bind the same address",
    ),
    ("chdir", "`--chdir`, `[app] chdir`"),
    (
        "daemon",
        "not supported: run corral under systemd or a container, which keep it in the foreground",
    ),
    ("raw_env", "`-e/--env`, `[app] env`"),
    (
        "pidfile",
        "`-p/--pid`, `[server] pid_file` (a bare number such as `-p 8001` is refused: it is daphne's port, and gunicorn would write a pid file named 8001)",
    ),
    (
        "worker_tmp_dir",
        "`--worker-tmp-dir`: where the worker script's private folder goes (workers send heartbeats over their channel, not through files); by default `$TMPDIR`, else /tmp, else /dev/shm when that is read-only or corral cannot make its folder there (missing, not writable, a symlink: said in a warning; an error names every folder tried)",
    ),
    (
        "user",
        "`-u/--user`, `[workers] user` (also the owner of the app's Unix sockets, as under gunicorn)",
    ),
    (
        "group",
        "`-g/--group`, `[workers] group` (also the group of the app's Unix sockets, as under gunicorn)",
    ),
    (
        "umask",
        "`-m/--umask` (as gunicorn reads it: `0o027` or decimal), `[server] socket_umask`: the app's Unix sockets get mode `0777 & ~umask`, as under gunicorn; the workers' umask is left alone, as gunicorn leaves it (`[workers.limits] umask` sets it)",
    ),
    (
        "initgroups",
        "always on: workers get the supplementary groups of `[workers] user` (`--initgroups` is accepted, and noted in the log)",
    ),
    (
        "tmp_upload_dir",
        "not supported: bodies stream to the app; the app decides where uploads go",
    ),
    (
        "secure_scheme_headers",
        "not supported as a table: gunicorn's default three set the scheme from `forwarded_allow_ips` peers (`X-Forwarded-Proto: https`, `X-Forwarded-Ssl: on`, `X-Forwarded-Protocol: ssl`; `X-Forwarded-Proto` wins where they disagree, where gunicorn answers 400)",
    ),
    (
        "forwarded_allow_ips",
        "`--forwarded-allow-ips`, `[server] forwarded_allow_ips`, default `$FORWARDED_ALLOW_IPS` when set, as gunicorn reads it (also sets the client address from `X-Forwarded-For`)",
    ),
    (
        "accesslog",
        "`--access-logfile`, `[log] access_file` (`-` is stdout)",
    ),
    (
        "disable_redirect_access_to_syslog",
        "not needed: with `--log-syslog`, the access lines reach syslog when they go to corral's own log (no `--access-logfile`), and not when they go to a file (`--disable-redirect-access-to-syslog` is accepted, and noted in the log)",
    ),
    (
        "access_log_format",
        "`--access-logformat`, `[log] access_format` (same atoms; `u` is always `-`)",
    ),
    (
        "errorlog",
        "`--error-logfile`/`--log-file`, `[log] error_file` (`-` is stderr)",
    ),
    ("loglevel", "`--log-level`, `[log] level`"),
    (
        "capture_output",
        "always on: workers' stdout and stderr are logged line by line (`--capture-output` is accepted, and noted in the log)",
    ),
    (
        "logger_class",
        "not supported: corral's log is not Python; use `--log-format json` and a log shipper",
    ),
    (
        "logconfig",
        "`--log-config`, `[app] logconfig`: each worker applies it before it imports the app, so the app's loggers log as under gunicorn (corral's own log is `[log]`)",
    ),
    (
        "logconfig_dict",
        "`[app] logconfig_dict` (a table), applied as `logconfig` is, over gunicorn's defaults",
    ),
    (
        "logconfig_json",
        "`--log-config-json`, `[app] logconfig_json`, applied as `logconfig_dict` is",
    ),
    (
        "syslog_addr",
        "`--log-syslog-to`, `[log] syslog_to`: `udp://HOST:PORT` (the default `udp://localhost:514`, as gunicorn's on Linux) or `unix:///dev/log` (`#dgram`); TCP and Unix stream sockets are refused",
    ),
    (
        "syslog",
        "`--log-syslog`, `[log] syslog`: corral's own log (the workers' output included) also goes to syslog, one datagram per line tagged `corral.PREFIX.error`, as gunicorn tags its lines `gunicorn.PREFIX.error`",
    ),
    (
        "syslog_prefix",
        "`--log-syslog-prefix`, `[log] syslog_prefix`: the middle of the tag (default: `proc_name`, as gunicorn's, else the instance's name)",
    ),
    (
        "syslog_facility",
        "`--log-syslog-facility`, `[log] syslog_facility` (default `user`)",
    ),
    (
        "enable_stdio_inheritance",
        "not needed: it only applies to gunicorn's daemon mode; workers' output always goes through corral's log (`-R`/`--enable-stdio-inheritance` is accepted, and noted in the log)",
    ),
    (
        "statsd_host",
        "`--statsd-host`, `[log] statsd_host` (`HOST:PORT` or `unix:PATH`; gunicorn's metric names, several to a datagram; `/metrics` has more)",
    ),
    (
        "dogstatsd_tags",
        "`--dogstatsd-tags`, `[log] dogstatsd_tags`",
    ),
    ("statsd_prefix", "`--statsd-prefix`, `[log] statsd_prefix`"),
    (
        "enable_backlog_metric",
        "not supported: `/metrics` has the queue and connection counts",
    ),
    (
        "proc_name",
        "`-n/--name`, `[app] proc_name`: the name in the workers' command lines (`ps` shows `corral_worker.py [NAME] worker 0 generation 1`); the supervisor's is the command you ran",
    ),
    (
        "default_proc_name",
        "set by gunicorn itself (the app); corral's default name is the instance's, which tells two `main:app` apps on one host apart",
    ),
    ("pythonpath", "`--pythonpath`, `[app] pythonpath`"),
    (
        "paste",
        "`--paste FILE[#NAME]`, `[app] paste`: the workers load the ini file's app with PasteDeploy (installed beside the app), and its `[loggers]` as the logging configuration unless `logconfig*` is set",
    ),
    (
        "on_starting",
        "runs before the first worker starts (corral waits, at most `[deploy] hook_timeout`), in a Python process of corral's that runs the arbiter hooks beside the workers, as the workers' user (`[app] gunicorn_hooks` names the file, set when corral reads it), with a stand-in for gunicorn's `server` (`pid`, `log`, `cfg`, `num_workers`, `proc_name`); what it sets in `os.environ` stays in that process",
    ),
    (
        "on_reload",
        "runs when a reload starts (`[app] gunicorn_hooks`, in the arbiter hooks' process, as `on_starting`); `[hooks] on_ready` and `on_reload_failed` run commands when one is in service or failed",
    ),
    (
        "when_ready",
        "runs once, when the first generation is in service (`[app] gunicorn_hooks`, in the arbiter hooks' process, as `on_starting`: what it starts, a metrics server say, lives on there); `[hooks] on_ready` runs a command for each generation",
    ),
    (
        "pre_fork",
        "not supported: no Python in the supervisor, and workers are not forked from it; code for each new worker goes in `post_fork`, which runs in the worker",
    ),
    (
        "post_fork",
        "runs in each worker before the app's import (`[app] gunicorn_hooks` names the file, which each worker runs once more; set when corral reads the file), with stand-ins for gunicorn's `server` and `worker` (`pid`, `ppid`, `age`, `log`, `cfg`)",
    ),
    (
        "post_worker_init",
        "runs in each worker after the app's import, before its first request (`[app] gunicorn_hooks`, as `post_fork`)",
    ),
    (
        "worker_int",
        "runs when a worker gets SIGINT or SIGQUIT, before it exits (`[app] gunicorn_hooks`, as `post_fork`); a stopping worker gets SIGTERM and finishes its requests",
    ),
    (
        "worker_abort",
        "runs in a worker past `timeout` (a request's, or its boot's), after its Python stacks are logged and before it is killed (`[app] gunicorn_hooks`, as `post_fork`); on the worker's main thread, so not in an interpreter stuck holding the GIL, as under gunicorn",
    ),
    ("pre_exec", "not supported: a USR2 re-exec runs no Python"),
    (
        "pre_request",
        "runs before each WSGI request (`[app] gunicorn_hooks`, as `post_fork`); `req` has gunicorn's `method`, `uri`, `path`, `query`, `version`, `headers`; an exception answers 500, as under gunicorn; for ASGI apps, as gunicorn's uvicorn worker, never",
    ),
    (
        "post_request",
        "runs after each WSGI response is sent (`[app] gunicorn_hooks`, as `post_fork`); `resp` has `status`, `status_code`, `headers`, `sent`; for ASGI apps, as gunicorn's uvicorn worker, never",
    ),
    (
        "child_exit",
        "runs after each worker exit, a killed worker's too (`[app] gunicorn_hooks`, in the arbiter hooks' process, as `on_starting`), with `worker.pid`, `worker.age` (the slot) and `worker.exitcode`: prometheus_client's multiprocess recipe (`mark_process_dead`) works as it is; `[hooks] on_worker_exit` runs a command",
    ),
    (
        "worker_exit",
        "runs in a worker that exits on its own (a stop, a recycle, a reload), after its requests and an ASGI lifespan shutdown (`[app] gunicorn_hooks`, as `post_fork`); `[hooks] on_worker_exit` runs a command after every exit, a killed worker's too",
    ),
    (
        "nworkers_changed",
        "runs when the number of workers is scaled (`corral scale`, TTIN, TTOU), with the new and old counts (`[app] gunicorn_hooks`, in the arbiter hooks' process, as `on_starting`); `/status` shows the workers",
    ),
    (
        "on_exit",
        "runs when corral stops, after the workers (`[app] gunicorn_hooks`, in the arbiter hooks' process, as `on_starting`; corral waits at most 5 s)",
    ),
    (
        "ssl_context",
        "not supported: no Python in the supervisor; `certfile`, `keyfile`, `ca_certs` and `cert_reqs` still become `[server.tls]`, what the function changes (ciphers, options) does not",
    ),
    (
        "proxy_protocol",
        "`--proxy-protocol [MODE]`, `[server] proxy_protocol` (`off`, `v1`, `v2` or `auto`; read before TLS; the environ gets `PROXY_PROTOCOL`, `PROXY_ADDR` and `PROXY_PORT` as under gunicorn)",
    ),
    (
        "proxy_allow_ips",
        "`--proxy-allow-from`, `[server] proxy_allow_ips` (default `127.0.0.1,::1`; Unix socket peers always may)",
    ),
    (
        "protocol",
        "not supported: corral speaks HTTP only (no uwsgi protocol)",
    ),
    ("uwsgi_allow_ips", "not supported: see `protocol`"),
    (
        "keyfile",
        "`--keyfile`, `[server.tls] keyfile` (PEM, unencrypted: an encrypted key is refused; when unset, the key is read from `certfile`, as gunicorn reads it, with the same checks; import-gunicorn writes `keyfile = certfile`)",
    ),
    ("certfile", "`--certfile`, `[server.tls] certfile`"),
    (
        "ssl_version",
        "`--tls-min-version`, `[server.tls] min_version` (\"1.2\" or \"1.3\": nothing older); import-gunicorn maps `PROTOCOL_TLSv1_2` to \"1.2\", needs nothing for `PROTOCOL_TLS`/`TLS_SERVER`, and names TLS 1.0/1.1 as not offered (gunicorn 21 and later ignore it too)",
    ),
    (
        "cert_reqs",
        "`--cert-reqs`, `[server.tls] cert_reqs` (`none`/`optional`/`required`, or 0/1/2 as `ssl.CERT_NONE`/`CERT_OPTIONAL`/`CERT_REQUIRED`)",
    ),
    ("ca_certs", "`--ca-certs`, `[server.tls] ca_certs`"),
    (
        "suppress_ragged_eofs",
        "not needed: rustls treats a missing close_notify as the end of the connection (`--suppress-ragged-eofs` is accepted, and noted in the log)",
    ),
    (
        "do_handshake_on_connect",
        "not needed: the handshake always runs in the connection's own task, bounded by `keepalive` (`--do-handshake-on-connect` is accepted, and noted in the log)",
    ),
    ("ciphers", "not supported: rustls's safe default suites"),
    (
        "http_protocols",
        "not needed: HTTP/1.1 and HTTP/2 always (ALPN on TLS binds, h2c with prior knowledge on plain ones)",
    ),
    (
        "http2_cleartext",
        "not needed: plain binds serve h2c with prior knowledge (no `Upgrade: h2c`)",
    ),
    (
        "http2_max_concurrent_streams",
        "`--max-concurrent-streams` (or `--http2-max-concurrent-streams`), `[server] max_concurrent_streams` (default 100)",
    ),
    (
        "http2_initial_window_size",
        "not supported: corral's 256 KiB stream and connection windows bound what a connection may make it hold",
    ),
    (
        "http2_max_frame_size",
        "not supported: hyper's 16 KiB frames",
    ),
    (
        "http2_max_header_list_size",
        "not supported as its own limit: `[server] max_header_bytes` bounds HTTP/2's decoded header list as it bounds an HTTP/1.1 head",
    ),
    (
        "raw_paste_global_conf",
        "`--paste-global KEY=VALUE`, `[app.paste_global]`: the Paste app's `global_conf`",
    ),
    (
        "permit_obsolete_folding",
        "not supported: obsolete line folding is refused with 400 (hyper)",
    ),
    (
        "strip_header_spaces",
        "not supported: a space before a header's colon is refused with 400 (hyper)",
    ),
    (
        "permit_unconventional_http_method",
        "not supported: hyper takes any token as a method",
    ),
    (
        "permit_unconventional_http_version",
        "not supported: HTTP/1.0 and 1.1 only",
    ),
    (
        "casefold_http_method",
        "not supported: methods are passed as sent",
    ),
    (
        "forwarder_headers",
        "not supported: `SCRIPT_NAME` comes from `[app] root_path`, never from a header",
    ),
    (
        "header_map",
        "`--header-map drop` (gunicorn's default) is taken, as it is what corral does: headers with `_` in their name are dropped; `refuse` and `dangerous` are not supported",
    ),
    (
        "asgi_loop",
        "`--asgi-loop`, `[app] asgi_loop`: `auto` (uvloop when installed, else asyncio), `asyncio` or `uvloop`",
    ),
    (
        "asgi_lifespan",
        "`--asgi-lifespan`, `[app] asgi_lifespan`: `auto` (when the app supports it), `on` or `off`",
    ),
    (
        "asgi_disconnect_grace_period",
        "not supported: a request whose client went away is cancelled at once",
    ),
    (
        "websocket_max_message_size",
        "`--ws-max-message` (or `--websocket-max-message-size`), `[server] ws_max_message` (client messages, at most 16 MiB); the app's messages are capped at 16 MiB",
    ),
    ("http_parser", "not supported: hyper parses every request"),
    ("root_path", "`--root-path`, `[app] root_path`"),
    (
        "dirty_apps",
        "not supported: run a separate corral (or a task queue) for long jobs",
    ),
    ("dirty_workers", "not supported: see `dirty_apps`"),
    ("dirty_timeout", "not supported: see `dirty_apps`"),
    ("dirty_threads", "not supported: see `dirty_apps`"),
    ("dirty_graceful_timeout", "not supported: see `dirty_apps`"),
    ("on_dirty_starting", "not supported: see `dirty_apps`"),
    ("dirty_post_fork", "not supported: see `dirty_apps`"),
    ("dirty_worker_init", "not supported: see `dirty_apps`"),
    ("dirty_worker_exit", "not supported: see `dirty_apps`"),
    (
        "control_socket",
        "`--socket` (or `--control-socket`), `[control] socket` (`corral status`, `reload`, `scale`, `stop`)",
    ),
    (
        "control_socket_mode",
        "fixed at 0600, in a folder corral makes 0700",
    ),
    (
        "control_socket_disable",
        "not supported: the control socket is always on (it is private to corral's user)",
    ),
];

/// gunicorn's command-line flags that corral does not take, each with its
/// setting: a gunicorn command line with one of them is refused with the
/// setting's reason ([`refused_flag`]), not a bare "unexpected argument".
const REFUSED_FLAGS: &[(&str, &str)] = &[
    ("--spew", "spew"),
    ("--print-config", "print_config"),
    ("-D", "daemon"),
    ("--daemon", "daemon"),
    ("--logger-class", "logger_class"),
    ("--enable-backlog-metric", "enable_backlog_metric"),
    ("--protocol", "protocol"),
    ("--uwsgi-allow-from", "uwsgi_allow_ips"),
    ("--ssl-version", "ssl_version"),
    ("--ciphers", "ciphers"),
    ("--http-protocols", "http_protocols"),
    ("--http2-cleartext", "http2_cleartext"),
    ("--http2-initial-window-size", "http2_initial_window_size"),
    ("--http2-max-frame-size", "http2_max_frame_size"),
    ("--http2-max-header-list-size", "http2_max_header_list_size"),
    ("--permit-obsolete-folding", "permit_obsolete_folding"),
    ("--strip-header-spaces", "strip_header_spaces"),
    (
        "--permit-unconventional-http-method",
        "permit_unconventional_http_method",
    ),
    (
        "--permit-unconventional-http-version",
        "permit_unconventional_http_version",
    ),
    ("--casefold-http-method", "casefold_http_method"),
    ("--forwarder-headers", "forwarder_headers"),
    (
        "--asgi-disconnect-grace-period",
        "asgi_disconnect_grace_period",
    ),
    ("--http-parser", "http_parser"),
    ("--dirty-app", "dirty_apps"),
    ("--dirty-workers", "dirty_workers"),
    ("--dirty-timeout", "dirty_timeout"),
    ("--dirty-threads", "dirty_threads"),
    ("--dirty-graceful-timeout", "dirty_graceful_timeout"),
    ("--control-socket-mode", "control_socket_mode"),
    ("--no-control-socket", "control_socket_disable"),
];

/// Why corral refuses `arg` (as typed: "--daemon", "--log-config=x"),
/// when it is one of gunicorn's flags corral does not take.
pub fn refused_flag(arg: &str) -> Option<String> {
    let flag = arg.split('=').next().unwrap_or(arg);
    let (_, setting) = REFUSED_FLAGS.iter().find(|(f, _)| *f == flag)?;
    let why = note(setting)?;
    // "see `reload`": say what that one says too.
    let see = why
        .split_once("see `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .and_then(|(other, _)| Some((other, note(other)?)))
        .map(|(other, text)| format!(" (`{other}`: {text})"))
        .unwrap_or_default();
    Some(format!(
        "corral does not take gunicorn's {flag} (`{setting}`): {why}{see}"
    ))
}

/// The settings a gunicorn config file may not turn on when corral runs
/// it: their flag is refused ([`REFUSED_FLAGS`]), and a file setting them
/// is refused the same way rather than noted and passed over. `daemon`:
/// an init script or a `Type=forking` unit waits for a fork that never
/// comes, until its timeout.
const REFUSED_SETTINGS: &[(&str, &str)] = &[("daemon", "--daemon")];

/// Why corral refuses to run a gunicorn config file that sets `name` to
/// `value` (a value other than gunicorn's "unset"), when it is one of
/// [`REFUSED_SETTINGS`]: the reason its flag gets, and how to go on.
pub fn refused_setting(name: &str, value: &serde_json::Value) -> Option<String> {
    let (_, flag) = REFUSED_SETTINGS.iter().find(|(s, _)| *s == name)?;
    let why = refused_flag(flag)?;
    // As the file spells it.
    let value = match value {
        serde_json::Value::Bool(true) => "True".to_owned(),
        other => other.to_string(),
    };
    Some(format!(
        "it sets {name} = {value}: {why}; remove the setting (or set it to False) to run this file with corral"
    ))
}

/// gunicorn's settings read with `validate_bool`, which takes a bool or
/// the string "true" or "false" (any case, white space around).
const BOOL_SETTINGS: &[&str] = &[
    "reload",
    "spew",
    "check_config",
    "print_config",
    "preload_app",
    "sendfile",
    "reuse_port",
    "daemon",
    "initgroups",
    "disable_redirect_access_to_syslog",
    "capture_output",
    "syslog",
    "enable_stdio_inheritance",
    "enable_backlog_metric",
    "suppress_ragged_eofs",
    "do_handshake_on_connect",
    "permit_obsolete_folding",
    "strip_header_spaces",
    "permit_unconventional_http_method",
    "permit_unconventional_http_version",
    "casefold_http_method",
    "control_socket_disable",
];

/// Whether gunicorn reads `name` as a bool ([`BOOL_SETTINGS`]).
pub fn is_bool(name: &str) -> bool {
    BOOL_SETTINGS.contains(&name)
}

/// What corral says about a gunicorn setting, if it is one.
pub fn note(name: &str) -> Option<&'static str> {
    SETTINGS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's table says the same as this list, row for row.
    #[test]
    fn the_readme_table_matches() {
        let readme = include_str!("../../README.md");
        for (name, text) in SETTINGS {
            let row = format!("| `{name}` | {text} |");
            assert!(readme.contains(&row), "README lacks the row:\n{row}");
        }
        let mut names: Vec<&str> = SETTINGS.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SETTINGS.len(), "a setting is listed twice");
    }

    #[test]
    fn a_refused_flag_gets_its_settings_reason() {
        for (flag, setting) in REFUSED_FLAGS {
            assert!(note(setting).is_some(), "{flag}: no setting {setting}");
        }
        assert_eq!(
            refused_flag("--daemon").unwrap(),
            format!(
                "corral does not take gunicorn's --daemon (`daemon`): {}",
                note("daemon").unwrap()
            )
        );
        let uwsgi = refused_flag("--uwsgi-allow-from=10.0.0.1").unwrap();
        assert!(
            uwsgi.contains(
                "(`uwsgi_allow_ips`): not supported: see `protocol` (`protocol`: not supported"
            ),
            "{uwsgi}"
        );
        assert_eq!(refused_flag("--workers"), None);
        assert_eq!(refused_flag("--nonsense"), None);
    }
}
