//! `tests/CLAIMS.md` maps every promise of the README, `bench/README.md`
//! and `config/example.toml` to what holds it. This checks the table
//! itself: every test it names (`path.rs::function`) exists, every script
//! it names (`bench: path`) exists, every CI check it names (`ci: path`)
//! exists and is run by `.ci/run`, and every row names one of them, so
//! that the table cannot point at a test that was renamed away.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `path.rs::function` in `text`, as (path, function).
fn named_tests(text: &str) -> Vec<(String, String)> {
    let path_char = |c: char| c.is_ascii_alphanumeric() || "_/.-".contains(c);
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(".rs::") {
        let before = &rest[..at];
        let start = before.rfind(|c: char| !path_char(c)).map_or(0, |i| i + 1);
        let after = &rest[at + 5..];
        let end = after.find(|c: char| !name_char(c)).unwrap_or(after.len());
        out.push((format!("{}.rs", &before[start..]), after[..end].to_string()));
        rest = &after[end..];
    }
    out
}

/// True when the file at `path` defines a function `name` (plain, async,
/// or inside a proptest! block, where it has no `#[test]` of its own).
fn defines(path: &Path, name: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    text.lines().any(|l| {
        let l = l.trim_start();
        let l = l.strip_prefix("async ").unwrap_or(l);
        l.strip_prefix("fn ")
            .is_some_and(|rest| rest.starts_with(&format!("{name}(")))
    })
}

#[test]
fn every_test_and_script_the_claims_table_names_exists() {
    let text = std::fs::read_to_string(root().join("tests/CLAIMS.md")).expect("tests/CLAIMS.md");
    let named = named_tests(&text);
    assert!(named.len() > 50, "only {} tests named", named.len());
    let missing: Vec<String> = named
        .iter()
        .filter(|(path, name)| {
            !(path.starts_with("tests/") || path.starts_with("src/"))
                || !defines(&root().join(path), name)
        })
        .map(|(path, name)| format!("{path}::{name}"))
        .collect();
    assert!(
        missing.is_empty(),
        "tests/CLAIMS.md names tests that do not exist: {missing:#?}"
    );

    let mut scripts = 0;
    for line in text.lines().filter(|l| l.contains("bench: ")) {
        for span in line.split('`').skip(1).step_by(2) {
            if span.starts_with("bench/") {
                scripts += 1;
                assert!(root().join(span).is_file(), "no script {span}");
            }
        }
    }
    assert!(scripts > 0, "no bench script named");

    let ci = std::fs::read_to_string(root().join(".ci/run")).expect(".ci/run");
    let mut checks = 0;
    for line in text.lines().filter(|l| l.contains("ci: ")) {
        let after = &line[line.find("ci: ").unwrap()..];
        for span in after.split('`').skip(1).step_by(2) {
            if span.ends_with(".rs") || span.contains(".rs::") {
                continue;
            }
            checks += 1;
            assert!(root().join(span).is_file(), "no CI script {span}");
            assert!(
                ci.lines()
                    .any(|l| !l.trim_start().starts_with('#') && l.contains(span)),
                "tests/CLAIMS.md names {span} as a CI check, but .ci/run does not run it"
            );
        }
    }
    assert!(checks > 0, "no CI check named");
}

#[test]
fn every_row_of_the_claims_table_names_what_holds_it() {
    let text = std::fs::read_to_string(root().join("tests/CLAIMS.md")).unwrap();
    let mut rows = 0;
    for line in text.lines() {
        if !line.starts_with('|') || line.starts_with("|---") || line.starts_with("| claim |") {
            continue;
        }
        rows += 1;
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
        assert_eq!(cells.len(), 2, "a row is `| claim | held by |`: {line}");
        let held = cells[1];
        assert!(
            !named_tests(held).is_empty()
                || held.contains("bench: ")
                || held.contains("ci: ")
                || held.contains("README rows above"),
            "this claim names no test and no benchmark: {line}"
        );
    }
    assert!(rows > 40, "only {rows} claims");
}

#[test]
fn the_checker_finds_a_renamed_test() {
    // The check must be able to fail: a name that is not there is found.
    let text = "| x | `tests/e2e/streaming.rs::one_gib_each_way_in_flat_memory`, `tests/e2e/streaming.rs::renamed_away` |";
    let named = named_tests(text);
    assert_eq!(named.len(), 2);
    assert!(defines(&root().join(&named[0].0), &named[0].1));
    assert!(!defines(&root().join(&named[1].0), &named[1].1));
}
