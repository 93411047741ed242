//! TLS on the app port: the certificate, key and client-certificate policy
//! of `[server.tls]` (`--certfile`, `--keyfile`, `--ca-certs`,
//! `--cert-reqs`, `--tls-min-version`), and of each `[server.tls.bind."ADDR"]`
//! table over it (`config::TlsConfig`: one *certificate set* each), read into
//! rustls server configs; the handshake of one connection on its
//! listener's set ([`BindTls`]; `insecure_bind` listeners have none), and
//! what the app learns of it.
//!
//! rustls runs on its `ring` crypto provider: it builds with a C compiler
//! alone, where `aws-lc-rs` also wants cmake (and, for its FIPS build, Go).
//! Cipher suites are rustls's defaults; TLS 1.2 and 1.3 are offered unless
//! `min_version = "1.3"`. ALPN offers `h2` then `http/1.1`; a client that
//! offers ALPN but neither of those (`curl --http1.0` offers `http/1.0`
//! alone) gets its handshake with a twin config that offers no ALPN, and is
//! served HTTP/1.x, as gunicorn (Python's `ssl`) serves it, where rustls
//! would refuse it with alert `no_application_protocol`.
//!
//! [`Tls`] holds the configs in force, one per set, swapped together;
//! [`Tls::reload`] reads every set's files again (on `corral reload` and
//! SIGHUP) and keeps every old config when any new set does not load. Open
//! connections keep the config they began with. [`Tls::status`] is the
//! `tls` object of `/status`: each set's certificate in force (subject,
//! expiry), which listener serves which set, and the last reload's error.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;

/// Whether clients must present a certificate (gunicorn's `cert_reqs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CertReqs {
    /// No client certificate is asked for.
    #[default]
    None,
    /// One is asked for and checked against `ca_certs` when sent.
    Optional,
    /// A connection without a valid client certificate is refused.
    Required,
}

impl std::str::FromStr for CertReqs {
    type Err = String;

    /// "none", "optional", "required", gunicorn's 0, 1, 2, or hypercorn's
    /// CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED.
    fn from_str(s: &str) -> Result<CertReqs, String> {
        match s.trim().to_ascii_lowercase().trim_start_matches("cert_") {
            "none" | "0" => Ok(CertReqs::None),
            "optional" | "1" => Ok(CertReqs::Optional),
            "required" | "2" => Ok(CertReqs::Required),
            _ => Err(format!(
                "\"{}\" is not one of \"none\", \"optional\", \"required\" (or gunicorn's 0, 1, 2)",
                s.escape_default()
            )),
        }
    }
}

/// The oldest TLS version offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinVersion {
    #[default]
    Tls12,
    Tls13,
}

impl std::str::FromStr for MinVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<MinVersion, String> {
        // granian's --ssl-protocol-min spells them tls1.2 and tls1.3.
        match s.trim().trim_start_matches("tls") {
            "1.2" => Ok(MinVersion::Tls12),
            "1.3" => Ok(MinVersion::Tls13),
            _ => Err(format!(
                "\"{}\" is not a TLS version corral offers: use \"1.2\" or \"1.3\"",
                s.escape_default()
            )),
        }
    }
}

/// The files and policy of `[server.tls]`, resolved (absolute paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub certfile: PathBuf,
    pub keyfile: PathBuf,
    pub ca_certs: Option<PathBuf>,
    pub cert_reqs: CertReqs,
    pub min_version: MinVersion,
}

/// Why the TLS files did not load; [`TlsError::key`] names the setting.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{reason}")]
    Read {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "{} holds no PEM certificate (\"-----BEGIN CERTIFICATE-----\"): give the server's certificate, followed by its chain, in PEM",
        path.display()
    )]
    NoCertificate { key: &'static str, path: PathBuf },
    #[error("{} is not valid PEM: {reason}", path.display())]
    BadPem {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "{} holds an encrypted private key, which corral cannot use (it never asks for a passphrase): decrypt it with `openssl pkey -in {} -out key.pem` and keep the result readable only by corral's user",
        path.display(), path.display()
    )]
    EncryptedKey { path: PathBuf },
    #[error(
        "{} holds no PEM private key (\"-----BEGIN PRIVATE KEY-----\", RSA or EC): give the certificate's unencrypted key",
        path.display()
    )]
    NoKey { path: PathBuf },
    #[error("{}: {reason}", certfile.display())]
    Rejected {
        key: &'static str,
        certfile: PathBuf,
        reason: String,
    },
    #[error(
        "cert_reqs = \"{}\" needs ca_certs: the CA certificates that client certificates are checked against",
        if *cert_reqs == CertReqs::Required { "required" } else { "optional" }
    )]
    NoCa { cert_reqs: CertReqs },
}

impl TlsError {
    /// The `[server.tls]` key whose value is at fault.
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::Read { key, .. }
            | TlsError::NoCertificate { key, .. }
            | TlsError::BadPem { key, .. }
            | TlsError::Rejected { key, .. } => key,
            TlsError::EncryptedKey { .. } | TlsError::NoKey { .. } => "keyfile",
            TlsError::NoCa { .. } => "ca_certs",
        }
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    // Read as corral's user (often root): in a folder another user may
    // change, a link there could hand corral a key of root's.
    crate::private_fs::read_guarded(path).map_err(|reason| TlsError::Read {
        key,
        path: path.to_owned(),
        reason,
    })
}

fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            key,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            key,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("keyfile", path)?;
    // PKCS#8 "ENCRYPTED PRIVATE KEY", or OpenSSL's legacy encrypted PEM.
    let text = String::from_utf8_lossy(&pem);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
    {
        return Err(TlsError::EncryptedKey {
            path: path.to_owned(),
        });
    }
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok(key),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => Err(TlsError::NoKey {
            path: path.to_owned(),
        }),
        Err(e) => Err(TlsError::BadPem {
            key: "keyfile",
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// One certificate set's rustls configs: the one that offers ALPN, and its
/// twin that offers none for clients whose ALPN list has neither `h2` nor
/// `http/1.1`. Both are built when the set is read, never per connection,
/// and are swapped together on reload.
#[derive(Clone)]
pub struct SetConfigs {
    alpn: Arc<rustls::ServerConfig>,
    no_alpn: Arc<rustls::ServerConfig>,
}

impl SetConfigs {
    /// The config for a client that offers `offered` by ALPN (`None`: no
    /// ALPN extension). rustls refuses a client whose list shares nothing
    /// with the server's; that client gets the config without ALPN.
    fn for_client<'a>(
        &self,
        offered: Option<impl Iterator<Item = &'a [u8]>>,
    ) -> Arc<rustls::ServerConfig> {
        let mut offered = match offered {
            Some(offered) => offered,
            None => return self.alpn.clone(),
        };
        if offered.any(|p| self.alpn.alpn_protocols.iter().any(|ours| ours == p)) {
            self.alpn.clone()
        } else {
            self.no_alpn.clone()
        }
    }
}

/// Reads the files into a set's rustls server configs.
pub fn load(files: &TlsFiles) -> Result<SetConfigs, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match files.min_version {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let certs = certificates("certfile", &files.certfile)?;
    let key = private_key(&files.keyfile)?;
    let rejected = |key: &'static str, reason: String| TlsError::Rejected {
        key,
        certfile: files.certfile.clone(),
        reason,
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| rejected("min_version", e.to_string()))?;
    let builder = match (files.cert_reqs, &files.ca_certs) {
        (CertReqs::None, _) => builder.with_no_client_auth(),
        (reqs, None) => return Err(TlsError::NoCa { cert_reqs: reqs }),
        (reqs, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates("ca_certs", ca)? {
                roots.add(cert).map_err(|e| TlsError::BadPem {
                    key: "ca_certs",
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            let verifier = match reqs {
                CertReqs::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier.build().map_err(|e| TlsError::BadPem {
                key: "ca_certs",
                path: ca.clone(),
                reason: e.to_string(),
            })?;
            builder.with_client_cert_verifier(Arc::new(ShortChains(verifier)))
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::Rejected {
                key: "keyfile",
                certfile: files.keyfile.clone(),
                reason: format!(
                    "is not the key of the certificate in {} (their public keys differ): give \
                     the key the certificate was made with",
                    files.certfile.display()
                ),
            }
        }
        e => rejected(
            "keyfile",
            format!(
                "{e} (is {} the key of this certificate?)",
                files.keyfile.display()
            ),
        ),
    })?;
    // A clone shares the certificate resolver, the client verifier and
    // the session cache; it differs in its ALPN list alone.
    let no_alpn = Arc::new(config.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(SetConfigs {
        alpn: Arc::new(config),
        no_alpn,
    })
}

/// The most certificates corral takes from a client: its own and the
/// intermediates after it. Real client chains hold 1 to 3 (the client's
/// certificate, perhaps an issuing CA and a policy CA under the root that
/// `ca_certs` holds); 6 leaves room for a deeper PKI, or a client that
/// sends its root too. webpki's path building tries each intermediate
/// whose name fits at every level of the path, up to 200,000 steps, each
/// of which parses every intermediate again: with a chain of small
/// certificates all named CN=Inter and none leading to the CA, a handshake
/// cost the front's I/O thread (release build) 1.2 ms with 6 certificates,
/// as a valid one does, but 4.6 ms with 7, 16 ms with 8, 100 ms with 12 and
/// 55 ms with 121, for about 2 ms of the client's CPU: a few such
/// handshakes a second took both cores.
pub const MAX_CLIENT_CHAIN: usize = 6;

/// Client certificate chains refused for holding more than
/// [`MAX_CLIENT_CHAIN`] certificates, since start (for `/metrics`).
static LONG_CHAINS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A client certificate chain longer than [`MAX_CLIENT_CHAIN`], refused
/// before webpki sees it (the client gets alert certificate_unknown).
#[derive(thiserror::Error)]
#[error(
    "the client sent a chain of {0} certificates, more than the {MAX_CLIENT_CHAIN} corral takes"
)]
struct ChainTooLong(usize);

impl std::fmt::Debug for ChainTooLong {
    // rustls shows a certificate's `Other` error by its Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The client certificate verifier: webpki's (`ca_certs`, `cert_reqs`), with
/// a chain longer than [`MAX_CLIENT_CHAIN`] refused first, by its count
/// alone; everything else is webpki's.
#[derive(Debug)]
struct ShortChains(Arc<dyn rustls::server::danger::ClientCertVerifier>);

impl rustls::server::danger::ClientCertVerifier for ShortChains {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let sent = 1 + intermediates.len();
        if sent > MAX_CLIENT_CHAIN {
            LONG_CHAINS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(ChainTooLong(sent)))),
            ));
        }
        self.0.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.0.requires_raw_public_keys()
    }
}

/// The TLS configs in force on the app port, one per certificate set,
/// replaced all together on reload.
pub struct Tls {
    /// Each set's name ("default", or the address of its table) and files.
    sets: Vec<(String, TlsFiles)>,
    current: ArcSwap<Vec<SetConfigs>>,
    /// Each app listener as `/status` shows it ("https://127.0.0.1:8443")
    /// and the set it serves, `None` for plain HTTP (`insecure_bind`).
    binds: Vec<(String, Option<usize>)>,
    /// What `/status` shows: the certificates in force and the last reload.
    state: Mutex<TlsState>,
}

/// The certificates in force and how the last reload of the files went.
#[derive(Debug, Clone, Default)]
struct TlsState {
    /// Each set's leaf certificate: subject and last valid moment (Unix
    /// time), when it could be read.
    certs: Vec<Leaf>,
    /// Unix time the certificates in force were read.
    loaded_at: f64,
    /// The last reload: when (Unix time) and its error, if it failed.
    last_reload: Option<(f64, Option<String>)>,
    reload_failures: u64,
}

#[derive(Debug, Clone, Default)]
struct Leaf {
    subject: Option<String>,
    /// The first and last valid moments (Unix time).
    not_before: Option<i64>,
    not_after: Option<i64>,
}

impl Leaf {
    fn of(files: &TlsFiles) -> Leaf {
        let leaf = certificates("certfile", &files.certfile)
            .ok()
            .and_then(|c| c.into_iter().next());
        let Some((_, cert)) = leaf
            .as_ref()
            .and_then(|c| x509_parser::parse_x509_certificate(c).ok())
        else {
            return Leaf::default();
        };
        let validity = cert.validity();
        Leaf {
            subject: Some(cert.subject().to_string()),
            not_before: Some(validity.not_before.timestamp()),
            not_after: Some(validity.not_after.timestamp()),
        }
    }

    /// What is wrong with the certificate's dates at Unix time `now`, if
    /// anything: clients refuse it (expired, or not valid yet), or it
    /// expires within [`EXPIRY_WARNING_DAYS`].
    fn dates_warning(&self, now: i64) -> Option<String> {
        let (Some(from), Some(until)) = (self.not_before, self.not_after) else {
            return None;
        };
        let dates = format!("valid from {} to {}", utc(from), utc(until));
        let refused = "clients that check it refuse it; corral serves it (as gunicorn does) until a new certificate is in place and `corral reload` reads it";
        if now > until {
            Some(format!(
                "expired {} ago ({dates}): {refused}",
                ago(now - until)
            ))
        } else if now < from {
            Some(format!(
                "is not valid for another {} ({dates}): {refused}",
                ago(from - now)
            ))
        } else if until - now < EXPIRY_WARNING_DAYS * 86_400 {
            Some(format!(
                "expires in {} ({dates}): renew it, and `corral reload` reads the new one",
                ago(until - now)
            ))
        } else {
            None
        }
    }
}

/// A certificate that expires within this many days is warned about at
/// start and on each reload.
const EXPIRY_WARNING_DAYS: i64 = 7;

/// Unix time `t` as "2026-12-06 18:32:01 UTC".
fn utc(t: i64) -> String {
    match x509_parser::time::ASN1Time::from_timestamp(t) {
        Ok(t) => {
            let t = t.to_datetime();
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        }
        Err(_) => format!("{t} (Unix time)"),
    }
}

/// A span of `secs` seconds in days, or hours under two days.
fn ago(secs: i64) -> String {
    if secs >= 2 * 86_400 {
        format!("{} days", secs / 86_400)
    } else {
        format!("{} hours", secs / 3_600)
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Why one certificate set did not load: the set's table and the error.
#[derive(Debug, thiserror::Error)]
#[error("{table} {}: {error}", error.key())]
pub struct SetError {
    /// `[server.tls]` or `[server.tls.bind."ADDR"]`.
    pub table: String,
    #[source]
    pub error: TlsError,
}

/// The table a set comes from, for messages.
fn table_of(name: &str) -> String {
    if name == "default" {
        "[server.tls]".to_owned()
    } else {
        format!("[server.tls.bind.\"{name}\"]")
    }
}

fn cert_reqs_name(reqs: CertReqs) -> &'static str {
    match reqs {
        CertReqs::None => "none",
        CertReqs::Optional => "optional",
        CertReqs::Required => "required",
    }
}

impl Tls {
    /// Reads every set: each with its name ("default" for `[server.tls]`'s,
    /// else the address of its table), in the order of
    /// `config::TlsConfig::sets`; `binds`: each app listener as shown and
    /// its set (an index into `sets`), or `None` for a plain one.
    pub fn new(
        sets: Vec<(String, TlsFiles)>,
        binds: Vec<(String, Option<usize>)>,
    ) -> Result<Tls, SetError> {
        let loaded = load_all(&sets)?;
        let state = Mutex::new(TlsState {
            certs: sets.iter().map(|(_, f)| Leaf::of(f)).collect(),
            loaded_at: unix_now(),
            ..TlsState::default()
        });
        let tls = Tls {
            sets,
            current: ArcSwap::from_pointee(loaded),
            binds,
            state,
        };
        tls.warn_dates();
        Ok(tls)
    }

    /// Reads every set's files again; when one fails, every set in force
    /// stays, and `/status` shows the error until a reload succeeds.
    pub fn reload(&self) -> Result<(), SetError> {
        let loaded = load_all(&self.sets);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let result = match loaded {
            Ok(configs) => {
                self.current.store(Arc::new(configs));
                *state = TlsState {
                    certs: self.sets.iter().map(|(_, f)| Leaf::of(f)).collect(),
                    loaded_at: unix_now(),
                    last_reload: Some((unix_now(), None)),
                    reload_failures: state.reload_failures,
                };
                Ok(())
            }
            Err(e) => {
                state.last_reload = Some((unix_now(), Some(e.to_string())));
                state.reload_failures += 1;
                Err(e)
            }
        };
        drop(state);
        self.warn_dates();
        result
    }

    /// Logs at WARN each certificate in force that clients will refuse for
    /// its dates (expired, not valid yet) or that expires within
    /// [`EXPIRY_WARNING_DAYS`], with its set's table and file. It stays in
    /// force: whether to accept it is the client's call (some check no
    /// dates), and no certificate at all would serve nobody.
    fn warn_dates(&self) {
        let certs = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .certs
            .clone();
        let now = unix_now() as i64;
        for ((name, files), leaf) in self.sets.iter().zip(&certs) {
            if let Some(warning) = leaf.dates_warning(now) {
                tracing::warn!(
                    "TLS: {} certificate {} ({}) {warning}",
                    table_of(name),
                    files.certfile.display(),
                    leaf.subject.as_deref().unwrap_or("?"),
                );
            }
        }
    }

    /// For `/metrics`: each set's name and the last valid moment of its
    /// certificate in force (Unix time, when it could be read), the
    /// reloads that failed, and the client certificate chains refused for
    /// their length.
    pub fn figures(&self) -> (Vec<(String, Option<i64>)>, u64, u64) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let expiry = self
            .sets
            .iter()
            .zip(&state.certs)
            .map(|((name, _), leaf)| (name.clone(), leaf.not_after))
            .collect();
        (
            expiry,
            state.reload_failures,
            LONG_CHAINS.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// The `tls` object of `/status`: `[server.tls]`'s set at the top (its
    /// files, the certificate in force: subject, expiry), every set under
    /// `certificates`, which listener serves which under `binds`, and the
    /// last reload's outcome.
    pub fn status(&self) -> serde_json::Value {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let now = unix_now();
        let set = |(name, files): &(String, TlsFiles), leaf: &Leaf| {
            serde_json::json!({
                "name": name,
                "certfile": files.certfile,
                "keyfile": files.keyfile,
                "ca_certs": files.ca_certs,
                "cert_reqs": cert_reqs_name(files.cert_reqs),
                "min_version": match files.min_version {
                    MinVersion::Tls12 => "1.2",
                    MinVersion::Tls13 => "1.3",
                },
                "subject": leaf.subject,
                "not_after": leaf.not_after,
                "expires_in_days": leaf.not_after.map(|t| ((t as f64 - now) / 86_400.0).floor() as i64),
            })
        };
        let certificates: Vec<serde_json::Value> = self
            .sets
            .iter()
            .zip(&state.certs)
            .map(|(s, leaf)| set(s, leaf))
            .collect();
        let mut out = certificates
            .first()
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}));
        let binds: Vec<serde_json::Value> = self
            .binds
            .iter()
            .map(|(address, set)| {
                serde_json::json!({
                    "address": address,
                    "tls": set.is_some(),
                    "certificate": set.and_then(|i| self.sets.get(i)).map(|(name, _)| name),
                })
            })
            .collect();
        if let Some(obj) = out.as_object_mut() {
            obj.remove("name");
            obj.insert("certificates".into(), certificates.into());
            obj.insert("binds".into(), binds.into());
            obj.insert("loaded_at".into(), state.loaded_at.into());
            obj.insert(
                "last_reload".into(),
                state
                    .last_reload
                    .map(|(at, error)| {
                        serde_json::json!({
                            "at": at,
                            "ok": error.is_none(),
                            "error": error,
                        })
                    })
                    .into(),
            );
            obj.insert("reload_failures".into(), state.reload_failures.into());
        }
        out
    }

    /// The TLS handshake of one connection with set `set`, within `timeout`
    /// (ClientHello and the rest together). The ClientHello is read first,
    /// to pick the set's config by the client's ALPN list
    /// ([`SetConfigs::for_client`]); the configs are those in force when
    /// it arrives.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        set: usize,
        io: S,
        timeout: Duration,
    ) -> std::io::Result<(TlsStream<S>, TlsInfo)> {
        let handshake = async {
            let acceptor =
                tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
            let start = acceptor.await?;
            let config = self
                .current
                .load()
                .get(set)
                .ok_or_else(|| std::io::Error::other(format!("no TLS certificate set {set}")))?
                .for_client(start.client_hello().alpn());
            start.into_stream(config).await
        };
        let stream = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })??;
        let info = TlsInfo::of(stream.get_ref().1);
        Ok((stream, info))
    }
}

/// Every set's rustls config, or the first set's error.
fn load_all(sets: &[(String, TlsFiles)]) -> Result<Vec<SetConfigs>, SetError> {
    sets.iter()
        .map(|(name, files)| {
            load(files).map_err(|error| SetError {
                table: table_of(name),
                error,
            })
        })
        .collect()
}

/// The TLS of one app listener: the sets in force and which one it serves.
#[derive(Clone)]
pub struct BindTls {
    pub tls: Arc<Tls>,
    pub set: usize,
}

impl BindTls {
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: S,
        timeout: Duration,
    ) -> std::io::Result<(TlsStream<S>, TlsInfo)> {
        self.tls.accept(self.set, io, timeout).await
    }
}

/// What the app learns of a TLS connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The protocol version's number, e.g. 0x0304 for TLS 1.3.
    pub version: u16,
    /// The cipher suite's IANA number.
    pub cipher_suite: u16,
    /// The ALPN protocol agreed on was `h2`.
    pub h2: bool,
    /// The client certificate's subject, e.g. "CN=alice, O=Example".
    pub client_subject: Option<String>,
    /// The client's certificate chain as PEM, leaf first.
    pub client_chain: Vec<String>,
}

impl TlsInfo {
    fn of(conn: &rustls::ServerConnection) -> TlsInfo {
        let chain = conn.peer_certificates().unwrap_or(&[]);
        TlsInfo {
            version: conn.protocol_version().map_or(0, u16::from),
            cipher_suite: conn
                .negotiated_cipher_suite()
                .map_or(0, |s| u16::from(s.suite())),
            h2: conn.alpn_protocol() == Some(b"h2"),
            client_subject: chain.first().and_then(|c| subject(c)),
            client_chain: chain.iter().map(|c| pem(c)).collect(),
        }
    }

    /// The version as mod_ssl's `SSL_PROTOCOL` names it.
    pub fn version_name(&self) -> &'static str {
        match self.version {
            0x0304 => "TLSv1.3",
            0x0303 => "TLSv1.2",
            _ => "",
        }
    }
}

/// A certificate's subject as "C=.., O=.., CN=..", in the certificate's order.
fn subject(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(cert.subject().to_string())
}

fn pem(cert: &CertificateDer<'_>) -> String {
    let b64 = data_encoding::BASE64.encode(cert);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A verifier that takes every chain and counts the ones it saw.
    #[derive(Debug, Default)]
    struct Counting {
        seen: AtomicUsize,
        hints: Vec<rustls::DistinguishedName>,
    }

    impl ClientCertVerifier for Counting {
        fn offer_client_auth(&self) -> bool {
            true
        }
        fn client_auth_mandatory(&self) -> bool {
            false
        }
        fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
            &self.hints
        }
        fn verify_client_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: rustls_pki_types::UnixTime,
        ) -> Result<ClientCertVerified, rustls::Error> {
            self.seen.fetch_add(1, Ordering::SeqCst);
            Ok(ClientCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("tls12".into()))
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("tls13".into()))
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            vec![rustls::SignatureScheme::ED25519]
        }
    }

    #[test]
    fn tls_a_client_chain_longer_than_the_bound_is_refused_before_the_inner_verifier() {
        let inner = Arc::new(Counting {
            hints: vec![rustls::DistinguishedName::from(b"CN=CA".to_vec())],
            ..Counting::default()
        });
        let verifier = ShortChains(inner.clone());
        let leaf = CertificateDer::from(vec![1u8; 8]);
        let now = rustls_pki_types::UnixTime::now();
        let chain = |n: usize| vec![CertificateDer::from(vec![2u8; 8]); n];
        assert!(
            verifier
                .verify_client_cert(&leaf, &chain(MAX_CLIENT_CHAIN - 1), now)
                .is_ok()
        );
        assert_eq!(inner.seen.load(Ordering::SeqCst), 1);
        for n in [MAX_CLIENT_CHAIN, 120] {
            let err = verifier
                .verify_client_cert(&leaf, &chain(n), now)
                .unwrap_err();
            assert!(
                err.to_string().contains(&format!(
                    "a chain of {} certificates, more than the 6",
                    n + 1
                )),
                "{err}"
            );
            let alert = match err {
                rustls::Error::InvalidCertificate(e) => rustls::AlertDescription::from(e),
                other => panic!("{other:?}"),
            };
            assert_eq!(alert, rustls::AlertDescription::CertificateUnknown);
        }
        assert_eq!(inner.seen.load(Ordering::SeqCst), 1, "not asked again");
        // Everything else is the inner verifier's.
        assert!(verifier.offer_client_auth());
        assert!(!verifier.client_auth_mandatory());
        let hints = |v: &dyn ClientCertVerifier| -> Vec<Vec<u8>> {
            v.root_hint_subjects()
                .iter()
                .map(|d| d.as_ref().to_vec())
                .collect()
        };
        assert_eq!(hints(&verifier), [b"CN=CA".to_vec()]);
        assert_eq!(
            verifier.supported_verify_schemes(),
            [rustls::SignatureScheme::ED25519]
        );
        // The handshake signatures (not made here: rustls alone builds a
        // DigitallySignedStruct) are the inner verifier's too; the e2e
        // tests' clients with a certificate go through them.
    }

    #[test]
    fn tls_certificate_dates_are_warned_about_when_refused_or_close_to_expiry() {
        let day = 86_400;
        let now = 1_800_000_000;
        let leaf = |from: i64, until: i64| Leaf {
            subject: Some("CN=x".into()),
            not_before: Some(now + from),
            not_after: Some(now + until),
        };
        let expired = leaf(-30 * day, -2 * day - 60).dates_warning(now).unwrap();
        assert!(
            expired.starts_with("expired 2 days ago (valid from "),
            "{expired}"
        );
        assert!(expired.contains("corral serves it"), "{expired}");
        let early = leaf(3 * 3_600 + 60, 30 * day).dates_warning(now).unwrap();
        assert!(
            early.starts_with("is not valid for another 3 hours"),
            "{early}"
        );
        let soon = leaf(-day, 6 * day + 60).dates_warning(now).unwrap();
        assert!(soon.starts_with("expires in 6 days"), "{soon}");
        assert_eq!(leaf(-day, 8 * day).dates_warning(now), None);
        assert_eq!(Leaf::default().dates_warning(now), None);
        assert_eq!(utc(1_800_000_000), "2027-01-15 08:00:00 UTC");
    }
}
