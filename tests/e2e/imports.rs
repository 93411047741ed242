//! The import graph of `src/` runs one way. `docs/ARCHITECTURE.md` lists
//! the top-level modules in tiers, from `main` down to the modules below
//! `config` (a fenced `text` block under "Module order"); this reads every
//! `crate::` path in `src/` and checks that no module imports one of a
//! higher tier, that every module is in a tier, and that there is no circle
//! (modules of one tier may import each other, one way).
//!
//! To list the edges: `cargo test --test e2e imports:: -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The tiers of the module order in docs/ARCHITECTURE.md, top first.
fn tiers(doc: &str) -> Vec<Vec<String>> {
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Module order"))
        .expect("docs/ARCHITECTURE.md has a \"## Module order\" section");
    let block = section
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the Module order section has a ```text block of tiers");
    block
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level modules each `crate::` path in `code` names (a comment
/// is not code): `crate::a::b` names `a`, `crate::{a::b, c}` names `a`
/// and `c`.
fn named_modules(code: &str) -> Vec<String> {
    let code: String = code
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let Some(group) = rest.trim_start().strip_prefix('{') else {
            out.push(ident(rest));
            continue;
        };
        // The items of the group at depth 1, each named by its first segment.
        let (mut depth, mut item_start) = (1, true);
        for (i, c) in group.char_indices() {
            if item_start && !c.is_whitespace() && c != ',' {
                out.push(ident(&group[i..]));
                item_start = false;
            }
            match c {
                '{' => depth += 1,
                '}' if depth == 1 => break,
                '}' => depth -= 1,
                ',' if depth == 1 => item_start = true,
                _ => {}
            }
        }
    }
    out.retain(|m| !m.is_empty() && m != "self");
    out
}

/// module → (module it imports → the files that do).
type Edges = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

fn edges() -> Edges {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges = Edges::new();
    for file in files {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let from = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        let code = std::fs::read_to_string(&file).unwrap();
        for to in named_modules(&code) {
            if to != from {
                let by = edges.entry(from.clone()).or_default();
                by.entry(to).or_default().insert(format!("src/{rel}"));
            }
        }
    }
    edges
}

/// A circle through `at`, if the graph has one (depth-first search).
fn circle(
    edges: &Edges,
    at: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(i) = path.iter().position(|m| m == at) {
        let mut c = path[i..].to_vec();
        c.push(at.to_string());
        return Some(c);
    }
    if !done.insert(at.to_string()) {
        return None;
    }
    path.push(at.to_string());
    for to in edges.get(at).into_iter().flat_map(|m| m.keys()) {
        if let Some(c) = circle(edges, to, path, done) {
            return Some(c);
        }
    }
    path.pop();
    None
}

#[test]
fn imports_run_one_way_down_the_module_order() {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let tiers = tiers(&doc);
    let tier: BTreeMap<&str, usize> = tiers
        .iter()
        .enumerate()
        .flat_map(|(i, t)| t.iter().map(move |m| (m.as_str(), i)))
        .collect();
    let edges = edges();

    let mut modules: BTreeSet<String> = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("src")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() || name.ends_with(".rs") {
            modules.insert(name.trim_end_matches(".rs").to_string());
        }
    }
    let untiered: Vec<&String> = modules
        .iter()
        .filter(|m| !tier.contains_key(m.as_str()))
        .collect();
    assert!(
        untiered.is_empty(),
        "modules of src/ in no tier of docs/ARCHITECTURE.md's module order: {untiered:?}"
    );
    let unknown: Vec<&&str> = tier.keys().filter(|m| !modules.contains(**m)).collect();
    assert!(
        unknown.is_empty(),
        "the module order names modules src/ does not have: {unknown:?}"
    );

    let mut back = Vec::new();
    for (from, tos) in &edges {
        println!(
            "{from} -> {}",
            tos.keys().cloned().collect::<Vec<_>>().join(" ")
        );
        for (to, files) in tos {
            let (Some(a), Some(b)) = (tier.get(from.as_str()), tier.get(to.as_str())) else {
                continue;
            };
            if b < a {
                back.push(format!(
                    "{from} -> {to} (in {})",
                    files.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    assert!(
        back.is_empty(),
        "imports against the module order: {back:#?}"
    );

    let mut done = BTreeSet::new();
    for m in edges.keys() {
        if let Some(c) = circle(&edges, m, &mut Vec::new(), &mut done) {
            panic!("an import circle: {}", c.join(" -> "));
        }
    }
}

#[test]
fn the_reader_finds_grouped_and_nested_paths() {
    // The check must be able to fail: every form of path is seen.
    let code = "use crate::a::B;\nuse crate::{b, c::{D, E}, self};\n// crate::f in a comment\nlet x = crate::g::h(); my_crate::i();";
    assert_eq!(named_modules(code), ["a", "b", "c", "g"]);
    let mut edges = Edges::new();
    edges
        .entry("a".into())
        .or_default()
        .entry("b".into())
        .or_default();
    edges
        .entry("b".into())
        .or_default()
        .entry("a".into())
        .or_default();
    let c = circle(&edges, "a", &mut Vec::new(), &mut BTreeSet::new());
    assert_eq!(c.unwrap(), ["a", "b", "a"]);
}
