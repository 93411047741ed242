//! `[app]`: the module, interpreter, folders and environment of the workers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::config::Overrides;
use crate::config::raw::RawApp;
use crate::config::{
    AppConfig, AsgiLifespan, AsgiLoop, DEFAULT_FILE, Env, EnvAllow, GunicornHooks, Interface,
    OLD_BASE_ENV, Paste, Problem, PythonLogging, is_corral_own_env,
};

use super::*;

impl Resolver<'_> {
    pub(in crate::config) fn app(
        &mut self,
        args: &Overrides,
        raw: RawApp,
        env: &Env,
    ) -> Option<AppConfig> {
        let virtual_env = env.virtual_env.as_deref();
        let script_name = env.script_name.clone();
        let (module, paste) = self.app_source(args, &raw);

        let interface_flag = self.gunicorn_flags(args);
        let (interface, _) = self.pick(
            (interface_flag.as_ref(), "--interface"),
            (None, "app.interface"),
            raw.interface.unwrap_or(Interface::Auto),
        );

        let python = match (&args.python, &raw.python) {
            (Some(p), _) => Some((command_path(self.cwd, p), self.flag("--python").origin())),
            (None, Some(p)) if p.get_ref().is_empty() => {
                let at = self.in_file(p.span(), "app.python");
                self.fail(
                    &at,
                    "is empty: give an interpreter like \"python3\" or leave the key out",
                );
                None
            }
            (None, Some(p)) => Some((
                command_path(self.file_dir(), Path::new(p.get_ref())),
                self.in_file(p.span(), "app.python").origin(),
            )),
            (None, None) => Some(default_python(
                env.launched_by.as_deref(),
                env.installed_in.as_deref(),
                virtual_env,
            )),
        };
        let (python, python_origin) = python.unzip();

        let chdir = self
            .path_of(
                (args.chdir.as_deref(), "--chdir"),
                (raw.chdir.as_ref(), "app.chdir"),
            )
            .map(|(dir, _)| dir);
        self.chdir.clone_from(&chdir);

        let pythonpath = if args.pythonpath.is_empty() {
            let mut paths = Vec::new();
            for p in &raw.pythonpath {
                paths.extend(self.file_path(p, "app.pythonpath"));
            }
            paths
        } else {
            // As gunicorn, which adds them to sys.path after its chdir: a
            // relative one is in the --chdir folder; and each in front of
            // the ones before it, so that the last given is searched first
            // (`[app] pythonpath` is searched in its order).
            let base = self.flag_dir();
            args.pythonpath
                .iter()
                .rev()
                .map(|p| absolute(base, p))
                .collect()
        };

        let mut env = BTreeMap::new();
        for (key, value) in &raw.env {
            let at = self.in_file(value.span(), &format!("app.env.{key}"));
            match check_env(key, value.get_ref()) {
                Ok(()) => drop(env.insert(key.clone(), value.get_ref().clone())),
                Err(message) => self.fail(&at, message),
            }
        }
        for (key, value) in &args.env {
            env.insert(key.clone(), value.clone());
        }

        let env_allow = self.env_allow(raw.env_allow, raw.pass_env);

        let (factory, factory_at) = match (args.factory, &raw.factory) {
            (true, _) => (true, Some(self.flag("--factory"))),
            (false, Some(f)) => (*f.get_ref(), Some(self.in_file(f.span(), "app.factory"))),
            (false, None) => (false, None),
        };
        if let (true, Some(_), Some(at)) = (factory, &paste, &factory_at) {
            self.fail(
                at,
                "is for a module's app factory, not a Paste app: remove it",
            );
        }
        if let (true, Some(module), Some(at)) = (factory, &module, factory_at)
            && module.contains('(')
        {
            let message = format!(
                "\"{module}\" already calls its factory with arguments: drop {} or the parentheses",
                if at.location.is_some() {
                    "`factory = true`"
                } else {
                    "--factory"
                }
            );
            self.fail(&at, message);
        }

        let root_path = match (&args.root_path, &raw.root_path) {
            (Some(p), _) => Some((p.clone(), self.flag("--root-path"))),
            (None, Some(p)) => Some((p.get_ref().clone(), self.in_file(p.span(), "app.root_path"))),
            (None, None) => script_name.map(|p| (p, At::flag("SCRIPT_NAME (environment)"))),
        };
        let root_path = match root_path {
            None => String::new(),
            Some((path, at)) => check_root_path(&path).unwrap_or_else(|message| {
                self.fail(&at, message);
                String::new()
            }),
        };

        let proc_name = match (&args.proc_name, &raw.proc_name) {
            (Some(n), _) => Some((n.clone(), self.flag("--name"))),
            (None, Some(n)) => Some((n.get_ref().clone(), self.in_file(n.span(), "app.proc_name"))),
            (None, None) => None,
        };
        let proc_name = proc_name.and_then(|(name, at)| {
            check_proc_name(&name)
                .map_err(|message| self.fail(&at, message))
                .ok()
        });

        let logging =
            self.python_logging(args, raw.logconfig, raw.logconfig_json, raw.logconfig_dict);

        let env_file = self
            .path_of(
                (args.env_file.as_deref(), "--env-file"),
                (raw.env_file.as_ref(), "app.env_file"),
            )
            .and_then(|(path, at)| self.existing_file(path, &at, "the dotenv file"));
        let asgi_loop = args.asgi_loop.or(raw.asgi_loop).unwrap_or(AsgiLoop::Auto);
        let asgi_lifespan = args
            .asgi_lifespan
            .or(raw.asgi_lifespan)
            .unwrap_or(AsgiLifespan::Auto);
        let gunicorn_hooks = raw
            .gunicorn_hooks
            .as_ref()
            .and_then(|given| self.gunicorn_hooks(given));

        Some(AppConfig {
            module: module?,
            interface,
            python: python?,
            python_origin: python_origin?,
            chdir,
            pythonpath,
            env,
            env_allow,
            factory,
            root_path,
            proc_name,
            asgi_loop,
            asgi_lifespan,
            env_file,
            paste,
            logging,
            gunicorn_hooks,
        })
    }

    /// `app.gunicorn_hooks`: a file relative to the config file's folder
    /// (gunicorn's `file:PATH` too), or gunicorn's `python:MODULE`, found
    /// below the current folder as `--config python:MODULE` is.
    fn gunicorn_hooks(&mut self, given: &Spanned<String>) -> Option<GunicornHooks> {
        let at = self.in_file(given.span(), "app.gunicorn_hooks");
        let text = given.get_ref();
        if text.starts_with("python:") {
            return match crate::config::gunicorn_location(Path::new(text)) {
                Ok(Some(conf)) => Some(GunicornHooks {
                    path: absolute(self.cwd, &conf.path),
                    module: conf.module.map(|m| (m, self.cwd.to_path_buf())),
                }),
                Ok(None) => None,
                Err(message) => {
                    self.fail(&at, message.replace("--config ", ""));
                    None
                }
            };
        }
        let text = text.strip_prefix("file:").unwrap_or(text);
        if text.is_empty() {
            self.fail(
                &at,
                "is empty: give the gunicorn config file, like \"gunicorn.conf.py\", or leave the key out",
            );
            return None;
        }
        let path = self.existing_file(
            absolute(self.file_dir(), Path::new(text)),
            &at,
            "the gunicorn config file whose worker hooks the workers run",
        )?;
        Some(GunicornHooks { path, module: None })
    }

    /// What the workers serve: the `module:callable` (its flag, else the
    /// file's), or a Paste ini file (`--paste`, `app.paste`), with the
    /// string the log, `corral check` and `/status` name it by. A flag for
    /// either replaces the file's choice; the file names at most one.
    fn app_source(&mut self, args: &Overrides, raw: &RawApp) -> (Option<String>, Option<Paste>) {
        let module = match (&args.app, &args.paste, &raw.module) {
            (Some(m), _, _) => Some((m.clone(), self.flag("APP"))),
            (None, None, Some(m)) => {
                Some((m.get_ref().clone(), self.in_file(m.span(), "app.module")))
            }
            (None, _, _) => None,
        };
        let paste_given = match (&args.paste, &raw.paste) {
            (Some(p), _) => Some((p.clone(), self.cwd.to_path_buf(), self.flag("--paste"))),
            (None, Some(p)) if args.app.is_none() => Some((
                p.get_ref().clone(),
                self.file_dir().to_path_buf(),
                self.in_file(p.span(), "app.paste"),
            )),
            (None, _) => None,
        };
        if let (Some((_, at)), Some((_, _, paste_at))) = (&module, &paste_given) {
            let message = format!(
                "is given beside {}: serve the module or the Paste app, not both",
                paste_at.key
            );
            self.fail(at, message);
        }
        if let Some((spec, base, at)) = paste_given {
            // A Paste app with problems has been named for them.
            let paste = self.paste(&spec, &base, &at, &args.paste_global, &raw.paste_global);
            return (paste.as_ref().map(Paste::shown), paste);
        }
        let Some((module, at)) = module else {
            let file = self.file.map_or(DEFAULT_FILE, |f| &f.shown);
            self.problems.push(Problem {
                location: None,
                key: None,
                message: format!(
                    "no app given: pass it as `corral main:app` or set [app] module in {file}"
                ),
            });
            return (None, None);
        };
        let module = check_module(&module)
            .map_err(|message| self.fail(&at, message))
            .ok();
        (module, None)
    }

    /// `app.paste` or `--paste` ("FILE#NAME"), resolved against `base`,
    /// with its `global_conf` defaults: the flags', else the file's.
    fn paste(
        &mut self,
        spec: &str,
        base: &Path,
        at: &At,
        flags: &[(String, String)],
        table: &BTreeMap<String, Spanned<String>>,
    ) -> Option<Paste> {
        let (file, name) = match spec.rsplit_once('#') {
            Some((file, name)) => (file, Some(name)),
            None => (spec, None),
        };
        if file.is_empty() {
            self.fail(
                at,
                "is empty: give the Paste ini file, like \"production.ini\"",
            );
            return None;
        }
        if name.is_some_and(|n| n.is_empty() || n.chars().any(char::is_control)) {
            self.fail(
                at,
                format!("\"{spec}\": name the app after '#' (\"production.ini#main\") or leave the '#' out"),
            );
            return None;
        }
        let file = self.existing_file(
            absolute(base, Path::new(file)),
            at,
            "the Paste ini file that holds the app",
        )?;
        let global = if flags.is_empty() {
            table
                .iter()
                .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                .collect()
        } else {
            flags.iter().cloned().collect()
        };
        Some(Paste {
            file,
            name: name.map(str::to_owned),
            global,
        })
    }

    /// The workers' Python logging configuration: `--log-config` or
    /// `--log-config-json`, else one of `app.logconfig`, `logconfig_json`
    /// and `logconfig_dict`. A file named must exist; corral only looks at
    /// it (the worker reads it, as the workers' user).
    fn python_logging(
        &mut self,
        args: &Overrides,
        ini: Option<Spanned<String>>,
        json: Option<Spanned<String>>,
        dict: Option<Spanned<toml::Table>>,
    ) -> Option<PythonLogging> {
        let (logging, at) = match (&args.logconfig, &args.logconfig_json) {
            (Some(p), _) => (
                PythonLogging::by_extension(absolute(self.flag_dir(), p)),
                self.dir_flag("--log-config"),
            ),
            (None, Some(p)) => (
                PythonLogging::Json(absolute(self.flag_dir(), p)),
                self.dir_flag("--log-config-json"),
            ),
            (None, None) => {
                let spans = [
                    ini.as_ref().map(|v| (v.span(), "app.logconfig")),
                    json.as_ref().map(|v| (v.span(), "app.logconfig_json")),
                    dict.as_ref().map(|v| (v.span(), "app.logconfig_dict")),
                ];
                let given: Vec<_> = spans.into_iter().flatten().collect();
                if let [_, (span, key), ..] = given.as_slice() {
                    let at = self.in_file(span.clone(), key);
                    let first = given[0].1;
                    self.fail(
                        &at,
                        format!("is given beside {first}: the workers' logging comes from one of them; keep one"),
                    );
                    return None;
                }
                if ini.is_some() {
                    let (path, at) = self.path_of((None, ""), (ini.as_ref(), "app.logconfig"))?;
                    (PythonLogging::by_extension(path), at)
                } else if json.is_some() {
                    let file = (json.as_ref(), "app.logconfig_json");
                    let (path, at) = self.path_of((None, ""), file)?;
                    (PythonLogging::Json(path), at)
                } else {
                    let dict = dict?;
                    let at = self.in_file(dict.span(), "app.logconfig_dict");
                    match dict_json(dict.get_ref()) {
                        Ok(text) => (PythonLogging::Dict(text), at),
                        Err(message) => {
                            self.fail(&at, message);
                            return None;
                        }
                    }
                }
            }
        };
        if let PythonLogging::Ini(path) | PythonLogging::Json(path) | PythonLogging::Uvicorn(path) =
            &logging
        {
            self.existing_file(path.clone(), &at, "the logging configuration")?;
        }
        Some(logging)
    }

    /// A path from its flag (relative to the current folder), else from the
    /// file's key (relative to the file's folder; empty is a problem), with
    /// where it came from.
    fn path_of(
        &mut self,
        (flag, flag_name): (Option<&Path>, &str),
        (file, key): (Option<&Spanned<String>>, &str),
    ) -> Option<(PathBuf, At)> {
        match (flag, file) {
            (Some(p), _) => Some((absolute(self.cwd, p), self.flag(flag_name))),
            (None, Some(p)) => {
                let at = self.in_file(p.span(), key);
                self.file_path(p, key).map(|path| (path, at))
            }
            (None, None) => None,
        }
    }

    /// `path` if it is a file (corral only looks: the workers read it);
    /// else a problem at `at` asking for `what`, relative to the folder a
    /// relative path there is read from.
    fn existing_file(&mut self, path: PathBuf, at: &At, what: &str) -> Option<PathBuf> {
        if path.is_file() {
            return Some(path);
        }
        let base = at.relative_base();
        self.fail(
            at,
            format!(
                "{} is no file: give {what} (a relative path is read from {base})",
                path.display()
            ),
        );
        None
    }

    /// `app.env_allow`, or the deprecated `app.pass_env` read as one.
    fn env_allow(
        &mut self,
        allow: Option<Spanned<Vec<Spanned<String>>>>,
        pass_env: Option<Spanned<Vec<String>>>,
    ) -> Option<EnvAllow> {
        if let (Some(_), Some(pass)) = (&allow, &pass_env) {
            let at = self.in_file(pass.span(), "app.pass_env");
            self.fail(
                &at,
                "is the old name of env_allow: move its names into env_allow and remove it",
            );
            return None;
        }
        if let Some(pass) = pass_env {
            let at = self.in_file(pass.span(), "app.pass_env");
            let names = pass.into_inner();
            if names.iter().any(|n| n == "*") {
                self.warnings.push(format!(
                    "{}: pass_env = [\"*\"] is the default now (workers inherit corral's environment): remove it",
                    at.origin()
                ));
                return None;
            }
            let mut allowed: Vec<String> = OLD_BASE_ENV.iter().map(|n| (*n).to_owned()).collect();
            allowed.extend(names.iter().cloned());
            let list = allowed
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ");
            self.warnings.push(format!(
                "{}: pass_env is deprecated: workers now inherit corral's whole environment; to keep \
                 this file's allowlist write env_allow = [{list}], or remove pass_env to pass everything",
                at.origin()
            ));
            return Some(EnvAllow(allowed));
        }
        let allow = allow?;
        let mut names = Vec::new();
        for name in allow.into_inner() {
            let at = self.in_file(name.span(), "app.env_allow");
            let text = name.into_inner();
            if text.is_empty() || text.contains(['=', '\0']) {
                self.fail(
                    &at,
                    format!(
                        "\"{}\" is not a variable name or pattern: write names like \"DATABASE_URL\" or patterns like \"LC_*\"",
                        text.escape_default()
                    ),
                );
            } else if is_corral_own_env(&text) {
                self.fail(
                    &at,
                    format!(
                        "{text} belongs to corral or its service manager and never reaches a worker: remove it (set a value for the workers in [app.env] instead)"
                    ),
                );
            } else {
                names.push(text);
            }
        }
        Some(EnvAllow(names))
    }
}

/// `app.logconfig_dict` as the JSON the worker gives `dictConfig`: TOML's
/// dates and times have no place in it.
fn dict_json(table: &toml::Table) -> Result<String, String> {
    fn check(value: &toml::Value, at: &str) -> Result<(), String> {
        match value {
            toml::Value::Datetime(_) => Err(format!(
                "{at} is a TOML date or time, which logging.config.dictConfig cannot take: quote it"
            )),
            toml::Value::Array(items) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, v)| check(v, &format!("{at}[{i}]"))),
            toml::Value::Table(t) => t
                .iter()
                .try_for_each(|(k, v)| check(v, &format!("{at}.{k}"))),
            _ => Ok(()),
        }
    }
    table.iter().try_for_each(|(k, v)| check(v, k))?;
    serde_json::to_string(table).map_err(|e| e.to_string())
}

/// `app.proc_name`: shown in a command line, so printable and short.
fn check_proc_name(name: &str) -> Result<String, String> {
    const MAX: usize = 64;
    if name.trim().is_empty() {
        return Err(
            "is empty: give a name like \"shop\", or leave it out for the instance's".into(),
        );
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!(
            "holds the control character {c:?}: use printable characters"
        ));
    }
    if name.len() > MAX {
        return Err(format!("is {} bytes long: keep it to {MAX}", name.len()));
    }
    Ok(name.to_owned())
}
