use super::*;
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;

fn v4(a: [u8; 4], port: u16) -> (IpAddr, u16) {
    (IpAddr::V4(Ipv4Addr::from(a)), port)
}

fn v2_header(ver_cmd: u8, fam: u8, addresses: &[u8]) -> Vec<u8> {
    let mut b = V2_SIGNATURE.to_vec();
    b.push(ver_cmd);
    b.push(fam);
    b.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
    b.extend_from_slice(addresses);
    b
}

/// The header, and what the stream reads after it.
async fn read_all(
    sent: &[u8],
    mode: ProxyProtocol,
    allowed: bool,
) -> (Result<Option<Header>, ProxyError>, Vec<u8>) {
    let (mut client, server) = tokio::io::duplex(8192);
    client.write_all(sent).await.unwrap();
    drop(client);
    let (mut io, header) = read(Box::new(server), mode, allowed).await.unwrap();
    let mut rest = Vec::new();
    if header.is_ok() {
        io.read_to_end(&mut rest).await.unwrap();
    }
    (header, rest)
}

#[tokio::test]
async fn a_version_1_header_names_the_client_and_the_request_follows_whole() {
    let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut sent = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n".to_vec();
    sent.extend_from_slice(get);
    let (header, rest) = read_all(&sent, ProxyProtocol::Auto, true).await;
    assert_eq!(
        header,
        Ok(Some(Header::Proxied {
            protocol: "TCP4",
            source: v4([192, 0, 2, 7], 56324),
            destination: v4([198, 51, 100, 1], 443),
        }))
    );
    assert_eq!(rest, get);
    let (header, _) = read_all(
        b"PROXY TCP6 2001:db8::7 ::1 1 65535\r\n",
        ProxyProtocol::V1,
        true,
    )
    .await;
    assert_eq!(
        header,
        Ok(Some(Header::Proxied {
            protocol: "TCP6",
            source: ("2001:db8::7".parse().unwrap(), 1),
            destination: ("::1".parse().unwrap(), 65535),
        }))
    );
    let (header, rest) = read_all(b"PROXY UNKNOWN whatever\r\nGET", ProxyProtocol::V1, true).await;
    assert_eq!((header, rest), (Ok(Some(Header::Local)), b"GET".to_vec()));
}

#[tokio::test]
async fn a_version_2_header_names_the_client_and_its_tlvs_are_skipped() {
    let mut addresses = vec![192, 0, 2, 7, 10, 0, 0, 1, 0xdc, 0x04, 0x01, 0xbb];
    addresses.extend_from_slice(&[0x04, 0x00, 0x02, b'h', b'i']); // a NOOP TLV
    let mut sent = v2_header(0x21, 0x11, &addresses);
    sent.extend_from_slice(b"\x16\x03\x01 a TLS hello");
    let (header, rest) = read_all(&sent, ProxyProtocol::V2, true).await;
    assert_eq!(
        header,
        Ok(Some(Header::Proxied {
            protocol: "TCP4",
            source: v4([192, 0, 2, 7], 56324),
            destination: v4([10, 0, 0, 1], 443),
        }))
    );
    assert_eq!(rest, b"\x16\x03\x01 a TLS hello");
    let mut six = [0u8; 36];
    six[15] = 1; // ::1
    six[16] = 0x20;
    six[17] = 0x01; // 2001::
    six[32..36].copy_from_slice(&[0, 80, 1, 0xbb]);
    let (header, _) = read_all(&v2_header(0x21, 0x21, &six), ProxyProtocol::Auto, true).await;
    assert_eq!(
        header,
        Ok(Some(Header::Proxied {
            protocol: "TCP6",
            source: ("::1".parse().unwrap(), 80),
            destination: ("2001::".parse().unwrap(), 443),
        }))
    );
    // LOCAL (a health check), UNSPEC and AF_UNIX keep the socket's addresses.
    for (ver_cmd, fam) in [(0x20, 0x11), (0x21, 0x00), (0x21, 0x31)] {
        let (header, rest) =
            read_all(&v2_header(ver_cmd, fam, &[0; 216]), ProxyProtocol::V2, true).await;
        assert_eq!((header, rest), (Ok(Some(Header::Local)), Vec::new()));
    }
}

#[tokio::test]
async fn a_connection_without_a_header_loses_no_byte() {
    for sent in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"PROXZ",
        b"\x16\x03\x01\x02\x00",
        b"",
    ] {
        let (header, rest) = read_all(sent, ProxyProtocol::Auto, false).await;
        assert_eq!((header, &rest[..]), (Ok(None), sent));
    }
    // A mode that does not take the version: the bytes are the client's.
    let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\r\n";
    assert_eq!(
        read_all(v1, ProxyProtocol::V2, true).await,
        (Ok(None), v1.to_vec())
    );
    let v2 = v2_header(0x20, 0, &[]);
    assert_eq!(read_all(&v2, ProxyProtocol::V1, true).await, (Ok(None), v2));
}

#[tokio::test]
async fn a_header_from_a_peer_not_allowed_or_malformed_is_refused() {
    let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\r\n";
    assert_eq!(
        read_all(v1, ProxyProtocol::Auto, false).await.0,
        Err(ProxyError::Forbidden)
    );
    let v2 = v2_header(0x21, 0x11, &[0; 12]);
    assert_eq!(
        read_all(&v2, ProxyProtocol::Auto, false).await.0,
        Err(ProxyError::Forbidden)
    );
    for bad in [
        &b"PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n"[..],
        b"PROXY TCP4 ::1 ::1 1 2\r\n",
        b"PROXY TCP6 192.0.2.7 ::1 1 2\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 +1 2\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 2\r\n",
        b"PROXY TCP4 192.0.2.7  198.51.100.1 1 2\r\n",
        b"PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n",
        b"PROXY \xff\r\n",
    ] {
        let got = read_all(bad, ProxyProtocol::V1, true).await.0;
        assert!(
            matches!(got, Err(ProxyError::Invalid(_))),
            "{:?}: {got:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let long = [&b"PROXY TCP4 "[..], &[b'1'; 200]].concat();
    assert!(matches!(
        read_all(&long, ProxyProtocol::V1, true).await.0,
        Err(ProxyError::Invalid(_))
    ));
    for bad in [
        v2_header(0x11, 0x11, &[0; 12]), // version 1 in a version 2 signature
        v2_header(0x22, 0x11, &[0; 12]), // command 2
        v2_header(0x21, 0x12, &[0; 12]), // UDP
        v2_header(0x21, 0x11, &[0; 11]), // too short for IPv4
        v2_header(0x21, 0x21, &[0; 35]), // too short for IPv6
        v2_header(0x21, 0x41, &[0; 12]), // family 4
        v2_header(0x21, 0x11, &[0; 4097]),
    ] {
        let got = read_all(&bad, ProxyProtocol::V2, true).await.0;
        assert!(
            matches!(got, Err(ProxyError::Invalid(_))),
            "{bad:?}: {got:?}"
        );
    }
    // Cut inside the header.
    let cut = &v1[..20];
    assert_eq!(
        read_all(cut, ProxyProtocol::V1, true).await.0,
        Err(ProxyError::Cut)
    );
}

proptest! {
    /// No input panics, and a header is never longer than what was sent.
    #[test]
    fn any_bytes_parse_without_panic(b in prop::collection::vec(any::<u8>(), 0..600), sig in 0u8..3) {
        let mut b = b;
        match sig {
            1 => b.splice(0..0, b"PROXY ".iter().copied()).for_each(drop),
            2 => b.splice(0..0, V2_SIGNATURE.iter().copied()).for_each(drop),
            _ => {}
        }
        if let Parse::Done(_, len) = parse(&b, ProxyProtocol::Auto) {
            prop_assert!(len <= b.len());
        }
    }
}
