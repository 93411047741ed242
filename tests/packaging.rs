//! `pip install corral`: the wheel maturin builds from this checkout puts
//! the `corral` binary into a virtualenv's bin/, and `python -m corral`
//! runs it in the Python process's place. The wheel is built once (a dev
//! build: the same binary the other tests run) and installed offline into
//! a fresh virtualenv.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The wheel, built once for every test here.
fn wheel() -> &'static Path {
    static WHEEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &WHEEL
        .get_or_init(|| {
            let maturin = Path::new(&python()).with_file_name("maturin");
            assert!(
                maturin.exists(),
                "maturin is not installed beside {}: run ./test.sh (requirements-test.txt has it)",
                python()
            );
            let out = tempfile::tempdir().unwrap();
            let run = Command::new(&maturin)
                .args(["build", "--quiet", "-o"])
                .arg(out.path())
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .stdin(Stdio::null())
                .output()
                .expect("run maturin");
            assert!(run.status.success(), "maturin build: {}", text(&run));
            let wheel = std::fs::read_dir(out.path())
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "whl"))
                .expect("a .whl");
            (out, wheel)
        })
        .1
}

/// A fresh virtualenv with the wheel installed (offline, no other package).
fn venv_with_corral() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    let made = Command::new(python())
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .output()
        .expect("python -m venv");
    assert!(made.status.success(), "venv: {}", text(&made));
    // The test venv's pip installs into the new one (--prefix), so no
    // network and no pip inside it are needed.
    let pip = Command::new(python())
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--prefix",
        ])
        .arg(&venv)
        .arg(wheel())
        .output()
        .expect("pip install");
    assert!(pip.status.success(), "pip install: {}", text(&pip));
    dir
}

/// A child killed and reaped on drop (a no-op once it was waited for).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_wheel_puts_corral_into_the_venv_and_python_m_corral_execs_it() {
    let dir = venv_with_corral();
    let bin = dir.path().join("venv/bin");
    let version = format!("corral {}", env!("CARGO_PKG_VERSION"));
    let out = Command::new(bin.join("corral"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(text(&out).trim(), version);
    let out = Command::new(bin.join("python"))
        .args(["-m", "corral", "--version"])
        .env_remove("VIRTUAL_ENV")
        .output()
        .unwrap();
    assert_eq!(text(&out).trim(), version, "python -m corral");

    // exec, not a child: the process python started is corral itself, so
    // signals and the exit code are corral's.
    let app = AppDir::new(&[(
        "app.py",
        "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n",
    )]);
    let child = Command::new(bin.join("python"))
        .args(["-m", "corral", "app:app", "-b", "127.0.0.1:0", "--socket"])
        .arg(app.path().join("ctl.sock"))
        .args(["--python", &python()])
        .current_dir(app.path())
        .env_remove("VIRTUAL_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    let log = Log::collect(&mut child.0, "corral");
    log.wait_for("listening on http://", Duration::from_secs(20))
        .unwrap_or_else(|| panic!("never listened: {}", log.text()));
    let exe = std::fs::read_link(format!("/proc/{}/exe", child.0.id())).unwrap();
    assert_eq!(exe, bin.join("corral").canonicalize().unwrap());
    // SAFETY: signalling a child we started and have not reaped.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let st = child.0.wait().unwrap();
    assert_eq!(st.code(), Some(0), "{}", log.text());
    // The variable `python -m corral` sets for corral is no user's typo.
    log.wait_closed(Duration::from_secs(5));
    assert!(
        !log.text().contains("names no flag of corral's"),
        "{}",
        log.text()
    );
}

/// Installed in a virtualenv and started by its path, with nothing
/// activated, corral runs the app with that virtualenv's python: an app
/// that imports a module only that virtualenv has boots, and `corral
/// check` and the start-up log say which interpreter and why.
#[test]
fn corral_from_a_venv_runs_the_app_with_that_venvs_python_without_activation() {
    let dir = venv_with_corral();
    let venv = dir.path().join("venv");
    let site = site_packages(&venv);
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(
        site.join("only_in_this_venv.py"),
        "VALUE = b'from the venv'\n",
    )
    .unwrap();
    let app = AppDir::new(&[(
        "app.py",
        "import only_in_this_venv\n\ndef app(environ, start_response):\n    start_response('200 OK', [])\n    return [only_in_this_venv.VALUE]\n",
    )]);
    let corral = venv.join("bin/corral");
    // No VIRTUAL_ENV, and PATH without the venv: python3 there would fail.
    let check = Command::new(&corral)
        .args(["check", "app:app"])
        .current_dir(app.path())
        .env_remove("VIRTUAL_ENV")
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let said = text(&check);
    assert_eq!(check.status.code(), Some(0), "{said}");
    let expected = format!(
        "interpreter: {} (the virtualenv corral is installed in ({}))",
        venv.join("bin/python").display(),
        venv.display()
    );
    assert!(said.contains(&expected), "{said}");

    let mut c = Corral::spawn_with(app.path(), &["app:app"], &[], |cmd| {
        // The venv's corral, not the one the other tests run; and no
        // --python (the harness adds one unless told).
        *cmd = Command::new(&corral);
        cmd.current_dir(app.path())
            .args(["app:app", "-b", "127.0.0.1:0", "--socket"])
            .arg(app.path().join("ctl.sock"))
            .env_remove("VIRTUAL_ENV")
            .env("PATH", "/usr/bin:/bin")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    });
    c.wait_listening();
    c.wait_in_service(1);
    assert_eq!(c.get("/").text(), "from the venv");
    assert!(
        c.log
            .text()
            .contains("(the virtualenv corral is installed in"),
        "{}",
        c.log.text()
    );
}

/// `python -m corral` runs the app with the interpreter that ran it when
/// nothing names one, as `python -m gunicorn` does: a second virtualenv's
/// python (corral found on its path, installed in the first) ran the app
/// with the first's, the one corral is installed in.
#[test]
fn python_m_corral_runs_the_app_with_the_interpreter_that_ran_it() {
    let dir = venv_with_corral();
    let first = dir.path().join("venv");
    let second = dir.path().join("second");
    let made = Command::new(python())
        .args(["-m", "venv", "--without-pip"])
        .arg(&second)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
    let only = site_packages(&second);
    std::fs::create_dir_all(&only).unwrap();
    std::fs::write(only.join("only_in_the_second.py"), "VALUE = 1\n").unwrap();
    std::os::unix::fs::symlink(first.join("bin/corral"), second.join("bin/corral")).unwrap();
    let app = AppDir::new(&[(
        "app.py",
        "import only_in_the_second\n\ndef app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n",
    )]);
    let out = Command::new(second.join("bin/python"))
        .args(["-m", "corral", "check", "app:app"])
        .current_dir(app.path())
        .env("PYTHONPATH", site_packages(&first))
        .env_remove("VIRTUAL_ENV")
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    let python = second.join("bin/python");
    let expected = format!(
        "interpreter: {} (the interpreter that ran `python -m corral` ({}))",
        python.display(),
        python.display()
    );
    assert!(said.contains(&expected), "{said}");
}

/// The folder a virtualenv's packages go to (its `site-packages`).
fn site_packages(venv: &Path) -> PathBuf {
    let out = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
        ])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}
