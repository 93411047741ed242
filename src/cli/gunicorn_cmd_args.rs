//! gunicorn's `GUNICORN_CMD_ARGS`: its flags, split as a shell would (as
//! gunicorn splits them), put in front of the command line's for `run` and
//! `check`, each unless the command line gives that flag itself, so that
//! they rank as gunicorn ranks them: the command line over the variable
//! over the config file.

use std::ffi::OsString;

/// The client commands, which GUNICORN_CMD_ARGS does not apply to.
pub(super) const CLIENT_COMMANDS: [&str; 7] = [
    "status",
    "reload",
    "scale",
    "stop",
    "promote",
    "abort",
    "import-gunicorn",
];

/// `argv` with the flags of gunicorn's GUNICORN_CMD_ARGS (`text`, split as
/// a shell would, as gunicorn splits it) put in front of the command
/// line's, for `run` and `check`: each flag the command line does not give
/// itself, as gunicorn ranks them (the command line over the variable over
/// the config file). Words that are no flag (an APP) are left out, as
/// gunicorn leaves them.
pub(super) fn with_gunicorn_cmd_args(
    argv: Vec<OsString>,
    text: &str,
    refused: fn(&str) -> Option<String>,
) -> Result<Vec<OsString>, String> {
    let words =
        shlex::split(text).ok_or("cannot split it as a shell would (a quote is not closed)")?;
    let Some(at) = super::run_flags_at(&argv) else {
        return Ok(argv);
    };
    let cmd = super::command();
    let given = super::given_on_command_line(&argv);
    let mut taken: Vec<OsString> = Vec::new();
    let mut words = words.into_iter().peekable();
    while let Some(word) = words.next() {
        let (name, inline) = match word.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (word.clone(), None),
        };
        let arg = if let Some(long) = name.strip_prefix("--") {
            super::arg_named(&cmd, long)
        } else if let Some(short) = name.strip_prefix('-').and_then(|s| s.chars().next()) {
            cmd.get_arguments()
                .find(|a| a.get_short() == Some(short))
                .cloned()
        } else {
            // An APP or other word: gunicorn ignores them here too.
            continue;
        };
        let Some(arg) = arg else {
            return Err(refused(&name).unwrap_or_else(|| {
                format!("{name} is not a flag of corral's (see corral --help)")
            }));
        };
        let mut group = vec![OsString::from(&word)];
        let short_joined = !name.starts_with("--") && name.len() > 2;
        let takes = arg.get_action().takes_values();
        let optional = arg.get_num_args().is_some_and(|n| n.min_values() == 0);
        if takes && inline.is_none() && !short_joined {
            match words.peek() {
                Some(next) if !(optional && next.starts_with('-')) => {
                    group.push(OsString::from(words.next().unwrap_or_default()))
                }
                _ if optional => {}
                _ => return Err(format!("{name} needs a value")),
            }
        }
        if !given(arg.get_id().as_str()) {
            taken.extend(group);
        }
    }
    let mut out = argv;
    let tail = out.split_off(at.min(out.len()));
    out.extend(taken);
    out.extend(tail);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gunicorn_cmd_args_go_before_the_command_line_unless_it_gives_them() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let none = |_: &str| None;
        let with = |argv: &[&str], text: &str| with_gunicorn_cmd_args(os(argv), text, none);
        assert_eq!(
            with(
                &["corral", "app:app", "-w", "2"],
                "-w 3 --threads=4 -t5 --bind :80 x:y"
            ),
            Ok(os(&[
                "corral",
                "--threads=4",
                "-t5",
                "--bind",
                ":80",
                "app:app",
                "-w",
                "2"
            ]))
        );
        assert_eq!(
            with(
                &["corral", "check", "app:app"],
                "--preload --proxy-protocol --keep-alive 3"
            ),
            Ok(os(&[
                "corral",
                "check",
                "--preload",
                "--proxy-protocol",
                "--keep-alive",
                "3",
                "app:app"
            ]))
        );
        // gunicorn's spelling of an alias, and a client command untouched.
        assert_eq!(
            with(&["corral"], "--worker-connections 9"),
            Ok(os(&["corral", "--worker-connections", "9"]))
        );
        assert_eq!(
            with(&["corral", "status"], "-w 3"),
            Ok(os(&["corral", "status"]))
        );
        assert!(
            with(&["corral"], "--workers")
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(
            with(&["corral"], "--bogus 1")
                .unwrap_err()
                .contains("--bogus is not a flag")
        );
        assert!(with(&["corral"], "-w '3").unwrap_err().contains("quote"));
    }
}
