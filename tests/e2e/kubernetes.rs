//! integration/kubernetes/: the manifests pass Kubernetes' own schemas
//! (`kubernetes-validate`, offline, strict), agree with the `corral.toml`
//! their ConfigMap holds (ports, probes, grace period, command), and that
//! `corral.toml` runs.

use crate::common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn dir() -> PathBuf {
    repo("integration/kubernetes")
}

const MANIFESTS: [&str; 3] = ["configmap.yaml", "deployment.yaml", "service.yaml"];

/// Runs `python -m kubernetes_validate --strict` on `files`: (passed, output).
fn validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(python())
        .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
        .args(files)
        .stdin(Stdio::null())
        .output()
        .expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("No module named kubernetes_validate"),
        "kubernetes-validate is missing from {}: pip install -r requirements-test.txt (./test.sh does)",
        python()
    );
    (out.status.success(), text)
}

#[test]
fn the_manifests_pass_the_kubernetes_schemas_offline() {
    let files: Vec<PathBuf> = MANIFESTS.iter().map(|f| dir().join(f)).collect();
    let (ok, out) = validate(&files);
    assert!(ok, "kubernetes-validate --strict:\n{out}");
    // The validator is strict: a misspelt field fails.
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(dir().join("deployment.yaml")).unwrap();
    let broken = text.replace(
        "terminationGracePeriodSeconds",
        "terminationGracePeriodSecond",
    );
    assert_ne!(broken, text);
    let path = tmp.path().join("deployment.yaml");
    std::fs::write(&path, broken).unwrap();
    let (ok, out) = validate(&[path]);
    assert!(!ok, "a misspelt field passed:\n{out}");
}

/// The YAML documents of `file`, as JSON (PyYAML, which kubernetes-validate
/// brings along).
fn load(file: &str) -> Value {
    let out = Command::new(python())
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(dir().join(file))
        .stdin(Stdio::null())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(docs.as_array().unwrap().len(), 1, "{file}: one document");
    docs[0].clone()
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// "10s", "1m", "500ms" in seconds.
fn seconds(text: &str) -> f64 {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap();
    let (n, unit) = text.split_at(split);
    let n: f64 = n.trim().parse().unwrap();
    match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => panic!("unit {other} in {text}"),
    }
}

/// A container port given by number or by name.
fn resolve(port: &Value, container: &Value) -> u64 {
    match port {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(name) => container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == *name)
            .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"]
            .as_u64()
            .unwrap(),
        other => panic!("port {other}"),
    }
}

fn corral_toml() -> String {
    let cm = load("configmap.yaml");
    assert_eq!(cm["kind"], "ConfigMap");
    cm["data"]["corral.toml"]
        .as_str()
        .expect("the ConfigMap holds corral.toml")
        .to_string()
}

#[test]
fn the_manifests_agree_with_the_corral_toml_they_mount() {
    let cm = load("configmap.yaml");
    let toml: toml::Table = corral_toml().parse().expect("corral.toml is TOML");
    let bind = port_of(toml["server"]["bind"][0].as_str().unwrap());
    let status = port_of(toml["health"]["status_bind"].as_str().unwrap());
    let delay = seconds(toml["server"]["shutdown_delay"].as_str().unwrap());
    let graceful = seconds(toml["workers"]["graceful_timeout"].as_str().unwrap());
    assert!(delay > 0.0, "the example shows shutdown_delay");

    let deploy = load("deployment.yaml");
    assert_eq!(deploy["kind"], "Deployment");
    let pod = &deploy["spec"]["template"]["spec"];
    let grace = pod["terminationGracePeriodSeconds"].as_f64().unwrap();
    assert!(
        grace > delay + graceful,
        "terminationGracePeriodSeconds {grace} must exceed shutdown_delay {delay} + graceful_timeout {graceful}"
    );
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // corral runs with the mounted config.
    let command: Vec<&str> = c["command"]
        .as_array()
        .unwrap()
        .iter()
        .chain(c["args"].as_array().unwrap())
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(command[0].ends_with("/corral"), "{command:?}");
    let config = command
        .iter()
        .position(|a| *a == "-c" || *a == "--config")
        .map(|i| command[i + 1])
        .expect("corral is given -c FILE");
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == cm["metadata"]["name"])
        .expect("a volume from the ConfigMap");
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the ConfigMap volume is mounted");
    assert_eq!(
        Path::new(mount["mountPath"].as_str().unwrap()).join("corral.toml"),
        Path::new(config),
        "-c names the mounted corral.toml"
    );

    // Probes on the status server, at corral's paths.
    for (probe, path) in [
        ("readinessProbe", "/health/ready"),
        ("livenessProbe", "/health/live"),
        ("startupProbe", "/health/live"),
    ] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(
            resolve(&get["port"], c),
            status,
            "{probe} on status_bind's port"
        );
    }

    // The Service selects these pods and targets corral's bind port.
    let svc = load("service.yaml");
    assert_eq!(svc["kind"], "Service");
    let labels = &deploy["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the Service selects the pods ({k})");
    }
    for port in svc["spec"]["ports"].as_array().unwrap() {
        assert_eq!(resolve(&port["targetPort"], c), bind, "Service targetPort");
    }

    // The image: multi-stage, corral as the exec-form entrypoint, the
    // venv where corral.toml looks for Python, the same default command.
    let docker = std::fs::read_to_string(dir().join("Dockerfile")).unwrap();
    let froms = docker.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 3, "multi-stage: {froms} FROM lines");
    let instr = |name: &str| -> Vec<String> {
        let line = docker
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name}"));
        serde_json::from_str(line[name.len()..].trim())
            .unwrap_or_else(|e| panic!("{name} in exec form (a JSON array): {e}"))
    };
    assert_eq!(instr("ENTRYPOINT "), [command[0]]);
    assert_eq!(instr("CMD "), command[1..]);
    // Docker's health check asks the same corral, by the same file.
    let health = instr("HEALTHCHECK --start-period=30s CMD ");
    assert_eq!(health[0], command[0]);
    assert_eq!(health[1..], ["status", "-c", config], "{health:?}");
    let python = toml["app"]["python"].as_str().unwrap();
    let venv = python.strip_suffix("/bin/python").unwrap();
    assert!(
        docker.contains(&format!("python -m venv {venv}")),
        "the Dockerfile builds the venv at {venv}"
    );
}

const APP: &str = r#"
def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "5")])
    return [b"hello"]
"#;

/// The ConfigMap's corral.toml, as is but for the paths of this machine
/// (Python, the app folder, the addresses, the control socket, the state).
#[test]
fn corral_runs_with_the_configmaps_corral_toml() {
    let app = AppDir::new(&[("main.py", APP)]);
    let text = corral_toml();
    let state = app.path().join("state");
    let local = text.replace(
        "state_dir = \"/tmp/corral/state\"",
        &format!("state_dir = {:?}", state.display().to_string()),
    );
    assert_ne!(local, text, "the state_dir line moved: update this test");
    std::fs::write(app.path().join("corral.toml"), local).unwrap();
    let dir = app.path().display().to_string();
    let mut c = Corral::spawn(
        app.path(),
        &[
            "-c",
            "corral.toml",
            "--chdir",
            &dir,
            "-b",
            "127.0.0.1:0",
            "--status-bind",
            "127.0.0.1:0",
        ],
        &[],
    );
    c.wait_listening();
    c.wait_in_service(2);
    assert_eq!(c.get("/").text(), "hello");
    assert_eq!(c.status("/health/ready").status, 200);
    assert_eq!(c.status("/health/live").status, 200);
    // As the kubelet does: TERM; not ready at once, still serving.
    c.signal(libc::SIGTERM);
    c.wait_until("/health/ready to answer 503", || {
        c.status("/health/ready").status == 503
    });
    assert_eq!(c.get("/").text(), "hello");
    // A second TERM ends the delay (the test does not wait it out).
    let t = Instant::now();
    c.signal(libc::SIGTERM);
    let st = c.wait_exit(Duration::from_secs(20)).expect("corral stops");
    assert_eq!(st.code(), Some(0), "log:\n{}", c.log.text());
    assert!(t.elapsed() < Duration::from_secs(15));
}
