//! The command line: `corral [run] APP [FLAGS]`, gunicorn-style flags that
//! override the TOML file (see [`crate::config::load`]), each also read from
//! its `CORRAL_<FLAG>` environment variable when not given ([`env_name`];
//! [`parse`] notes which were, so that problems name the variable), and the client
//! commands that talk to a running corral: `status`, `reload`, `scale`,
//! `stop` (see [`crate::config::control_socket`]), and `import-gunicorn`.
//! gunicorn's own spellings (`--access-logfile`, `-k`, `-p`, ...) are at
//! the end of [`RunArgs`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{BindAddr, ByteSize, HumanDuration, Interface, MinReady, WorkerCount};
use crate::front::access::AccessLog;

/// corral: a pre-fork supervisor and HTTP server for Python WSGI/ASGI apps, in place of gunicorn.
#[derive(Debug, Parser)]
#[command(
    name = "corral",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "Flags override the config file: --config FILE, else ./corral.toml when present.\n\
                  Every flag of `run` and `check` can be set in the environment as CORRAL_<FLAG> \
                  (--max-requests: CORRAL_MAX_REQUESTS; lists like CORRAL_BIND separated with \
                  commas); a flag wins over its variable, which wins over the file.\n\
                  Durations: \"500ms\", \"30s\", \"2m\", \"1h\", \"1m30s\". \
                  Sizes: \"512KB\" (1000-based), \"64KiB\", \"10MiB\", \"1GiB\" (1024-based), or bytes."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `corral APP ...` without a subcommand means `corral run APP ...`.
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the app (the default when no subcommand is given).
    Run(RunArgs),
    /// Boot one worker exactly as `run` would (same interpreter, environment,
    /// folder, readiness check) without binding any port; print OK with the
    /// import time, or the traceback. Exit code 0 when the app boots, 1 when
    /// it does not, 2 for a configuration mistake. Use it in a deploy
    /// pipeline in place of `python -c "from main import app"`.
    Check(RunArgs),
    /// Show the workers of a running corral (from its status server).
    Status(StatusArgs),
    /// Start a new generation of workers; with --wait, block until it is in
    /// service (exit 0, print the generation) or has failed (exit 1, print
    /// the reason and the traceback).
    Reload(ReloadArgs),
    /// Set the number of workers.
    Scale(ScaleArgs),
    /// Stop gracefully (like SIGTERM).
    Stop(ControlArgs),
    /// Read a gunicorn config file (run with Python, as gunicorn runs it;
    /// gunicorn need not be installed) and print the equivalent corral.toml
    /// on stdout; every setting that has no equivalent is named on stderr,
    /// with the reason. Exit code 0, or 1 when the file cannot be run.
    ImportGunicorn(ImportArgs),
}

/// Flags of `corral import-gunicorn`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The gunicorn config file, like gunicorn.conf.py
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The app as given to gunicorn ("main:app"), when the file has no
    /// wsgi_app
    #[arg(value_name = "APP")]
    pub app: Option<String>,

    /// Python interpreter that runs the file (the app's) [default: as for
    /// `run`: the virtualenv corral is installed in, else
    /// $VIRTUAL_ENV/bin/python, else python3]
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
}

/// Flags of `corral status`.
#[derive(Debug, Clone, Default, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub control: ControlArgs,

    /// Address of the status server, when not taken from the config file
    #[arg(long, value_name = "ADDR")]
    pub status_bind: Option<BindAddr>,

    /// Print the raw JSON of /status instead of a table
    #[arg(long)]
    pub json: bool,
}

/// How a client command (`status`, `reload`, `scale`, `stop`) finds the
/// running corral it talks to: see [`crate::config::control_socket`].
#[derive(Debug, Clone, Default, Args)]
pub struct ControlArgs {
    /// The app as given to `corral run`, like "main:app": the running
    /// instance serving it is asked (with --bind, the one serving it there)
    #[arg(value_name = "APP", env = "CORRAL_APP", value_parser = parse_app)]
    pub app: Option<String>,

    /// An address as given to `corral run --bind`: the running instance
    /// listening there is asked; repeat (or separate with commas) to
    /// require several
    #[arg(
        short = 'b',
        long,
        value_name = "ADDR",
        env = "CORRAL_BIND",
        value_delimiter = ','
    )]
    pub bind: Vec<BindAddr>,

    /// Config file of the running corral; its [control] socket is used
    /// [default: ./corral.toml when it exists]
    #[arg(short = 'c', long, value_name = "FILE", env = "CORRAL_CONFIG")]
    pub config: Option<PathBuf>,

    /// Control socket of the running corral, when not taken from the config
    /// file [default: its [control] socket, else the default of `corral run
    /// --socket`]
    #[arg(long, value_name = "PATH", env = "CORRAL_SOCKET")]
    pub socket: Option<PathBuf>,
}

/// Flags of `corral reload`.
#[derive(Debug, Clone, Default, Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub control: ControlArgs,

    /// Wait until the new generation is in service (exit 0, print the
    /// generation) or has failed (exit 1, print the reason and the traceback)
    #[arg(long)]
    pub wait: bool,

    /// How long the new generation may take to be all in service before the
    /// reload counts as failed [default: deploy.ready_timeout of the running
    /// corral]
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<HumanDuration>,
}

/// Flags of `corral scale`.
#[derive(Debug, Clone, Args)]
pub struct ScaleArgs {
    /// The number of worker processes to run from now on (at least 1)
    #[arg(value_name = "N", value_parser = parse_count)]
    pub count: usize,

    #[command(flatten)]
    pub control: ControlArgs,
}

/// What the command line asks for.
pub enum Action {
    Run(RunArgs),
    Check(RunArgs),
    Status(StatusArgs),
    Reload(ReloadArgs),
    Scale(ScaleArgs),
    Stop(ControlArgs),
    ImportGunicorn(ImportArgs),
}

/// Parses the command line (exits with clap's message on a mistake), noting
/// which `run`/`check` flags were taken from the environment.
pub fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command()
        .try_get_matches()
        .unwrap_or_else(|e| exit_naming_the_variable(e));
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let run_matches = match matches.subcommand() {
        Some(("run" | "check", sub)) => sub,
        _ => &matches,
    };
    let from_env: Vec<String> = Cli::command()
        .get_arguments()
        .filter(|arg| {
            run_matches.value_source(arg.get_id().as_str())
                == Some(clap::parser::ValueSource::EnvVariable)
        })
        .map(|arg| match arg.get_long() {
            Some(long) => format!("--{long}"),
            None => arg.get_id().as_str().to_uppercase(),
        })
        .collect();
    match &mut cli.command {
        Some(Command::Run(args) | Command::Check(args)) => args.from_env = from_env,
        _ => cli.run.from_env = from_env,
    }
    cli
}

/// Exits with clap's error; when the bad value came from a flag's
/// `CORRAL_*` variable rather than the command line, says so.
fn exit_naming_the_variable(e: clap::Error) -> ! {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        e.exit()
    };
    let Some(long) = arg
        .split_whitespace()
        .next()
        .filter(|a| a.starts_with("--"))
    else {
        e.exit()
    };
    let var = env_name(long);
    let short = Cli::command()
        .get_arguments()
        .find(|a| a.get_long() == long.strip_prefix("--"))
        .and_then(|a| a.get_short())
        .map(|c| format!("-{c}"));
    let on_command_line = std::env::args().skip(1).any(|a| {
        a == long
            || a.starts_with(&format!("{long}="))
            || short.as_ref().is_some_and(|s| a.starts_with(s.as_str()))
    });
    if on_command_line || std::env::var_os(&var).is_none() {
        e.exit()
    }
    let _ = e.print();
    eprintln!("note: the value comes from the environment variable {var}");
    std::process::exit(e.exit_code())
}

/// The environment variable of a `run` flag: "--max-requests" →
/// "CORRAL_MAX_REQUESTS", "APP" → "CORRAL_APP".
pub fn env_name(flag: &str) -> String {
    format!(
        "CORRAL_{}",
        flag.trim_start_matches('-')
            .replace('-', "_")
            .to_uppercase()
    )
}

impl Cli {
    /// The arguments of `run`, whether or not the subcommand was spelled out.
    #[cfg(test)]
    pub fn into_run_args(self) -> RunArgs {
        match self.into_action() {
            Action::Run(args) | Action::Check(args) => args,
            _ => RunArgs::default(),
        }
    }

    pub fn into_action(self) -> Action {
        match self.command {
            Some(Command::Run(args)) => Action::Run(args),
            Some(Command::Check(args)) => Action::Check(args),
            Some(Command::Status(args)) => Action::Status(args),
            Some(Command::Reload(args)) => Action::Reload(args),
            Some(Command::Scale(args)) => Action::Scale(args),
            Some(Command::Stop(args)) => Action::Stop(args),
            Some(Command::ImportGunicorn(args)) => Action::ImportGunicorn(args),
            None => Action::Run(self.run),
        }
    }
}

/// Flags of `corral run`. Everything is optional so that the config file
/// (and then the defaults) fill what is not given.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// The app to serve, as "module:callable", e.g. "main:app"; the callable defaults to
    /// "application" [toml: app.module]
    #[arg(value_name = "APP", env = "CORRAL_APP")]
    pub app: Option<String>,

    /// Config file to read [default: ./corral.toml when it exists]
    #[arg(short = 'c', long, value_name = "FILE", env = "CORRAL_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on: HOST:PORT, [::1]:PORT or unix:/path; repeat for more,
    /// or separate with commas [toml: server.bind] [default: 0.0.0.0:$PORT when
    /// PORT is set, else 127.0.0.1:8000]
    #[arg(
        short = 'b',
        long,
        value_name = "ADDR",
        env = "CORRAL_BIND",
        value_delimiter = ','
    )]
    pub bind: Vec<BindAddr>,

    /// Number of worker processes, or "auto": one per CPU this process may use
    /// (affinity mask, cgroup quota) [toml: workers.count] [default:
    /// $WEB_CONCURRENCY when set, else 1]
    #[arg(short = 'w', long, value_name = "N|auto", env = "CORRAL_WORKERS")]
    pub workers: Option<WorkerCount>,

    /// Threads per WSGI worker [toml: workers.threads] [default: 1]
    #[arg(long, value_name = "N", env = "CORRAL_THREADS")]
    pub threads: Option<usize>,

    /// Most requests (open WebSockets and streaming responses included) one
    /// ASGI worker holds at once; the rest wait in corral. WSGI workers take
    /// --threads at a time [toml: workers.concurrency] [default: 1000]
    #[arg(long, value_name = "N", env = "CORRAL_CONCURRENCY")]
    pub concurrency: Option<usize>,

    /// The APP attribute is an app factory: call it with no arguments and serve
    /// what it returns, as uvicorn's and granian's --factory ("main:create_app('prod')"
    /// calls it with those literal arguments without this flag) [toml: app.factory]
    #[arg(
        long,
        env = "CORRAL_FACTORY",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub factory: bool,

    /// Path prefix the app is mounted under behind a proxy, like /api: SCRIPT_NAME
    /// for WSGI, root_path for ASGI [toml: app.root_path] [default: $SCRIPT_NAME,
    /// else none]
    #[arg(long, value_name = "PATH", env = "CORRAL_ROOT_PATH")]
    pub root_path: Option<String>,

    /// Protocol of the app [toml: app.interface] [default: auto]
    #[arg(long, value_enum, value_name = "INTERFACE", env = "CORRAL_INTERFACE")]
    pub interface: Option<Interface>,

    /// Python interpreter for the workers [toml: app.python]
    /// [default: the python of the virtualenv corral is installed in, else
    /// $VIRTUAL_ENV/bin/python, else python3 on PATH]
    #[arg(long, value_name = "PATH", env = "CORRAL_PYTHON")]
    pub python: Option<PathBuf>,

    /// Folder the workers run in and import the app from [toml: app.chdir]
    #[arg(long, value_name = "DIR", env = "CORRAL_CHDIR")]
    pub chdir: Option<PathBuf>,

    /// Folder to put in front of sys.path; repeat or separate with commas
    /// [toml: app.pythonpath]
    #[arg(
        long,
        value_name = "DIR",
        value_delimiter = ',',
        env = "CORRAL_PYTHONPATH"
    )]
    pub pythonpath: Vec<PathBuf>,

    /// Environment variable for the workers, set over what they inherit from
    /// corral; repeat for more (CORRAL_ENV holds one) [toml: app.env]
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env, env = "CORRAL_ENV")]
    pub env: Vec<(String, String)>,

    /// Longest wait for a response head before 504 and a worker restart
    /// [toml: workers.timeout] [default: 30s]
    #[arg(short = 't', long, value_name = "DURATION", value_parser = parse_duration, env = "CORRAL_TIMEOUT")]
    pub timeout: Option<HumanDuration>,

    /// Time a stopping worker gets to finish its requests
    /// [toml: workers.graceful_timeout] [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "CORRAL_GRACEFUL_TIMEOUT")]
    pub graceful_timeout: Option<HumanDuration>,

    /// Longest a new worker may take to import the app before it counts as
    /// failed to boot [toml: workers.boot_timeout] [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "CORRAL_BOOT_TIMEOUT")]
    pub boot_timeout: Option<HumanDuration>,

    /// Address of the status server (/health/live, /health/ready, /status,
    /// /metrics): HOST:PORT, [::1]:PORT or unix:/path; not one of the --bind
    /// addresses [toml: health.status_bind] [default: none, no status server]
    #[arg(long, value_name = "ADDR", env = "CORRAL_STATUS_BIND")]
    pub status_bind: Option<BindAddr>,

    /// File holding the bearer token that /status and /metrics require
    /// (the environment variable CORRAL_STATUS_TOKEN can hold it instead)
    /// [toml: health.status_token_file] [default: none, no token]
    #[arg(long, value_name = "FILE", env = "CORRAL_STATUS_TOKEN_FILE")]
    pub status_token_file: Option<PathBuf>,

    /// Workers that must be in service for /health/ready to answer 200: a
    /// count like 2 or a percentage like 50% [toml: health.min_ready]
    /// [default: 1]
    #[arg(long, value_name = "N|PERCENT", env = "CORRAL_MIN_READY")]
    pub min_ready: Option<MinReady>,

    /// Path that corral GETs from each worker before it enters service and
    /// every probe_interval after; 2xx means ready. Starts with "/", like
    /// /health/ready [toml: health.ready_path] [default: none, no readiness probe]
    #[arg(long, value_name = "PATH", env = "CORRAL_READY_PATH")]
    pub ready_path: Option<String>,

    /// Control socket (a Unix socket; its file permissions are the access
    /// control) for `corral reload`, `scale` and `stop` [toml: control.socket]
    /// [default: $RUNTIME_DIRECTORY/corral.sock, else one per instance:
    /// $XDG_RUNTIME_DIR/corral/NAME/corral.sock, else
    /// /run/corral/NAME/corral.sock as root, else
    /// /tmp/corral-UID/NAME/corral.sock]
    #[arg(long, value_name = "PATH", env = "CORRAL_SOCKET")]
    pub socket: Option<PathBuf>,

    /// Requests after which a worker is gracefully replaced; 0 means never
    /// [toml: workers.max_requests] [default: 0]
    #[arg(long, value_name = "N", env = "CORRAL_MAX_REQUESTS")]
    pub max_requests: Option<u64>,

    /// Up to this many more requests, at random, before a worker is replaced
    /// [toml: workers.max_requests_jitter] [default: 0]
    #[arg(long, value_name = "N", env = "CORRAL_MAX_REQUESTS_JITTER")]
    pub max_requests_jitter: Option<u64>,

    /// Memory use (RSS) above which a worker is gracefully replaced, like 512MiB
    /// [toml: workers.max_memory] [default: none, no limit]
    #[arg(long, value_name = "SIZE", env = "CORRAL_MAX_MEMORY")]
    pub max_memory: Option<ByteSize>,

    /// Run the workers as this user (a name or a numeric uid), with its
    /// groups; corral itself keeps its own user (root, to bind the ports)
    /// [toml: workers.user] [default: corral's own user]
    #[arg(short = 'u', long, value_name = "USER", env = "CORRAL_USER")]
    pub user: Option<String>,

    /// Run the workers as this group (a name or a numeric gid)
    /// [toml: workers.group] [default: the primary group of --user]
    #[arg(short = 'g', long, value_name = "GROUP", env = "CORRAL_GROUP")]
    pub group: Option<String>,

    /// Idle time before a keep-alive connection is closed
    /// [toml: server.keepalive] [default: 5s]
    #[arg(long, alias = "keep-alive", value_name = "DURATION", value_parser = parse_duration, env = "CORRAL_KEEPALIVE")]
    pub keepalive: Option<HumanDuration>,

    /// Listen queue length [toml: server.backlog] [default: 2048]
    #[arg(long, value_name = "N", env = "CORRAL_BACKLOG")]
    pub backlog: Option<u32>,

    /// Largest request head accepted (431 above) [toml: server.max_header_bytes]
    /// [default: 64KiB]
    #[arg(long, value_name = "SIZE", env = "CORRAL_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<ByteSize>,

    /// Largest request body accepted (413 above) [toml: server.max_body_bytes]
    /// [default: 100MiB]
    #[arg(long, value_name = "SIZE", env = "CORRAL_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<ByteSize>,

    /// Longest a request body may go without a byte from the client: then
    /// 408, and the app sees the client gone; its worker is not touched
    /// [toml: server.body_timeout] [default: 20s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "CORRAL_BODY_TIMEOUT")]
    pub body_timeout: Option<HumanDuration>,

    /// Longest a client may take no byte of its response: then its request
    /// is cancelled and the connection closed [toml: server.send_timeout]
    /// [default: 20s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, env = "CORRAL_SEND_TIMEOUT")]
    pub send_timeout: Option<HumanDuration>,

    /// On SIGTERM, keep serving this long before the graceful stop, with
    /// /health/ready answering 503 at once (so load balancers and
    /// Kubernetes stop sending traffic first); a second SIGTERM ends the
    /// wait [toml: server.shutdown_delay] [default: 0s]
    #[arg(long, value_name = "DURATION", env = "CORRAL_SHUTDOWN_DELAY", value_parser = parse_duration)]
    pub shutdown_delay: Option<HumanDuration>,

    /// Most client connections open at once (WebSockets included); at the
    /// cap new ones wait in the listen queue [toml: server.max_connections]
    /// [default: 10000]
    #[arg(long, value_name = "N", env = "CORRAL_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Most requests waiting in corral for a free worker place; one more gets
    /// 503 with Retry-After at once; 0: none waits (503 whenever every worker
    /// is full) [toml: server.max_queued] [default: 1024]
    #[arg(long, value_name = "N", env = "CORRAL_MAX_QUEUED")]
    pub max_queued: Option<usize>,

    /// Threads that corral's own HTTP front runs on; 0: half the CPUs, at
    /// least 1, leaving the rest to the Python workers
    /// [toml: server.io_threads] [default: 0]
    #[arg(long, value_name = "N", env = "CORRAL_IO_THREADS")]
    pub io_threads: Option<usize>,

    /// Peers whose X-Forwarded-For and X-Forwarded-Proto headers are trusted
    /// (a reverse proxy), separated with commas: IP addresses, networks like
    /// 10.0.0.0/8, or * for any peer; "" trusts nobody. Unix socket
    /// connections are always trusted [toml: server.forwarded_allow_ips]
    /// [default: 127.0.0.1,::1]
    #[arg(long, value_name = "LIST", env = "CORRAL_FORWARDED_ALLOW_IPS")]
    pub forwarded_allow_ips: Option<String>,

    /// Log verbosity of corral itself [toml: log.level] [default: info]
    #[arg(long, value_enum, value_name = "LEVEL", env = "CORRAL_LOG_LEVEL")]
    pub log_level: Option<LogLevel>,

    /// Log format: human-readable text, or one JSON object per line. Workers'
    /// output is logged line by line either way, tagged with slot and pid
    /// [toml: log.format] [default: text]
    #[arg(long, value_enum, value_name = "FORMAT", env = "CORRAL_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Access log, one line per request: off, common or combined (the Common
    /// and Combined Log Formats of Apache and gunicorn), or json
    /// [toml: log.access] [default: off, or combined with --access-logfile]
    #[arg(long, value_enum, value_name = "FORMAT", env = "CORRAL_ACCESS_LOG")]
    pub access_log: Option<AccessLog>,

    // gunicorn's own spellings, for a gunicorn command line with the
    // command renamed (see the README's migration table).
    /// Write the access log to this file ("-": stdout), reopened on SIGUSR1;
    /// turns the access log on (gunicorn's format unless --access-log or
    /// --access-logformat says otherwise) [toml: log.access_file]
    #[arg(long, value_name = "FILE", env = "CORRAL_ACCESS_LOGFILE")]
    pub access_logfile: Option<PathBuf>,

    /// Access log line in gunicorn's atoms, like
    /// '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s';
    /// turns the access log on [toml: log.access_format]
    #[arg(long, value_name = "FORMAT", env = "CORRAL_ACCESS_LOGFORMAT")]
    pub access_logformat: Option<String>,

    /// Write corral's own log (workers' output included) to this file instead
    /// of stderr ("-": stderr), reopened on SIGUSR1 [toml: log.error_file]
    #[arg(
        long,
        visible_alias = "log-file",
        value_name = "FILE",
        env = "CORRAL_ERROR_LOGFILE"
    )]
    pub error_logfile: Option<PathBuf>,

    /// Longest request line (method, target, version) accepted, in bytes;
    /// 414 above; 0: no limit of its own [toml: server.max_request_line]
    /// [default: 0, the head is bounded by --max-header-bytes]
    #[arg(long, value_name = "BYTES", env = "CORRAL_LIMIT_REQUEST_LINE")]
    pub limit_request_line: Option<usize>,

    /// Most header fields in a request; 431 above; 0: 32768
    /// [toml: server.max_header_fields] [default: 100]
    #[arg(long, value_name = "N", env = "CORRAL_LIMIT_REQUEST_FIELDS")]
    pub limit_request_fields: Option<usize>,

    /// Longest header field ("Name: value") accepted, in bytes; 431 above;
    /// 0: no limit of its own [toml: server.max_header_field_bytes]
    /// [default: 0, the head is bounded by --max-header-bytes]
    #[arg(
        long = "limit-request-field_size",
        alias = "limit-request-field-size",
        value_name = "BYTES",
        env = "CORRAL_LIMIT_REQUEST_FIELD_SIZE"
    )]
    pub limit_request_field_size: Option<usize>,

    /// Write corral's pid to this file (replaced whole, never through a
    /// symlink), removed on a clean exit [toml: server.pid_file]
    #[arg(short = 'p', long = "pid", value_name = "FILE", env = "CORRAL_PID")]
    pub pid: Option<PathBuf>,

    /// Accepted for gunicorn's sake and ignored: corral's workers need no
    /// heartbeat file (they send heartbeats over their channel)
    #[arg(long, value_name = "DIR", env = "CORRAL_WORKER_TMP_DIR")]
    pub worker_tmp_dir: Option<PathBuf>,

    /// gunicorn's worker class: sync or gthread mean --interface wsgi;
    /// uvicorn.workers.UvicornWorker, uvicorn_worker.UvicornWorker or asgi
    /// mean --interface asgi. gevent, eventlet and tornado are refused
    #[arg(
        short = 'k',
        long,
        value_name = "CLASS",
        value_parser = parse_worker_class,
        env = "CORRAL_WORKER_CLASS"
    )]
    pub worker_class: Option<Interface>,

    /// Refused: corral never preloads the app (each worker imports it, so a
    /// reload runs new code and a broken import never reaches the supervisor)
    #[arg(long, env = "CORRAL_PRELOAD")]
    pub preload: bool,

    /// The flags ("--workers", "APP") whose value came from their `CORRAL_*`
    /// environment variable, filled by [`parse`], for error messages.
    #[arg(skip)]
    pub from_env: Vec<String>,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `--log-level`; gunicorn's "critical" and "warning" are accepted too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    #[value(alias = "critical")]
    #[serde(alias = "critical")]
    Error,
    #[value(alias = "warning")]
    #[serde(alias = "warning")]
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl From<LogLevel> for tracing::level_filters::LevelFilter {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Error => Self::ERROR,
            LogLevel::Warn => Self::WARN,
            LogLevel::Info => Self::INFO,
            LogLevel::Debug => Self::DEBUG,
            LogLevel::Trace => Self::TRACE,
        }
    }
}

/// A duration flag: "30s", "500ms", "2m", or a bare number of seconds as
/// gunicorn takes it (`--timeout 30`). The TOML file insists on a unit.
fn parse_duration(s: &str) -> Result<HumanDuration, String> {
    match s.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => {
            Ok(HumanDuration(std::time::Duration::from_secs_f64(secs)))
        }
        _ => s.parse(),
    }
}

/// `corral reload --timeout`: a duration flag longer than 0.
fn parse_timeout(s: &str) -> Result<HumanDuration, String> {
    let timeout = parse_duration(s)?;
    if timeout.0.is_zero() {
        return Err("must be longer than 0s, like \"60s\"".into());
    }
    Ok(timeout)
}

/// `corral scale N`: a number of workers, at least 1.
fn parse_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (it is the number of worker processes)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("\"{s}\" is not a number of workers: {e}")),
    }
}

/// The APP of a client command: "module:callable" as `run` takes it.
fn parse_app(s: &str) -> Result<String, String> {
    let module = s.split(':').next().unwrap_or_default();
    let ok = module.split('.').all(|part| {
        part.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_alphanumeric() || c == '_')
    });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "\"{s}\" is not an app: give it as \"module:callable\" like \"main:app\", as to `corral run`"
        ))
    }
}

/// `-k/--worker-class`: gunicorn's worker classes that corral's workers
/// stand in for; any other is refused with what to use instead.
pub fn parse_worker_class(s: &str) -> Result<Interface, String> {
    match s {
        "sync"
        | "gthread"
        | "gunicorn.workers.sync.SyncWorker"
        | "gunicorn.workers.gthread.ThreadWorker" => Ok(Interface::Wsgi),
        "asgi"
        | "uvicorn.workers.UvicornWorker"
        | "uvicorn.workers.UvicornH11Worker"
        | "uvicorn_worker.UvicornWorker"
        | "uvicorn_worker.UvicornH11Worker"
        | "gunicorn.workers.gasgi.ASGIWorker" => Ok(Interface::Asgi),
        other => Err(unsupported_worker_class(other)),
    }
}

/// Why corral has no such worker class, and what to use instead.
pub fn unsupported_worker_class(class: &str) -> String {
    let green = ["gevent", "eventlet", "gevent_wsgi", "gevent_pywsgi"];
    if green
        .iter()
        .any(|g| class.starts_with(g) || class.contains(".ggevent."))
    {
        format!(
            "corral has no {class} workers (no monkey-patched green threads): \
             use --threads N for a WSGI app that waits on I/O, or serve an ASGI app \
             (-k asgi) for many concurrent connections"
        )
    } else {
        format!(
            "corral has no worker class {class:?}: it runs WSGI apps in threads \
             (-k sync, -k gthread) and ASGI apps on an event loop \
             (-k uvicorn.workers.UvicornWorker, -k asgi)"
        )
    }
}

/// "KEY=VALUE" for `--env`.
fn parse_env(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("\"{s}\" has no '=': write it as KEY=VALUE"))?;
    crate::config::check_env(key, value)?;
    Ok((key.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn run_args(argv: &[&str]) -> RunArgs {
        Cli::try_parse_from(argv).unwrap().into_run_args()
    }

    #[test]
    fn definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn with_and_without_run() {
        let argv = [
            "corral",
            "main:app",
            "-b",
            "127.0.0.1:8000",
            "-w",
            "2",
            "--chdir",
            "d",
        ];
        for args in [
            run_args(&argv),
            run_args(&[&["corral", "run"][..], &argv[1..]].concat()),
        ] {
            assert_eq!(args.app.as_deref(), Some("main:app"));
            assert_eq!(args.bind, ["127.0.0.1:8000".parse().unwrap()]);
            assert_eq!(args.workers, Some(WorkerCount::Count(2)));
            assert_eq!(args.chdir, Some(PathBuf::from("d")));
            assert_eq!(args.log_level, None);
        }
    }

    #[test]
    fn every_flag() {
        let args = run_args(&[
            "corral",
            "-c",
            "c.toml",
            "-b",
            "unix:/s",
            "--bind",
            "[::1]:80",
            "--threads",
            "8",
            "--concurrency",
            "500",
            "--interface",
            "asgi",
            "--python",
            "py",
            "--pythonpath",
            "a,b",
            "--pythonpath",
            "c",
            "-e",
            "A=1=2",
            "--env",
            "B=",
            "-t",
            "1m",
            "--graceful-timeout",
            "5s",
            "--keep-alive",
            "2s",
            "--backlog",
            "10",
            "--max-header-bytes",
            "16KiB",
            "--max-body-bytes",
            "1MB",
            "--max-queued",
            "0",
            "--io-threads",
            "3",
            "--forwarded-allow-ips",
            "10.0.0.0/8, ::1",
            "--boot-timeout",
            "90",
            "--status-bind",
            "unix:status.sock",
            "--min-ready",
            "50%",
            "--ready-path",
            "/health/ready",
            "--max-requests",
            "1000",
            "--max-requests-jitter",
            "50",
            "--max-memory",
            "512MiB",
            "-u",
            "www-data",
            "--group",
            "33",
            "--log-level",
            "warning",
            "pkg:app",
        ]);
        assert_eq!(args.bind.len(), 2);
        assert_eq!(args.interface, Some(Interface::Asgi));
        assert_eq!(
            args.pythonpath,
            [PathBuf::from("a"), "b".into(), "c".into()]
        );
        assert_eq!(
            args.env,
            [("A".into(), "1=2".into()), ("B".into(), String::new())]
        );
        assert_eq!(args.timeout.unwrap().0.as_secs(), 60);
        assert_eq!(args.max_header_bytes, Some(ByteSize(16384)));
        assert_eq!(args.max_body_bytes, Some(ByteSize(1_000_000)));
        assert_eq!(args.threads, Some(8));
        assert_eq!(args.concurrency, Some(500));
        assert_eq!(args.max_queued, Some(0));
        assert_eq!(args.io_threads, Some(3));
        // Checked when the config is resolved, like the file's entries.
        assert_eq!(args.forwarded_allow_ips.as_deref(), Some("10.0.0.0/8, ::1"));
        assert_eq!(
            args.boot_timeout.map(|d| d.0),
            Some(std::time::Duration::from_secs(90))
        );
        assert_eq!(args.status_bind, Some(BindAddr::Unix("status.sock".into())));
        assert_eq!(args.min_ready, Some(MinReady::Percent(50)));
        assert_eq!(args.ready_path.as_deref(), Some("/health/ready"));
        assert_eq!(args.max_requests, Some(1000));
        assert_eq!(args.max_requests_jitter, Some(50));
        assert_eq!(args.max_memory, Some(ByteSize(512 << 20)));
        assert_eq!(args.user.as_deref(), Some("www-data"));
        assert_eq!(args.group.as_deref(), Some("33"));
        assert_eq!(args.log_level, Some(LogLevel::Warn));
        assert_eq!(args.app.as_deref(), Some("pkg:app"));
        let args = run_args(&["corral", "--min-ready", "2", "--status-bind", "[::1]:9000"]);
        assert_eq!(args.min_ready, Some(MinReady::Count(2)));
        assert_eq!(args.status_bind, Some("[::1]:9000".parse().unwrap()));
        assert_eq!((args.user, args.group), (None, None));
        assert_eq!(args.forwarded_allow_ips, None);
        let args = run_args(&["corral", "--forwarded-allow-ips", ""]);
        assert_eq!(args.forwarded_allow_ips.as_deref(), Some(""));
        let args = run_args(&["corral", "--forwarded-allow-ips=*"]);
        assert_eq!(args.forwarded_allow_ips.as_deref(), Some("*"));
        let args = run_args(&["corral", "--user", "0", "-g", "nogroup"]);
        assert_eq!(args.user.as_deref(), Some("0"));
        assert_eq!(args.group.as_deref(), Some("nogroup"));
    }

    #[test]
    fn every_run_flag_has_its_corral_variable() {
        let cmd = Cli::command();
        let run = cmd.find_subcommand("run").unwrap();
        for arg in run.get_arguments() {
            let Some(long) = arg.get_long() else {
                assert_eq!(arg.get_id(), "app");
                assert_eq!(arg.get_env().unwrap(), "CORRAL_APP");
                continue;
            };
            if long == "help" {
                continue;
            }
            let flag = format!("--{long}");
            assert_eq!(
                arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                Some(env_name(&flag)),
                "{flag}"
            );
        }
        assert_eq!(env_name("--max-requests"), "CORRAL_MAX_REQUESTS");
    }

    #[test]
    fn flag_variables_never_collide_with_internal_ones() {
        // What corral reads or sets for itself, and what it hands a worker
        // (the worker script pops them from its environment).
        let script = crate::worker::script::file("corral_worker/main.py");
        let mut internal: Vec<String> = script
            .match_indices("os.environ.pop(\"")
            .map(|(i, m)| {
                let rest = &script[i + m.len()..];
                rest[..rest.find('"').unwrap()].to_owned()
            })
            .collect();
        assert!(internal.len() >= 8, "{internal:?}");
        internal.extend(
            [
                crate::config::STATUS_TOKEN_ENV,
                "CORRAL_INHERIT",
                "CORRAL_REEXEC_PARENT",
                "CORRAL_TEST_PYTHON",
                "CORRAL_SLOT",
                "CORRAL_GENERATION",
                "CORRAL_REVISION",
                "CORRAL_FAILED_REVISION",
                "CORRAL_GOOD_REVISION",
                "CORRAL_REASON",
                "CORRAL_ERROR_FILE",
                "CORRAL_APP_DIR",
            ]
            .map(String::from),
        );
        let cmd = Cli::command();
        for arg in cmd.find_subcommand("run").unwrap().get_arguments() {
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy();
                assert!(!internal.iter().any(|i| *i == env), "{env} is internal");
            }
        }
    }

    #[test]
    fn auto_workers_and_comma_separated_binds() {
        let args = run_args(&[
            "corral",
            "-w",
            "auto",
            "-b",
            "127.0.0.1:1,unix:/s",
            "-b",
            "[::1]:2",
        ]);
        assert_eq!(args.workers, Some(WorkerCount::Auto));
        assert_eq!(args.bind.len(), 3);
        assert_eq!(
            run_args(&["corral", "--workers=4"]).workers,
            Some(WorkerCount::Count(4))
        );
        let err = Cli::try_parse_from(["corral", "-w", "many"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"many\" is not a number of workers"), "{err}");
        let args = run_args(&[
            "corral",
            "main:create_app()",
            "--factory",
            "--root-path",
            "/api",
        ]);
        assert!(args.factory);
        assert_eq!(args.root_path.as_deref(), Some("/api"));
    }

    #[test]
    fn duration_flags_take_gunicorn_seconds_or_units() {
        let args = Cli::try_parse_from(["corral", "-t", "30", "--graceful-timeout", "1.5"])
            .unwrap()
            .into_run_args();
        assert_eq!(
            args.timeout.map(|d| d.0),
            Some(std::time::Duration::from_secs(30))
        );
        assert_eq!(
            args.graceful_timeout.map(|d| d.0),
            Some(std::time::Duration::from_millis(1500))
        );
        let args = Cli::try_parse_from(["corral", "--keepalive", "2m"])
            .unwrap()
            .into_run_args();
        assert_eq!(
            args.keepalive.map(|d| d.0),
            Some(std::time::Duration::from_secs(120))
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        for (argv, reason) in [
            (&["corral", "--timeout", "5x"][..], "invalid duration"),
            (&["corral", "--env", "NOEQUALS"], "KEY=VALUE"),
            (&["corral", "-b", "example.com:80"], "invalid bind address"),
            (&["corral", "--max-body-bytes", "10M"], "10MiB"),
            (&["corral", "--boot-timeout", "soon"], "invalid duration"),
            (
                &["corral", "--status-bind", "0.0.0.0"],
                "the port is missing",
            ),
            (
                &["corral", "--min-ready", "half"],
                "use a count like 2 or a percentage like \"50%\"",
            ),
            (&["corral", "--min-ready", "150%"], "more than 100%"),
            (&["corral", "--max-requests=-1"], "invalid digit"),
            (
                &["corral", "--max-requests-jitter", "many"],
                "invalid digit",
            ),
            (&["corral", "--max-memory", "512M"], "512MiB"),
            (&["corral", "--concurrency", "many"], "invalid digit"),
            (&["corral", "--max-queued=-1"], "invalid digit"),
            (&["corral", "--io-threads", "auto"], "invalid digit"),
        ] {
            let err = Cli::try_parse_from(argv).unwrap_err().to_string();
            assert!(err.contains(reason), "{argv:?}: {err}");
        }
    }

    fn action(argv: &[&str]) -> Action {
        Cli::try_parse_from(argv).unwrap().into_action()
    }

    #[test]
    fn control_commands() {
        let Action::Reload(args) = action(&["corral", "reload"]) else {
            panic!("not reload")
        };
        assert!(!args.wait);
        assert!(args.timeout.is_none());
        assert!(args.control.config.is_none() && args.control.socket.is_none());
        let Action::Reload(args) = action(&[
            "corral",
            "reload",
            "--wait",
            "--timeout",
            "90",
            "-c",
            "prod.toml",
            "--socket",
            "ctl.sock",
        ]) else {
            panic!("not reload")
        };
        assert!(args.wait);
        assert_eq!(
            args.timeout.map(|d| d.0),
            Some(std::time::Duration::from_secs(90))
        );
        assert_eq!(args.control.config, Some(PathBuf::from("prod.toml")));
        assert_eq!(args.control.socket, Some(PathBuf::from("ctl.sock")));
        let Action::Reload(args) = action(&["corral", "reload", "--timeout", "2m"]) else {
            panic!("not reload")
        };
        assert_eq!(
            args.timeout.map(|d| d.0),
            Some(std::time::Duration::from_secs(120))
        );

        let Action::Scale(args) = action(&["corral", "scale", "4", "--config", "c.toml"]) else {
            panic!("not scale")
        };
        assert_eq!(args.count, 4);
        assert_eq!(args.control.config, Some(PathBuf::from("c.toml")));
        assert!(args.control.socket.is_none());

        let Action::Stop(args) = action(&["corral", "stop", "--socket", "/run/c.sock"]) else {
            panic!("not stop")
        };
        assert_eq!(args.socket, Some(PathBuf::from("/run/c.sock")));
        assert!(args.config.is_none());

        let Action::Status(args) = action(&["corral", "status", "--socket", "s", "--json"]) else {
            panic!("not status")
        };
        assert_eq!(args.control.socket, Some(PathBuf::from("s")));
        assert!(args.json && args.control.config.is_none() && args.status_bind.is_none());

        // The instance as given to `run`: its app and bind address.
        let Action::Stop(args) = action(&["corral", "stop", "main:app", "-b", "127.0.0.1:8001"])
        else {
            panic!("not stop")
        };
        assert_eq!(args.app.as_deref(), Some("main:app"));
        assert_eq!(args.bind, vec!["127.0.0.1:8001".parse().unwrap()]);
        let Action::Scale(args) = action(&["corral", "scale", "3", "main:app"]) else {
            panic!("not scale")
        };
        assert_eq!(
            (args.count, args.control.app.as_deref()),
            (3, Some("main:app"))
        );
        let Action::Status(args) = action(&["corral", "status", "--bind", "unix:/run/a.sock"])
        else {
            panic!("not status")
        };
        assert_eq!(args.control.bind, vec!["unix:/run/a.sock".parse().unwrap()]);

        let args = run_args(&["corral", "main:app", "--socket", "ctl.sock"]);
        assert_eq!(args.socket, Some(PathBuf::from("ctl.sock")));
        assert_eq!(run_args(&["corral", "main:app"]).socket, None);
    }

    #[test]
    fn bad_control_commands_are_refused() {
        for (argv, reason) in [
            (&["corral", "scale"][..], "<N>"),
            (&["corral", "scale", "0"], "must be at least 1"),
            (&["corral", "scale", "-1"], "unexpected argument"),
            (&["corral", "scale", "many"], "is not a number of workers"),
            (&["corral", "scale", "2", "3"], "\"3\" is not an app"),
            (&["corral", "reload", "--timeout", "0s"], "longer than 0s"),
            (
                &["corral", "reload", "--timeout", "soon"],
                "invalid duration",
            ),
            (
                &["corral", "reload", "main:app", "extra"],
                "unexpected argument",
            ),
            (&["corral", "stop", "--wait"], "unexpected argument"),
            (&["corral", "stop", "--socket"], "a value is required"),
        ] {
            let err = Cli::try_parse_from(argv).unwrap_err().to_string();
            assert!(err.contains(reason), "{argv:?}: {err}");
        }
    }
}
