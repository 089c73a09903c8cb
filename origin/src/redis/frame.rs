//! Pure RESP2 parsing for the lean `MGET` reader: lines, lengths and bulk strings, from a byte
//! slice that may end anywhere. Nothing here touches a socket (the split mini-redis makes between
//! `frame.rs` and `connection.rs`), so every cut of a reply can be tested, and the property tests
//! check it against redis-rs's own parser.

/// A reply that is not what was asked for, or not RESP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FrameError(pub String);

/// One bulk string of an array: its bytes, or `None` for nil (a missing key).
pub type Bulk<'a> = Option<&'a [u8]>;

/// The first CRLF-terminated line of `data` (without the CRLF) and the bytes it took, or `None`
/// when `data` holds no complete line yet.
pub fn line(data: &[u8]) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(newline) = data.iter().position(|&b| b == b'\n') else { return Ok(None) };
    if newline == 0 || data[newline - 1] != b'\r' {
        return Err(FrameError("reply line without CRLF".into()));
    }
    Ok(Some((&data[..newline - 1], newline + 1)))
}

/// The integer after a line's type byte (`*3`, `$-1`).
pub fn number(line: &[u8]) -> Result<i64, FrameError> {
    std::str::from_utf8(line.get(1..).unwrap_or_default())
        .ok()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| FrameError(format!("bad length in {:?}", String::from_utf8_lossy(line))))
}

/// The header of an array reply of `expected` elements: the bytes it took, or `None` when it has
/// not fully arrived. A server error (`-ERR …`) or any other reply is an error carrying its text.
pub fn array_header(data: &[u8], expected: usize) -> Result<Option<usize>, FrameError> {
    let Some((header, used)) = line(data)? else { return Ok(None) };
    match header.first() {
        Some(b'*') if number(header)? == expected as i64 => Ok(Some(used)),
        Some(b'-') => Err(FrameError(String::from_utf8_lossy(&header[1..]).into_owned())),
        _ => Err(FrameError(format!("expected an array of {expected}, got {:?}", String::from_utf8_lossy(header)))),
    }
}

/// The bulk string at the start of `data` and the bytes it took, or `None` when it has not fully
/// arrived.
pub fn bulk(data: &[u8]) -> Result<Option<(Bulk<'_>, usize)>, FrameError> {
    let Some((header, header_len)) = line(data)? else { return Ok(None) };
    if header.first() != Some(&b'$') {
        return Err(FrameError(format!("expected a bulk string, got {:?}", String::from_utf8_lossy(header))));
    }
    let len = number(header)?;
    if len < 0 {
        return Ok(Some((None, header_len)));
    }
    let len = len as usize;
    if data.len() < header_len + len + 2 {
        return Ok(None);
    }
    if &data[header_len + len..header_len + len + 2] != b"\r\n" {
        return Err(FrameError("bulk string without CRLF".into()));
    }
    Ok(Some((Some(&data[header_len..header_len + len]), header_len + len + 2)))
}

/// Parses as many complete bulk strings from `data` as it holds (at most `*remaining`), handing
/// each to `each`; returns the bytes used. One pass over the buffer, no await per element.
pub fn bulks(data: &[u8], remaining: &mut usize, mut each: impl FnMut(Bulk<'_>)) -> Result<usize, FrameError> {
    let mut used = 0;
    while *remaining > 0 {
        let Some((value, taken)) = bulk(&data[used..])? else { break };
        each(value);
        used += taken;
        *remaining -= 1;
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulks_parse_only_what_has_fully_arrived() {
        let full = b"$3\r\nabc\r\n$-1\r\n$0\r\n\r\n";
        for cut in 0..=full.len() {
            let (mut remaining, mut out) = (3, Vec::<Option<Vec<u8>>>::new());
            let used = bulks(&full[..cut], &mut remaining, |b| out.push(b.map(<[u8]>::to_vec))).unwrap();
            let more = bulks(&full[used..], &mut remaining, |b| out.push(b.map(<[u8]>::to_vec))).unwrap();
            assert_eq!((used + more, remaining), (full.len(), 0), "cut at {cut}");
            assert_eq!(out, vec![Some(b"abc".to_vec()), None, Some(Vec::new())], "cut at {cut}");
        }
    }

    #[test]
    fn headers_and_errors() {
        assert_eq!(array_header(b"*2\r\n", 2), Ok(Some(4)));
        assert_eq!(array_header(b"*2\r", 2), Ok(None));
        assert!(array_header(b"*3\r\n", 2).is_err());
        assert_eq!(array_header(b"-ERR wrong kind\r\n", 2), Err(FrameError("ERR wrong kind".into())));
        assert!(bulk(b"+OK\r\n").is_err());
        assert!(bulk(b"$3\r\nabcd\r\n").is_err(), "length and CRLF disagree");
        assert!(line(b"x\n").is_err());
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// An `MGET` reply of `values` (None = nil), as a Redis server writes it.
        fn encode(values: &[Option<Vec<u8>>]) -> Vec<u8> {
            let mut out = format!("*{}\r\n", values.len()).into_bytes();
            for value in values {
                match value {
                    None => out.extend_from_slice(b"$-1\r\n"),
                    Some(bytes) => {
                        out.extend_from_slice(format!("${}\r\n", bytes.len()).as_bytes());
                        out.extend_from_slice(bytes);
                        out.extend_from_slice(b"\r\n");
                    }
                }
            }
            out
        }

        /// Parses a whole reply delivered in two pieces split at `cut`, as a socket may deliver it.
        fn parse_in_two(reply: &[u8], expected: usize, cut: usize) -> Result<Vec<Option<Vec<u8>>>, FrameError> {
            let header = array_header(reply, expected)?.expect("a whole reply has its header");
            let body = &reply[header..];
            let cut = cut.min(body.len());
            let (mut remaining, mut out) = (expected, Vec::new());
            let used = bulks(&body[..cut], &mut remaining, |b| out.push(b.map(<[u8]>::to_vec)))?;
            let rest = bulks(&body[used..], &mut remaining, |b| out.push(b.map(<[u8]>::to_vec)))?;
            assert_eq!((used + rest, remaining), (body.len(), 0), "every byte used, every value read");
            Ok(out)
        }

        proptest! {
            /// Whatever the values (binary, CRLF inside, empty, nil) and wherever the reply is cut,
            /// our parser reads what redis-rs's own parser reads.
            #[test]
            fn bulk_arrays_parse_as_redis_rs_parses_them(
                values in prop::collection::vec(prop::option::of(prop::collection::vec(any::<u8>(), 0..40)), 0..20),
                cut in 0usize..2000,
            ) {
                let reply = encode(&values);
                let ours = parse_in_two(&reply, values.len(), cut).unwrap();
                let theirs = match redis::parse_redis_value(&reply).unwrap() {
                    redis::Value::Array(items) => items
                        .into_iter()
                        .map(|item| match item {
                            redis::Value::BulkString(bytes) => Some(bytes),
                            redis::Value::Nil => None,
                            other => panic!("unexpected {other:?}"),
                        })
                        .collect::<Vec<_>>(),
                    other => panic!("unexpected {other:?}"),
                };
                prop_assert_eq!(&ours, &theirs);
                prop_assert_eq!(&ours, &values);
            }

            /// Arbitrary bytes never panic the parser: they parse, wait for more, or are refused.
            #[test]
            fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..200), expected in 0usize..5) {
                let _ = array_header(&data, expected);
                let mut remaining = expected;
                let _ = bulks(&data, &mut remaining, |_| {});
            }
        }
    }
}
