//! Property tests of the config parser: any text, and mutations of the
//! example config, give a config or errors that point at the file and line
//! (never a panic). 256 cases each by default; for a longer run:
//! `PROPTEST_CASES=100000 cargo test --bin corral config::proptests`.

use proptest::prelude::*;

use super::tests::resolve_text;
use super::{ConfigError, Problem};
use crate::config::Overrides;

const EXAMPLE: &str = include_str!("../../config/example.toml");

/// Pieces of TOML (and of corral's values) that mutations splice in.
const PIECES: &[&str] = &[
    "\n",
    "=",
    " = ",
    "[",
    "]",
    "[[",
    "]]",
    "\"",
    "'''",
    "\"\"\"",
    "#",
    ",",
    "{",
    "}",
    ".",
    "\\",
    "\\u0000",
    "\0",
    "é",
    "0",
    "-1",
    "1e400",
    "99999999999999999999",
    "true",
    "\"30x\"",
    "\"512XiB\"",
    "\"\"",
    "[]",
    "[server]",
    "[app]",
    "[workers]",
    "[health]",
    "[deploy]",
    "[control]",
    "bind = ",
    "timeout = ",
    "module = ",
    "user = ",
    "\"unix:\"",
    "\"0.0.0.0:99999\"",
    "\"/\"",
    "inf",
    "nan",
    "0x10",
    "1979-05-27",
    "\r",
    "\t",
];

/// The example config with a few edits: a range deleted, a piece inserted,
/// or a run of characters overwritten.
fn mutated_example() -> impl Strategy<Value = String> {
    let edit = (
        0u8..3,
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        prop::sample::select(PIECES),
        proptest::collection::vec(any::<char>(), 1..4),
    );
    proptest::collection::vec(edit, 1..6).prop_map(|edits| {
        let mut text: Vec<char> = EXAMPLE.chars().collect();
        for (kind, at, len, piece, chars) in edits {
            let at = at.index(text.len() + 1);
            match kind {
                0 => {
                    let end = (at + len.index(40)).min(text.len());
                    text.drain(at..end);
                }
                1 => {
                    text.splice(at..at, piece.chars());
                }
                _ => {
                    let end = (at + chars.len()).min(text.len());
                    text.splice(at..end, chars);
                }
            }
        }
        text.into_iter().collect()
    })
}

/// "corral.toml:N" with N a line of the text (or the one after its end).
fn points_into(problem: &Problem, text: &str) -> bool {
    let lines = text.matches('\n').count() + 1;
    problem
        .location
        .as_deref()
        .and_then(|l| l.strip_prefix("corral.toml:"))
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|n| (1..=lines).contains(&n))
}

/// Resolves `text` with and without the app on the command line; every
/// problem must point at a line, but the one that says no app was given
/// (it is about the config as a whole).
fn check(text: &str) -> Result<(), TestCaseError> {
    let with_app = Overrides {
        app: Some("main:app".into()),
        ..Overrides::default()
    };
    for args in [Overrides::default(), with_app] {
        match resolve_text(text, &args) {
            Ok(_) => {}
            Err(ConfigError::Parse(p)) => {
                prop_assert!(points_into(&p, text), "{p}\n--- in:\n{text}");
            }
            Err(ConfigError::Validate(problems)) => {
                prop_assert!(!problems.is_empty());
                for p in problems {
                    let whole = p.key.is_none() && p.message.starts_with("no app given");
                    prop_assert!(whole || points_into(&p, text), "{p}\n--- in:\n{text}");
                }
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn any_text_parses_or_points_at_a_line(chars in proptest::collection::vec(any::<char>(), 0..300)) {
        let text: String = chars.into_iter().collect();
        check(&text)?;
    }

    #[test]
    fn a_mutated_example_parses_or_points_at_a_line(text in mutated_example()) {
        check(&text)?;
    }
}
