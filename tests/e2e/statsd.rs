//! gunicorn's StatsD instrumentation (`--statsd-host`, `--statsd-prefix`,
//! `--dogstatsd-tags`): the test is the agent, a UDP or Unix datagram
//! socket of its own, and reads what a StatsD or DogStatsD agent would.

use crate::common::*;
use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

const APP: &str = r#"
import time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        time.sleep(10)
        body = b"late"
    elif path == "/missing":
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    else:
        body = b"ok"
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"#;

/// What the agent received, summed: counters added up, the last value of
/// each gauge, and the number of timer samples per name.
#[derive(Default, Debug)]
struct Agent {
    counters: BTreeMap<String, u64>,
    gauges: BTreeMap<String, u64>,
    timers: BTreeMap<String, usize>,
    /// Lines that were not `name:value|type` with the expected tags.
    odd: Vec<String>,
}

impl Agent {
    fn take(&mut self, datagram: &[u8], tags: &str) {
        let text = String::from_utf8_lossy(datagram);
        for line in text.lines() {
            let parsed = line
                .strip_suffix(tags)
                .and_then(|l| l.split_once(':'))
                .and_then(|(name, rest)| Some((name, rest.split_once('|')?)));
            match parsed {
                Some((name, (value, "c"))) if value.parse::<u64>().is_ok() => {
                    *self.counters.entry(name.into()).or_default() += value.parse::<u64>().unwrap();
                }
                Some((name, (value, "g"))) if value.parse::<u64>().is_ok() => {
                    self.gauges.insert(name.into(), value.parse().unwrap());
                }
                Some((name, (value, "ms"))) if value.parse::<f64>().is_ok() => {
                    *self.timers.entry(name.into()).or_default() += 1;
                }
                _ => self.odd.push(line.to_owned()),
            }
        }
    }

    fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
}

/// Reads datagrams into `agent` until `done` holds (at most 10 s).
fn read_until(
    recv: &mut dyn FnMut(&mut [u8]) -> std::io::Result<usize>,
    agent: &mut Agent,
    tags: &str,
    done: impl Fn(&Agent) -> bool,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 65536];
    while !done(agent) {
        if Instant::now() > deadline {
            return false;
        }
        if let Ok(n) = recv(&mut buf) {
            agent.take(&buf[..n], tags);
        }
    }
    true
}

#[test]
fn gunicorns_metrics_reach_a_udp_agent_with_prefix_and_tags() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let target = sock.local_addr().unwrap().to_string();
    let app = AppDir::new(&[("app.py", APP)]);
    let mut c = Corral::start(
        app.path(),
        &[
            "app:app",
            "-w",
            "2",
            "-t",
            "1",
            "--statsd-host",
            &target,
            "--statsd-prefix",
            "web",
            "--dogstatsd-tags",
            "env:test,team:core",
        ],
        2,
    );
    assert!(
        c.log
            .has(&format!("statsd: sending gunicorn's metrics to {target}")),
        "{}",
        c.log.text()
    );
    let tags = "|#env:test,team:core";
    let mut recv = |buf: &mut [u8]| sock.recv(buf);
    let mut agent = Agent::default();
    for _ in 0..30 {
        assert_eq!(c.get("/").status, 200);
    }
    for _ in 0..5 {
        assert_eq!(c.get("/missing").status, 404);
    }
    let ok = read_until(&mut recv, &mut agent, tags, |a| {
        a.counter("web.gunicorn.requests") >= 35 && a.gauges.contains_key("web.gunicorn.workers")
    });
    assert!(ok, "{agent:?}\nlog:\n{}", c.log.text());
    assert_eq!(agent.counter("web.gunicorn.requests"), 35, "{agent:?}");
    assert_eq!(agent.counter("web.gunicorn.request.status.200"), 30);
    assert_eq!(agent.counter("web.gunicorn.request.status.404"), 5);
    assert_eq!(agent.timers.get("web.gunicorn.request.duration"), Some(&35));
    assert_eq!(agent.gauges["web.gunicorn.workers"], 2);
    assert!(agent.odd.is_empty(), "{:?}", agent.odd);

    // A request past the timeout: a 504, and corral's error about the
    // worker it replaces is counted as gunicorn counts its own.
    assert_eq!(c.get("/slow").status, 504);
    let ok = read_until(&mut recv, &mut agent, tags, |a| {
        a.counter("web.gunicorn.request.status.504") == 1
            && a.counter("web.gunicorn.log.error") >= 1
    });
    assert!(ok, "{agent:?}\nlog:\n{}", c.log.text());

    // Requests just before a stop are counted too.
    for _ in 0..3 {
        assert_eq!(c.get("/").status, 200);
    }
    c.signal(libc::SIGTERM);
    assert!(c.wait_exit(Duration::from_secs(20)).is_some());
    let ok = read_until(&mut recv, &mut agent, tags, |a| {
        a.counter("web.gunicorn.request.status.200") >= 33
    });
    assert!(ok, "{agent:?}");
    assert_eq!(agent.counter("web.gunicorn.request.status.200"), 33);
    assert_eq!(agent.counter("web.gunicorn.requests"), 39);
}

#[test]
fn a_unix_agent_from_the_config_file_is_found_when_it_comes_up() {
    let app = AppDir::new(&[
        ("app.py", APP),
        ("corral.toml", "[log]\nstatsd_host = \"unix:agent.sock\"\n"),
    ]);
    let mut c = Corral::start(app.path(), &["app:app", "-w", "1", "-c", "corral.toml"], 1);
    // No agent yet: a warning, and requests are served all the same.
    c.log
        .wait_for("statsd: cannot open", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no warning; log:\n{}", c.log.text()));
    assert_eq!(c.get("/").status, 200);
    let sock = UnixDatagram::bind(app.path().join("agent.sock")).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut recv = |buf: &mut [u8]| sock.recv(buf);
    let mut agent = Agent::default();
    // Requests until one flush after the agent came up has counted some.
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.counter("gunicorn.requests") == 0 {
        assert!(Instant::now() < deadline, "{agent:?}\n{}", c.log.text());
        assert_eq!(c.get("/missing").status, 404);
        read_until(&mut recv, &mut agent, "", |a| {
            a.counter("gunicorn.requests") > 0
        });
    }
    assert!(
        agent.counter("gunicorn.request.status.404") > 0,
        "{agent:?}"
    );
    assert!(agent.odd.is_empty(), "{:?}", agent.odd);
    assert_eq!(
        c.log.count("statsd: cannot open"),
        1,
        "a failing agent is logged once:\n{}",
        c.log.text()
    );
    c.signal(libc::SIGTERM);
    assert!(c.wait_exit(Duration::from_secs(20)).is_some());
}

#[test]
fn a_bad_statsd_address_is_refused_at_start_naming_the_flag() {
    let app = AppDir::new(&[("app.py", APP)]);
    let mut c = Corral::spawn(
        app.path(),
        &["app:app", "--statsd-host", "localhost:statsd"],
        &[],
    );
    let status = c.wait_exit(Duration::from_secs(10)).expect("corral exits");
    assert_eq!(status.code(), Some(2));
    assert!(
        c.log
            .text()
            .contains("--statsd-host: has \"statsd\" as its port: give 1 to 65535"),
        "{}",
        c.log.text()
    );
}
