//! The `[log]` section and the gunicorn settings that live beside corral's
//! own (`[server]` request-head limits and `pid_file`, `-k`, `--preload`):
//! merged from the command line over the file and checked like the rest
//! (see [`super::validate`]).

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::raw::{RawLog, RawServer};
use super::validate::{At, Resolver, absolute};
use super::{AppOutput, LogFormat, LogLevel, Overrides};
use super::{Interface, Problem};
use crate::access_log::{self, AccessLog, Format};
use crate::statsd;

/// gunicorn's ceiling for `limit_request_fields` (and what 0 means there).
const MAX_HEADER_FIELDS: usize = 32768;
/// gunicorn's and hyper's default number of header fields.
const DEFAULT_HEADER_FIELDS: usize = 100;

/// Where corral's own log and the access log go.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: LogLevel,
    pub format: LogFormat,
    /// How what the workers print is written.
    pub app_output: AppOutput,
    /// `None`: stderr.
    pub error_file: Option<PathBuf>,
    /// corral's own log goes to stdout (`--error-logfile /dev/stdout`).
    pub error_to_stdout: bool,
    /// `None`: no access log.
    pub access: Option<AccessConfig>,
    /// `None`: no StatsD.
    pub statsd: Option<statsd::Settings>,
    /// `None`: no syslog.
    pub syslog: Option<crate::syslog::Settings>,
}

/// The access log, when it is on.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    pub format: Format,
    pub target: AccessTarget,
}

/// Where access lines are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessTarget {
    /// Through corral's own log (stderr, the journal or `error_file`).
    Log,
    /// gunicorn's `--access-logfile -`.
    Stdout,
    /// `--access-logfile /dev/stderr`.
    Stderr,
    File(PathBuf),
}

/// The request-head limits beyond `max_header_bytes` (gunicorn's
/// `limit_request_*`), enforced by the front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Longest request line, or no limit of its own: 414 beyond.
    pub request_line: Option<usize>,
    /// Most header fields: 431 beyond (hyper counts them).
    pub fields: usize,
    /// Longest "Name: value" and its CRLF, or no limit of its own: 431 beyond.
    pub field_bytes: Option<usize>,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            request_line: None,
            fields: DEFAULT_HEADER_FIELDS,
            field_bytes: None,
        }
    }
}

/// Whether `path` names this process's standard stream `fd` (1 for
/// stdout, 2 for stderr) as `/dev/stdout`, `/dev/fd/N` or
/// `/proc/self/fd/N` do.
fn is_std_stream(path: &Path, fd: u8) -> bool {
    matches!(
        (fd, path.to_str()),
        (1, Some("/dev/stdout" | "/dev/fd/1" | "/proc/self/fd/1"))
            | (2, Some("/dev/stderr" | "/dev/fd/2" | "/proc/self/fd/2"))
    )
}

impl Resolver<'_> {
    pub(super) fn log(&mut self, args: &Overrides, raw: RawLog) -> LogConfig {
        let level = args.log_level.or(raw.level).unwrap_or_default();
        let log_format = args.log_format.or(raw.format).unwrap_or_default();
        let error_file = match (&args.error_logfile, &raw.error_file) {
            (Some(p), _) if p.as_os_str() == "-" => None,
            (Some(p), _) => Some(absolute(self.flag_dir(), p)),
            (None, Some(p)) if p.get_ref() == "-" => None,
            (None, Some(p)) => self.log_path(p, "log.error_file"),
            (None, None) => None,
        };
        let target = match (&args.access_logfile, &raw.access_file) {
            (Some(p), _) if p.as_os_str() == "-" => Some(AccessTarget::Stdout),
            (Some(p), _) => Some(AccessTarget::File(absolute(self.flag_dir(), p))),
            (None, Some(p)) if p.get_ref() == "-" => Some(AccessTarget::Stdout),
            (None, Some(p)) => self.log_path(p, "log.access_file").map(AccessTarget::File),
            (None, None) => None,
        };
        // Container images pass gunicorn `--access-logfile /dev/stdout` and
        // `--error-logfile /dev/stderr` (a pipe or the journal's socket
        // there, no file to open and append to), and `/dev/null` for no
        // access log: the streams corral writes itself, and no log.
        // Either stream as either log (`--error-logfile /dev/stdout`,
        // `--access-logfile /dev/stderr`) is written by corral's writer
        // threads too, which a log reader that stalls cannot hold up.
        let error_to_stdout = error_file.as_deref().is_some_and(|p| is_std_stream(p, 1));
        let error_file = error_file.filter(|p| !is_std_stream(p, 1) && !is_std_stream(p, 2));
        let target = match target {
            Some(AccessTarget::File(p)) if is_std_stream(&p, 1) => Some(AccessTarget::Stdout),
            Some(AccessTarget::File(p)) if is_std_stream(&p, 2) => Some(AccessTarget::Stderr),
            other => other,
        };
        let discard = matches!(&target, Some(AccessTarget::File(p)) if p == Path::new("/dev/null"));
        let target = target.filter(|_| !discard);
        let custom = match (&args.access_logformat, &raw.access_format) {
            (Some(f), _) => self.access_format(f, &At::flag("--access-logformat")),
            (None, Some(f)) => {
                let at = self.in_file(f.span(), "log.access_format");
                self.access_format(f.get_ref(), &at)
            }
            (None, None) => None,
        };
        let kind = args.access_log.or(raw.access);
        let format = match (custom, kind) {
            (Some(pieces), _) => Some(Format::Gunicorn(pieces)),
            (None, Some(AccessLog::Off)) => None,
            (None, Some(AccessLog::Common)) => Some(Format::Common),
            (None, Some(AccessLog::Combined)) => Some(Format::Combined),
            (None, Some(AccessLog::Json)) => Some(Format::Json),
            // gunicorn's default line is the Combined Log Format.
            (None, None) => target.as_ref().map(|_| Format::Combined),
        };
        let format = format.filter(|_| !discard);
        let statsd = self.statsd(args, &raw);
        let syslog = self.syslog(args, &raw);
        LogConfig {
            level,
            format: log_format,
            app_output: args.app_output.or(raw.app_output).unwrap_or_default(),
            error_file,
            error_to_stdout,
            statsd,
            syslog,
            access: format.map(|format| AccessConfig {
                format,
                target: target.unwrap_or(AccessTarget::Log),
            }),
        }
    }

    /// `log.syslog`, `syslog_to`, `syslog_prefix` and `syslog_facility`,
    /// each flag over the file's key.
    fn syslog(&mut self, args: &Overrides, raw: &RawLog) -> Option<crate::syslog::Settings> {
        use crate::syslog;
        let on = args.log_syslog || raw.syslog.as_ref().is_some_and(|s| *s.get_ref());
        let to = self.given(
            (args.log_syslog_to.as_ref(), "--log-syslog-to"),
            (raw.syslog_to.as_ref(), "log.syslog_to"),
        );
        let prefix = self.given(
            (args.log_syslog_prefix.as_ref(), "--log-syslog-prefix"),
            (raw.syslog_prefix.as_ref(), "log.syslog_prefix"),
        );
        let facility = self.given(
            (args.log_syslog_facility.as_ref(), "--log-syslog-facility"),
            (raw.syslog_facility.as_ref(), "log.syslog_facility"),
        );
        if !on {
            if let Some((_, at)) = to.as_ref().or(prefix.as_ref()).or(facility.as_ref()) {
                self.warnings.push(format!(
                    "{}: syslog is off, so this does nothing (as in gunicorn): add --log-syslog \
                     (log.syslog = true)",
                    at.origin()
                ));
            }
            return None;
        }
        let base = match args.log_syslog_to {
            // A flag's path is relative to the working directory, the
            // file's to its folder.
            Some(_) => self.cwd,
            None => self.file_dir(),
        };
        let target = match to {
            None => syslog::parse_target(syslog::DEFAULT_TO).ok(),
            Some((text, at)) => match syslog::parse_target(&text) {
                Ok(statsd::Target::Unix(path)) => Some(statsd::Target::Unix(absolute(base, &path))),
                Ok(target) => Some(target),
                Err(why) => {
                    self.fail(&at, format!("\"{text}\" {why}"));
                    None
                }
            },
        };
        let prefix = match prefix {
            None => Some(None),
            Some((text, at)) => syslog::check_prefix(&text)
                .map(Some)
                .map_err(|why| self.fail(&at, format!("\"{text}\" {why}")))
                .ok(),
        };
        let facility = match facility {
            None => Some(1),
            Some((text, at)) => syslog::parse_facility(&text)
                .map_err(|why| self.fail(&at, format!("\"{text}\" {why}")))
                .ok(),
        };
        Some(syslog::Settings {
            target: target?,
            prefix: prefix?,
            facility: facility?,
        })
    }

    /// `log.statsd_host`, `statsd_prefix` and `dogstatsd_tags`.
    fn statsd(&mut self, args: &Overrides, raw: &RawLog) -> Option<statsd::Settings> {
        // Flag over file; unset is "" for each.
        let (prefix, at) = self.pick(
            (args.statsd_prefix.as_ref(), "--statsd-prefix"),
            (raw.statsd_prefix.as_ref(), "log.statsd_prefix"),
            String::new(),
        );
        let prefix = statsd::check_prefix(&prefix)
            .map_err(|m| self.fail(&at, m))
            .ok()?;
        let (tags, at) = self.pick(
            (args.dogstatsd_tags.as_ref(), "--dogstatsd-tags"),
            (raw.dogstatsd_tags.as_ref(), "log.dogstatsd_tags"),
            String::new(),
        );
        let tags = statsd::check_tags(&tags)
            .map_err(|m| self.fail(&at, m))
            .ok()?;
        let (host, at) = self.pick(
            (args.statsd_host.as_ref(), "--statsd-host"),
            (raw.statsd_host.as_ref(), "log.statsd_host"),
            String::new(),
        );
        if host.trim().is_empty() {
            return None;
        }
        let target = match statsd::Target::parse(&host) {
            Ok(statsd::Target::Unix(path)) => {
                // A flag's path is relative to the working directory, the
                // file's to its folder.
                let base = match args.statsd_host {
                    Some(_) => self.cwd,
                    None => self.file_dir(),
                };
                statsd::Target::Unix(absolute(base, &path))
            }
            Ok(target) => target,
            Err(m) => {
                self.fail(&at, m);
                return None;
            }
        };
        if prefix.len() + tags.len() > statsd::MAX_AFFIXES {
            self.fail(
                &at,
                format!(
                    "with its prefix and tags ({} bytes) a metric would not fit a datagram: keep them under {} bytes",
                    prefix.len() + tags.len(),
                    statsd::MAX_AFFIXES
                ),
            );
            return None;
        }
        Some(statsd::Settings {
            target,
            prefix,
            tags,
        })
    }

    fn log_path(&mut self, value: &Spanned<String>, key: &str) -> Option<PathBuf> {
        if value.get_ref().is_empty() {
            let at = self.in_file(value.span(), key);
            self.fail(
                &at,
                "is empty: give a path, or \"-\" for the default stream",
            );
            return None;
        }
        Some(absolute(self.file_dir(), Path::new(value.get_ref())))
    }

    fn access_format(&mut self, text: &str, at: &At) -> Option<Vec<access_log::Piece>> {
        access_log::parse(text)
            .map_err(|message| self.fail(at, message))
            .ok()
    }

    /// `server.max_request_line`, `max_header_fields`,
    /// `max_header_field_bytes` (gunicorn's `--limit-request-*`).
    pub(super) fn head_limits(&mut self, args: &Overrides, raw: &RawServer) -> HeadLimits {
        let (line, _) = self.pick(
            (args.limit_request_line.as_ref(), "--limit-request-line"),
            (raw.max_request_line.as_ref(), "server.max_request_line"),
            0,
        );
        let (fields, at) = self.pick(
            (args.limit_request_fields.as_ref(), "--limit-request-fields"),
            (raw.max_header_fields.as_ref(), "server.max_header_fields"),
            DEFAULT_HEADER_FIELDS,
        );
        if fields > MAX_HEADER_FIELDS {
            self.fail(
                &at,
                format!("is above {MAX_HEADER_FIELDS}, the most gunicorn allows; use 0 for that"),
            );
        }
        let (field_bytes, _) = self.pick(
            (
                args.limit_request_field_size.as_ref(),
                "--limit-request-field_size",
            ),
            (
                raw.max_header_field_bytes.as_ref(),
                "server.max_header_field_bytes",
            ),
            0,
        );
        HeadLimits {
            request_line: (line > 0).then_some(line),
            fields: if fields == 0 {
                MAX_HEADER_FIELDS
            } else {
                fields.min(MAX_HEADER_FIELDS)
            },
            field_bytes: (field_bytes > 0).then_some(field_bytes),
        }
    }

    /// `server.pid_file` (`-p/--pid`).
    pub(super) fn pid_file(&mut self, args: &Overrides, raw: &RawServer) -> Option<PathBuf> {
        match (&args.pid, &raw.pid_file) {
            (Some(p), _) if p.as_os_str().is_empty() => {
                self.fail(
                    &At::flag("--pid"),
                    "is empty: give a path like /run/app.pid",
                );
                None
            }
            // daphne's `-p PORT`, given to corral, would silently write a
            // pid file named after the port and serve on another one.
            (Some(p), _) if p.to_str().is_some_and(|s| s.parse::<u16>().is_ok()) => {
                self.fail(
                    &At::flag("--pid"),
                    format!(
                        "\"{0}\" is a number: -p/--pid is gunicorn's pid file; for daphne's -b HOST -p {0}, give --host HOST --port {0}; for a pid file, a path like ./{0}.pid",
                        p.display()
                    ),
                );
                None
            }
            (Some(p), _) => Some(absolute(self.flag_dir(), p)),
            (None, Some(p)) => self.log_path(p, "server.pid_file"),
            (None, None) => None,
        }
    }

    /// `-k/--worker-class` beside `--interface`, and `--preload`.
    pub(super) fn gunicorn_flags(&mut self, args: &Overrides) -> Option<Interface> {
        if args.preload {
            self.fail(
                &At::flag("--preload"),
                "corral never preloads the app: each worker imports it on its own, so that \
                 a reload runs the new code and an import that crashes or hangs costs one \
                 worker, never the supervisor; leave --preload out (for shared memory, \
                 keep what the app loads small or load it lazily)",
            );
        }
        match (args.interface, args.worker_class.map(|k| k.interface)) {
            (Some(i), Some(k)) if i != k && i != Interface::Auto => {
                self.problems.push(Problem {
                    location: None,
                    key: Some("--worker-class".into()),
                    message: format!(
                        "says {} but --interface says {}: give only one of them",
                        k.name(),
                        i.name()
                    ),
                });
                None
            }
            (Some(Interface::Auto) | None, Some(k)) => Some(k),
            (i, _) => i,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::resolve_text;
    use super::*;

    fn args() -> Overrides {
        Overrides {
            app: Some("main:app".into()),
            ..Overrides::default()
        }
    }

    #[test]
    fn log_defaults_and_files() {
        let cfg = resolve_text("", &args()).unwrap();
        assert_eq!(cfg.log.level, LogLevel::Info);
        assert_eq!(cfg.log.error_file, None);
        assert!(cfg.log.access.is_none());
        let cfg = resolve_text(
            "[log]\nlevel = \"warning\"\nerror_file = \"logs/error.log\"\naccess_file = \"-\"\n",
            &args(),
        )
        .unwrap();
        assert_eq!(cfg.log.level, LogLevel::Warn);
        assert_eq!(
            cfg.log.error_file,
            Some("/nonexistent/srv/app/logs/error.log".into())
        );
        let access = cfg.log.access.unwrap();
        assert_eq!(access.target, AccessTarget::Stdout);
        assert!(matches!(access.format, Format::Combined));
        // The flags win, relative to the cwd.
        let cfg = resolve_text(
            "[log]\naccess_file = \"a.log\"\n",
            &Overrides {
                access_logfile: Some("b.log".into()),
                access_logformat: Some("%(h)s %(s)s".into()),
                error_logfile: Some("-".into()),
                ..args()
            },
        )
        .unwrap();
        let access = cfg.log.access.unwrap();
        assert_eq!(access.target, AccessTarget::File("/cwd/b.log".into()));
        assert!(matches!(access.format, Format::Gunicorn(_)));
        assert_eq!(cfg.log.error_file, None);
    }

    #[test]
    fn log_problems_name_the_key() {
        let err = resolve_text(
            "[log]\naccess_format = \"%(h\"\nerror_file = \"\"\n",
            &args(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("corral.toml:2: log.access_format"), "{err}");
        assert!(
            err.contains("corral.toml:3: log.error_file: is empty"),
            "{err}"
        );
        let err = resolve_text("[log]\nlevel = \"loud\"\n", &args())
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.level"), "{err}");
    }

    #[test]
    fn statsd_flag_over_file_and_problems_name_the_key() {
        use crate::statsd::{Settings, Target};
        let cfg = resolve_text("", &args()).unwrap();
        assert_eq!(cfg.log.statsd, None);
        let cfg = resolve_text(
            "[log]\nstatsd_host = \"unix:run/dd.sock\"\nstatsd_prefix = \"web\"\n",
            &args(),
        )
        .unwrap();
        assert_eq!(
            cfg.log.statsd,
            Some(Settings {
                target: Target::Unix("/nonexistent/srv/app/run/dd.sock".into()),
                prefix: "web.".into(),
                tags: String::new(),
            })
        );
        let cfg = resolve_text(
            "[log]\nstatsd_host = \"unix:run/dd.sock\"\n",
            &Overrides {
                statsd_host: Some("stats:9125".into()),
                dogstatsd_tags: Some("env:prod".into()),
                ..args()
            },
        )
        .unwrap();
        assert_eq!(
            cfg.log.statsd,
            Some(Settings {
                target: Target::Udp {
                    host: "stats".into(),
                    port: 9125
                },
                prefix: String::new(),
                tags: "env:prod".into(),
            })
        );
        // A prefix without a host sends nothing, as in gunicorn.
        let cfg = resolve_text("[log]\nstatsd_prefix = \"web\"\n", &args()).unwrap();
        assert_eq!(cfg.log.statsd, None);
        let err = resolve_text(
            "[log]\nstatsd_host = \"stats:http\"\nstatsd_prefix = \"a b\"\n",
            &args(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("corral.toml:3: log.statsd_prefix: holds ' '"),
            "{err}"
        );
        let err = resolve_text("[log]\nstatsd_host = \"stats:http\"\n", &args())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("corral.toml:2: log.statsd_host: has \"http\" as its port"),
            "{err}"
        );
        let err = resolve_text(
            "",
            &Overrides {
                statsd_host: Some("::1".into()),
                ..args()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--statsd-host: is an IPv6 address"), "{err}");
    }

    #[test]
    fn head_limits_as_gunicorn_counts_them() {
        let cfg = resolve_text("", &args()).unwrap();
        assert_eq!(cfg.server.head_limits, HeadLimits::default());
        let cfg = resolve_text(
            "[server]\nmax_request_line = 4094\nmax_header_fields = 0\nmax_header_field_bytes = 8190\n",
            &args(),
        )
        .unwrap();
        assert_eq!(
            cfg.server.head_limits,
            HeadLimits {
                request_line: Some(4094),
                fields: 32768,
                field_bytes: Some(8190)
            }
        );
        let err = resolve_text(
            "",
            &Overrides {
                limit_request_fields: Some(40000),
                ..args()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--limit-request-fields: is above 32768"),
            "{err}"
        );
    }

    #[test]
    fn syslog_is_on_by_its_switch_and_its_other_keys_are_checked() {
        let cfg = resolve_text(
            "[log]\nsyslog = true\nsyslog_to = \"unix://run/log.sock\"\nsyslog_facility = \"LOCAL2\"\n",
            &args(),
        )
        .unwrap();
        let syslog = cfg.log.syslog.unwrap();
        assert_eq!(
            syslog.target,
            statsd::Target::Unix("/nonexistent/srv/app/run/log.sock".into())
        );
        assert_eq!((syslog.facility, syslog.prefix), (18, None));
        // The defaults: gunicorn's UDP address and the user facility.
        let cfg = resolve_text(
            "",
            &Overrides {
                log_syslog: true,
                ..args()
            },
        )
        .unwrap();
        let syslog = cfg.log.syslog.unwrap();
        assert_eq!(syslog.target.to_string(), "localhost:514");
        assert_eq!(syslog.facility, 1);
        // Without the switch the address does nothing, and says so.
        let cfg = resolve_text("[log]\nsyslog_to = \"udp://logs:514\"\n", &args()).unwrap();
        assert!(cfg.log.syslog.is_none());
        assert!(
            cfg.warnings[0].contains("(key log.syslog_to): syslog is off"),
            "{:?}",
            cfg.warnings
        );
        let err = resolve_text(
            "[log]\nsyslog = true\nsyslog_to = \"tcp://logs:514\"\nsyslog_facility = \"local9\"\n",
            &args(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("log.syslog_to: \"tcp://logs:514\" is a TCP address"),
            "{err}"
        );
        assert!(
            err.contains("log.syslog_facility: \"local9\" is no syslog facility"),
            "{err}"
        );
    }

    #[test]
    fn gevent_is_wsgi_in_greenlets_and_says_what_it_does_not_use() {
        let gevent = Some(crate::config::overrides::WorkerClass {
            interface: Interface::Wsgi,
            gevent: true,
        });
        let cfg = resolve_text(
            "[workers]\nthreads = 4\nconcurrency = 50\n",
            &Overrides {
                worker_class: gevent,
                ..args()
            },
        )
        .unwrap();
        assert_eq!(cfg.app.interface, Interface::Wsgi);
        assert!(cfg.workers.gevent);
        assert_eq!(
            cfg.warnings,
            [
                "--worker-class: with gevent, threads = 4 is not used: a gevent worker runs up to \
              workers.concurrency (50) requests at once, one greenlet each"
            ]
        );
        // The key in the file, and an ASGI app, which has its own loop.
        let err = resolve_text(
            "[app]\ninterface = \"asgi\"\n[workers]\ngevent = true\n",
            &args(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("corral.toml:4: workers.gevent: gevent runs WSGI apps"),
            "{err}"
        );
        let cfg = resolve_text("[workers]\ngevent = true\n", &args()).unwrap();
        assert!(cfg.workers.gevent && cfg.warnings.is_empty());
    }

    #[test]
    fn worker_class_preload_and_pid_file() {
        let cfg = resolve_text(
            "[server]\npid_file = \"run/app.pid\"\n",
            &Overrides {
                worker_class: Some(crate::config::overrides::WorkerClass {
                    interface: Interface::Asgi,
                    gevent: false,
                }),
                ..args()
            },
        )
        .unwrap();
        assert_eq!(cfg.app.interface, Interface::Asgi);
        assert_eq!(
            cfg.server.pid_file,
            Some("/nonexistent/srv/app/run/app.pid".into())
        );
        let err = resolve_text(
            "",
            &Overrides {
                worker_class: Some(crate::config::overrides::WorkerClass {
                    interface: Interface::Asgi,
                    gevent: false,
                }),
                interface: Some(Interface::Wsgi),
                preload: true,
                ..args()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--preload: corral never preloads"), "{err}");
        assert!(
            err.contains("--worker-class: says asgi but --interface says wsgi"),
            "{err}"
        );
    }
}
