//! The key=value text of Login and Text PDUs (RFC 7143 §6.1, §5.1): parsing,
//! building, reassembly of text split by the C bit, splitting of long answers,
//! and the value encodings (numbers, hex `0x…` and base64 `0b…` binaries).
//!
//! This is the control path: it may allocate.

use std::fmt;

/// Longest key name (RFC 7143 §6.1).
pub const MAX_KEY_LEN: usize = 63;

/// Longest simple value, not counting its delimiter (RFC 7143 §6.1). Applied
/// to each comma-separated element of a list.
pub const MAX_VALUE_LEN: usize = 255;

/// Longest binary value accepted, decoded (CHAP_C/CHAP_R are "large binary"
/// values; open-iscsi and libiscsi stay far below this).
pub const MAX_BINARY_LEN: usize = 1024;

/// The most text one negotiation may carry across Continue PDUs. RFC 7143 asks
/// for at least 8192 bytes; this bounds what a peer can make us buffer.
pub const MAX_TEXT_LEN: usize = 64 * 1024;

/// The most text in one Login Request/Response: MaxRecvDataSegmentLength
/// is not in force until the full feature phase, so its default applies.
pub const LOGIN_SEGMENT_LEN: usize = 8192;

/// One key=value pair, borrowed from the received text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyValue<'a> {
    pub key: &'a str,
    pub value: &'a str,
}

/// Malformed text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TextError {
    /// The last pair has no NUL after it.
    MissingNul,
    /// A pair has no '='.
    MissingEquals,
    /// A key that is empty, longer than 63 bytes or has characters keys
    /// cannot have.
    BadKey,
    /// Text that is not UTF-8.
    NotUtf8,
    /// A value (or one element of a list) longer than the RFC allows.
    ValueTooLong(String),
    /// The same key twice in one negotiation (RFC 7143 §6.2: a login
    /// failure during login, a Reject in the full feature phase).
    DuplicateKey(String),
    /// More text than [`MAX_TEXT_LEN`].
    TooLong,
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::MissingNul => f.write_str("text does not end with NUL"),
            TextError::MissingEquals => f.write_str("key=value pair without '='"),
            TextError::BadKey => f.write_str("malformed key name"),
            TextError::NotUtf8 => f.write_str("text is not UTF-8"),
            TextError::ValueTooLong(k) => write!(f, "value of {k} too long"),
            TextError::DuplicateKey(k) => write!(f, "key {k} sent twice"),
            TextError::TooLong => f.write_str("text too long"),
        }
    }
}

impl std::error::Error for TextError {}

/// Key characters: RFC 7143's letters, digits, `.`, `-`, `+`, `@`, `_`, plus
/// `:` and `#` (for `X#` public extension keys).
fn key_char_ok(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+' | b'@' | b'_' | b':' | b'#')
}

/// Whether a value is binary-encoded (`0x…` hex or `0b…` base64).
fn is_binary_encoded(value: &str) -> bool {
    let b = value.as_bytes();
    b.len() > 2 && b[0] == b'0' && matches!(b[1], b'x' | b'X' | b'b' | b'B')
}

fn check_value_len(key: &str, value: &str) -> Result<(), TextError> {
    let too_long = if is_binary_encoded(value) {
        // Hex of MAX_BINARY_LEN bytes is the longest encoding.
        value.len() > 2 + 2 * MAX_BINARY_LEN
    } else {
        value.split(',').any(|v| v.len() > MAX_VALUE_LEN)
    };
    if too_long {
        Err(TextError::ValueTooLong(key.to_string()))
    } else {
        Ok(())
    }
}

/// Parses a complete text (all Continue PDUs joined): `key=value\0` pairs.
/// Empty strings between NULs are skipped (some initiators pad with NULs);
/// the last pair must end with a NUL. A key present twice is an error.
pub fn parse(text: &[u8]) -> Result<Vec<KeyValue<'_>>, TextError> {
    if text.len() > MAX_TEXT_LEN {
        return Err(TextError::TooLong);
    }
    if text.last().is_some_and(|&b| b != 0) {
        return Err(TextError::MissingNul);
    }
    let mut pairs: Vec<KeyValue<'_>> = Vec::new();
    for item in text.split(|&b| b == 0).filter(|item| !item.is_empty()) {
        let eq = item
            .iter()
            .position(|&b| b == b'=')
            .ok_or(TextError::MissingEquals)?;
        let (key, value) = (&item[..eq], &item[eq + 1..]);
        if key.is_empty() || key.len() > MAX_KEY_LEN || !key.iter().all(|&c| key_char_ok(c)) {
            return Err(TextError::BadKey);
        }
        // Key characters are ASCII, so only the value can be bad UTF-8.
        let key = std::str::from_utf8(key).map_err(|_| TextError::BadKey)?;
        let value = std::str::from_utf8(value).map_err(|_| TextError::NotUtf8)?;
        check_value_len(key, value)?;
        if pairs.iter().any(|p| p.key == key) {
            return Err(TextError::DuplicateKey(key.to_string()));
        }
        pairs.push(KeyValue { key, value });
    }
    Ok(pairs)
}

/// Builds text: each pair is written as `key=value\0`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TextWriter {
    buf: Vec<u8>,
}

impl TextWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `key=value\0`.
    pub fn push(&mut self, key: &str, value: &str) {
        self.buf.reserve(key.len() + value.len() + 2);
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.push(b'=');
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.push(0);
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Joins the data of PDUs sent with the C bit until the last one.
#[derive(Clone, Debug, Default)]
pub struct TextAssembler {
    buf: Vec<u8>,
}

impl TextAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one PDU's data; fails past [`MAX_TEXT_LEN`].
    pub fn push(&mut self, data: &[u8]) -> Result<(), TextError> {
        if self.buf.len() + data.len() > MAX_TEXT_LEN {
            return Err(TextError::TooLong);
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Whether nothing has been gathered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes the text gathered so far, leaving the assembler empty.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// Text to send in pieces of at most a data segment each (a key=value pair
/// may span PDUs, RFC 7143 §6.1).
#[derive(Clone, Debug, Default)]
pub struct TextSegments {
    text: Vec<u8>,
    sent: usize,
}

impl TextSegments {
    pub fn new(text: Vec<u8>) -> Self {
        TextSegments { text, sent: 0 }
    }

    /// The next piece of at most `max` bytes (at least 1) and whether more
    /// follow it (the C bit of the PDU that carries it).
    pub fn next_segment(&mut self, max: usize) -> (Vec<u8>, bool) {
        let end = self.text.len().min(self.sent + max.max(1));
        let piece = self.text[self.sent..end].to_vec();
        self.sent = end;
        (piece, self.sent < self.text.len())
    }

    /// Whether everything has been handed out.
    pub fn is_done(&self) -> bool {
        self.sent >= self.text.len()
    }
}

// ---------------------------------------------------------------------------
// Value encodings (RFC 7143 §5.1).

/// A value that is not a well-formed number or binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadValue;

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn decode_hex(digits: &[u8]) -> Result<Vec<u8>, BadValue> {
    if digits.is_empty() {
        return Err(BadValue);
    }
    // An odd count means a leading zero nibble.
    let mut out = Vec::with_capacity(digits.len().div_ceil(2));
    let (head, rest) = digits.split_at(digits.len() % 2);
    if let [h] = head {
        out.push(hex_digit(*h).ok_or(BadValue)?);
    }
    for pair in rest.chunks_exact(2) {
        let hi = hex_digit(pair[0]).ok_or(BadValue)?;
        let lo = hex_digit(pair[1]).ok_or(BadValue)?;
        out.push(hi << 4 | lo);
    }
    Ok(out)
}

fn base64_digit(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

fn decode_base64(text: &[u8]) -> Result<Vec<u8>, BadValue> {
    // Standard alphabet; '=' padding is optional but only at the end.
    let body_len = text.iter().rposition(|&c| c != b'=').map_or(0, |i| i + 1);
    let (body, padding) = text.split_at(body_len);
    if body.is_empty() || padding.len() > 2 || body.len() % 4 == 1 {
        return Err(BadValue);
    }
    if !padding.is_empty() && (body.len() + padding.len()) % 4 != 0 {
        return Err(BadValue);
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.chunks(4) {
        let mut acc: u32 = 0;
        for &c in chunk {
            acc = acc << 6 | u32::from(base64_digit(c).ok_or(BadValue)?);
        }
        let bits = chunk.len() * 6;
        acc <<= 24 - bits;
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..1 + bits / 8]);
    }
    Ok(out)
}

/// Decodes a binary value: `0x`/`0X` hex or `0b`/`0B` base64.
pub fn decode_binary(value: &str) -> Result<Vec<u8>, BadValue> {
    let b = value.as_bytes();
    if b.len() < 3 || b[0] != b'0' {
        return Err(BadValue);
    }
    let bytes = match b[1] {
        b'x' | b'X' => decode_hex(&b[2..])?,
        b'b' | b'B' => decode_base64(&b[2..])?,
        _ => return Err(BadValue),
    };
    if bytes.len() > MAX_BINARY_LEN {
        return Err(BadValue);
    }
    Ok(bytes)
}

/// Encodes bytes as `0x` and lowercase hex digits.
pub fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 + 2 * bytes.len());
    out.push_str("0x");
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Parses a numerical value: decimal, `0x` hex or `0b` base64 (big-endian),
/// at most 64 bits.
pub fn parse_number(value: &str) -> Result<u64, BadValue> {
    if is_binary_encoded(value) {
        let bytes = decode_binary(value)?;
        // Leading zero bytes do not count against the 64 bits.
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        if bytes.len() - start > 8 {
            return Err(BadValue);
        }
        return Ok(bytes[start..]
            .iter()
            .fold(0u64, |n, &b| n << 8 | u64::from(b)));
    }
    if value.is_empty() || !value.bytes().all(|c| c.is_ascii_digit()) {
        return Err(BadValue);
    }
    value.parse().map_err(|_| BadValue)
}

/// Whether `name` looks like an iSCSI name (`iqn.`, `eui.` or `naa.`
/// format; RFC 7143 §4.2.7), which is what a SendTargets value other than
/// `All` must be.
pub fn is_iscsi_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let body = ["iqn.", "eui.", "naa."]
        .iter()
        .find_map(|prefix| lower.strip_prefix(prefix));
    match body {
        Some(body) => !body.is_empty() && name.len() <= 223 && !name.contains(['\0', ',']),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv<'a>(key: &'a str, value: &'a str) -> KeyValue<'a> {
        KeyValue { key, value }
    }

    #[test]
    fn parses_pairs() {
        let text = b"InitiatorName=iqn.2026-11.test:i\0SessionType=Normal\0Empty=\0";
        assert_eq!(
            parse(text).unwrap(),
            vec![
                kv("InitiatorName", "iqn.2026-11.test:i"),
                kv("SessionType", "Normal"),
                kv("Empty", "")
            ]
        );
        // A value may hold '='; extra NULs are skipped; nothing is nothing.
        assert_eq!(parse(b"A=b=c\0\0\0").unwrap(), vec![kv("A", "b=c")]);
        assert_eq!(parse(b"").unwrap(), vec![]);
        assert_eq!(parse(b"\0\0").unwrap(), vec![]);
    }

    #[test]
    fn rejects_malformed_text() {
        assert_eq!(parse(b"A=b"), Err(TextError::MissingNul));
        assert_eq!(parse(b"A\0"), Err(TextError::MissingEquals));
        assert_eq!(parse(b"=b\0"), Err(TextError::BadKey));
        assert_eq!(parse(b"A B=b\0"), Err(TextError::BadKey));
        assert_eq!(parse(b"A=\xff\0"), Err(TextError::NotUtf8));
        assert_eq!(parse(b"A\xc3\xa9=b\0"), Err(TextError::BadKey));
        assert_eq!(
            parse(b"A=1\0B=2\0A=1\0"),
            Err(TextError::DuplicateKey("A".into()))
        );
        let long_key = format!("{}=1\0", "K".repeat(64));
        assert_eq!(parse(long_key.as_bytes()), Err(TextError::BadKey));
        let ok_key = format!("{}=1\0", "K".repeat(63));
        assert!(parse(ok_key.as_bytes()).is_ok());
    }

    #[test]
    fn value_length_limits() {
        let v255 = format!("A={}\0", "v".repeat(255));
        assert!(parse(v255.as_bytes()).is_ok());
        let v256 = format!("A={}\0", "v".repeat(256));
        assert_eq!(
            parse(v256.as_bytes()),
            Err(TextError::ValueTooLong("A".into()))
        );
        // The limit is per list element.
        let list = format!("A={},{}\0", "v".repeat(200), "w".repeat(200));
        assert!(parse(list.as_bytes()).is_ok());
        // Binary values may be up to 1024 bytes decoded.
        let hex = format!("CHAP_C=0x{}\0", "ab".repeat(1024));
        assert!(parse(hex.as_bytes()).is_ok());
        let hex = format!("CHAP_C=0x{}\0", "ab".repeat(1025));
        assert!(parse(hex.as_bytes()).is_err());
        let huge = vec![b'a'; MAX_TEXT_LEN + 1];
        assert_eq!(parse(&huge), Err(TextError::TooLong));
    }

    #[test]
    fn writer_and_segments() {
        let mut w = TextWriter::new();
        w.push("TargetName", "iqn.x");
        w.push("TargetAddress", "10.0.0.1:3260,1");
        assert_eq!(
            w.as_bytes(),
            b"TargetName=iqn.x\0TargetAddress=10.0.0.1:3260,1\0"
        );
        let text = w.into_bytes();
        let mut seg = TextSegments::new(text.clone());
        let mut joined = Vec::new();
        let mut pieces = 0;
        loop {
            let (piece, more) = seg.next_segment(7);
            assert!(piece.len() <= 7);
            joined.extend_from_slice(&piece);
            pieces += 1;
            if !more {
                break;
            }
        }
        assert!(seg.is_done());
        assert_eq!(joined, text);
        assert_eq!(pieces, text.len().div_ceil(7));

        let mut asm = TextAssembler::new();
        asm.push(&text[..5]).unwrap();
        asm.push(&text[5..]).unwrap();
        assert_eq!(asm.take(), text);
        assert!(asm.is_empty());
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("262144"), Ok(262144));
        assert_eq!(parse_number("0"), Ok(0));
        assert_eq!(parse_number("0x40000"), Ok(262144));
        assert_eq!(parse_number("0X00000000000000000001"), Ok(1));
        assert_eq!(parse_number("0bAAQAAA=="), Ok(0x0004_0000));
        assert_eq!(parse_number("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_number("18446744073709551616"), Err(BadValue));
        assert_eq!(parse_number("0x010000000000000000"), Err(BadValue));
        for bad in ["", "-1", "1.5", " 1", "12a", "0x", "0xg1", "Yes"] {
            assert_eq!(parse_number(bad), Err(BadValue), "{bad:?}");
        }
    }

    #[test]
    fn binaries() {
        assert_eq!(decode_binary("0x0102ff"), Ok(vec![1, 2, 0xff]));
        assert_eq!(decode_binary("0XABC"), Ok(vec![0x0a, 0xbc]));
        assert_eq!(decode_binary("0bAQL/"), Ok(vec![1, 2, 0xff]));
        assert_eq!(decode_binary("0bAQI="), Ok(vec![1, 2]));
        assert_eq!(decode_binary("0BAQ=="), Ok(vec![1]));
        assert_eq!(decode_binary("0bAQ"), Ok(vec![1]));
        for bad in [
            "0x", "0b", "x12", "0x1g", "0bA", "0b=AQ", "0bAQ===", "0bAQ=", "12",
        ] {
            assert_eq!(decode_binary(bad), Err(BadValue), "{bad:?}");
        }
        assert_eq!(encode_hex(&[0, 0xab, 0x7f]), "0x00ab7f");
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_binary(&encode_hex(&bytes)).unwrap(), bytes);
    }

    #[test]
    fn iscsi_names() {
        assert!(is_iscsi_name("iqn.2026-11.test:target"));
        assert!(is_iscsi_name("eui.02004567A425678D"));
        assert!(is_iscsi_name("naa.52004567BA64678D"));
        assert!(!is_iscsi_name("All"));
        assert!(!is_iscsi_name("Alle"));
        assert!(!is_iscsi_name("iqn."));
        assert!(!is_iscsi_name(""));
    }

    mod fuzz {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
                let _ = parse(&data);
            }

            #[test]
            fn parse_never_panics_on_texty_bytes(
                data in proptest::collection::vec(
                    prop_oneof![Just(0u8), Just(b'='), Just(b','), any::<u8>(), 0x41u8..0x5a],
                    0..400)
            ) {
                if let Ok(pairs) = parse(&data) {
                    for p in pairs {
                        prop_assert!(!p.key.is_empty() && p.key.len() <= MAX_KEY_LEN);
                    }
                }
            }

            #[test]
            fn written_text_parses_back(
                pairs in proptest::collection::btree_map("[A-Z][A-Za-z0-9_.]{0,20}", "[ -~]{0,40}", 0..10)
            ) {
                let mut w = TextWriter::new();
                for (k, v) in &pairs {
                    w.push(k, v);
                }
                let bytes = w.into_bytes();
                let parsed = parse(&bytes).unwrap();
                prop_assert_eq!(parsed.len(), pairs.len());
                for (p, (k, v)) in parsed.iter().zip(pairs.iter()) {
                    prop_assert_eq!(p.key, k.as_str());
                    prop_assert_eq!(p.value, v.as_str());
                }
            }

            #[test]
            fn value_decoders_never_panic(s in "\\PC{0,80}") {
                let _ = parse_number(&s);
                let _ = decode_binary(&s);
                let _ = is_iscsi_name(&s);
            }

            #[test]
            fn hex_round_trips(bytes in proptest::collection::vec(any::<u8>(), 1..100)) {
                prop_assert_eq!(decode_binary(&encode_hex(&bytes)).unwrap(), bytes);
            }
        }
    }
}
