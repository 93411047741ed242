use super::*;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

#[test]
fn addresses_read_as_gunicorn_reads_them() {
    let udp = |host: &str, port| Target::Udp {
        host: host.into(),
        port,
    };
    assert_eq!(Target::parse("localhost:8125"), Ok(udp("localhost", 8125)));
    assert_eq!(
        Target::parse("Stats.Example:9125"),
        Ok(udp("stats.example", 9125))
    );
    assert_eq!(Target::parse("10.0.0.5"), Ok(udp("10.0.0.5", 8125)));
    assert_eq!(Target::parse("[::1]:8126"), Ok(udp("::1", 8126)));
    assert_eq!(Target::parse("[::1]"), Ok(udp("::1", 8125)));
    assert_eq!(Target::parse("udp://127.0.0.1:1"), Ok(udp("127.0.0.1", 1)));
    assert_eq!(
        Target::parse("unix:///run/dd.sock"),
        Ok(Target::Unix("/run/dd.sock".into()))
    );
    assert_eq!(
        Target::parse("unix:statsd.sock"),
        Ok(Target::Unix("statsd.sock".into()))
    );
    assert_eq!(udp("::1", 8125).to_string(), "[::1]:8125");
    assert_eq!(Target::Unix("/s".into()).to_string(), "unix:/s");
    for (bad, why) in [
        ("", "names no host"),
        (":8125", "names no host"),
        ("host:0", "as its port"),
        ("host:99999", "as its port"),
        ("host:port", "as its port"),
        ("::1:8125", "without brackets"),
        ("[::1", "without its ']'"),
        ("[::1]x", "not :PORT"),
        ("unix:", "names no socket"),
        ("a b:1", "as its host"),
        ("http://x:1", "a scheme"),
        ("x/y:1", "as its host"),
    ] {
        let err = Target::parse(bad).unwrap_err();
        assert!(err.contains(why), "{bad:?}: {err}");
    }
}

#[test]
fn prefix_gets_its_dot_and_nothing_can_split_a_line() {
    assert_eq!(check_prefix("").unwrap(), "");
    assert_eq!(check_prefix("app").unwrap(), "app.");
    assert_eq!(check_prefix("service.app..").unwrap(), "service.app.");
    assert_eq!(check_tags("env:prod,team").unwrap(), "env:prod,team");
    assert_eq!(check_tags("").unwrap(), "");
    for bad in ["a b", "a\nb", "a:b", "a|b", "a#b", "a@b", "é"] {
        assert!(check_prefix(bad).is_err(), "{bad:?}");
    }
    for bad in ["a b", "a\nb", "a|b", "a#b", "a,,b", "a,"] {
        assert!(check_tags(bad).is_err(), "{bad:?}");
    }
}

/// A Statsd wired to a UDP socket of the test's own.
fn pair(prefix: &str, tags: &str) -> (Statsd, UdpSocket) {
    let agent = UdpSocket::bind("127.0.0.1:0").unwrap();
    agent
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let settings = Settings {
        target: Target::Udp {
            host: "127.0.0.1".into(),
            port: agent.local_addr().unwrap().port(),
        },
        prefix: check_prefix(prefix).unwrap(),
        tags: check_tags(tags).unwrap(),
    };
    let statsd = Statsd::new(&settings, 2);
    statsd.connect();
    (statsd, agent)
}

/// Every datagram until none comes for the read timeout.
fn received(agent: &UdpSocket) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = agent.recv(&mut buf) {
        out.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    out
}

#[test]
fn a_request_is_gunicorns_three_metrics_batched_into_full_datagrams() {
    let (statsd, agent) = pair("app", "env:test,svc");
    for i in 0..1000u64 {
        let status = if i % 10 == 0 { 404 } else { 200 };
        statsd.request(status, Duration::from_micros(1000 + i));
    }
    statsd.flush(Some(2));
    let datagrams = received(&agent);
    // 1,000 lines of ~55 bytes: full datagrams, not one per line.
    assert!(
        datagrams.len() < 60,
        "{} datagrams for 1000 requests",
        datagrams.len()
    );
    assert!(datagrams.iter().all(|d| d.len() <= UDP_PAYLOAD));
    let lines: Vec<&str> = datagrams.iter().flat_map(|d| d.lines()).collect();
    let durations: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("app.gunicorn.request.duration:"))
        .copied()
        .collect();
    assert_eq!(durations.len(), 1000);
    assert!(
        durations.contains(&"app.gunicorn.request.duration:1.999|ms|#env:test,svc"),
        "{:?}",
        &durations[..3]
    );
    let counters: BTreeMap<&str, &str> = lines
        .iter()
        .filter(|l| !l.contains(".duration:"))
        .filter_map(|l| l.split_once(':'))
        .collect();
    assert_eq!(counters["app.gunicorn.requests"], "1000|c|#env:test,svc");
    assert_eq!(
        counters["app.gunicorn.request.status.200"],
        "900|c|#env:test,svc"
    );
    assert_eq!(
        counters["app.gunicorn.request.status.404"],
        "100|c|#env:test,svc"
    );
    assert_eq!(counters["app.gunicorn.workers"], "2|g|#env:test,svc");
}

#[test]
fn counters_are_sent_once_and_the_gauge_on_change() {
    let (statsd, agent) = pair("", "");
    statsd.request(500, Duration::from_millis(3));
    statsd.flush(Some(2));
    let first = received(&agent).join("\n");
    assert!(first.contains("gunicorn.requests:1|c"), "{first}");
    assert!(first.contains("gunicorn.request.status.500:1|c"), "{first}");
    assert!(
        first.contains("gunicorn.request.duration:3.000|ms"),
        "{first}"
    );
    assert!(first.contains("gunicorn.workers:2|g"), "{first}");
    // Nothing new: no counter again, and the gauge did not change.
    statsd.flush(Some(2));
    let second = received(&agent).join("\n");
    assert!(!second.contains("gunicorn.request"), "{second}");
    assert!(!second.contains("gunicorn.workers"), "{second}");
    statsd.flush(Some(1));
    assert!(received(&agent).join("\n").contains("gunicorn.workers:1|g"));
}

#[test]
fn no_agent_listening_loses_the_metrics_not_the_request() {
    // A port nobody listens on: sends fail with ECONNREFUSED, quietly.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = Settings {
        target: Target::Udp {
            host: "127.0.0.1".into(),
            port,
        },
        prefix: String::new(),
        tags: String::new(),
    };
    let statsd = Statsd::new(&settings, 1);
    statsd.connect();
    for _ in 0..3 {
        for _ in 0..100 {
            statsd.request(200, Duration::from_millis(1));
        }
        statsd.flush(Some(1));
    }
    assert!(statsd.warned.lock().unwrap().is_some());
}

#[test]
fn a_unix_socket_is_connected_and_a_symlink_in_a_shared_folder_refused() {
    let dir = std::env::temp_dir().join(format!("corral-statsd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    let agent_path = dir.join("agent.sock");
    let agent = UnixDatagram::bind(&agent_path).unwrap();
    agent
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    std::os::unix::fs::symlink(&agent_path, dir.join("link.sock")).unwrap();
    // A private folder: the symlink is followed.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(connect_unix(&dir.join("link.sock")).is_ok());
    let sock = connect_unix(&agent_path).unwrap();
    sock.send(b"x:1|c").unwrap();
    let mut buf = [0u8; 64];
    let n = agent.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"x:1|c");
    // A folder anyone may write to: the symlink is refused, the socket
    // itself (corral's user's) is not.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = connect_unix(&dir.join("link.sock")).unwrap_err();
    assert!(err.contains("symlink"), "{err}");
    assert!(connect_unix(&agent_path).is_ok());
    std::fs::write(dir.join("file"), b"").unwrap();
    let err = connect_unix(&dir.join("file")).unwrap_err();
    assert!(err.contains("not a socket"), "{err}");
    let err = connect_unix(&dir.join("missing.sock")).unwrap_err();
    assert!(err.contains("cannot open"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn log_lines_at_warning_and_error_are_counted() {
    use tracing_subscriber::layer::SubscriberExt;
    let (statsd, agent) = pair("", "");
    statsd.flush(None);
    received(&agent);
    let subscriber = tracing_subscriber::registry().with(LogCounter);
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!("one");
        tracing::warn!("two");
        tracing::error!("three");
        tracing::info!("not counted");
    });
    statsd.flush(None);
    let got = received(&agent).join("\n");
    // Other tests may log too (the counters are the process's): at least.
    let count = |name: &str| -> u64 {
        got.lines()
            .find_map(|l| l.strip_prefix(&format!("gunicorn.log.{name}:")))
            .and_then(|v| v.strip_suffix("|c"))
            .map_or(0, |v| v.parse().unwrap())
    };
    assert!(count("warning") >= 2, "{got}");
    assert!(count("error") >= 1, "{got}");
}
