//! CHAP (RFC 1994) as iSCSI uses it (RFC 7143 §12.1.3), target side, with
//! MD5 (CHAP_A=5), the one algorithm RFC 7143 requires.
//!
//! The exchange, in the security stage after `AuthMethod=CHAP` is agreed:
//!
//! ```text
//! initiator: CHAP_A=<A1,A2,...>
//! target:    CHAP_A=5 CHAP_I=<id> CHAP_C=<challenge>
//! initiator: CHAP_N=<user> CHAP_R=<response> [CHAP_I=<id2> CHAP_C=<challenge2>]
//! target:    [CHAP_N=<target user> CHAP_R=<response2>]   (mutual CHAP)
//! ```
//!
//! where response = MD5(id || secret || challenge). Binary values arrive as
//! hex (`0x…`) or base64 (`0b…`); they leave as hex. CHAP_N is a plain string
//! even when it looks like hex (libiscsi tests that).
//!
//! Refused, as RFC 7143 §12.1.3 asks: a mutual challenge equal to the one the
//! target sent (reflection), and an initiator response equal to the one the
//! target's own secret would give (the same secret used both ways).
//!
//! Secret length: RFC 7143 wants 96 random bits (12 bytes) unless IPsec
//! protects the connection, and says an implementation SHOULD NOT send a
//! CHAP_R with a shorter secret. libiscsi's own CHAP tests use 8-byte secrets
//! ("libiscsi", "outgoing") against tgtd, which, like LIO and open-iscsi,
//! enforces no minimum. So the minimum is the caller's choice
//! ([`VerifyOptions::min_secret_len`]); [`RECOMMENDED_MIN_SECRET_LEN`] is the
//! RFC's figure, for a configuration layer to warn about.

use std::fmt;
use std::sync::atomic::{compiler_fence, Ordering};

use md5::{Digest, Md5};

use super::text::{decode_binary, encode_hex, parse_number};

/// CHAP_A value of CHAP with MD5.
pub const CHAP_MD5: u64 = 5;

/// Length of the challenges the target sends (LIO sends 16 as well).
pub const CHALLENGE_LEN: usize = 16;

/// Length of an MD5 CHAP response.
pub const RESPONSE_LEN: usize = 16;

/// RFC 7143's minimum secret without IPsec: 96 bits.
pub const RECOMMENDED_MIN_SECRET_LEN: usize = 12;

/// A CHAP secret. Not printed by `Debug`; zeroed (best effort) when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct ChapSecret(Vec<u8>);

impl ChapSecret {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        ChapSecret(secret.into())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Shorter than the RFC's 96 bits.
    pub fn is_weak(&self) -> bool {
        self.0.len() < RECOMMENDED_MIN_SECRET_LEN
    }
}

impl fmt::Debug for ChapSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChapSecret({} bytes)", self.0.len())
    }
}

impl Drop for ChapSecret {
    fn drop(&mut self) {
        self.0.fill(0);
        compiler_fence(Ordering::SeqCst);
    }
}

/// A CHAP user name and secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChapCredential {
    pub name: String,
    pub secret: ChapSecret,
}

/// Why CHAP failed. All of these end the login with Status 0x0201
/// (authentication failure), except [`ChapError::RandomUnavailable`]
/// (0x0300, target error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChapError {
    /// CHAP_A named no algorithm we have (we have 5, MD5).
    NoSupportedAlgorithm,
    /// A CHAP key the step needs is missing.
    Missing(&'static str),
    /// A CHAP key with a malformed value.
    Malformed(&'static str),
    /// No secret for this CHAP_N.
    UnknownUser,
    /// The initiator's response does not match.
    WrongResponse,
    /// The initiator's mutual challenge is the target's own.
    ReflectedChallenge,
    /// The initiator used the target's secret.
    SameSecretBothWays,
    /// The initiator asked the target to authenticate, but the target has
    /// no credential.
    MutualNotConfigured,
    /// The target requires mutual CHAP and the initiator did not ask.
    MutualRequired,
    /// A secret shorter than the configured minimum.
    SecretTooShort,
    /// CHAP keys out of turn.
    OutOfOrder,
    /// No random numbers for a challenge.
    RandomUnavailable,
}

impl fmt::Display for ChapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChapError::NoSupportedAlgorithm => f.write_str("no supported CHAP_A algorithm"),
            ChapError::Missing(k) => write!(f, "{k} missing"),
            ChapError::Malformed(k) => write!(f, "{k} malformed"),
            ChapError::UnknownUser => f.write_str("unknown CHAP user"),
            ChapError::WrongResponse => f.write_str("wrong CHAP response"),
            ChapError::ReflectedChallenge => f.write_str("mutual challenge reflected"),
            ChapError::SameSecretBothWays => f.write_str("same CHAP secret used both ways"),
            ChapError::MutualNotConfigured => f.write_str("mutual CHAP asked, none configured"),
            ChapError::MutualRequired => f.write_str("mutual CHAP required"),
            ChapError::SecretTooShort => f.write_str("CHAP secret too short"),
            ChapError::OutOfOrder => f.write_str("CHAP keys out of order"),
            ChapError::RandomUnavailable => f.write_str("no random source"),
        }
    }
}

impl std::error::Error for ChapError {}

/// MD5(id || secret || challenge).
pub fn md5_response(id: u8, secret: &[u8], challenge: &[u8]) -> [u8; RESPONSE_LEN] {
    let mut md5 = Md5::new();
    md5.update([id]);
    md5.update(secret);
    md5.update(challenge);
    md5.finalize().into()
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The initiator's CHAP keys of the response step, as received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChapResponse<'a> {
    pub name: Option<&'a str>,
    pub response: Option<&'a str>,
    /// CHAP_I of a mutual challenge.
    pub mutual_id: Option<&'a str>,
    /// CHAP_C of a mutual challenge.
    pub mutual_challenge: Option<&'a str>,
}

/// What the target's configuration asks of the response step.
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyOptions<'a> {
    /// Secrets shorter than this are refused, in both directions.
    pub min_secret_len: usize,
    /// Fail unless the initiator asks the target to authenticate.
    pub require_mutual: bool,
    /// The target's own name and secret, for mutual CHAP.
    pub target_credential: Option<&'a ChapCredential>,
}

/// A successful CHAP exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChapSuccess {
    /// The authenticated CHAP_N.
    pub user: String,
    /// CHAP_N and CHAP_R to send back when the initiator asked for mutual
    /// authentication.
    pub mutual_reply: Option<(String, String)>,
}

#[derive(Clone, Debug)]
enum ChapState {
    AwaitingAlgorithm,
    AwaitingResponse {
        id: u8,
        challenge: [u8; CHALLENGE_LEN],
    },
    Done,
}

/// The target side of one CHAP exchange.
#[derive(Clone, Debug)]
pub struct ChapTarget {
    state: ChapState,
}

impl Default for ChapTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl ChapTarget {
    pub fn new() -> Self {
        ChapTarget {
            state: ChapState::AwaitingAlgorithm,
        }
    }

    /// Whether the challenge has been sent and the response is awaited.
    pub fn awaiting_response(&self) -> bool {
        matches!(self.state, ChapState::AwaitingResponse { .. })
    }

    /// Answers the initiator's CHAP_A list with CHAP_A, CHAP_I and CHAP_C
    /// (fresh random identifier and challenge).
    pub fn challenge(&mut self, chap_a: &str) -> Result<Vec<(&'static str, String)>, ChapError> {
        let mut random = [0u8; 1 + CHALLENGE_LEN];
        getrandom::fill(&mut random).map_err(|_| ChapError::RandomUnavailable)?;
        let mut challenge = [0u8; CHALLENGE_LEN];
        challenge.copy_from_slice(&random[1..]);
        self.challenge_with(chap_a, random[0], challenge)
    }

    /// [`ChapTarget::challenge`] with a given identifier and challenge.
    pub fn challenge_with(
        &mut self,
        chap_a: &str,
        id: u8,
        challenge: [u8; CHALLENGE_LEN],
    ) -> Result<Vec<(&'static str, String)>, ChapError> {
        if !matches!(self.state, ChapState::AwaitingAlgorithm) {
            return Err(ChapError::OutOfOrder);
        }
        // "56" is not "5": compare whole list elements (libiscsi checks).
        if !chap_a.split(',').any(|a| parse_number(a) == Ok(CHAP_MD5)) {
            return Err(ChapError::NoSupportedAlgorithm);
        }
        self.state = ChapState::AwaitingResponse { id, challenge };
        Ok(vec![
            ("CHAP_A", CHAP_MD5.to_string()),
            ("CHAP_I", id.to_string()),
            ("CHAP_C", encode_hex(&challenge)),
        ])
    }

    /// Checks CHAP_N/CHAP_R against the secret `secret_of(CHAP_N)` and, for
    /// mutual CHAP, answers the initiator's challenge.
    pub fn verify(
        &mut self,
        keys: &ChapResponse<'_>,
        secret_of: impl FnOnce(&str) -> Option<ChapSecret>,
        options: &VerifyOptions<'_>,
    ) -> Result<ChapSuccess, ChapError> {
        let ChapState::AwaitingResponse { id, challenge } = self.state else {
            return Err(ChapError::OutOfOrder);
        };
        // Whatever happens now, this challenge is spent.
        self.state = ChapState::Done;

        let name = keys.name.ok_or(ChapError::Missing("CHAP_N"))?;
        let response = keys.response.ok_or(ChapError::Missing("CHAP_R"))?;
        let response = decode_binary(response).map_err(|_| ChapError::Malformed("CHAP_R"))?;
        if response.len() != RESPONSE_LEN {
            return Err(ChapError::Malformed("CHAP_R"));
        }
        let secret = secret_of(name).ok_or(ChapError::UnknownUser)?;
        if secret.len() < options.min_secret_len.max(1) {
            return Err(ChapError::SecretTooShort);
        }
        let expected = md5_response(id, secret.as_bytes(), &challenge);
        if !constant_time_eq(&expected, &response) {
            return Err(ChapError::WrongResponse);
        }
        if let Some(target) = options.target_credential {
            let ours = md5_response(id, target.secret.as_bytes(), &challenge);
            if constant_time_eq(&ours, &response) {
                return Err(ChapError::SameSecretBothWays);
            }
        }

        let mutual_reply = match (keys.mutual_id, keys.mutual_challenge) {
            (None, None) if options.require_mutual => return Err(ChapError::MutualRequired),
            (None, None) => None,
            (None, Some(_)) => return Err(ChapError::Missing("CHAP_I")),
            (Some(_), None) => return Err(ChapError::Missing("CHAP_C")),
            (Some(mutual_id), Some(mutual_challenge)) => {
                let target = options
                    .target_credential
                    .ok_or(ChapError::MutualNotConfigured)?;
                let mutual_id = parse_number(mutual_id)
                    .ok()
                    .and_then(|n| u8::try_from(n).ok())
                    .ok_or(ChapError::Malformed("CHAP_I"))?;
                let mutual_challenge =
                    decode_binary(mutual_challenge).map_err(|_| ChapError::Malformed("CHAP_C"))?;
                if constant_time_eq(&mutual_challenge, &challenge) {
                    return Err(ChapError::ReflectedChallenge);
                }
                if target.secret.len() < options.min_secret_len.max(1) {
                    return Err(ChapError::SecretTooShort);
                }
                let answer = md5_response(mutual_id, target.secret.as_bytes(), &mutual_challenge);
                Some((target.name.clone(), encode_hex(&answer)))
            }
        };
        Ok(ChapSuccess {
            user: name.to_string(),
            mutual_reply,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHALLENGE: [u8; CHALLENGE_LEN] = [
        0x10, 0x21, 0x32, 0x43, 0x54, 0x65, 0x76, 0x87, 0x98, 0xa9, 0xba, 0xcb, 0xdc, 0xed, 0xfe,
        0x0f,
    ];

    fn credential(name: &str, secret: &str) -> ChapCredential {
        ChapCredential {
            name: name.into(),
            secret: ChapSecret::new(secret),
        }
    }

    fn secret_for(user: &str) -> Option<ChapSecret> {
        (user == "libiscsi").then(|| ChapSecret::new("libiscsi"))
    }

    fn challenged() -> ChapTarget {
        let mut chap = ChapTarget::new();
        let answer = chap.challenge_with("5", 7, CHALLENGE).unwrap();
        assert_eq!(
            answer,
            vec![
                ("CHAP_A", "5".to_string()),
                ("CHAP_I", "7".to_string()),
                ("CHAP_C", "0x102132435465768798a9bacbdcedfe0f".to_string()),
            ]
        );
        chap
    }

    // A known MD5 vector, independent of md5_response: RFC 1321's "abc".
    #[test]
    fn md5_is_md5() {
        let mut md5 = Md5::new();
        md5.update(b"abc");
        let out: [u8; 16] = md5.finalize().into();
        assert_eq!(encode_hex(&out), "0x900150983cd24fb0d6963f7d28e17f72");
        // id || secret || challenge is one MD5 over the concatenation.
        assert_eq!(md5_response(b'a', b"b", b"c"), out);
    }

    #[test]
    fn picks_md5_from_the_list() {
        for list in ["5", "5,6,7,8", "7,5", "0x05", "8,7,6,5"] {
            let mut chap = ChapTarget::new();
            assert!(chap.challenge_with(list, 1, CHALLENGE).is_ok(), "{list}");
        }
        for list in ["", "56", "6,7", "MD5", "5.0"] {
            let mut chap = ChapTarget::new();
            assert_eq!(
                chap.challenge_with(list, 1, CHALLENGE),
                Err(ChapError::NoSupportedAlgorithm),
                "{list}"
            );
        }
    }

    #[test]
    fn random_challenges_differ() {
        let mut a = ChapTarget::new();
        let mut b = ChapTarget::new();
        let ca = a.challenge("5").unwrap();
        let cb = b.challenge("5").unwrap();
        assert_eq!(ca[2].1.len(), 2 + 2 * CHALLENGE_LEN);
        assert_ne!(ca[2].1, cb[2].1);
    }

    #[test]
    fn one_way_success_hex_and_base64() {
        // The response computed here by hand: MD5(7 || "libiscsi" || challenge).
        let mut input = vec![7u8];
        input.extend_from_slice(b"libiscsi");
        input.extend_from_slice(&CHALLENGE);
        let mut md5 = Md5::new();
        md5.update(&input);
        let expected: [u8; 16] = md5.finalize().into();

        let hex = encode_hex(&expected);
        let mut chap = challenged();
        let ok = chap
            .verify(
                &ChapResponse {
                    name: Some("libiscsi"),
                    response: Some(&hex),
                    ..Default::default()
                },
                secret_for,
                &VerifyOptions::default(),
            )
            .unwrap();
        assert_eq!(ok.user, "libiscsi");
        assert_eq!(ok.mutual_reply, None);

        // Base64 of the same 16 bytes, as libiscsi's CHAP base64 test sends.
        let b64 = base64(&expected);
        let mut chap = challenged();
        assert!(chap
            .verify(
                &ChapResponse {
                    name: Some("libiscsi"),
                    response: Some(&format!("0b{b64}")),
                    ..Default::default()
                },
                secret_for,
                &VerifyOptions::default(),
            )
            .is_ok());
    }

    fn base64(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let mut n = 0u32;
            for (i, b) in chunk.iter().enumerate() {
                n |= u32::from(*b) << (16 - 8 * i);
            }
            for i in 0..=chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        while !out.len().is_multiple_of(4) {
            out.push('=');
        }
        out
    }

    fn respond(chap: &mut ChapTarget, keys: ChapResponse<'_>) -> Result<ChapSuccess, ChapError> {
        chap.verify(&keys, secret_for, &VerifyOptions::default())
    }

    #[test]
    fn one_way_failures() {
        let good = encode_hex(&md5_response(7, b"libiscsi", &CHALLENGE));
        let wrong = encode_hex(&md5_response(7, b"wrong", &CHALLENGE));
        let cases: Vec<(ChapResponse<'_>, ChapError)> = vec![
            (
                ChapResponse {
                    name: Some("libiscsi"),
                    response: Some(&wrong),
                    ..Default::default()
                },
                ChapError::WrongResponse,
            ),
            (
                ChapResponse {
                    name: Some("wrong"),
                    response: Some(&good),
                    ..Default::default()
                },
                ChapError::UnknownUser,
            ),
            (
                ChapResponse {
                    response: Some(&good),
                    ..Default::default()
                },
                ChapError::Missing("CHAP_N"),
            ),
            (
                ChapResponse {
                    name: Some("libiscsi"),
                    ..Default::default()
                },
                ChapError::Missing("CHAP_R"),
            ),
            (
                ChapResponse {
                    name: Some("libiscsi"),
                    response: Some("0x1234"),
                    ..Default::default()
                },
                ChapError::Malformed("CHAP_R"),
            ),
            (
                ChapResponse {
                    name: Some("libiscsi"),
                    response: Some("not-binary"),
                    ..Default::default()
                },
                ChapError::Malformed("CHAP_R"),
            ),
        ];
        for (keys, err) in cases {
            let mut chap = challenged();
            assert_eq!(respond(&mut chap, keys), Err(err));
            // A spent challenge cannot be answered again.
            assert_eq!(respond(&mut chap, keys), Err(ChapError::OutOfOrder));
        }
        // Extra bytes in front of a good response (libiscsi's "oversize" test).
        let mut chap = challenged();
        let oversize = format!("0x00{}", &good[2..]);
        assert_eq!(
            respond(
                &mut chap,
                ChapResponse {
                    name: Some("libiscsi"),
                    response: Some(&oversize),
                    ..Default::default()
                }
            ),
            Err(ChapError::Malformed("CHAP_R"))
        );
        // No response before a challenge.
        assert_eq!(
            respond(&mut ChapTarget::new(), ChapResponse::default()),
            Err(ChapError::OutOfOrder)
        );
    }

    #[test]
    fn hex_looking_user_names_are_names() {
        let mut chap = challenged();
        let good = encode_hex(&md5_response(7, b"pw-of-0x41", &CHALLENGE));
        let ok = chap
            .verify(
                &ChapResponse {
                    name: Some("0x41"),
                    response: Some(&good),
                    ..Default::default()
                },
                |user| (user == "0x41").then(|| ChapSecret::new("pw-of-0x41")),
                &VerifyOptions::default(),
            )
            .unwrap();
        assert_eq!(ok.user, "0x41");
    }

    #[test]
    fn mutual_chap() {
        let target = credential("outgoing", "target-secret-1");
        let options = VerifyOptions {
            target_credential: Some(&target),
            ..Default::default()
        };
        let good = encode_hex(&md5_response(7, b"libiscsi", &CHALLENGE));
        let mutual_challenge = [0x55u8; 32];
        let mutual_hex = encode_hex(&mutual_challenge);
        let mut chap = challenged();
        let ok = chap
            .verify(
                &ChapResponse {
                    name: Some("libiscsi"),
                    response: Some(&good),
                    mutual_id: Some("200"),
                    mutual_challenge: Some(&mutual_hex),
                },
                secret_for,
                &options,
            )
            .unwrap();
        let expected = md5_response(200, b"target-secret-1", &mutual_challenge);
        assert_eq!(
            ok.mutual_reply,
            Some(("outgoing".to_string(), encode_hex(&expected)))
        );

        // Hex identifier, base64 challenge.
        let mut chap = challenged();
        let ok = chap
            .verify(
                &ChapResponse {
                    name: Some("libiscsi"),
                    response: Some(&good),
                    mutual_id: Some("0x10"),
                    mutual_challenge: Some(&format!("0b{}", base64(&mutual_challenge))),
                },
                secret_for,
                &options,
            )
            .unwrap();
        let expected = md5_response(16, b"target-secret-1", &mutual_challenge);
        assert_eq!(ok.mutual_reply.unwrap().1, encode_hex(&expected));
    }

    #[test]
    fn mutual_chap_refusals() {
        let target = credential("outgoing", "target-secret-1");
        let good = encode_hex(&md5_response(7, b"libiscsi", &CHALLENGE));
        let our_challenge = encode_hex(&CHALLENGE);
        let with_target = VerifyOptions {
            target_credential: Some(&target),
            ..Default::default()
        };
        let keys = |id: Option<&'static str>, c: Option<String>| (id, c);
        let cases = [
            (
                keys(Some("1"), Some(our_challenge.clone())),
                with_target,
                ChapError::ReflectedChallenge,
            ),
            (
                keys(Some("256"), Some("0x01".into())),
                with_target,
                ChapError::Malformed("CHAP_I"),
            ),
            (
                keys(Some("1"), Some("0xzz".into())),
                with_target,
                ChapError::Malformed("CHAP_C"),
            ),
            (
                keys(Some("1"), None),
                with_target,
                ChapError::Missing("CHAP_C"),
            ),
            (
                keys(None, Some("0x01".into())),
                with_target,
                ChapError::Missing("CHAP_I"),
            ),
            (
                keys(Some("1"), Some("0x01".into())),
                VerifyOptions::default(),
                ChapError::MutualNotConfigured,
            ),
            (
                keys(None, None),
                VerifyOptions {
                    require_mutual: true,
                    ..with_target
                },
                ChapError::MutualRequired,
            ),
            (
                keys(Some("1"), Some("0x01".into())),
                VerifyOptions {
                    min_secret_len: 16,
                    ..with_target
                },
                // "libiscsi" is 8 bytes: refused before the mutual step.
                ChapError::SecretTooShort,
            ),
        ];
        for ((id, challenge), options, err) in cases {
            let mut chap = challenged();
            let result = chap.verify(
                &ChapResponse {
                    name: Some("libiscsi"),
                    response: Some(&good),
                    mutual_id: id,
                    mutual_challenge: challenge.as_deref(),
                },
                secret_for,
                &options,
            );
            assert_eq!(result, Err(err));
        }
    }

    #[test]
    fn same_secret_both_ways_is_refused() {
        let target = credential("outgoing", "libiscsi");
        let good = encode_hex(&md5_response(7, b"libiscsi", &CHALLENGE));
        let mut chap = challenged();
        assert_eq!(
            chap.verify(
                &ChapResponse {
                    name: Some("libiscsi"),
                    response: Some(&good),
                    ..Default::default()
                },
                secret_for,
                &VerifyOptions {
                    target_credential: Some(&target),
                    ..Default::default()
                },
            ),
            Err(ChapError::SameSecretBothWays)
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let s = ChapSecret::new("hunter2hunter2");
        assert_eq!(format!("{s:?}"), "ChapSecret(14 bytes)");
        assert!(!s.is_weak());
        assert!(ChapSecret::new("libiscsi").is_weak());
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
