//! The deprecated `[app] pass_env` keeps its old meaning: workers get a
//! fixed base, the variables it names, `[app] env`, and corral's
//! CORRAL_SLOT, CORRAL_GENERATION and CORRAL_REVISION; nothing else from
//! corral's environment leaks in. (The default, the whole environment, is
//! tested in `dropin_env.rs`.)

use crate::common::*;

const APP: &str = "import os, json\n\ndef app(environ, start_response):\n    body = json.dumps(sorted(os.environ)).encode()\n    start_response('200 OK', [('Content-Length', str(len(body)))])\n    return [body]\n";

#[test]
fn workers_see_only_the_configured_environment() {
    let app = AppDir::new(&[
        ("app.py", APP),
        (
            "corral.toml",
            "[app]\nmodule = \"app:app\"\npass_env = [\"PASSED_ON\"]\n[app.env]\nFROM_CONFIG = \"yes\"\n[server]\nbind = [\"127.0.0.1:0\"]\n",
        ),
    ]);
    let mut c = Corral::spawn(
        app.path(),
        &["-c", "corral.toml"],
        &[
            ("SUPERVISOR_SECRET", "do-not-leak"),
            ("PASSED_ON", "1"),
            ("LC_ALL", "C.UTF-8"),
        ],
    );
    c.wait_listening();
    c.wait_in_service(1);
    let names: Vec<String> = serde_json::from_slice(&c.get("/").body).unwrap();
    for expected in [
        "PATH",
        "LC_ALL",
        "PASSED_ON",
        "FROM_CONFIG",
        "CORRAL_SLOT",
        "CORRAL_GENERATION",
        "CORRAL_REVISION",
        "PYTHONUNBUFFERED",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    for leaked in [
        "SUPERVISOR_SECRET",
        "NO_COLOR",
        "CORRAL_APP",
        "CORRAL_FD",
        "CORRAL_WORKER_APP",
        "CORRAL_WORKER_FD",
    ] {
        assert!(
            !names.iter().any(|n| n == leaked),
            "{leaked} leaked into the worker: {names:?}"
        );
    }
    // None of the worker's own settings stays in the app's environment.
    assert!(
        !names.iter().any(|n| n.starts_with("CORRAL_WORKER_")),
        "{names:?}"
    );
}
