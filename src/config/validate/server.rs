//! `[server]`: the listen addresses, client limits and trusted proxies.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use toml::Spanned;

use crate::limits;

use crate::config::Overrides;
use std::path::{Path, PathBuf};

use crate::config::raw::{RawServer, RawTls, RawTlsBind};
use crate::config::{
    Bind, BindAddr, ByteSize, Env, ForwardedAllow, HumanDuration, ProxyProtocol, ServerConfig,
    TlsConfig, WebSocketLimits,
};
use crate::tls::TlsFiles;

use super::*;

impl Resolver<'_> {
    /// `env`: `$PORT` for the default bind, the CPUs this process may use
    /// for `io_threads = 0`.
    pub(in crate::config) fn server(
        &mut self,
        args: &Overrides,
        raw: RawServer,
        env: &Env,
    ) -> ServerConfig {
        let cpus = env.cpus;
        let bind = self.bind_list(&args.bind, "--bind", raw.bind.as_ref(), "server.bind");
        if args.bind.is_empty()
            && let Some(list) = &raw.bind
            && list.get_ref().is_empty()
        {
            let at = self.in_file(list.span(), "server.bind");
            self.fail(&at, "is empty: list at least one address like [\"127.0.0.1:8000\"], or leave the key out for the default 127.0.0.1:8000");
        }
        let mut seen = self.distinct_binds(bind, &[]);
        if seen.is_empty() && args.bind.is_empty() && raw.bind.is_none() {
            match env.port.as_deref().map(str::trim) {
                // As gunicorn and uvicorn do on a PaaS: all interfaces.
                Some(port) => match port.parse::<u16>() {
                    Ok(port) => seen.push(Bind {
                        addr: BindAddr::Tcp(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port)),
                        origin: "PORT (environment; no --bind or server.bind given)".to_owned(),
                    }),
                    Err(_) => self.fail(
                        &At::flag("PORT (environment)"),
                        format!(
                            "\"{}\" is not a port number (0 to 65535); it is used because no --bind or server.bind is given: fix or unset PORT, or give --bind",
                            port.escape_default()
                        ),
                    ),
                },
                None => seen.push(Bind {
                    addr: BindAddr::Tcp(DEFAULT_BIND),
                    origin: "default (no --bind or server.bind given)".to_owned(),
                }),
            }
        }

        let keys = self.resolve_server_keys(&args.server_flags, &raw);
        let (io_threads, _) = self.pick(
            (args.io_threads.as_ref(), "--io-threads"),
            (raw.io_threads.as_ref(), "server.io_threads"),
            0,
        );
        // gunicorn's and uvicorn's $FORWARDED_ALLOW_IPS is the default,
        // below the flag and the file.
        let flag = match (&args.forwarded_allow_ips, &raw.forwarded_allow_ips) {
            (Some(list), _) => (Some(list.as_str()), "--forwarded-allow-ips"),
            (None, None) => (
                env.forwarded_allow_ips.as_deref(),
                "FORWARDED_ALLOW_IPS (environment)",
            ),
            (None, Some(_)) => (None, "--forwarded-allow-ips"),
        };
        let forwarded_allow_ips = self.allow_list(
            flag,
            (
                raw.forwarded_allow_ips.as_ref(),
                "server.forwarded_allow_ips",
            ),
        );
        let proxy_protocol = self.proxy_protocol(args, &raw);
        let proxy_allow_ips = self.allow_list(
            (args.proxy_allow_from.as_deref(), "--proxy-allow-from"),
            (raw.proxy_allow_ips.as_ref(), "server.proxy_allow_ips"),
        );
        let head_limits = self.head_limits(args, &raw);
        let pid_file = self.pid_file(args, &raw);
        let socket_umask = args
            .umask
            .or(raw.socket_umask.as_ref().map(|u| *u.get_ref()))
            .map(|u| u.0);
        let websocket = self.websocket(args, &raw);
        let insecure = self.bind_list(
            &args.insecure_bind,
            "--insecure-bind",
            raw.insecure_bind.as_ref(),
            "server.insecure_bind",
        );
        let insecure_bind = self.distinct_binds(insecure, &seen);
        let headers = self.response_headers(args, &raw);
        let tls = self.tls(args, raw.tls, &seen, &insecure_bind);
        let reuse_port = args.reuse_port || raw.reuse_port.as_ref().is_some_and(|r| *r.get_ref());
        ServerConfig {
            keys,
            bind: seen,
            insecure_bind,
            reuse_port,
            io_threads: match io_threads {
                0 => auto_io_threads(cpus),
                n => n,
            },
            forwarded_allow_ips,
            proxy_protocol,
            proxy_allow_ips,
            head_limits,
            pid_file,
            socket_umask,
            tls,
            websocket,
            headers,
        }
    }

    /// `[server.headers]`, then the `--header` flags over it (the same name
    /// replaced), each checked.
    fn response_headers(
        &mut self,
        args: &Overrides,
        raw: &RawServer,
    ) -> Vec<(http::HeaderName, http::HeaderValue)> {
        let from_file = raw.headers.iter().map(|(name, value)| {
            let at = self.in_file(value.span(), &format!("server.headers.{name}"));
            (name.clone(), value.get_ref().clone(), at)
        });
        let given: Vec<(String, String, At)> = from_file
            .collect::<Vec<_>>()
            .into_iter()
            .chain(
                args.header
                    .iter()
                    .map(|(n, v)| (n.clone(), v.clone(), self.flag("--header"))),
            )
            .collect();
        let mut out: Vec<(http::HeaderName, http::HeaderValue)> = Vec::new();
        for (name, value, at) in given {
            match response_header(&name, &value) {
                Ok((name, value)) => {
                    out.retain(|(n, _)| *n != name);
                    out.push((name, value));
                }
                Err(why) => self.fail(&at, why),
            }
        }
        out
    }

    /// A list of listen addresses: the flag's (repeated or comma-separated)
    /// when given, else the file's `key`, each with where it was set;
    /// socket paths made absolute (a flag's against the working directory,
    /// the file's against its folder). Bad entries are reported.
    fn bind_list(
        &mut self,
        flag: &[BindAddr],
        flag_name: &str,
        file: Option<&Spanned<Vec<Spanned<String>>>>,
        key: &str,
    ) -> Vec<(BindAddr, At)> {
        let mut out = Vec::new();
        if !flag.is_empty() {
            for addr in flag {
                out.push((absolute_bind(self.flag_dir(), addr), self.flag(flag_name)));
            }
        } else if let Some(list) = file {
            for entry in list.get_ref() {
                let at = self.in_file(entry.span(), key);
                match BindAddr::gunicorn(entry.get_ref()) {
                    Ok(addr) => out.push((absolute_bind(self.file_dir(), &addr), at)),
                    Err(message) => self.fail(&at, message),
                }
            }
        }
        out
    }

    /// `list` without repeats (each reported), and without the addresses
    /// of `others` (the `bind` list, for `insecure_bind`): an address is
    /// served with TLS or without, not both.
    fn distinct_binds(&mut self, list: Vec<(BindAddr, At)>, others: &[Bind]) -> Vec<Bind> {
        let mut seen: Vec<Bind> = Vec::new();
        for (addr, at) in list {
            if let Some(first) = seen.iter().find(|b| b.addr == addr) {
                let message = format!("{addr} is listed twice (first at {})", first.origin);
                self.fail(&at, message);
                continue;
            }
            if let Some(taken) = others.iter().find(|b| overlaps(&b.addr, &addr)) {
                let message = if taken.addr == addr {
                    format!(
                        "{addr} is also a server.bind address (at {}): an address serves either TLS (bind) or plain HTTP (insecure_bind); remove it from one of the two lists",
                        taken.origin
                    )
                } else {
                    format!(
                        "{addr} overlaps the server.bind address {} (at {}) on the same port: give the plain HTTP listener its own port, like \"0.0.0.0:8080\"",
                        taken.addr, taken.origin
                    )
                };
                self.fail(&at, message);
                continue;
            }
            let origin = at.origin();
            seen.push(Bind { addr, origin });
        }
        seen
    }

    /// `[server.tls]` and its flags, then its `[server.tls.bind."ADDR"]`
    /// tables; the files are read here, so that a missing or bad
    /// certificate or key is a config error.
    fn tls(
        &mut self,
        args: &Overrides,
        mut raw: RawTls,
        binds: &[Bind],
        insecure: &[Bind],
    ) -> Option<TlsConfig> {
        let per_bind = std::mem::take(&mut raw.bind);
        let before = self.problems.len();
        let files = self.tls_files(args, raw);
        // Off, not failed (its own problems are reported already).
        let off = files.is_none() && self.problems.len() == before;
        let mut config = files.map(|files| TlsConfig {
            files,
            per_bind: Vec::new(),
        });
        for (addr, table) in per_bind {
            let at = self.in_file(
                addr.span(),
                &format!("server.tls.bind.\"{}\"", addr.get_ref()),
            );
            let parsed = match BindAddr::gunicorn(addr.get_ref()) {
                Ok(a) => absolute_bind(self.file_dir(), &a),
                Err(message) => {
                    self.fail(&at, message);
                    continue;
                }
            };
            if let Some(plain) = insecure.iter().find(|b| b.addr == parsed) {
                let message = format!(
                    "{parsed} is a server.insecure_bind address (at {}), served as plain HTTP without a certificate: remove this table, or move the address to server.bind",
                    plain.origin
                );
                self.fail(&at, message);
                continue;
            }
            if !binds.iter().any(|b| b.addr == parsed) {
                let listed: Vec<String> = binds.iter().map(|b| format!("\"{}\"", b.addr)).collect();
                let message = format!(
                    "{parsed} is not a server.bind address (those are {}): name one of them, written as in bind, or remove this table",
                    listed.join(", ")
                );
                self.fail(&at, message);
                continue;
            }
            let Some(config) = config.as_mut() else {
                if off {
                    self.fail(&at, "overrides [server.tls], which is off: set certfile and keyfile in [server.tls] (or --certfile, --keyfile) to serve HTTPS");
                }
                continue;
            };
            if let Some(files) = self.tls_bind_files(&config.files, table, &at) {
                config.per_bind.push((parsed, files));
            }
        }
        config
    }

    /// One `[server.tls.bind."ADDR"]` table (`at`) over `base`, the files
    /// of `[server.tls]`: what it sets replaces base's; read here.
    fn tls_bind_files(&mut self, base: &TlsFiles, table: RawTlsBind, at: &At) -> Option<TlsFiles> {
        let table_key = at.key.clone();
        let mut at_of: Vec<(&'static str, At)> = Vec::new();
        let mut files = base.clone();
        let mut ok = true;
        for (name, value) in [
            ("certfile", table.certfile),
            ("keyfile", table.keyfile),
            ("ca_certs", table.ca_certs),
        ] {
            let Some(value) = value else { continue };
            let key_at = self.in_file(value.span(), &format!("{table_key}.{name}"));
            if value.get_ref().is_empty() {
                self.fail(&key_at, "is empty: give the path of a PEM file");
                ok = false;
                continue;
            }
            let path = absolute(self.file_dir(), Path::new(value.get_ref()));
            match name {
                "certfile" => files.certfile = path,
                "keyfile" => files.keyfile = path,
                _ => files.ca_certs = Some(path),
            }
            at_of.push((name, key_at));
        }
        match self.tls_key(table.cert_reqs, &table_key, "cert_reqs", &mut at_of) {
            Ok(v) => files.cert_reqs = v.unwrap_or(files.cert_reqs),
            Err(()) => ok = false,
        }
        match self.tls_key(table.min_version, &table_key, "min_version", &mut at_of) {
            Ok(v) => files.min_version = v.unwrap_or(files.min_version),
            Err(()) => ok = false,
        }
        if !ok {
            return None;
        }
        if let Err(e) = crate::tls::load(&files) {
            // At the table's own key when it set the one at fault, else at
            // the table (the value came from [server.tls]).
            let key_at = at_of
                .iter()
                .find(|(n, _)| *n == e.key())
                .map_or(at, |(_, a)| a)
                .clone();
            self.fail(&key_at, e.to_string());
            return None;
        }
        Some(files)
    }

    /// `[server.tls]`'s own keys and their flags.
    fn tls_files(&mut self, args: &Overrides, raw: RawTls) -> Option<TlsFiles> {
        let mut at_of: Vec<(&'static str, At)> = Vec::new();
        let mut path = |this: &mut Self,
                        flag: Option<&PathBuf>,
                        file: Option<Spanned<String>>,
                        name: &'static str,
                        flag_name: &str|
         -> Option<PathBuf> {
            let key = format!("server.tls.{name}");
            let (path, at) = match (flag, file) {
                (Some(p), _) => (p.clone(), this.dir_flag(flag_name)),
                (None, Some(p)) => (PathBuf::from(p.get_ref()), this.in_file(p.span(), &key)),
                (None, None) => return None,
            };
            if path.as_os_str().is_empty() {
                this.fail(&at, "is empty: give the path of a PEM file");
                return None;
            }
            let base = if flag.is_some() {
                this.flag_dir()
            } else {
                this.file_dir()
            };
            let path = absolute(base, Path::new(&path));
            at_of.push((name, at));
            Some(path)
        };
        let certfile = path(
            self,
            args.certfile.as_ref(),
            raw.certfile,
            "certfile",
            "--certfile",
        );
        let keyfile = path(
            self,
            args.keyfile.as_ref(),
            raw.keyfile,
            "keyfile",
            "--keyfile",
        );
        let ca_certs = path(
            self,
            args.ca_certs.as_ref(),
            raw.ca_certs,
            "ca_certs",
            "--ca-certs",
        );
        let cert_reqs = self.tls_choice(
            args.cert_reqs,
            raw.cert_reqs,
            "cert_reqs",
            "--cert-reqs",
            &mut at_of,
        );
        let min_version = self.tls_choice(
            args.tls_min_version,
            raw.min_version,
            "min_version",
            "--tls-min-version",
            &mut at_of,
        );
        let at = |name: &str| {
            at_of
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, at)| at.clone())
        };
        let (certfile, keyfile) = match (certfile, keyfile) {
            (Some(c), Some(k)) => (c, k),
            (None, None) => {
                // The example's `cert_reqs = "none"` and `min_version` are
                // fine without TLS; asking for client certificates is not.
                let asks = at_of.iter().find(|(name, _)| {
                    *name == "ca_certs"
                        || (*name == "cert_reqs" && cert_reqs != Some(crate::tls::CertReqs::None))
                });
                if let Some((name, at)) = asks {
                    let message = format!(
                        "{name} is set but TLS is off: set certfile and keyfile (--certfile, --keyfile) to serve HTTPS, or remove it"
                    );
                    self.fail(at, message);
                }
                return None;
            }
            // As gunicorn (ssl's load_cert_chain with no keyfile): the key
            // is read from the certificate's file, with a keyfile's checks.
            (Some(c), None) => (c.clone(), c),
            (None, Some(_)) => {
                let at = at("keyfile").expect("set above");
                self.fail(
                    &at,
                    "needs certfile (--certfile): the server's certificate in PEM",
                );
                return None;
            }
        };
        let files = TlsFiles {
            certfile,
            keyfile,
            ca_certs,
            cert_reqs: cert_reqs.unwrap_or_default(),
            min_version: min_version.unwrap_or_default(),
        };
        if let Err(e) = crate::tls::load(&files) {
            let key_in_certfile = e.key() == "keyfile" && at("keyfile").is_none();
            let at = if key_in_certfile { None } else { at(e.key()) }
                .or_else(|| at("cert_reqs").filter(|_| !key_in_certfile))
                .or_else(|| at("certfile"))
                .expect("certfile is set");
            let mut message = e.to_string();
            if key_in_certfile {
                message.push_str(
                    "; with no keyfile (--keyfile) the key is read from certfile, as gunicorn reads it: give keyfile, or put the key in certfile",
                );
            }
            self.fail(&at, message);
            return None;
        }
        Some(files)
    }

    /// `cert_reqs` or `min_version`: the flag's value, else the file's
    /// (parsed here, so that a bad one points at its line).
    fn tls_choice<T: std::str::FromStr<Err = String>>(
        &mut self,
        flag: Option<T>,
        file: Option<Spanned<String>>,
        name: &'static str,
        flag_name: &str,
        at_of: &mut Vec<(&'static str, At)>,
    ) -> Option<T> {
        if let Some(value) = flag {
            at_of.push((name, self.flag(flag_name)));
            return Some(value);
        }
        self.tls_key(file, "server.tls", name, at_of).ok().flatten()
    }

    /// `cert_reqs` or `min_version` from the file, in the table `table`
    /// (`server.tls` or one of its `bind."ADDR"`): parsed here, so that a
    /// bad one points at its line. `Err` when it is bad (reported).
    fn tls_key<T: std::str::FromStr<Err = String>>(
        &mut self,
        file: Option<Spanned<String>>,
        table: &str,
        name: &'static str,
        at_of: &mut Vec<(&'static str, At)>,
    ) -> Result<Option<T>, ()> {
        let Some(file) = file else { return Ok(None) };
        let at = self.in_file(file.span(), &format!("{table}.{name}"));
        match file.get_ref().parse::<T>() {
            Ok(value) => {
                at_of.push((name, at));
                Ok(Some(value))
            }
            Err(message) => {
                self.fail(&at, message);
                Err(())
            }
        }
    }

    /// `server.ws_ping_interval`, `ws_ping_timeout` and `ws_max_message`.
    fn websocket(&mut self, args: &Overrides, raw: &RawServer) -> WebSocketLimits {
        let (interval, _) = self.pick(
            (args.ws_ping_interval.as_ref(), "--ws-ping-interval"),
            (raw.ws_ping_interval.as_ref(), "server.ws_ping_interval"),
            HumanDuration(Duration::from_secs(20)),
        );
        let (timeout, at) = self.pick(
            (args.ws_ping_timeout.as_ref(), "--ws-ping-timeout"),
            (raw.ws_ping_timeout.as_ref(), "server.ws_ping_timeout"),
            HumanDuration(Duration::from_secs(20)),
        );
        if timeout.0.is_zero() {
            self.fail(&at, "must be longer than 0s, like \"20s\"");
        }
        let (max_message, at) = self.pick(
            (args.ws_max_message.as_ref(), "--ws-max-message"),
            (raw.ws_max_message.as_ref(), "server.ws_max_message"),
            ByteSize(limits::MAX_MESSAGE as u64),
        );
        if max_message.0 == 0 || max_message.0 > limits::MAX_MESSAGE as u64 {
            self.fail(
                &at,
                "must be from \"1B\" to \"16MiB\" (the largest message a worker's channel \
                 carries), like \"1MiB\"",
            );
        }
        WebSocketLimits {
            ping_interval: Some(interval.0).filter(|d| !d.is_zero()),
            ping_timeout: timeout.0,
            max_message: usize::try_from(max_message.0)
                .unwrap_or(usize::MAX)
                .clamp(1, limits::MAX_MESSAGE),
        }
    }

    /// `server.forwarded_allow_ips` or `server.proxy_allow_ips`: the flag's
    /// comma-separated list (empty items skipped, so "" trusts nobody), else
    /// the file's array, else [`default_forwarded_allow`]. Each bad entry is
    /// reported.
    fn allow_list(
        &mut self,
        (flag, flag_name): (Option<&str>, &str),
        (file, key): (Option<&Spanned<Vec<Spanned<String>>>>, &str),
    ) -> ForwardedAllow {
        let mut allow = ForwardedAllow::Networks(Vec::new());
        match (flag, file) {
            (Some(list), _) => {
                let entries = list.split(',').map(str::trim).filter(|e| !e.is_empty());
                for entry in entries {
                    if let Err(message) = allow.add(entry) {
                        self.fail(&self.flag(flag_name), message);
                    }
                }
            }
            (None, Some(list)) => {
                for entry in list.get_ref() {
                    if let Err(message) = allow.add(entry.get_ref()) {
                        let at = self.in_file(entry.span(), key);
                        self.fail(&at, message);
                    }
                }
            }
            (None, None) => allow = default_forwarded_allow(),
        }
        allow
    }

    /// `server.proxy_protocol`: the flag's mode (clap checked it), else the
    /// file's, else off.
    fn proxy_protocol(&mut self, args: &Overrides, raw: &RawServer) -> ProxyProtocol {
        if let Some(mode) = &args.proxy_protocol {
            return mode.parse().unwrap_or_default();
        }
        let Some(mode) = &raw.proxy_protocol else {
            return ProxyProtocol::Off;
        };
        match mode.get_ref().parse() {
            Ok(mode) => mode,
            Err(message) => {
                let at = self.in_file(mode.span(), "server.proxy_protocol");
                self.fail(&at, message);
                ProxyProtocol::Off
            }
        }
    }
}

/// The headers a response is framed with, or that corral sets: never
/// added from `[server.headers]`.
const FRAMING_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "date",
    "x-request-id",
];

/// One `[server.headers]` entry, checked: a header name and a value that
/// HTTP allows, not one of the [`FRAMING_HEADERS`].
fn response_header(
    name: &str,
    value: &str,
) -> Result<(http::HeaderName, http::HeaderValue), String> {
    let shown = name.escape_default();
    let header = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        format!("\"{shown}\" is not a header name: letters, digits and !#$%&'*+-.^_`|~ only")
    })?;
    if FRAMING_HEADERS.contains(&header.as_str()) {
        return Err(format!(
            "{shown} is set by corral itself (it frames the response, or is corral's own): leave it out"
        ));
    }
    let value = http::HeaderValue::from_str(value).map_err(|_| {
        format!(
            "the value of {shown}, \"{}\", has a character a header may not hold (a control character, or one beyond ASCII)",
            value.escape_default()
        )
    })?;
    Ok((header, value))
}
