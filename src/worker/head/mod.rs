//! The request head a worker gets, built from hyper's parsed request on
//! corral's side of the channel: WSGI environ pairs ([`environ`]) or the
//! fields of an ASGI scope ([`scope`]), by the worker's interface. The
//! front and the readiness probe (`worker::probe`) both build heads here.

pub mod environ;
pub mod scope;

/// Where the connection came from and where it arrived.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Peer address and port ("" for Unix sockets).
    pub remote_addr: String,
    pub remote_port: String,
    /// Listening address and port, used when the request has no Host.
    pub server_name: String,
    pub server_port: String,
    pub scheme: &'static str,
    /// The peer may report the client and scheme (`[server]
    /// forwarded_allow_ips`; Unix sockets always may).
    pub trusted: bool,
    /// The TLS session, on a `[server.tls]` bind.
    pub tls: Option<std::sync::Arc<crate::tls::TlsInfo>>,
    /// What a PROXY protocol header said, when the connection began with
    /// one that named addresses (`[server] proxy_protocol`).
    pub proxy: Option<ProxyInfo>,
}

/// A PROXY protocol header's protocol and destination, as gunicorn puts
/// them in the environ (`PROXY_PROTOCOL`, `PROXY_ADDR`, `PROXY_PORT`); its
/// source is the connection's `remote_addr` and `remote_port`.
#[derive(Debug, Clone)]
pub struct ProxyInfo {
    /// "TCP4" or "TCP6".
    pub protocol: &'static str,
    pub addr: String,
    pub port: String,
}

/// The target as received, put in a request's extensions by the front's handler
/// when it had to encode it for hyper (see `front::target`).
#[derive(Clone, Debug)]
pub struct RawTarget(pub Box<[u8]>);

impl RawTarget {
    /// The target without its fragment, as `raw_path` takes it.
    pub fn without_fragment(&self) -> &[u8] {
        let t = &self.0[..];
        t.iter().position(|&b| b == b'#').map_or(t, |i| &t[..i])
    }

    /// The path part (up to '?').
    pub fn path(&self) -> &[u8] {
        let t = self.without_fragment();
        t.iter().position(|&b| b == b'?').map_or(t, |i| &t[..i])
    }

    /// The query (after the first '?'), empty without one.
    pub fn query(&self) -> &[u8] {
        let t = self.without_fragment();
        t.iter()
            .position(|&b| b == b'?')
            .map_or(&[][..], |i| &t[i + 1..])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A connection from 127.0.0.1:5555 to 127.0.0.1:8000.
    pub(crate) fn conn() -> ConnInfo {
        ConnInfo {
            tls: None,
            proxy: None,
            remote_addr: "127.0.0.1".into(),
            remote_port: "5555".into(),
            server_name: "127.0.0.1".into(),
            server_port: "8000".into(),
            scheme: "http",
            trusted: false,
        }
    }
}
