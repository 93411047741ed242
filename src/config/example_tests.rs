//! `config/example.toml` held against the definitions: every key the file
//! format accepts is shown there (set, or commented out) and every key shown
//! there is accepted; what it sets is the default the code fills in; and the
//! default that the config reference (the `///` docs in `raw.rs`) states and
//! the `[default: ...]` that a flag's `--help` repeats agree with it. Adding
//! a key without its line in the example, or with a different default in one
//! of those places, fails here.

use std::collections::BTreeSet;
use std::path::Path;

use clap::Args;

use super::keys::KeyInfo;
use super::raw::{EXAMPLE, keys_of};
use super::tests::env;
use super::{ConfigFile, Overrides, resolve};

/// Keys the file format still reads but the example leaves out on purpose:
/// deprecated ones (the README says what replaces them).
const NOT_SHOWN: &[&str] = &["app.pass_env"];

/// Every key the file format accepts, as "section.key" ("workers.limits.core"),
/// and the sections that are tables of their own (`[workers.limits]`).
fn schema() -> (BTreeSet<String>, BTreeSet<String>) {
    let mut keys = BTreeSet::new();
    let mut tables = BTreeSet::new();
    let mut todo = keys_of("").expect("the top level names its sections");
    while let Some(section) = todo.pop() {
        match keys_of(&section) {
            Some(sub) => {
                todo.extend(sub.into_iter().map(|k| format!("{section}.{k}")));
                tables.insert(section);
            }
            None => drop(keys.insert(section)),
        }
    }
    (keys, tables)
}

/// The keys the example shows, set (`key = ...`) or commented out
/// (`# key = ...`), as "section.key", with the value of those it sets; and
/// its table headers (`[app.env]`).
fn shown() -> Vec<(String, Option<String>)> {
    let mut section = String::new();
    let mut shown = Vec::new();
    for line in EXAMPLE.lines() {
        if let Some(header) = line.strip_prefix('[') {
            section = header.trim_end_matches(']').to_owned();
            shown.push((section.clone(), None));
            continue;
        }
        let (set, text) = match line.strip_prefix("# ") {
            Some(rest) => (false, rest),
            None => (true, line),
        };
        let Some((key, value)) = text.split_once(" = ") else {
            continue;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        shown.push((format!("{section}.{key}"), set.then(|| value.to_owned())));
    }
    shown
}

#[test]
fn the_example_shows_every_key_and_only_keys_that_exist() {
    let (keys, tables) = schema();
    assert!(keys.contains("server.backlog") && keys.contains("workers.limits.nofile"));
    let shown = shown();
    // Keys inside a free-form table ([app.env]) are examples, not keys.
    let in_free_table = |key: &str| keys.iter().any(|k| key.starts_with(&format!("{k}.")));
    let shown_keys: BTreeSet<&str> = shown
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !in_free_table(k))
        .collect();
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !shown_keys.contains(k.as_str()) && !NOT_SHOWN.contains(&k.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "config/example.toml does not show {missing:?}: add each with its default (or commented out)"
    );
    let unknown: Vec<&&str> = shown_keys
        .iter()
        .filter(|k| !keys.contains(**k) && !tables.contains(**k))
        .collect();
    assert!(
        unknown.is_empty(),
        "config/example.toml shows keys the file format does not have: {unknown:?}"
    );
}

/// What the example sets is the default: resolving it gives the same
/// configuration as no file at all, but for where each value came from
/// and the values it sets on purpose (the app and its folder).
#[test]
fn the_example_sets_the_defaults() {
    let file = ConfigFile::new(
        Path::new("config/example.toml"),
        Path::new("/repo"),
        EXAMPLE.into(),
    );
    let mut example = resolve(
        &Overrides::default(),
        Some(&file),
        Path::new("/repo"),
        &env(),
    )
    .expect("the example resolves");
    let defaults = resolve(
        &Overrides {
            app: Some("app:app".into()),
            chdir: Some("example".into()),
            ..Overrides::default()
        },
        None,
        Path::new("/repo"),
        &env(),
    )
    .expect("the defaults resolve");
    example.source = None;
    for (bind, default) in example.server.bind.iter_mut().zip(&defaults.server.bind) {
        bind.origin.clone_from(&default.origin);
    }
    example
        .app
        .python_origin
        .clone_from(&defaults.app.python_origin);
    example
        .workers
        .count_origin
        .clone_from(&defaults.workers.count_origin);
    example.instance.clone_from(&defaults.instance);
    assert_eq!(format!("{example:#?}"), format!("{defaults:#?}"));
}

/// A flag's `--help` says `[toml: KEY]` and often `[default: VALUE]`; the
/// key exists, and the value is the one the example sets.
#[test]
fn flag_help_names_real_keys_and_the_example_defaults() {
    let (keys, _) = schema();
    let set: Vec<(String, String)> = shown()
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
    let cmd = Overrides::augment_args(clap::Command::new("corral"));
    let mut checked = 0;
    for arg in cmd.get_arguments() {
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        let Some((_, rest)) = help.split_once("[toml: ") else {
            continue;
        };
        let key = rest.split(']').next().unwrap_or_default();
        assert!(
            keys.contains(key),
            "{:?} names [toml: {key}], which is no key",
            arg.get_id()
        );
        let Some((_, default)) = help.split_once("[default: ") else {
            continue;
        };
        let default = default.split([']']).next().unwrap_or_default();
        let default = default.split(", ").next().unwrap_or_default();
        let Some((_, value)) = set.iter().find(|(k, _)| k == key) else {
            continue;
        };
        // "5s" for `"5s"`, "127.0.0.1,::1" for `["127.0.0.1", "::1"]`.
        let value = value
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(", ")
            .map(|v| v.trim_matches('"'))
            .collect::<Vec<_>>()
            .join(",");
        if default.contains(' ') || default.contains('$') {
            continue; // prose, like "none, no limit"
        }
        assert_eq!(
            default,
            value,
            "--{} says [default: {default}] but config/example.toml sets {key} = {value}",
            arg.get_long().unwrap_or_default()
        );
        checked += 1;
    }
    assert!(checked > 20, "only {checked} flag defaults checked");
}

/// The section each `Raw*` struct of `raw.rs` reads.
const SECTIONS: &[(&str, &str)] = &[
    ("RawApp", "app"),
    ("RawServer", "server"),
    ("RawWorkers", "workers"),
    ("RawLimits", "workers.limits"),
    ("RawHealth", "health"),
    ("RawControl", "control"),
    ("RawDeploy", "deploy"),
    ("RawLog", "log"),
    ("RawHooks", "hooks"),
    ("RawDev", "dev"),
];

/// The `Default ...` that a key's `///` doc in `raw.rs` (the config
/// reference) states, when it is one value (`Default "5s".`, `Default
/// 2048.`), by key.
fn documented_defaults() -> Vec<(String, String)> {
    let source = include_str!("raw.rs");
    let mut section = None;
    let mut doc = String::new();
    let mut found = Vec::new();
    for line in source.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("pub(super) struct ") {
            let name = rest.split([' ', '{']).next().unwrap_or_default();
            section = SECTIONS.iter().find(|(s, _)| *s == name).map(|(_, k)| *k);
            doc.clear();
        } else if let Some(text) = line.strip_prefix("///") {
            doc.push(' ');
            doc.push_str(text.trim());
        } else if let Some(name) = line.split(", ").next().filter(|_| line.ends_with(" {")) {
            // The head of a `section!`: "RawServer, ServerKeys, ... {".
            if let Some((_, key)) = SECTIONS.iter().find(|(s, _)| *s == name) {
                section = Some(*key);
            }
            doc.clear();
        } else if let Some(field) = line.strip_prefix("pub(super) ").or_else(|| {
            // An entry of a `section!` of another shape: "bind: Type;".
            let name = line.split(':').next()?;
            let entry = name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                && line.ends_with(';')
                && !line.contains(" = ");
            entry.then_some(line)
        }) {
            let name = field.split(':').next().unwrap_or_default();
            let value = doc.split_once(" Default ").and_then(|(_, rest)| {
                let value = if let Some(quoted) = rest.strip_prefix('"') {
                    format!("\"{}\"", quoted.split('"').next()?)
                } else if rest.starts_with(|c: char| c.is_ascii_digit()) {
                    // A number, perhaps with a fraction: "0.999.".
                    let end = rest
                        .find(|c: char| !c.is_ascii_digit() && c != '.')
                        .unwrap_or(rest.len());
                    rest[..end].trim_end_matches('.').to_owned()
                } else if rest.starts_with('[') {
                    format!("{}]", rest.split(']').next()?)
                } else {
                    rest.split(['.', ',', ' ', ':']).next()?.to_owned()
                };
                (!value.is_empty() && value != "none").then_some(value)
            });
            if let (Some(section), Some(value)) = (section, value) {
                found.push((format!("{section}.{name}"), value));
            }
            doc.clear();
        } else if !line.starts_with("#[") {
            doc.clear();
        }
    }
    // A plain key's doc gets its default from its entry.
    found.extend(plain_keys().map(|info| (info.key.to_owned(), info.default.to_owned())));
    found
}

/// Every plain key (a `section!` entry with a default), from all sections.
fn plain_keys() -> impl Iterator<Item = &'static KeyInfo> {
    use super::raw::{DEPLOY_KEYS, HEALTH_KEYS, SERVER_KEYS, WORKERS_KEYS};
    [SERVER_KEYS, WORKERS_KEYS, HEALTH_KEYS, DEPLOY_KEYS]
        .into_iter()
        .flatten()
}

/// A plain key's default reads as its type, and `config/example.toml` sets
/// the key to it, written the same way.
#[test]
fn every_plain_key_default_reads_and_the_example_sets_it() {
    let set: Vec<(String, String)> = shown()
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
    let mut checked = 0;
    for info in plain_keys() {
        assert!(
            (info.default_parses)(info.default),
            "{}: the default {} does not read as the key's type",
            info.key,
            info.default
        );
        let value = set.iter().find(|(k, _)| k == info.key).map(|(_, v)| v);
        assert_eq!(
            value.map(String::as_str),
            Some(info.default),
            "config/example.toml must set {} = {}",
            info.key,
            info.default
        );
        if let Some(flag) = info.flag {
            assert!(flag.starts_with("--"), "{flag}");
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} plain keys");
}

/// The config reference (the `///` docs in `raw.rs`) states the default
/// the example sets.
#[test]
fn the_reference_states_the_default_the_example_sets() {
    let set: Vec<(String, String)> = shown()
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
    let documented = documented_defaults();
    assert!(
        documented
            .iter()
            .any(|(k, v)| k == "server.backlog" && v == "2048")
    );
    let mut checked = 0;
    for (key, default) in &documented {
        let Some((_, value)) = set.iter().find(|(k, _)| k == key) else {
            continue;
        };
        assert_eq!(
            default, value,
            "raw.rs documents {key} with \"Default {default}\" but config/example.toml sets {value}"
        );
        checked += 1;
    }
    assert!(checked > 25, "only {checked} documented defaults checked");
}
