//! The Python side of the protocol, compiled into the binary: the script
//! the interpreter runs and the stdlib-only `corral_worker` package it
//! imports (`protocol`, `ring`, `wsgi`, `asgi`, `hooks`, `arbiter`, `main`), as files under
//! `src/worker/python/`. `runtime_dir` writes them into a private folder
//! at start-up; [`process`](super::process) runs the script.

/// The folder, in corral's private one, that holds the script and its
/// package: named the same at every start, so that what names a process
/// after its script's folder sees `corral`, not the private folder's
/// random name (ddtrace's inferred service, which `ddtrace-run` without
/// `DD_SERVICE` gives every span, would be a new service at each start).
pub const FOLDER: &str = "corral";

/// The script the interpreter runs, relative to [`FOLDER`].
pub const SCRIPT: &str = "corral_worker.py";

/// The package's folder, relative to [`FOLDER`].
pub const PACKAGE: &str = "corral_worker";

/// Every file, by its path relative to [`FOLDER`]: the script first.
pub const FILES: [(&str, &str); 9] = [
    (SCRIPT, include_str!("python/corral_worker.py")),
    (
        "corral_worker/__init__.py",
        include_str!("python/corral_worker/__init__.py"),
    ),
    (
        "corral_worker/protocol.py",
        include_str!("python/corral_worker/protocol.py"),
    ),
    (
        "corral_worker/ring.py",
        include_str!("python/corral_worker/ring.py"),
    ),
    (
        "corral_worker/wsgi.py",
        include_str!("python/corral_worker/wsgi.py"),
    ),
    (
        "corral_worker/asgi.py",
        include_str!("python/corral_worker/asgi.py"),
    ),
    (
        "corral_worker/arbiter.py",
        include_str!("python/corral_worker/arbiter.py"),
    ),
    (
        "corral_worker/hooks.py",
        include_str!("python/corral_worker/hooks.py"),
    ),
    (
        "corral_worker/main.py",
        include_str!("python/corral_worker/main.py"),
    ),
];

/// The text of the file at `path` (one of [`FILES`]).
#[cfg(test)]
pub fn file(path: &str) -> &'static str {
    FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, text)| *text)
        .unwrap_or_else(|| panic!("no worker file {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `.py` under `src/worker/python/` is compiled in, and nothing
    /// else is listed.
    #[test]
    fn every_python_file_is_compiled_in() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/worker/python");
        let mut on_disk = Vec::new();
        for dir in [root.clone(), root.join(PACKAGE)] {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "py") {
                    let rel = path.strip_prefix(&root).unwrap();
                    on_disk.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        on_disk.sort();
        let mut listed: Vec<String> = FILES.iter().map(|(p, _)| p.to_string()).collect();
        listed.sort();
        assert_eq!(on_disk, listed);
        for (path, text) in FILES {
            assert_eq!(std::fs::read_to_string(root.join(path)).unwrap(), text);
        }
    }
}
