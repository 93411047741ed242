//! `[server] shutdown_delay` (`--shutdown-delay`): on SIGTERM,
//! `/health/ready` turns 503 at once while corral goes on accepting and
//! serving for the delay, then it drains and exits 0. A second SIGTERM
//! skips the rest of the delay.

use crate::common::*;
use std::time::{Duration, Instant};

const APP: &str = r#"
def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "5")])
    return [b"hello"]
"#;

fn start(delay: &str) -> (AppDir, Corral) {
    let app = AppDir::new(&[("app.py", APP)]);
    let c = Corral::start(
        app.path(),
        &[
            "app:app",
            "-w",
            "1",
            "--status-bind",
            "127.0.0.1:0",
            "--shutdown-delay",
            delay,
        ],
        1,
    );
    assert_eq!(c.status("/health/ready").status, 200);
    (app, c)
}

#[test]
fn not_ready_at_once_on_term_while_still_serving_for_the_delay_then_a_clean_exit() {
    let (_app, mut c) = start("3s");
    let term = Instant::now();
    c.signal(libc::SIGTERM);
    c.wait_until("/health/ready to answer 503", || {
        c.status("/health/ready").status == 503
    });
    assert!(
        term.elapsed() < Duration::from_secs(2),
        "ready turned 503 only after {:?}",
        term.elapsed()
    );
    let ready = c.status("/health/ready");
    assert!(ready.text().contains("stopping"), "{}", ready.text());
    // Still accepting new connections and serving them, for the delay.
    while term.elapsed() < Duration::from_millis(2500) {
        let r = c.get("/");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), "hello");
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = c
        .wait_exit(Duration::from_secs(30))
        .expect("corral stops after the delay");
    assert_eq!(st.code(), Some(0), "log:\n{}", c.log.text());
    assert!(
        term.elapsed() >= Duration::from_secs(3),
        "stopped {:?} after TERM, before the delay was over",
        term.elapsed()
    );
    assert!(c.log.text().contains("shutdown_delay is over"));
}

#[test]
fn a_second_term_skips_the_rest_of_the_delay() {
    let (_app, mut c) = start("60s");
    c.signal(libc::SIGTERM);
    c.wait_until("/health/ready to answer 503", || {
        c.status("/health/ready").status == 503
    });
    assert_eq!(c.get("/").status, 200);
    let again = Instant::now();
    c.signal(libc::SIGTERM);
    let st = c
        .wait_exit(Duration::from_secs(20))
        .expect("the second TERM stops corral without waiting out the delay");
    assert_eq!(st.code(), Some(0), "log:\n{}", c.log.text());
    assert!(again.elapsed() < Duration::from_secs(15));
    assert!(c.log.text().contains("the rest of shutdown_delay skipped"));
}

/// During the delay a keep-alive connection's next answer says
/// `Connection: close`, and the connection closes after it: a client or
/// proxy that pools connections opens a new one (which a load balancer
/// that saw /health/ready turn 503 sends elsewhere), rather than have an
/// idle pooled connection cut when the drain begins.
#[test]
fn during_the_delay_keep_alive_answers_close_their_connection() {
    use std::io::{BufReader, Write};
    let (_app, mut c) = start("3s");
    let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut s = BufReader::new(connect(&c.addr));
    s.get_mut().write_all(get).unwrap();
    let before = read_response(&mut s, false).unwrap();
    assert_eq!(before.status, 200);
    assert!(
        !before
            .headers
            .iter()
            .any(|(k, v)| k == "connection" && v == "close"),
        "{:?}",
        before.headers
    );
    c.signal(libc::SIGTERM);
    c.wait_until("/health/ready to answer 503", || {
        c.status("/health/ready").status == 503
    });
    s.get_mut().write_all(get).unwrap();
    let during = read_response(&mut s, false).unwrap();
    assert_eq!(during.status, 200);
    assert!(
        during
            .headers
            .iter()
            .any(|(k, v)| k == "connection" && v == "close"),
        "{:?}",
        during.headers
    );
    // And corral closes it.
    let mut rest = Vec::new();
    s.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(std::io::Read::read_to_end(&mut s, &mut rest).unwrap(), 0);
    c.wait_exit(Duration::from_secs(30)).expect("corral stops");
}
