//! Unit tests of the frame codec and the response head parser.

use super::*;

#[test]
fn frames_round_trip_and_split_at_boundaries() {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&encode(FrameKind::Data, 7, b"hello"));
    buf.extend_from_slice(&encode(FrameKind::End, 7, b""));
    let partial = buf.split_off(12);
    let mut first = buf;
    assert!(decode(&mut first).unwrap().is_none());
    first.unsplit(partial);
    let f = decode(&mut first).unwrap().unwrap();
    assert_eq!(
        (f.kind, f.stream, &f.payload[..]),
        (Ok(FrameKind::Data), 7, &b"hello"[..])
    );
    let f = decode(&mut first).unwrap().unwrap();
    assert_eq!(
        (f.kind, f.stream, f.payload.len()),
        (Ok(FrameKind::End), 7, 0)
    );
    assert!(first.is_empty());
}

#[test]
fn every_kind_round_trips_through_its_byte() {
    let mut seen = std::collections::HashSet::new();
    for kind in FrameKind::ALL {
        assert!(seen.insert(kind as u8), "{kind} twice");
        assert_eq!(FrameKind::try_from(kind as u8), Ok(kind));
        let mut buf = BytesMut::from(&encode(kind, 3, b"xy")[..]);
        assert_eq!(buf[4], kind as u8);
        let f = decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            (f.kind, f.stream, &f.payload[..]),
            (Ok(kind), 3, &b"xy"[..])
        );
    }
    for byte in 0..=u8::MAX {
        match FrameKind::try_from(byte) {
            Ok(kind) => assert_eq!(kind as u8, byte),
            Err(e) => {
                assert_eq!(e, UnknownKind(byte));
                assert!(!seen.contains(&byte));
            }
        }
    }
}

#[test]
fn an_unknown_kind_is_decoded_as_such_and_the_next_frame_still_read() {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&[2, 0, 0, 0, 99, 5, 0, 0, 0, b'a', b'b']);
    buf.extend_from_slice(&encode(FrameKind::Heartbeat, 0, b""));
    let f = decode(&mut buf).unwrap().unwrap();
    assert_eq!(
        (f.kind, f.stream, &f.payload[..]),
        (Err(UnknownKind(99)), 5, &b"ab"[..])
    );
    let f = decode(&mut buf).unwrap().unwrap();
    assert_eq!(f.kind, Ok(FrameKind::Heartbeat));
    assert!(buf.is_empty());
}

#[test]
fn a_length_over_the_limit_is_refused_before_its_payload_arrives() {
    let too_long = (MAX_INCOMING_FRAME + 1) as u32;
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&too_long.to_le_bytes());
    buf.extend_from_slice(&[FrameKind::Data as u8, 1, 0, 0, 0]);
    assert_eq!(
        decode(&mut buf).unwrap_err(),
        DecodeError::TooLarge(MAX_INCOMING_FRAME + 1)
    );
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 13, 0, 0, 0, 0][..]);
    assert_eq!(
        decode(&mut buf).unwrap_err(),
        DecodeError::TooLarge(u32::MAX as usize)
    );
    // At the limit a frame is awaited, not refused; a short header is
    // awaited whatever it says.
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&(MAX_INCOMING_FRAME as u32).to_le_bytes());
    buf.extend_from_slice(&[FrameKind::WsBinary as u8, 1, 0, 0, 0]);
    assert!(decode(&mut buf).unwrap().is_none());
    assert!(buf.capacity() >= HEADER_LEN + MAX_INCOMING_FRAME);
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 13, 0, 0, 0][..]);
    assert!(decode(&mut buf).unwrap().is_none());
}

#[test]
fn large_payloads_are_split_off_small_ones_copied_both_whole() {
    for len in [0, 1, COPY_BELOW, COPY_BELOW + 1, 200_000] {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut buf = BytesMut::from(&encode(FrameKind::Data, 9, &payload)[..]);
        buf.extend_from_slice(b"rest");
        let f = decode(&mut buf).unwrap().unwrap();
        assert_eq!(&f.payload[..], &payload[..], "{len}");
        assert_eq!(&buf[..], b"rest", "{len}");
    }
}

#[test]
fn request_frames_carry_flags_head_and_body() {
    let frame = encode_request(7, b"HEAD", b"body", FLAG_MORE_BODY | FLAG_WEBSOCKET);
    let mut buf = BytesMut::from(&frame[..]);
    let f = decode(&mut buf).unwrap().unwrap();
    assert_eq!((f.kind, f.stream), (Ok(FrameKind::Request), 7));
    assert_eq!(&f.payload[..], b"\x03\x04\0\0\0HEADbody");
    let f = encode_u32(FrameKind::Window, 2, 65536);
    assert_eq!(&f[..], b"\x04\0\0\0\x04\x02\0\0\0\0\0\x01\0");
}

#[test]
fn close_frames_round_trip_and_a_short_one_means_no_status() {
    let mut buf = BytesMut::from(&encode_close(4, 1001, "going away")[..]);
    let f = decode(&mut buf).unwrap().unwrap();
    assert_eq!(f.kind, Ok(FrameKind::WsClose));
    assert_eq!(decode_close(&f.payload), (1001, "going away".to_string()));
    assert_eq!(decode_close(b""), (1005, String::new()));
    assert_eq!(decode_close(b"\x01"), (1005, String::new()));
    assert_eq!(
        decode_close(b"\xe8\x03\xff"),
        (1000, "\u{fffd}".to_string())
    );
}

#[test]
fn response_payloads_split_only_when_the_head_fits() {
    let mut p = 3u32.to_le_bytes().to_vec();
    p.extend_from_slice(b"abcBODY");
    let (head, body) = split_full(&p.into()).unwrap();
    assert_eq!((&head[..], &body[..]), (&b"abc"[..], &b"BODY"[..]));
    for bad in [&b""[..], b"\x03\0\0", b"\x03\0\0\0ab", b"\xff\xff\xff\xffx"] {
        assert!(
            split_full(&Bytes::copy_from_slice(bad)).is_none(),
            "{bad:?}"
        );
    }
}

/// The worker's `K_*` numbers are the ones above, every one of them,
/// and it names no other.
#[test]
fn the_worker_script_numbers_the_kinds_as_corral_does() {
    let script = crate::worker::script::file("corral_worker/protocol.py");
    let mut found = std::collections::BTreeMap::new();
    for line in script.lines() {
        let Some(rest) = line.strip_prefix("K_") else {
            continue;
        };
        let (name, value) = rest.split_once('=').expect("K_NAME = number");
        let value: u8 = value.trim().parse().expect("a number");
        assert!(
            found.insert(name.trim().to_string(), value).is_none(),
            "{line}"
        );
    }
    let ours: std::collections::BTreeMap<String, u8> = FrameKind::ALL
        .iter()
        .map(|k| (k.name().to_string(), *k as u8))
        .collect();
    assert_eq!(found, ours);
}

/// The worker's request flags and response windows are corral's.
#[test]
fn the_worker_script_has_corral_s_flags_and_windows() {
    let script = crate::worker::script::file("corral_worker/protocol.py");
    let value = |name: &str| -> usize {
        let line = script
            .lines()
            .find(|l| l.starts_with(&format!("{name} = ")))
            .unwrap_or_else(|| panic!("no {name} in the worker script"));
        let expr = line.split_once('=').unwrap().1.trim();
        expr.split('*')
            .map(|n| n.trim().parse::<usize>().expect("a number or a product"))
            .product()
    };
    assert_eq!(value("F_MORE_BODY"), usize::from(FLAG_MORE_BODY));
    assert_eq!(value("F_WEBSOCKET"), usize::from(FLAG_WEBSOCKET));
    assert_eq!(value("F_STAY"), usize::from(FLAG_STAY));
    assert_eq!(value("F_SMALL_WINDOW"), usize::from(FLAG_SMALL_WINDOW));
    assert_eq!(value("RESPONSE_WINDOW"), RESPONSE_WINDOW);
    assert_eq!(value("SMALL_WINDOW"), SMALL_WINDOW);
}

#[test]
fn response_head_parses_status_reason_and_headers() {
    let head = encode_response_head(
        b"404 Not Found",
        &[(b"Content-Type", b"text/plain"), (b"X-A", b"")],
    );
    let h = parse_response_head(&head).unwrap();
    assert_eq!(h.status, 404);
    assert_eq!(h.reason.unwrap().as_bytes(), b"Not Found");
    assert_eq!(h.headers.len(), 2);
    assert_eq!(h.headers[0].0, "content-type");
    assert_eq!(h.headers[1].1, "");
    // White space around a value is stripped, as gunicorn strips it.
    let head = encode_response_head(
        b"200 OK",
        &[(b"X-A", b" \t lead and trail \t"), (b"X-B", b"   ")],
    );
    let h = parse_response_head(&head).unwrap();
    assert_eq!(h.headers[0].1, "lead and trail");
    assert_eq!(h.headers[1].1, "");
}

#[test]
fn a_nul_in_a_value_is_refused_not_split() {
    let head = encode_response_head(
        b"200 OK",
        &[(b"Content-Disposition", b"attachment\0set-cookie\0x")],
    );
    assert_eq!(
        parse_response_head(&head).unwrap_err().to_string(),
        "invalid value for header content-disposition: control characters are not allowed"
    );
    let head = encode_response_head(b"200 OK\r\nSet-Cookie: x", &[]);
    assert!(matches!(
        parse_response_head(&head),
        Err(HeadError::Reason(_))
    ));
    let head = encode_response_head(b"200 OK", &[(b"Bad Name", b"x")]);
    assert_eq!(
        parse_response_head(&head).unwrap_err(),
        HeadError::Name("\"Bad Name\"".into())
    );
}

#[test]
fn latin1_reasons_are_kept_as_bytes() {
    let head = encode_response_head(b"200 Caf\xe9 \xe9\xe9\xe9", &[]);
    let h = parse_response_head(&head).unwrap();
    assert_eq!(h.reason.unwrap().as_bytes(), b"Caf\xe9 \xe9\xe9\xe9");
}

#[test]
fn cut_or_padded_heads_are_malformed() {
    let head = encode_response_head(b"200 OK", &[(b"A", b"b")]);
    for end in 0..head.len() {
        assert!(parse_response_head(&head.slice(..end)).is_err(), "{end}");
    }
    let mut padded = head.to_vec();
    padded.push(b'x');
    assert!(parse_response_head(&padded.into()).is_err());
    for line in [
        &b"42"[..],
        b"042 x",
        b"2000",
        b"20x OK",
        b"200\tOK",
        b"\xe9\xe9\xe9",
    ] {
        let head = encode_response_head(line, &[]);
        assert!(
            matches!(parse_response_head(&head), Err(HeadError::Status(_))),
            "{line:?}"
        );
    }
    assert_eq!(
        parse_response_head(&encode_response_head(b"204", &[]))
            .unwrap()
            .status,
        204
    );
}

#[test]
fn accept_payload_has_subprotocol_and_headers() {
    let p = Bytes::from(encode_fields(b"chat", &[(b"X-Id", b"7")]));
    let a = parse_accept(&p).unwrap();
    assert_eq!(a.subprotocol.unwrap(), "chat");
    assert_eq!(a.headers[0].0, "x-id");
    let p = Bytes::from(encode_fields(b"", &[(b"X-Id", b"7\r\nx: y")]));
    assert!(parse_accept(&p).is_err());
}

/// Property tests of the decoders: any bytes a worker sends are decoded
/// or refused, never a panic. 256 cases each by default; for a longer
/// run: `PROPTEST_CASES=100000 cargo test --bin corral protocol::tests::props`.
mod props {
    use super::*;
    use proptest::prelude::*;

    /// A few frames: kinds, streams and payloads, some over the size
    /// that is split off the read buffer instead of copied.
    fn frames() -> impl Strategy<Value = Vec<(FrameKind, u32, Vec<u8>)>> {
        let payload = prop_oneof![
            8 => proptest::collection::vec(any::<u8>(), 0..100),
            1 => (COPY_BELOW - 2..COPY_BELOW + 100).prop_map(|n| vec![7u8; n]),
        ];
        let kind = prop::sample::select(FrameKind::ALL.to_vec());
        proptest::collection::vec((kind, any::<u32>(), payload), 0..6)
    }

    /// An RFC 9110 token.
    fn token() -> impl Strategy<Value = Vec<u8>> {
        let tchar = prop::sample::select(
            b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                .to_vec(),
        );
        proptest::collection::vec(tchar, 1..20)
    }

    /// A field value (or reason): HTAB, SP, visible ASCII, obs-text.
    fn text(max: usize) -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff,];
        proptest::collection::vec(byte, 0..max)
    }

    /// Status, reason and header pairs.
    type Head = (u16, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

    fn head() -> impl Strategy<Value = Head> {
        (
            100u16..1000,
            text(30),
            proptest::collection::vec((token(), text(40)), 0..8),
        )
    }

    fn head_bytes((status, reason, headers): &Head) -> Bytes {
        let mut line = status.to_string().into_bytes();
        if !reason.is_empty() {
            line.push(b' ');
            line.extend_from_slice(reason);
        }
        let pairs: Vec<(&[u8], &[u8])> = headers.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        encode_response_head(&line, &pairs)
    }

    proptest! {
        #[test]
        fn decode_never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = decode(&mut buf) {
                prop_assert!(frame.payload.len() <= MAX_INCOMING_FRAME);
            }
        }

        #[test]
        fn frames_round_trip_however_the_input_is_cut(
            frames in frames(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let wire: Vec<u8> = frames.iter().flat_map(|(k, s, p)| encode(*k, *s, p).to_vec()).collect();
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            cuts.push(wire.len());
            cuts.sort_unstable();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut from = 0;
            for to in cuts {
                buf.extend_from_slice(&wire[from..to]);
                from = to;
                while let Some(f) = decode(&mut buf).unwrap() {
                    got.push((f.kind.unwrap(), f.stream, f.payload.to_vec()));
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn response_heads_never_panic_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let bytes = Bytes::from(bytes);
            let _ = parse_response_head(&bytes);
            let _ = parse_accept(&bytes);
        }

        #[test]
        fn mutated_heads_never_panic(
            head in head(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = head_bytes(&head).to_vec();
            for (at, byte) in edits {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            if let Ok(h) = parse_response_head(&Bytes::from(bytes)) {
                for (_, value) in &h.headers {
                    prop_assert!(value.as_bytes().iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)));
                }
            }
        }

        #[test]
        fn valid_heads_round_trip(head in head()) {
            let h = parse_response_head(&head_bytes(&head)).unwrap();
            let (status, reason, headers) = head;
            prop_assert_eq!(h.status.as_u16(), status);
            prop_assert_eq!(h.reason.as_ref().map_or(&b""[..], |r| r.as_bytes()), &reason[..]);
            prop_assert_eq!(h.headers.len(), headers.len());
            for ((name, value), (n, v)) in h.headers.iter().zip(&headers) {
                prop_assert_eq!(name.as_str().as_bytes(), &n.to_ascii_lowercase()[..]);
                prop_assert_eq!(value.as_bytes(), v.trim_ascii_start().trim_ascii_end());
            }
        }

        #[test]
        fn a_control_character_in_any_value_is_refused(
            head in head().prop_filter("a header", |h| !h.2.is_empty()),
            which in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            ctl in prop_oneof![0u8..9, 10u8..32, Just(0x7f)],
        ) {
            let mut head = head;
            let i = which.index(head.2.len());
            let value = &mut head.2[i].1;
            let at = at.index(value.len() + 1);
            value.insert(at, ctl);
            let name = HeaderName::from_bytes(&head.2[i].0).unwrap();
            // The first bad header is the one named.
            match parse_response_head(&head_bytes(&head)) {
                Err(HeadError::Value(n)) => prop_assert!(n == name || head.2[..i].iter().any(|(_, v)| v.contains(&ctl))),
                other => prop_assert!(false, "{other:?}"),
            }
        }
    }
}

#[test]
fn a_head_with_more_fields_than_a_response_may_carry_is_refused() {
    let names: Vec<String> = (0..=MAX_RESPONSE_FIELDS)
        .map(|i| format!("x-{i}"))
        .collect();
    let fields: Vec<(&[u8], &[u8])> = names.iter().map(|n| (n.as_bytes(), &b"v"[..])).collect();
    let head = encode_response_head(b"200 OK", &fields);
    assert!(matches!(
        parse_response_head(&head),
        Err(HeadError::TooManyFields(n)) if n == MAX_RESPONSE_FIELDS + 1
    ));
    let head = encode_response_head(b"200 OK", &fields[..MAX_RESPONSE_FIELDS]);
    let parsed = parse_response_head(&head).expect("the most a response may carry");
    // As many as a response may carry fit in a HeaderMap.
    let mut map = http::HeaderMap::new();
    map.reserve(parsed.headers.len() + 1);
    for (n, v) in parsed.headers {
        map.append(n, v);
    }
    assert_eq!(map.len(), MAX_RESPONSE_FIELDS);
}
