//! The iSER private data of the RDMA CM connect request and accept (RFC 7145
//! §9.1, "iSER CM REQ/REP Message Private Data"), and what the target makes of
//! the request.
//!
//! Both are 4 bytes: a flags byte and 3 reserved bytes. In the request the
//! initiator says what it cannot do; in the accept the target says what it will
//! not use (bit values as in Linux's `include/scsi/iser.h`, which ib_iser and
//! isert send):
//!
//! ```text
//! request: 0x80 the initiator does not support zero-based virtual addresses
//!          0x40 the initiator does not support SEND with invalidate
//! accept:  0x80 the target does not use zero-based virtual addresses
//!          0x40 the target does not use SEND with invalidate
//! ```
//!
//! Linux ib_iser always sets 0x80 and sets 0x40 when its device cannot
//! invalidate remotely. This target treats the initiator's addresses as opaque
//! (it only adds offsets to them), so ZBVA changes nothing and it always
//! answers 0x80 as isert does; it uses SEND with invalidate (retiring the
//! task's STag with the response) when the initiator allows it and the device
//! can.
//!
//! A request without private data is taken as from an initiator that supports
//! neither (isert accepts those too). RDMA CM hands the passive side the whole
//! private-data area of the CM REQ, zero-padded (56 bytes over RoCE/IB), so
//! anything from 4 bytes up is normal; 1 to 3 bytes cannot be an iSER request.
//! Reserved bits are ignored.

use std::fmt;

/// Length of the iSER CM private data (request and accept).
pub const CM_PRIVATE_DATA_LEN: usize = 4;

const ZBVA_NOT_SUPPORTED: u8 = 0x80;
const SEND_WITH_INVALIDATE_NOT_SUPPORTED: u8 = 0x40;

/// What the initiator's connect request says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmRequest {
    /// The initiator accepts zero-based virtual addresses.
    pub zbva: bool,
    /// The initiator can take SEND with invalidate.
    pub send_with_invalidate: bool,
    /// The request carried iSER private data at all.
    pub has_private_data: bool,
}

/// A connect request the target refuses (RDMA CM reject, no connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmRequestError {
    /// Private data too short to hold the iSER flags and reserved bytes.
    Truncated { len: usize },
    /// The initiator can serve no RDMA READ at all (responder resources 0):
    /// write data beyond immediate data could never be fetched.
    NoReadResources,
}

impl fmt::Display for CmRequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmRequestError::Truncated { len } => write!(
                f,
                "iSER connect request with {len} bytes of private data \
                 ({CM_PRIVATE_DATA_LEN} needed)"
            ),
            CmRequestError::NoReadResources => {
                write!(
                    f,
                    "iSER connect request allows no RDMA READ (responder resources 0)"
                )
            }
        }
    }
}

impl std::error::Error for CmRequestError {}

impl CmRequest {
    /// Parses the private data of a connect request.
    pub fn parse(private_data: &[u8]) -> Result<CmRequest, CmRequestError> {
        match private_data.len() {
            0 => Ok(CmRequest {
                zbva: false,
                send_with_invalidate: false,
                has_private_data: false,
            }),
            len if len < CM_PRIVATE_DATA_LEN => Err(CmRequestError::Truncated { len }),
            _ => {
                let flags = private_data[0];
                Ok(CmRequest {
                    zbva: flags & ZBVA_NOT_SUPPORTED == 0,
                    send_with_invalidate: flags & SEND_WITH_INVALIDATE_NOT_SUPPORTED == 0,
                    has_private_data: true,
                })
            }
        }
    }

    /// The request's private data, as an initiator sends it.
    pub fn encode(&self) -> [u8; CM_PRIVATE_DATA_LEN] {
        let mut flags = 0;
        if !self.zbva {
            flags |= ZBVA_NOT_SUPPORTED;
        }
        if !self.send_with_invalidate {
            flags |= SEND_WITH_INVALIDATE_NOT_SUPPORTED;
        }
        [flags, 0, 0, 0]
    }
}

/// What the target's device can do, as far as accepting an iSER connection
/// goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceCaps {
    /// The device can post SEND with invalidate (memory management
    /// extensions).
    pub remote_invalidate: bool,
    /// RDMA READs one QP may have outstanding as their initiator
    /// (`max_qp_init_rd_atom`).
    pub max_reads_per_qp: u8,
}

/// What the target settles for one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Responses to tasks with an STag go out as SEND with invalidate.
    pub send_with_invalidate: bool,
    /// RDMA READs the target may have outstanding on this QP (its initiator
    /// depth: no more than the initiator's responder resources, nor the
    /// device's limit). Goes into the accept's connection parameters.
    pub max_outstanding_reads: u8,
}

impl ConnectOptions {
    /// Settles a connect request: `private_data` and `responder_resources`
    /// (how many RDMA READs the initiator serves at once) come from the CM
    /// event.
    pub fn negotiate(
        private_data: &[u8],
        responder_resources: u8,
        device: DeviceCaps,
    ) -> Result<(ConnectOptions, CmAccept), CmRequestError> {
        let req = CmRequest::parse(private_data)?;
        let reads = responder_resources.min(device.max_reads_per_qp);
        if reads == 0 {
            return Err(CmRequestError::NoReadResources);
        }
        let options = ConnectOptions {
            send_with_invalidate: req.send_with_invalidate && device.remote_invalidate,
            max_outstanding_reads: reads,
        };
        Ok((options, CmAccept::for_options(&options)))
    }
}

/// The private data of the target's accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmAccept {
    /// The target uses zero-based virtual addresses (never, see above).
    pub zbva: bool,
    /// The target will use SEND with invalidate.
    pub send_with_invalidate: bool,
}

impl CmAccept {
    pub fn for_options(o: &ConnectOptions) -> CmAccept {
        CmAccept {
            zbva: false,
            send_with_invalidate: o.send_with_invalidate,
        }
    }

    pub fn encode(&self) -> [u8; CM_PRIVATE_DATA_LEN] {
        let mut flags = 0;
        if !self.zbva {
            flags |= ZBVA_NOT_SUPPORTED;
        }
        if !self.send_with_invalidate {
            flags |= SEND_WITH_INVALIDATE_NOT_SUPPORTED;
        }
        [flags, 0, 0, 0]
    }

    /// Parses an accept's private data (the initiator side, e.g. a load
    /// generator). Missing private data means neither is used.
    pub fn parse(private_data: &[u8]) -> Result<CmAccept, CmRequestError> {
        let req = CmRequest::parse(private_data)?;
        Ok(CmAccept {
            zbva: req.zbva,
            send_with_invalidate: req.send_with_invalidate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RXE: DeviceCaps = DeviceCaps {
        remote_invalidate: true,
        max_reads_per_qp: 128,
    };

    #[test]
    fn what_linux_sends() {
        // ib_iser on a device with remote invalidation: only "no ZBVA", in
        // the 56 zero-padded bytes RDMA CM hands the listener over RoCE.
        let mut pd = [0u8; 56];
        pd[0] = 0x80;
        let r = CmRequest::parse(&pd).unwrap();
        assert!(!r.zbva && r.send_with_invalidate && r.has_private_data);
        let (o, a) = ConnectOptions::negotiate(&pd, 16, RXE).unwrap();
        assert!(o.send_with_invalidate);
        assert_eq!(o.max_outstanding_reads, 16);
        // isert's answer: ZBVA not used, send with invalidate used.
        assert_eq!(a.encode(), [0x80, 0, 0, 0]);

        // A device without remote invalidation on either side: not used.
        pd[0] = 0xc0;
        let (o, a) = ConnectOptions::negotiate(&pd, 16, RXE).unwrap();
        assert!(!o.send_with_invalidate);
        assert_eq!(a.encode(), [0xc0, 0, 0, 0]);
        let no_inv = DeviceCaps {
            remote_invalidate: false,
            ..RXE
        };
        let (o, a) = ConnectOptions::negotiate(&[0x80, 0, 0, 0], 4, no_inv).unwrap();
        assert!(!o.send_with_invalidate);
        assert_eq!(a.encode(), [0xc0, 0, 0, 0]);
        assert_eq!(CmAccept::parse(&a.encode()).unwrap(), a);
    }

    #[test]
    fn bad_requests() {
        for len in 1..CM_PRIVATE_DATA_LEN {
            let e = CmRequest::parse(&[0x80; 3][..len]).unwrap_err();
            assert_eq!(e, CmRequestError::Truncated { len });
            assert!(e.to_string().contains("private data"), "{e}");
        }
        let e = ConnectOptions::negotiate(&[0x80, 0, 0, 0], 0, RXE).unwrap_err();
        assert_eq!(e, CmRequestError::NoReadResources);
        // The device's limit caps the initiator's resources.
        let small = DeviceCaps {
            max_reads_per_qp: 2,
            ..RXE
        };
        let (o, _) = ConnectOptions::negotiate(&[], 16, small).unwrap();
        assert_eq!(o.max_outstanding_reads, 2);
        // No private data: an older initiator, nothing special used.
        assert!(!o.send_with_invalidate);
        assert!(!CmRequest::parse(&[]).unwrap().has_private_data);
    }

    proptest! {
        #[test]
        fn any_private_data_parses_or_is_refused(pd in proptest::collection::vec(any::<u8>(), 0..64),
                                                 rr in any::<u8>(), inv in any::<bool>(), max in any::<u8>()) {
            let dev = DeviceCaps { remote_invalidate: inv, max_reads_per_qp: max };
            match ConnectOptions::negotiate(&pd, rr, dev) {
                Ok((o, a)) => {
                    prop_assert!(pd.is_empty() || pd.len() >= CM_PRIVATE_DATA_LEN);
                    prop_assert!(o.max_outstanding_reads >= 1);
                    prop_assert!(o.max_outstanding_reads <= rr.min(max));
                    prop_assert!(!o.send_with_invalidate || (inv && !pd.is_empty() && pd[0] & 0x40 == 0));
                    let bytes = a.encode();
                    prop_assert_eq!(bytes[0] & 0x3f, 0);
                    prop_assert_eq!(&bytes[1..], &[0u8, 0, 0][..]);
                    prop_assert_eq!(CmAccept::parse(&bytes).unwrap(), a);
                }
                Err(CmRequestError::Truncated { len }) => prop_assert!(len == pd.len() && (1..4).contains(&len)),
                Err(CmRequestError::NoReadResources) => prop_assert_eq!(rr.min(max), 0),
            }
        }

        #[test]
        fn request_round_trip(zbva in any::<bool>(), inv in any::<bool>()) {
            let r = CmRequest { zbva, send_with_invalidate: inv, has_private_data: true };
            prop_assert_eq!(CmRequest::parse(&r.encode()).unwrap(), r);
        }
    }
}
