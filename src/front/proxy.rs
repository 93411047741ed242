//! The PROXY protocol (HAProxy's, versions 1 and 2): a load balancer that
//! passes TCP through (HAProxy with `send-proxy`, an AWS Network Load
//! Balancer, stunnel) tells corral the client's address in a header before
//! the connection's own bytes. With `[server] proxy_protocol` set, [`read`]
//! looks at a connection's first bytes, before TLS and HTTP: while they
//! still match the start of a header it reads on, and it hands back every
//! byte after the header in front of the stream ([`Prefixed`]), so a
//! connection without a header loses nothing and waits for nothing more
//! than its first read.
//!
//! Everything here comes from the network: a header is at most
//! [`V1_MAX`] bytes (version 1, as the specification bounds it) or 16 +
//! [`V2_MAX_ADDRESSES`] (version 2), every field is checked, and what is
//! not understood is refused, never guessed. A header only counts from a
//! peer in `proxy_allow_ips` (or on a Unix socket); from any other, the
//! connection is refused, as gunicorn does.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tokio::io::AsyncReadExt;

use super::Io;
use super::preface::Prefixed;
use crate::config::ProxyProtocol;

/// The longest version 1 header, "\r\n" included (the specification's
/// bound: "PROXY TCP6" and two full IPv6 addresses and ports).
pub const V1_MAX: usize = 107;
/// Version 2's signature.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The most address and TLV bytes a version 2 header may carry here
/// (its length field allows 65,535; HAProxy's own TLVs fit in far less).
pub const V2_MAX_ADDRESSES: usize = 4096;

/// What the proxy said about the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    /// The connection's real client and the address it connected to.
    Proxied {
        /// "TCP4" or "TCP6", as version 1 writes it (gunicorn's
        /// `PROXY_PROTOCOL`).
        protocol: &'static str,
        source: (IpAddr, u16),
        destination: (IpAddr, u16),
    },
    /// A connection of the proxy's own (its health check: version 2's
    /// LOCAL, version 1's UNKNOWN, or an address family corral does not
    /// take, such as a Unix socket's): the socket's own addresses stand.
    Local,
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("a PROXY protocol header from a peer not in proxy_allow_ips")]
    Forbidden,
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(&'static str),
    #[error("the connection closed inside its PROXY protocol header")]
    Cut,
}

/// What the bytes so far are.
#[derive(Debug, PartialEq, Eq)]
enum Parse {
    /// Not a header the mode takes: the connection's own bytes.
    NotProxy,
    /// The start of a header: read on.
    Partial,
    /// A header of this many bytes.
    Done(Header, usize),
    Invalid(&'static str),
}

/// Reads a connection's PROXY header, if it begins with one that `mode`
/// takes, and returns the stream with the bytes after it put back. A header
/// from a peer that is not `allowed` is refused.
pub async fn read(
    mut io: Box<dyn Io>,
    mode: ProxyProtocol,
    allowed: bool,
) -> io::Result<(Box<dyn Io>, Result<Option<Header>, ProxyError>)> {
    let mut seen = Vec::with_capacity(512);
    loop {
        if !allowed && signed(&seen, mode) {
            return Ok((io, Err(ProxyError::Forbidden)));
        }
        match parse(&seen, mode) {
            Parse::NotProxy => return Ok((prefixed(seen, 0, io), Ok(None))),
            Parse::Done(header, len) => return Ok((prefixed(seen, len, io), Ok(Some(header)))),
            Parse::Invalid(why) => return Ok((io, Err(ProxyError::Invalid(why)))),
            Parse::Partial => {
                if seen.len() == seen.capacity() {
                    seen.reserve(seen.capacity());
                }
                if io.read_buf(&mut seen).await? == 0 {
                    let cut = if seen.is_empty() {
                        Ok(None)
                    } else {
                        Err(ProxyError::Cut)
                    };
                    return Ok((io, cut));
                }
            }
        }
    }
}

fn prefixed(mut seen: Vec<u8>, header: usize, io: Box<dyn Io>) -> Box<dyn Io> {
    seen.drain(..header);
    Box::new(Prefixed::new(seen, io))
}

/// Whether the bytes begin with a whole signature the mode takes.
fn signed(b: &[u8], mode: ProxyProtocol) -> bool {
    (mode.v1() && b.starts_with(b"PROXY ")) || (mode.v2() && b.starts_with(V2_SIGNATURE))
}

fn parse(b: &[u8], mode: ProxyProtocol) -> Parse {
    let starts = |sig: &[u8]| b[..b.len().min(sig.len())] == sig[..b.len().min(sig.len())];
    if b.is_empty() {
        return Parse::Partial;
    }
    if mode.v1() && starts(b"PROXY ") {
        return v1(b);
    }
    if mode.v2() && starts(V2_SIGNATURE) {
        return v2(b);
    }
    Parse::NotProxy
}

/// "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n" (or TCP6, or UNKNOWN
/// and anything up to the line's end).
fn v1(b: &[u8]) -> Parse {
    let Some(end) = b.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if b.len() >= V1_MAX {
            Parse::Invalid("a version 1 header longer than 107 bytes")
        } else {
            Parse::Partial
        };
    };
    let Ok(line) = std::str::from_utf8(&b[..end]) else {
        return Parse::Invalid("a version 1 header that is not text");
    };
    let mut fields = line.split(' ');
    fields.next(); // "PROXY"
    let protocol = match fields.next() {
        Some("UNKNOWN") => return Parse::Done(Header::Local, end + 2),
        Some("TCP4") => "TCP4",
        Some("TCP6") => "TCP6",
        _ => return Parse::Invalid("a version 1 protocol other than TCP4, TCP6 or UNKNOWN"),
    };
    let rest: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = rest[..] else {
        return Parse::Invalid("a version 1 header without exactly two addresses and two ports");
    };
    let ip = |s: &str| -> Option<IpAddr> {
        if protocol == "TCP4" {
            s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
        } else {
            s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        }
    };
    let (Some(src), Some(dst)) = (ip(src), ip(dst)) else {
        return Parse::Invalid("a version 1 address that is not its protocol's");
    };
    let (Some(sport), Some(dport)) = (port(sport), port(dport)) else {
        return Parse::Invalid("a version 1 port that is not a number from 0 to 65535");
    };
    Parse::Done(
        Header::Proxied {
            protocol,
            source: (src, sport),
            destination: (dst, dport),
        },
        end + 2,
    )
}

/// Decimal digits only ("+80" and "" are not ports).
fn port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The signature, version and command, family and transport, a big-endian
/// length, then the addresses (and TLVs, which corral skips).
fn v2(b: &[u8]) -> Parse {
    if b.len() < 16 {
        return Parse::Partial;
    }
    let len = usize::from(be16(&b[14..16]));
    if len > V2_MAX_ADDRESSES {
        return Parse::Invalid("a version 2 header longer than corral takes (4096 address bytes)");
    }
    if b[12] >> 4 != 2 {
        return Parse::Invalid("a version 2 signature with another version");
    }
    let local = match b[12] & 0x0f {
        0 => true,
        1 => false,
        _ => return Parse::Invalid("a version 2 command other than LOCAL or PROXY"),
    };
    if b.len() < 16 + len {
        return Parse::Partial;
    }
    let total = 16 + len;
    let a = &b[16..total];
    if local {
        return Parse::Done(Header::Local, total);
    }
    let (family, transport) = (b[13] >> 4, b[13] & 0x0f);
    let header = match family {
        0 => Header::Local,
        1 | 2 if transport != 1 => {
            return Parse::Invalid("a version 2 transport other than TCP");
        }
        1 if len >= 12 => Header::Proxied {
            protocol: "TCP4",
            source: (IpAddr::V4(ipv4(&a[0..4])), be16(&a[8..10])),
            destination: (IpAddr::V4(ipv4(&a[4..8])), be16(&a[10..12])),
        },
        2 if len >= 36 => Header::Proxied {
            protocol: "TCP6",
            source: (IpAddr::V6(ipv6(&a[0..16])), be16(&a[32..34])),
            destination: (IpAddr::V6(ipv6(&a[16..32])), be16(&a[34..36])),
        },
        1 | 2 => return Parse::Invalid("a version 2 header too short for its addresses"),
        // AF_UNIX: the socket's own addresses stand.
        3 => Header::Local,
        _ => return Parse::Invalid("a version 2 address family corral does not know"),
    };
    Parse::Done(header, total)
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn ipv4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

fn ipv6(b: &[u8]) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&b[..16]);
    Ipv6Addr::from(octets)
}

#[cfg(test)]
mod tests;
