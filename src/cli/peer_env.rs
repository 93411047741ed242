//! uvicorn's `UVICORN_*` and granian's `GRANIAN_*` environment variables:
//! both servers read every flag from one (`UVICORN_PORT=8080` is `--port
//! 8080`, `GRANIAN_WORKERS=4` is `--workers 4`), and container images set
//! them. Each becomes its flag in front of the command line's, unless the
//! command line gives that flag, or the flag's own `CORRAL_*` variable is
//! set: the command line over corral's variable over theirs over the
//! config file. A switch reads click's booleans ("true", "1", "yes", "on";
//! "false" picks the `--no-` form where there is one). `UVICORN_APP` is the
//! app when the command line names none. A variable that names no flag is
//! left alone, as click leaves it; one whose flag corral refuses is refused
//! with the reason.

use std::ffi::OsString;

/// The servers whose variables are read, with their prefixes.
const PREFIXES: [(&str, &str); 2] = [("UVICORN_", "uvicorn"), ("GRANIAN_", "granian")];

/// What [`with_peer_env`] took: the command line to parse, and one line per
/// variable read, for the log.
pub struct Taken {
    pub argv: Vec<OsString>,
    pub notes: Vec<String>,
}

/// `argv` with the flags of the `UVICORN_*` and `GRANIAN_*` variables among
/// `vars` in front of the command line's (after `run` or `check`; a client
/// command takes none); `corral_var` tells whether a `CORRAL_*` variable is
/// set.
pub fn with_peer_env(
    argv: Vec<OsString>,
    vars: impl IntoIterator<Item = (String, String)>,
    corral_var: impl Fn(&str) -> bool,
) -> Result<Taken, String> {
    // (flag name, variable, server, value), in the variables' order.
    let mut vars: Vec<(String, String, &str, String)> = vars
        .into_iter()
        .filter_map(|(name, value)| {
            let (prefix, server) = PREFIXES.iter().find(|(p, _)| name.starts_with(p))?;
            let key = name[prefix.len()..].to_ascii_lowercase().replace('_', "-");
            (!key.is_empty()).then(|| (key, name.clone(), *server, value))
        })
        .collect();
    vars.sort();
    let Some(at) = super::run_flags_at(&argv) else {
        return Ok(Taken {
            argv,
            notes: Vec::new(),
        });
    };
    let cmd = super::command();
    let run = cmd
        .find_subcommand("run")
        .cloned()
        .unwrap_or_else(|| cmd.clone());
    let given = super::given_on_command_line(&argv);
    let find = |long: &str| super::arg_named(&run, long);
    let mut words: Vec<OsString> = Vec::new();
    let mut notes = Vec::new();
    for (key, var, server, value) in &vars {
        let (key, server, value) = (key.as_str(), *server, value.as_str());
        if key == "app" {
            if !given("app") && !corral_var("CORRAL_APP") {
                words.push(OsString::from(value));
                notes.push(format!("{var}={value} read as {server} reads it: the app"));
            }
            continue;
        }
        let flag = format!("--{key}");
        let Some(arg) = find(key) else {
            if let Some(why) = super::peer_flags::refused(&flag) {
                return Err(format!("{var}: {why}"));
            }
            // Not a flag of theirs corral knows: click leaves it alone too.
            continue;
        };
        let own_var = arg
            .get_env()
            .and_then(|v| v.to_str())
            .is_some_and(&corral_var);
        if given(arg.get_id().as_str()) || own_var {
            continue;
        }
        let takes = arg.get_action().takes_values();
        let optional = arg.get_num_args().is_some_and(|n| n.min_values() == 0);
        let taken: Vec<String> = if !takes || (optional && boolish(value).is_some()) {
            match boolish(value) {
                Some(true) => vec![flag.clone()],
                Some(false) => {
                    let no = format!("--no-{key}");
                    match find(&no[2..]) {
                        Some(_) => vec![no],
                        None => Vec::new(),
                    }
                }
                None => {
                    return Err(format!(
                        "{var}={value:?}: {flag} is a switch: give true or false, as {server} reads it"
                    ));
                }
            }
        } else if matches!(arg.get_action(), clap::ArgAction::Append) {
            // click splits a repeatable option's variable at white space.
            value
                .split_whitespace()
                .map(|v| format!("{flag}={v}"))
                .collect()
        } else {
            vec![format!("{flag}={value}")]
        };
        if !taken.is_empty() {
            notes.push(format!(
                "{var}={value} read as {server} reads it: {}",
                taken.join(" ")
            ));
        }
        words.extend(taken.into_iter().map(OsString::from));
    }
    let mut out = argv;
    let tail = out.split_off(at.min(out.len()));
    out.extend(words);
    out.extend(tail);
    Ok(Taken { argv: out, notes })
}

/// The `UVICORN_*` or `GRANIAN_*` variable set for corral's flag `long`
/// ("--interface", or the flag an alias of it names), if any: for an error
/// about a value the command line did not give.
pub fn variable_for(long: &str) -> Option<String> {
    let cmd = super::command();
    let run = cmd.find_subcommand("run").unwrap_or(&cmd);
    let long = long.strip_prefix("--")?;
    std::env::vars().map(|(k, _)| k).find(|name| {
        PREFIXES.iter().any(|(prefix, _)| {
            name.strip_prefix(prefix).is_some_and(|rest| {
                let key = rest.to_ascii_lowercase().replace('_', "-");
                super::arg_named(run, &key).is_some_and(|a| a.get_long() == Some(long))
            })
        })
    })
}

/// click's reading of a boolean: None when it is none.
fn boolish(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "t" | "yes" | "y" | "on" => Some(true),
        "0" | "false" | "f" | "no" | "n" | "off" | "" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(argv: &[&str], vars: &[(&str, &str)]) -> Result<(Vec<String>, Vec<String>), String> {
        let argv = argv.iter().map(OsString::from).collect();
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let taken = with_peer_env(argv, vars, |v| v == "CORRAL_THREADS")?;
        let argv = taken
            .argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        Ok((argv, taken.notes))
    }

    #[test]
    fn variables_become_flags_in_front_of_the_command_lines() {
        let (argv, notes) = with(
            &["corral", "check", "-w", "2"],
            &[
                ("UVICORN_WORKERS", "4"),
                ("UVICORN_RELOAD_DIR", "src lib"),
                ("UVICORN_RELOAD", "yes"),
                ("UVICORN_FACTORY", "0"),
                ("GRANIAN_BLOCKING_THREADS", "8"),
                ("GRANIAN_RESPAWN_FAILED_WORKERS", "true"),
                ("GRANIAN_NO_SUCH_THING", "1"),
                ("HOME", "/root"),
                ("UVICORN_APP", "main:app"),
            ],
        )
        .unwrap();
        // In the flags' order; -w on the command line wins; CORRAL_THREADS
        // is set, so granian's --blocking-threads (corral's --threads) is
        // not taken; a false switch takes its --no- form.
        assert_eq!(
            argv,
            [
                "corral",
                "check",
                "main:app",
                "--no-factory",
                "--reload",
                "--reload-dir=src",
                "--reload-dir=lib",
                "--respawn-failed-workers",
                "-w",
                "2"
            ]
        );
        assert_eq!(notes.len(), 5, "{notes:?}");
        assert_eq!(
            notes[2],
            "UVICORN_RELOAD=yes read as uvicorn reads it: --reload"
        );
    }

    #[test]
    fn a_bad_switch_or_a_refused_flag_is_an_error_and_client_commands_are_untouched() {
        let err = with(&["corral"], &[("UVICORN_RELOAD", "maybe")]).unwrap_err();
        assert!(
            err.contains("UVICORN_RELOAD=\"maybe\": --reload is a switch: give true or false"),
            "{err}"
        );
        let err = with(&["corral"], &[("GRANIAN_STATIC_PATH_MOUNT", "/x")]).unwrap_err();
        assert!(
            err.starts_with("GRANIAN_STATIC_PATH_MOUNT: corral does not take --static-path-mount"),
            "{err}"
        );
        let (argv, notes) = with(&["corral", "status"], &[("UVICORN_PORT", "1")]).unwrap();
        assert_eq!(argv, ["corral", "status"]);
        assert!(notes.is_empty());
    }
}
