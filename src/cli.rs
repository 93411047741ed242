//! The command line: `corral [run] APP [FLAGS]`, gunicorn-style flags that
//! override the TOML file (see [`crate::config::load`]), each also read from
//! its `CORRAL_<FLAG>` environment variable when not given ([`env_name`], which [`crate::config::Overrides`] defines with the flags;
//! [`parse`] notes which were, so that problems name the variable; a gunicorn flag
//! corral does not take is refused with gunicorn's setting and why; gunicorn's
//! `GUNICORN_CMD_ARGS` is read below the command line), and the client
//! commands that talk to a running corral: `status`, `reload`, `scale`,
//! `stop` (see [`crate::config::control_socket`]), and `import-gunicorn`.
//! gunicorn's own spellings (`--access-logfile`, `-k`, `-p`, ...) are at
//! the end of [`Overrides`]; uvicorn's, granian's, waitress's and
//! hypercorn's flags that corral has no flag of its own for are in
//! [`peer_flags`], added to `run` and `check` by [`command`]; uvicorn's
//! `UVICORN_*` and granian's `GRANIAN_*` variables are read as their flags
//! (`peer_env`).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{BindAddr, HumanDuration, Overrides, env_name, parse_duration};

mod gunicorn_cmd_args;
mod peer_env;
pub mod peer_flags;
use gunicorn_cmd_args::with_gunicorn_cmd_args;

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
    pub run: Overrides,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the app (the default when no subcommand is given).
    Run(Overrides),
    /// Boot one worker exactly as `run` would (same interpreter, environment,
    /// folder, readiness check) without binding any port; print OK with the
    /// import time, or the traceback. Exit code 0 when the app boots, 1 when
    /// it does not, 2 for a configuration mistake. Use it in a deploy
    /// pipeline in place of `python -c "from main import app"`.
    Check(Overrides),
    /// Show the workers of a running corral (from its status server). Exit
    /// code 0 when it is ready, 3 when it answered but is not (booting,
    /// failing to boot, stopping), 1 when it could not be asked: fit for a
    /// Dockerfile's `HEALTHCHECK CMD corral status`.
    Status(StatusArgs),
    /// Start a new generation of workers; with --wait, block until it is in
    /// service (exit 0, print the generation) or has failed (exit 1, print
    /// the reason and the traceback).
    Reload(ReloadArgs),
    /// Set the number of workers.
    Scale(ScaleArgs),
    /// Stop gracefully (like SIGTERM).
    Stop(ControlArgs),
    /// End the running canary now: the new generation takes over without
    /// waiting for the rest of its window.
    Promote(ControlArgs),
    /// End the running canary now: its workers finish their requests and
    /// stop, the old generation serves on, and the reload counts as failed
    /// (the rollback hook runs, `reload --wait` exits 1).
    Abort(ControlArgs),
    /// Read a gunicorn config file (run with Python, as gunicorn runs it;
    /// gunicorn need not be installed), or hypercorn's TOML one, and print
    /// the equivalent corral.toml on stdout; every setting that has no
    /// equivalent is named on stderr, with the reason. Exit code 0, or 1
    /// when the file cannot be run.
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
        value_delimiter = ',',
        value_parser = BindAddr::gunicorn
    )]
    pub bind: Vec<BindAddr>,

    /// Config file of the running corral; its [control] socket is used
    /// [default: ./corral.toml when it exists]
    #[arg(short = 'c', long, value_name = "FILE", env = "CORRAL_CONFIG")]
    pub config: Option<PathBuf>,

    /// Control socket of the running corral, when not taken from the config
    /// file [default: its [control] socket, else the default of `corral run
    /// --socket`]
    #[arg(
        long,
        value_name = "PATH",
        alias = "control-socket",
        env = "CORRAL_SOCKET"
    )]
    pub socket: Option<PathBuf>,
}

/// Flags of `corral reload`.
#[derive(Debug, Clone, Default, Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub control: ControlArgs,

    /// Wait until the new generation is in service (exit 0, print the
    /// generation) or has failed (exit 1, print the reason and the
    /// traceback); exit 3 when a stop cancelled it (the new code did not
    /// fail), 4 when it did not start (a failed reload's rollback still
    /// runs; nothing changed). During a USR2 hand-over the new corral is
    /// asked, once it answers
    #[arg(long)]
    pub wait: bool,

    /// How long the new generation may take to be all in service before the
    /// reload counts as failed [default: deploy.ready_timeout of the running
    /// corral]
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<HumanDuration>,

    /// A canary for this reload: the new generation gets this share of the
    /// requests (1% to 50%) beside the old one, and takes over only if it
    /// is no worse (see [deploy] canary_* in the README) [default: deploy.canary_share of the
    /// running corral]
    #[arg(long, value_name = "PERCENT", value_parser = parse_share)]
    pub canary: Option<u32>,

    /// With --canary: how long the canary runs [default: deploy.canary_duration of the
    /// running corral, else 60s]
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_timeout, requires = "canary")]
    pub canary_for: Option<HumanDuration>,
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
    Run(Overrides),
    Check(Overrides),
    Status(StatusArgs),
    Reload(ReloadArgs),
    Scale(ScaleArgs),
    Stop(ControlArgs),
    Promote(ControlArgs),
    Abort(ControlArgs),
    ImportGunicorn(ImportArgs),
}

/// Parses the command line (exits with clap's message on a mistake), noting
/// which `run`/`check` flags were taken from the environment.
pub fn parse(refused: fn(&str) -> Option<String>) -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let argv: Vec<OsString> = std::env::args_os().collect();
    // What the command line itself gives, before the variables add theirs.
    let given = given_on_command_line(&argv);
    let argv = match std::env::var("GUNICORN_CMD_ARGS") {
        Ok(text) => with_gunicorn_cmd_args(argv, &text, refused).unwrap_or_else(|why| {
            eprintln!("error: GUNICORN_CMD_ARGS: {why}");
            std::process::exit(2)
        }),
        Err(_) => argv,
    };
    let vars = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let peer_env = peer_env::with_peer_env(argv, vars, |var| std::env::var_os(var).is_some())
        .unwrap_or_else(|why| {
            eprintln!("error: {why}");
            std::process::exit(2)
        });
    let argv = peer_env.argv;
    let matches = command()
        .try_get_matches_from(argv)
        .unwrap_or_else(|e| exit_with_reason(e, refused));
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let run_matches = match matches.subcommand() {
        Some(("run" | "check", sub)) => sub,
        _ => &matches,
    };
    let from_env: Vec<(String, String)> = Cli::command()
        .get_arguments()
        .filter_map(|arg| {
            let id = arg.get_id().as_str();
            let flag = match arg.get_long() {
                Some(long) => format!("--{long}"),
                None => id.to_uppercase(),
            };
            let from = match run_matches.value_source(id)? {
                clap::parser::ValueSource::EnvVariable => env_name(&flag),
                // Not on the command line itself: GUNICORN_CMD_ARGS's, or a
                // UVICORN_* or GRANIAN_* variable's.
                clap::parser::ValueSource::CommandLine if !given(id) => {
                    peer_env::variable_for(&flag).unwrap_or_else(|| {
                        if arg.get_long().is_some() {
                            format!("{flag} in GUNICORN_CMD_ARGS")
                        } else {
                            ["UVICORN_APP", "GRANIAN_APP"]
                                .into_iter()
                                .find(|v| std::env::var_os(v).is_some())
                                .unwrap_or("the environment")
                                .to_owned()
                        }
                    })
                }
                _ => return None,
            };
            Some((flag, from))
        })
        .collect();
    let run = match &mut cli.command {
        Some(Command::Run(args) | Command::Check(args)) => args,
        _ => &mut cli.run,
    };
    run.from_env = from_env;
    run.peer_env = peer_env.notes;
    if matches!(matches.subcommand(), None | Some(("run" | "check", _))) {
        run.unknown_env = unknown_corral_vars(std::env::vars_os().map(|(k, _)| k));
    }
    if let Err(why) = peer_flags::apply(run_matches, run) {
        eprintln!("error: {why}");
        std::process::exit(2)
    }
    run.uvicorn_access_log();
    if let Err(why) = run.uvicorn_binds() {
        eprintln!("error: {why}");
        std::process::exit(2)
    }
    cli
}

/// The variables corral sets or reads for itself and hands its workers
/// and hooks, beside its flags' `CORRAL_*` ones (see [`unknown_corral_vars`]).
pub const INTERNAL_VARS: [&str; 16] = [
    crate::config::STATUS_TOKEN_ENV,
    // Set by `python -m corral` for the interpreter that ran it.
    crate::config::LAUNCHER_PYTHON_ENV,
    "CORRAL_INHERIT",
    "CORRAL_REEXEC_PARENT",
    "CORRAL_TEST_PYTHON",
    "CORRAL_CANARY_VERDICT",
    "CORRAL_SLOT",
    "CORRAL_GENERATION",
    "CORRAL_REVISION",
    "CORRAL_FAILED_REVISION",
    "CORRAL_GOOD_REVISION",
    "CORRAL_REASON",
    "CORRAL_ERROR_FILE",
    "CORRAL_APP_DIR",
    "CORRAL_EXIT_CODE",
    "CORRAL_EXIT_SIGNAL",
];

/// The prefixes of the variables corral hands its workers
/// (`CORRAL_WORKER_*`) and its canary hooks (`CORRAL_CANARY_*`), and of the
/// test suite's own (`CORRAL_TEST_*`).
const INTERNAL_PREFIXES: [&str; 3] = ["CORRAL_WORKER_", "CORRAL_CANARY_", "CORRAL_TEST_"];

/// The `CORRAL_*` names among `vars` that are no flag's variable, nor one
/// corral uses itself ([`INTERNAL_VARS`], [`INTERNAL_PREFIXES`]): a typo
/// (`CORRAL_WORKER=3` for `CORRAL_WORKERS`) would otherwise be ignored
/// without a word.
fn unknown_corral_vars(vars: impl IntoIterator<Item = OsString>) -> Vec<String> {
    let cmd = command();
    let run = cmd.find_subcommand("run").unwrap_or(&cmd);
    let flags: std::collections::HashSet<String> = run
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    let mut unknown: Vec<String> = vars
        .into_iter()
        .filter_map(|k| k.into_string().ok())
        .filter(|k| {
            k.starts_with("CORRAL_")
                && !INTERNAL_PREFIXES.iter().any(|p| k.starts_with(p))
                && !flags.contains(k)
                && !INTERNAL_VARS.contains(&k.as_str())
        })
        .collect();
    unknown.sort();
    unknown
}

/// corral's command line, with uvicorn's, granian's and gunicorn's flags
/// that [`peer_flags`] takes.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    peer_flags::add_to(Cli::command())
        .mut_subcommand("run", peer_flags::add_to)
        .mut_subcommand("check", peer_flags::add_to)
}

/// Where the flags of `run` and `check` start in `argv`: after the program,
/// and after `run` or `check` when given; None for a client command, which
/// takes none.
fn run_flags_at(argv: &[OsString]) -> Option<usize> {
    match argv.get(1).and_then(|a| a.to_str()) {
        Some(cmd) if gunicorn_cmd_args::CLIENT_COMMANDS.contains(&cmd) => None,
        Some("run" | "check") => Some(2),
        _ => Some(1),
    }
}

/// Whether `argv` gives the argument `id` of `run` or `check` on the
/// command line itself (not from its variable, not by default).
fn given_on_command_line(argv: &[OsString]) -> impl Fn(&str) -> bool + use<> {
    let matches = command()
        .ignore_errors(true)
        .try_get_matches_from(argv)
        .ok();
    move |id| {
        matches.as_ref().is_some_and(|m| {
            let m = match m.subcommand() {
                Some(("run" | "check", sub)) => sub,
                _ => m,
            };
            m.try_contains_id(id).unwrap_or(false)
                && m.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
        })
    }
}

/// The argument of `cmd` whose long name or one of its aliases is `long`.
fn arg_named(cmd: &clap::Command, long: &str) -> Option<clap::Arg> {
    cmd.get_arguments()
        .find(|a| {
            a.get_long() == Some(long) || a.get_all_aliases().is_some_and(|al| al.contains(&long))
        })
        .cloned()
}

/// Exits with clap's error; for one of gunicorn's flags that corral does
/// not take, with the reason `refused` gives instead; when the bad value
/// came from a flag's `CORRAL_*` variable (or uvicorn's or granian's)
/// rather than the command line, says so.
fn exit_with_reason(e: clap::Error, refused: fn(&str) -> Option<String>) -> ! {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        e.exit()
    };
    if e.kind() == ErrorKind::UnknownArgument
        && let Some(why) = refused(arg).or_else(|| peer_flags::refused(arg))
    {
        eprintln!("error: {why}");
        std::process::exit(e.exit_code())
    }
    let Some(long) = arg
        .split_whitespace()
        .next()
        .filter(|a| a.starts_with("--"))
    else {
        e.exit()
    };
    // uvicorn's and granian's bare --access-log took the app for a format.
    if long == "--access-log"
        && e.kind() == ErrorKind::InvalidValue
        && let Some(ContextValue::String(value)) = e.get(ContextKind::InvalidValue)
        && value.contains(':')
    {
        let _ = e.print();
        eprintln!(
            "note: --access-log read {value:?} as its format; for uvicorn's and granian's bare --access-log, put the app before it, or write --access-log=combined"
        );
        std::process::exit(e.exit_code())
    }
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
    if on_command_line {
        e.exit()
    }
    // corral's own variable, else uvicorn's or granian's for the flag.
    let from = match std::env::var_os(&var) {
        Some(_) => var,
        None => match peer_env::variable_for(long) {
            Some(peer) => peer,
            None => e.exit(),
        },
    };
    let _ = e.print();
    eprintln!("note: the value comes from the environment variable {from}");
    std::process::exit(e.exit_code())
}

impl Cli {
    /// The arguments of `run`, whether or not the subcommand was spelled out.
    #[cfg(test)]
    pub fn into_run_args(self) -> Overrides {
        match self.into_action() {
            Action::Run(args) | Action::Check(args) => args,
            _ => Overrides::default(),
        }
    }

    pub fn into_action(self) -> Action {
        match self.command {
            // gunicorn's --check-config.
            Some(Command::Run(args)) if args.check_config => Action::Check(args),
            None if self.run.check_config => Action::Check(self.run),
            Some(Command::Run(args)) => Action::Run(args),
            Some(Command::Check(args)) => Action::Check(args),
            Some(Command::Status(args)) => Action::Status(args),
            Some(Command::Reload(args)) => Action::Reload(args),
            Some(Command::Scale(args)) => Action::Scale(args),
            Some(Command::Stop(args)) => Action::Stop(args),
            Some(Command::Promote(args)) => Action::Promote(args),
            Some(Command::Abort(args)) => Action::Abort(args),
            Some(Command::ImportGunicorn(args)) => Action::ImportGunicorn(args),
            None => Action::Run(self.run),
        }
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

/// `corral reload --canary`: a percentage from 1 to 50, like "10%".
fn parse_share(s: &str) -> Result<u32, String> {
    match s.strip_suffix('%').unwrap_or(s).trim().parse::<u32>() {
        Ok(n @ 1..=50) => Ok(n),
        _ => Err("must be a percentage from 1% to 50%, like 10%".into()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ByteSize, Interface, LogLevel, MinReady, WorkerCount};
    use clap::CommandFactory;

    fn run_args(argv: &[&str]) -> Overrides {
        Cli::try_parse_from(argv).unwrap().into_run_args()
    }

    #[test]
    fn definition_is_valid() {
        Cli::command().debug_assert();
        command().debug_assert();
    }

    /// As [`parse`] reads them, with the other servers' flags.
    fn with_peer_flags(argv: &[&str]) -> Result<Overrides, String> {
        use clap::FromArgMatches;
        let m = command()
            .try_get_matches_from(argv)
            .map_err(|e| e.to_string())?;
        let mut args = Cli::from_arg_matches(&m).unwrap().into_run_args();
        peer_flags::apply(&m, &mut args)?;
        Ok(args)
    }

    /// gunicorn takes its log level in any case (`--log-level=DEBUG`,
    /// `GUNICORN_CMD_ARGS="--log-level INFO"`), and so does corral.
    #[test]
    fn log_levels_are_taken_in_any_case_with_gunicorns_names() {
        use crate::config::LogLevel;
        for (given, level) in [
            ("DEBUG", LogLevel::Debug),
            ("Info", LogLevel::Info),
            ("WARNING", LogLevel::Warn),
            ("warn", LogLevel::Warn),
            ("CRITICAL", LogLevel::Error),
            ("trace", LogLevel::Trace),
        ] {
            let args = run_args(&["corral", "--log-level", given, "main:app"]);
            assert_eq!(args.log_level, Some(level), "{given}");
        }
        assert!(Cli::try_parse_from(["corral", "--log-level", "loud", "main:app"]).is_err());
    }

    #[test]
    fn v_is_no_version_flag_as_daphnes_verbosity_would_exit_0() {
        // gunicorn's -v prints the version and exits 0; daphne's -v 2 is its
        // verbosity, and a unit that ran `corral -v 2 ...` would stop at
        // once, "successfully". -V and --version print it.
        let e = command()
            .try_get_matches_from(["corral", "-v", "2", "main:app"])
            .unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        for flag in ["-V", "--version"] {
            let e = command()
                .try_get_matches_from(["corral", flag])
                .unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion, "{flag}");
        }
    }

    #[test]
    fn granians_and_uvicorns_names_set_corrals_settings() {
        let args = with_peer_flags(&[
            "corral",
            "main:app",
            "--working-dir",
            "srv",
            "--env-files",
            ".env",
            "--backpressure",
            "64",
            "--workers-kill-timeout",
            "7",
            "--ssl-ca",
            "ca.pem",
            "--ssl-protocol-min",
            "tls1.3",
            "--ssl-client-verify",
            "--limit-max-requests-jitter",
            "9",
            "--no-http1-keep-alive",
            "--workers-max-rss",
            "300",
            "--runtime-threads",
            "2",
            "--no-proxy-headers",
            "--access-log",
        ])
        .unwrap();
        assert_eq!(args.chdir, Some(PathBuf::from("srv")));
        assert_eq!(args.env_file, Some(PathBuf::from(".env")));
        assert_eq!(args.workers_flags.concurrency, Some(64));
        assert_eq!(args.graceful_timeout.map(|d| d.0.as_secs()), Some(7));
        assert_eq!(args.ca_certs, Some(PathBuf::from("ca.pem")));
        assert_eq!(args.tls_min_version, Some(crate::tls::MinVersion::Tls13));
        assert_eq!(args.cert_reqs, Some(crate::tls::CertReqs::Required));
        assert_eq!(args.max_requests_jitter, Some(9));
        assert_eq!(args.server_flags.keepalive.map(|d| d.0.as_secs()), Some(0));
        assert_eq!(args.max_memory, Some(ByteSize(300 * 1024 * 1024)));
        assert_eq!(args.forwarded_allow_ips.as_deref(), Some(""));
        assert_eq!(
            args.access_log,
            Some(crate::access_log::AccessLog::Combined)
        );
        assert_eq!(args.peer_no_ops.len(), 1);
        assert_eq!(args.peer_no_ops[0].0, "--runtime-threads 2");
        assert_eq!(args.peer_meanings.len(), 4, "{:?}", args.peer_meanings);
        // corral's own flag wins over another server's spelling of it.
        let args = with_peer_flags(&[
            "corral",
            "--workers-max-rss",
            "300",
            "--max-memory",
            "1GiB",
            "--forwarded-allow-ips",
            "10.0.0.1",
            "--no-proxy-headers",
        ])
        .unwrap();
        assert_eq!(args.max_memory, Some(ByteSize(1 << 30)));
        assert_eq!(args.forwarded_allow_ips.as_deref(), Some("10.0.0.1"));
        assert!(args.peer_meanings.is_empty(), "{:?}", args.peer_meanings);
        assert_eq!(args.peer_no_ops.len(), 2);
        assert!(args.peer_no_ops[0].2.contains("own flag"));
        let err = with_peer_flags(&["corral", "--runtime-mode", "fast"]).unwrap_err();
        assert!(err.contains("[possible values: auto, mt, st]"), "{err}");
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
        assert_eq!(args.workers_flags.timeout.unwrap().0.as_secs(), 60);
        assert_eq!(args.server_flags.max_header_bytes, Some(ByteSize(16384)));
        assert_eq!(args.server_flags.max_body_bytes, Some(ByteSize(1_000_000)));
        assert_eq!(args.workers_flags.threads, Some(8));
        assert_eq!(args.workers_flags.concurrency, Some(500));
        assert_eq!(args.server_flags.max_queued, Some(0));
        assert_eq!(args.io_threads, Some(3));
        // Checked when the config is resolved, like the file's entries.
        assert_eq!(args.forwarded_allow_ips.as_deref(), Some("10.0.0.0/8, ::1"));
        assert_eq!(
            args.workers_flags.boot_timeout.map(|d| d.0),
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
        internal.extend(INTERNAL_VARS.map(String::from));
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
            args.workers_flags.timeout.map(|d| d.0),
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
            args.server_flags.keepalive.map(|d| d.0),
            Some(std::time::Duration::from_secs(120))
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        for (argv, reason) in [
            (&["corral", "--timeout", "5x"][..], "invalid duration"),
            (&["corral", "--env", "NOEQUALS"], "KEY=VALUE"),
            (&["corral", "-b", "example.com:80"], "invalid bind address"),
            (
                &["corral", "-b", "fd://3"],
                "invalid bind address \"fd://3\": file descriptors are not supported: use systemd socket activation",
            ),
            (
                &["corral", "-b", "myhost.example:20349"],
                "invalid bind address \"myhost.example:20349\": host names other than localhost are not taken, as a name may resolve to several addresses or change: give the address to listen on, like \"0.0.0.0:20349\"",
            ),
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
    fn reload_canary_flags() {
        let Action::Reload(args) = action(&[
            "corral", "reload", "--wait", "--canary", "10%", "--for", "2m",
        ]) else {
            panic!("not reload")
        };
        assert_eq!(args.canary, Some(10));
        assert_eq!(
            args.canary_for.map(|d| d.0),
            Some(std::time::Duration::from_secs(120))
        );
        let Action::Reload(args) = action(&["corral", "reload", "--canary", "5"]) else {
            panic!("not reload")
        };
        assert_eq!((args.canary, args.canary_for.is_none()), (Some(5), true));
        for (argv, reason) in [
            (
                &["corral", "reload", "--canary", "0%"][..],
                "from 1% to 50%",
            ),
            (&["corral", "reload", "--canary", "80%"], "from 1% to 50%"),
            (&["corral", "reload", "--for", "2m"], "--canary"),
        ] {
            let err = Cli::try_parse_from(argv).unwrap_err().to_string();
            assert!(err.contains(reason), "{argv:?}: {err}");
        }
        assert!(matches!(action(&["corral", "promote"]), Action::Promote(_)));
        assert!(matches!(action(&["corral", "abort"]), Action::Abort(_)));
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
