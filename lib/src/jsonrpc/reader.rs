//! Splits the byte stream of a connection into JSON values.
//!
//! Clients send one JSON value per request with no delimiter (SPDK's rpc.py sends
//! no newline) and may send several back to back, while reads split them
//! anywhere. serde's stream deserializer parses the complete values and leaves an
//! incomplete tail for the next read. Parsing a large request again on every read
//! would be quadratic, so a cheap scanner first watches the bytes as they arrive
//! and only lets serde try once a top-level value may have ended.

use serde_json::Value;

/// Why a connection's input cannot be read any further.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ReadError {
    /// Not JSON; the message says where.
    Syntax(String),
    /// A request larger than the limit.
    TooLarge(usize),
}

/// Buffers a connection's input and yields the JSON values in it.
pub(crate) struct RequestReader {
    buf: Vec<u8>,
    limit: usize,
    scanner: Scanner,
}

impl RequestReader {
    /// A reader refusing requests larger than `limit` bytes.
    pub(crate) fn new(limit: usize) -> RequestReader {
        RequestReader {
            buf: Vec::new(),
            limit,
            scanner: Scanner::default(),
        }
    }

    /// Bytes received but not yet parsed.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Adds bytes received from the connection.
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Moves the complete values received so far into `values`. An error ends
    /// the stream: values before it are still delivered, nothing after it is.
    pub(crate) fn read_values(&mut self, values: &mut Vec<Value>) -> Result<(), ReadError> {
        if !self.scanner.may_have_ended(&self.buf) {
            return self.check_limit();
        }
        let mut stream = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
        let outcome = loop {
            match stream.next() {
                Some(Ok(value)) => values.push(value),
                None => break Ok(()),
                Some(Err(e)) if e.is_eof() => break Ok(()),
                Some(Err(e)) => break Err(ReadError::Syntax(e.to_string())),
            }
        };
        let consumed = stream.byte_offset();
        self.buf.drain(..consumed);
        // The tail starts a fresh value; scan it from its beginning next time.
        self.scanner = Scanner::default();
        outcome?;
        self.check_limit()
    }

    fn check_limit(&self) -> Result<(), ReadError> {
        if self.buf.len() > self.limit {
            return Err(ReadError::TooLarge(self.limit));
        }
        Ok(())
    }
}

/// Follows the nesting of the bytes seen so far, just enough to tell when a
/// top-level value may have ended. It does not validate: serde does.
#[derive(Default)]
struct Scanner {
    /// How many bytes of the buffer have been scanned.
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// A top-level value may have ended (or something serde should judge appeared).
    ended: bool,
}

impl Scanner {
    fn may_have_ended(&mut self, buf: &[u8]) -> bool {
        for &byte in &buf[self.scanned..] {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if byte == b'\\' {
                    self.escaped = true;
                } else if byte == b'"' {
                    self.in_string = false;
                    self.ended |= self.depth == 0;
                }
                continue;
            }
            match byte {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    // A stray closer at the top level is a syntax error for serde.
                    self.depth = self.depth.saturating_sub(1);
                    self.ended |= self.depth == 0;
                }
                b' ' | b'\t' | b'\r' | b'\n' => {}
                // A number or literal at the top level ends at no bracket: let serde
                // look (it is an invalid request anyway).
                _ => self.ended |= self.depth == 0,
            }
        }
        self.scanned = buf.len();
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn feed(reader: &mut RequestReader, bytes: &[u8]) -> Result<Vec<Value>, ReadError> {
        reader.extend(bytes);
        let mut values = Vec::new();
        reader.read_values(&mut values)?;
        Ok(values)
    }

    const REQUEST: &str =
        r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"s":"a \"}]{ \\","n":[1,{"x":2}]}}"#;

    #[test]
    fn request_split_at_every_byte() {
        let expected: Value = serde_json::from_str(REQUEST).unwrap();
        for split in 0..REQUEST.len() {
            let mut reader = RequestReader::new(1 << 20);
            let (a, b) = REQUEST.as_bytes().split_at(split);
            let first = feed(&mut reader, a).unwrap();
            let second = feed(&mut reader, b).unwrap();
            let all: Vec<Value> = first.into_iter().chain(second).collect();
            assert_eq!(all, vec![expected.clone()], "split at {split}");
            assert_eq!(reader.buffered(), 0);
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let mut reader = RequestReader::new(1 << 20);
        let mut values = Vec::new();
        for byte in REQUEST.bytes().chain(b"\n[1, 2]".iter().copied()) {
            values.extend(feed(&mut reader, &[byte]).unwrap());
        }
        assert_eq!(values.len(), 2);
        assert_eq!(values[1], json!([1, 2]));
    }

    #[test]
    fn back_to_back_values_and_a_tail() {
        let mut reader = RequestReader::new(1 << 20);
        let values = feed(&mut reader, br#"{"a":1}{"b":2} [3]{"c":"#).unwrap();
        assert_eq!(values, vec![json!({"a":1}), json!({"b":2}), json!([3])]);
        assert_eq!(reader.buffered(), 5);
        let values = feed(&mut reader, br#"4}"#).unwrap();
        assert_eq!(values, vec![json!({"c":4})]);
    }

    #[test]
    fn batch_is_one_value() {
        let mut reader = RequestReader::new(1 << 20);
        let values = feed(&mut reader, br#"[{"a":1},{"b":2}]"#).unwrap();
        assert_eq!(values, vec![json!([{"a":1},{"b":2}])]);
    }

    #[test]
    fn bad_json_is_a_syntax_error_after_the_good_values() {
        let mut reader = RequestReader::new(1 << 20);
        let mut values = Vec::new();
        reader.extend(br#"{"a":1} {"b":}"#);
        let err = reader.read_values(&mut values).unwrap_err();
        assert_eq!(values, vec![json!({"a":1})]);
        assert!(matches!(err, ReadError::Syntax(_)), "{err:?}");

        for garbage in [&b"}"[..], b"hello", b"{\"a\" 1}", b"{]"] {
            let mut reader = RequestReader::new(1 << 20);
            let err = feed(&mut reader, garbage).unwrap_err();
            assert!(matches!(err, ReadError::Syntax(_)), "{garbage:?}: {err:?}");
        }
    }

    #[test]
    fn top_level_scalars_are_values() {
        let mut reader = RequestReader::new(1 << 20);
        let values = feed(&mut reader, b"1 \"two\" null ").unwrap();
        assert_eq!(values, vec![json!(1), json!("two"), Value::Null]);
    }

    #[test]
    fn request_over_the_limit() {
        let mut reader = RequestReader::new(16);
        assert!(feed(&mut reader, br#"{"a":"#).unwrap().is_empty());
        let err = feed(&mut reader, b"\"0123456789abcdef").unwrap_err();
        assert_eq!(err, ReadError::TooLarge(16));
    }
}
