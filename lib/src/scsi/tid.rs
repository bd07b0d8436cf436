//! Initiator port identities and SPC-4 TransportIDs (7.6.4).
//!
//! Persistent reservations name I_T nexuses by their initiator port and the
//! relative target port. An iSCSI initiator port is `<name>,i,0x<ISID>`; iSCSI
//! names compare case-insensitively (RFC 3722 normalises them to lower case) and
//! the ISID as a number. A TransportID of format 00b carries only the name and
//! stands for every port of that initiator; 01b carries name and ISID. Other
//! protocols' TransportIDs are 24 bytes and compare as bytes.

use super::dev::Nexus;

/// Protocol identifiers (SPC-4 table 362).
pub mod proto {
    pub const FC: u8 = 0x0;
    pub const SRP: u8 = 0x4;
    pub const ISCSI: u8 = 0x5;
    pub const SAS: u8 = 0x6;
}

/// An initiator port (or, with no ISID, every port of an iSCSI initiator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PortId {
    Iscsi {
        /// Lower-cased iSCSI name.
        name: String,
        /// `None`: any ISID (a format 00b TransportID).
        isid: Option<u64>,
    },
    /// Another protocol: its identifier and the significant TransportID bytes.
    Other { proto: u8, id: Vec<u8> },
}

/// Why a TransportID was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TidError {
    /// Shorter than it says, or than its format needs.
    Truncated,
    /// A protocol or format we do not know, or a malformed name.
    Invalid,
}

impl PortId {
    /// The initiator port of `nexus`: from its TransportID when it has one, else
    /// from its `initiator_port` string.
    pub(crate) fn of_nexus(nexus: &Nexus) -> PortId {
        if !nexus.transport_id.is_empty() {
            if let Ok((id, _)) = parse(&nexus.transport_id) {
                return id;
            }
        }
        parse_iscsi_port(&nexus.initiator_port).unwrap_or_else(|| PortId::Iscsi {
            name: nexus.initiator_port.to_ascii_lowercase(),
            isid: None,
        })
    }

    /// Whether this (registered) identity covers the port `port`: same name, and
    /// the same ISID unless this one has none.
    pub(crate) fn covers(&self, port: &PortId) -> bool {
        match (self, port) {
            (PortId::Iscsi { name: a, isid: ia }, PortId::Iscsi { name: b, isid: ib }) => {
                a == b && (ia.is_none() || ia == ib)
            }
            (PortId::Other { proto: pa, id: a }, PortId::Other { proto: pb, id: b }) => {
                pa == pb && a == b
            }
            _ => false,
        }
    }

    /// This identity as a TransportID (iSCSI: format 01b with an ISID, 00b
    /// without), padded to a multiple of four bytes.
    pub(crate) fn to_transport_id(&self) -> Vec<u8> {
        match self {
            PortId::Iscsi { name, isid } => {
                let mut s = name.clone().into_bytes();
                let mut b0 = proto::ISCSI;
                if let Some(isid) = isid {
                    s.extend_from_slice(format!(",i,0x{isid:012x}").as_bytes());
                    b0 |= 0x40;
                }
                s.push(0);
                // ADDITIONAL LENGTH: at least 20, a multiple of four.
                let body = s.len().max(20).next_multiple_of(4);
                s.resize(body, 0);
                let mut t = vec![b0, 0];
                t.extend_from_slice(&(body as u16).to_be_bytes());
                t.extend_from_slice(&s);
                t
            }
            PortId::Other { proto: p, id } => {
                let mut t = vec![0u8; 24];
                t[0] = *p;
                match *p {
                    proto::FC => t[8..8 + id.len().min(8)].copy_from_slice(&id[..id.len().min(8)]),
                    proto::SAS => t[4..4 + id.len().min(8)].copy_from_slice(&id[..id.len().min(8)]),
                    _ => t[8..8 + id.len().min(16)].copy_from_slice(&id[..id.len().min(16)]),
                }
                t
            }
        }
    }
}

/// Parses `name,i,0x<isid>` (the `,i,0x` separator in any case).
fn parse_iscsi_port(s: &str) -> Option<PortId> {
    let lower = s.to_ascii_lowercase();
    let at = lower.find(",i,0x")?;
    let name = lower[..at].to_string();
    let hex = lower[at + 5..].trim_end_matches('\0');
    if name.is_empty() || hex.is_empty() || hex.len() > 16 {
        return None;
    }
    let isid = u64::from_str_radix(hex, 16).ok()?;
    Some(PortId::Iscsi {
        name,
        isid: Some(isid),
    })
}

/// Parses the TransportID at the start of `b`; returns it and its length.
pub(crate) fn parse(b: &[u8]) -> Result<(PortId, usize), TidError> {
    if b.len() < 4 {
        return Err(TidError::Truncated);
    }
    let format = b[0] >> 6;
    let p = b[0] & 0x0f;
    match p {
        proto::ISCSI => {
            let len = 4 + u16::from_be_bytes([b[2], b[3]]) as usize;
            if len < 8 || !len.is_multiple_of(4) {
                return Err(TidError::Invalid);
            }
            if b.len() < len {
                return Err(TidError::Truncated);
            }
            let body = &b[4..len];
            let end = body.iter().position(|&c| c == 0).ok_or(TidError::Invalid)?;
            let text = std::str::from_utf8(&body[..end]).map_err(|_| TidError::Invalid)?;
            let id = match format {
                0 => {
                    if text.is_empty() || text.contains(',') {
                        return Err(TidError::Invalid);
                    }
                    PortId::Iscsi {
                        name: text.to_ascii_lowercase(),
                        isid: None,
                    }
                }
                1 => parse_iscsi_port(text).ok_or(TidError::Invalid)?,
                _ => return Err(TidError::Invalid),
            };
            Ok((id, len))
        }
        proto::FC | proto::SRP | proto::SAS if format == 0 => {
            if b.len() < 24 {
                return Err(TidError::Truncated);
            }
            let id = match p {
                proto::FC => b[8..16].to_vec(),
                proto::SAS => b[4..12].to_vec(),
                _ => b[8..24].to_vec(),
            };
            Ok((PortId::Other { proto: p, id }, 24))
        }
        _ => Err(TidError::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iscsi_tid(format: u8, text: &str) -> Vec<u8> {
        let mut body = text.as_bytes().to_vec();
        body.push(0);
        body.resize(body.len().max(16).next_multiple_of(4), 0);
        let mut t = vec![(format << 6) | proto::ISCSI, 0];
        t.extend_from_slice(&(body.len() as u16).to_be_bytes());
        t.extend_from_slice(&body);
        t
    }

    #[test]
    fn iscsi_names_compare_without_case_and_isids_as_numbers() {
        let (a, n) = parse(&iscsi_tid(
            1,
            "IQN.2000-01.com.Example:Host,I,0X00023d000001",
        ))
        .unwrap();
        assert_eq!(n % 4, 0);
        let b = parse_iscsi_port("iqn.2000-01.com.example:host,i,0x23d000001").unwrap();
        assert_eq!(a, b);
        assert!(a.covers(&b));
        let (any, _) = parse(&iscsi_tid(0, "iqn.2000-01.com.example:HOST")).unwrap();
        assert!(any.covers(&b));
        assert!(!b.covers(&any));
        let other = parse_iscsi_port("iqn.2000-01.com.example:host,i,0x2").unwrap();
        assert!(!a.covers(&other));
    }

    #[test]
    fn round_trip_and_errors() {
        let id = parse_iscsi_port("iqn.x:y,i,0xabcdef").unwrap();
        let t = id.to_transport_id();
        assert_eq!(t[0], 0x45);
        assert_eq!(t.len() % 4, 0);
        assert_eq!(parse(&t).unwrap().0, id);
        assert_eq!(parse(&t[..t.len() - 1]), Err(TidError::Truncated));
        assert_eq!(parse(&[0x45, 0, 0, 3, 0, 0, 0]), Err(TidError::Invalid));
        assert_eq!(parse(&[0x03; 24]), Err(TidError::Invalid));
        let srp = [proto::SRP; 24];
        let (s, n) = parse(&srp).unwrap();
        assert_eq!(n, 24);
        assert_eq!(parse(&s.to_transport_id()).unwrap().0, s);
    }
}
