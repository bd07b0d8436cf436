//! The SRP login decision: an SRP_LOGIN_REQ, what the target model says about
//! its target port and initiator, and how many channels the I_T nexus has
//! already, in; an SRP_LOGIN_RSP or the SRP_LOGIN_REJ reason out. Pure: the
//! transport gathers the facts, calls [`decide`], and accepts or rejects the
//! RDMA CM connection with the IU as private data.
//!
//! The checks run in this order, each with its reason (as Linux `ib_srpt`
//! orders them where it has them):
//!
//! | check | reject reason |
//! | --- | --- |
//! | `req_it_iu_len` below 64 or above what the target receives | `ReqItIuLengthTooLarge` |
//! | buffer formats the target does not support | `UnsupportedDescriptorFormat` |
//! | no target with that port id (`id_ext` + `ioc_guid`) | `UnableToAssociateChannel` |
//! | initiator not in the target's list | `UnableToAssociateChannel` |
//! | reserved multichannel action | `UnableToEstablishChannel` |
//! | MULTI on a target allowing one channel per nexus | `MultiChannelUnsupported` |
//! | MULTI beyond the target's channels per nexus | `ChannelLimitReached` |
//!
//! MULTICHAN_SINGLE always succeeds past the first checks: the nexus's other
//! channels are ended (a fresh login, SRP r16a 6.4.5) and the response says
//! so. Linux `ib_srp` logs in its first channel SINGLE and the others (one per
//! CPU by default) MULTI.

use super::iu::{
    buf_fmt, rsp_flags, LoginReq, LoginRsp, MultiChannel, RejectReason, CMD_FIXED_LEN,
};

/// Smallest `req_it_iu_len` accepted: SRP requires initiators to take 64.
pub const MIN_IU_LEN: u32 = 64;

/// What the target offers each channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginLimits {
    /// Largest IU the target receives (its receive buffers' size).
    pub max_it_iu_len: u32,
    /// Largest IU the target sends (an SRP_RSP with sense); the initiator
    /// sizes its receive buffers by it.
    pub max_ti_iu_len: u32,
    /// Credits per channel: requests the initiator may have outstanding.
    pub queue_depth: u32,
    /// Channels one I_T nexus may have at once (1: no multichannel).
    pub max_channels: u32,
    /// [`buf_fmt`] bits supported.
    pub buf_fmt: u16,
    /// Whether SRP-2 immediate data is accepted.
    pub immediate_data: bool,
}

impl Default for LoginLimits {
    fn default() -> LoginLimits {
        LoginLimits {
            // 8 KiB of immediate data behind ib_srp's 68-byte offset, with room.
            max_it_iu_len: 8192 + 128,
            max_ti_iu_len: 256,
            queue_depth: 128,
            // ib_srp opens one channel per CPU, and hosts have many.
            max_channels: 64,
            buf_fmt: buf_fmt::DIRECT | buf_fmt::INDIRECT,
            immediate_data: true,
        }
    }
}

/// What the target model knows about the login, gathered by the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginFacts {
    /// A target with the requested target port id listens where the request
    /// came in.
    pub target_found: bool,
    /// The target serves this initiator (by port id or source address).
    pub initiator_allowed: bool,
    /// Channels the I_T nexus (initiator port id, target port id) has open.
    pub open_channels: u32,
}

/// An accepted login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// To send in the CM accept's private data.
    pub rsp: LoginRsp,
    /// The nexus's other channels must be ended (MULTICHAN_SINGLE).
    pub end_other_channels: bool,
    /// Where immediate data starts in this channel's SRP_CMDs, if used.
    pub imm_data_offset: Option<u16>,
    /// Largest IU the initiator will send on this channel.
    pub max_it_iu_len: u32,
    /// Largest IU the target may send on this channel.
    pub max_ti_iu_len: u32,
}

/// Decides a login.
pub fn decide(
    req: &LoginReq,
    facts: &LoginFacts,
    limits: &LoginLimits,
) -> Result<Accepted, RejectReason> {
    if req.req_it_iu_len < MIN_IU_LEN || req.req_it_iu_len > limits.max_it_iu_len {
        return Err(RejectReason::ReqItIuLengthTooLarge);
    }
    if req.req_buf_fmt & !limits.buf_fmt != 0 {
        return Err(RejectReason::UnsupportedDescriptorFormat);
    }
    if !facts.target_found || !facts.initiator_allowed {
        return Err(RejectReason::UnableToAssociateChannel);
    }
    let others = facts.open_channels;
    let (end_other_channels, multichan) = match req.multichannel() {
        MultiChannel::Reserved(_) => return Err(RejectReason::UnableToEstablishChannel),
        MultiChannel::Single if others > 0 => (true, rsp_flags::MULTICHAN_TERMINATED),
        MultiChannel::Single => (false, rsp_flags::MULTICHAN_NO_CHAN),
        MultiChannel::Multi if others == 0 => (false, rsp_flags::MULTICHAN_NO_CHAN),
        MultiChannel::Multi if limits.max_channels <= 1 => {
            return Err(RejectReason::MultiChannelUnsupported)
        }
        MultiChannel::Multi if others >= limits.max_channels => {
            return Err(RejectReason::ChannelLimitReached)
        }
        MultiChannel::Multi => (false, rsp_flags::MULTICHAN_MAINTAINED),
    };
    // Immediate data must start past the SRP_CMD's fixed part and leave room
    // for data in the IU.
    let offset = req.imm_data_offset as u32;
    let imm_data_offset = (limits.immediate_data
        && req.immediate_requested()
        && offset >= CMD_FIXED_LEN as u32
        && offset < req.req_it_iu_len)
        .then_some(req.imm_data_offset);
    let mut flags = multichan;
    if imm_data_offset.is_some() {
        flags |= rsp_flags::IMMED_SUPPORTED;
    }
    let max_ti_iu_len = limits.max_ti_iu_len.max(MIN_IU_LEN);
    Ok(Accepted {
        rsp: LoginRsp {
            req_lim_delta: limits.queue_depth,
            tag: req.tag,
            max_it_iu_len: req.req_it_iu_len,
            max_ti_iu_len,
            buf_fmt: limits.buf_fmt,
            rsp_flags: flags,
        },
        end_other_channels,
        imm_data_offset,
        max_it_iu_len: req.req_it_iu_len,
        max_ti_iu_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srp::iu::{PortId, IMMED_REQUESTED};
    use proptest::prelude::*;

    /// What Linux ib_srp sends for its first channel by default.
    fn req(flags: u8) -> LoginReq {
        LoginReq {
            tag: 0,
            req_it_iu_len: 8260,
            req_buf_fmt: buf_fmt::DIRECT | buf_fmt::INDIRECT,
            req_flags: flags,
            imm_data_offset: 68,
            initiator_port_id: PortId::new(0, 0xfe80_0000_0000_0001),
            target_port_id: PortId::new(1, 2),
        }
    }

    fn facts(open: u32) -> LoginFacts {
        LoginFacts {
            target_found: true,
            initiator_allowed: true,
            open_channels: open,
        }
    }

    #[test]
    fn first_channel_with_immediate_data() {
        let a = decide(&req(IMMED_REQUESTED), &facts(0), &LoginLimits::default()).unwrap();
        assert_eq!(a.rsp.req_lim_delta, 128);
        assert_eq!(a.rsp.max_it_iu_len, 8260);
        assert_eq!(a.rsp.max_ti_iu_len, 256);
        assert_eq!(
            a.rsp.rsp_flags,
            rsp_flags::MULTICHAN_NO_CHAN | rsp_flags::IMMED_SUPPORTED
        );
        assert_eq!(a.imm_data_offset, Some(68));
        assert!(!a.end_other_channels);
    }

    #[test]
    fn multichannel_actions() {
        let l = LoginLimits::default();
        let a = decide(&req(1), &facts(3), &l).unwrap();
        assert_eq!(a.rsp.rsp_flags, rsp_flags::MULTICHAN_MAINTAINED);
        assert_eq!(a.imm_data_offset, None, "not requested");
        let a = decide(&req(0), &facts(3), &l).unwrap();
        assert!(a.end_other_channels);
        assert_eq!(a.rsp.rsp_flags, rsp_flags::MULTICHAN_TERMINATED);
        assert_eq!(
            decide(&req(1), &facts(64), &l),
            Err(RejectReason::ChannelLimitReached)
        );
        let one = LoginLimits {
            max_channels: 1,
            ..l
        };
        assert_eq!(
            decide(&req(1), &facts(1), &one),
            Err(RejectReason::MultiChannelUnsupported)
        );
        assert!(decide(&req(1), &facts(0), &one).is_ok());
        assert_eq!(
            decide(&req(2), &facts(0), &l),
            Err(RejectReason::UnableToEstablishChannel)
        );
    }

    #[test]
    fn rejections_and_their_reasons() {
        let l = LoginLimits::default();
        let mut r = req(0);
        r.req_it_iu_len = 63;
        assert_eq!(
            decide(&r, &facts(0), &l),
            Err(RejectReason::ReqItIuLengthTooLarge)
        );
        r.req_it_iu_len = l.max_it_iu_len + 1;
        assert_eq!(
            decide(&r, &facts(0), &l),
            Err(RejectReason::ReqItIuLengthTooLarge)
        );
        let direct_only = LoginLimits {
            buf_fmt: buf_fmt::DIRECT,
            ..l
        };
        assert_eq!(
            decide(&req(0), &facts(0), &direct_only),
            Err(RejectReason::UnsupportedDescriptorFormat)
        );
        let unknown = LoginFacts {
            target_found: false,
            ..facts(0)
        };
        assert_eq!(
            decide(&req(0), &unknown, &l),
            Err(RejectReason::UnableToAssociateChannel)
        );
        let denied = LoginFacts {
            initiator_allowed: false,
            ..facts(0)
        };
        assert_eq!(
            decide(&req(0), &denied, &l),
            Err(RejectReason::UnableToAssociateChannel)
        );
    }

    #[test]
    fn immediate_data_needs_a_sane_offset_and_the_target_willing() {
        let l = LoginLimits::default();
        let mut r = req(IMMED_REQUESTED);
        r.imm_data_offset = 40;
        assert_eq!(decide(&r, &facts(0), &l).unwrap().imm_data_offset, None);
        r.imm_data_offset = 9000;
        assert_eq!(decide(&r, &facts(0), &l).unwrap().imm_data_offset, None);
        let no_imm = LoginLimits {
            immediate_data: false,
            ..l
        };
        let a = decide(&req(IMMED_REQUESTED), &facts(0), &no_imm).unwrap();
        assert_eq!(a.imm_data_offset, None);
        assert_eq!(a.rsp.rsp_flags & rsp_flags::IMMED_SUPPORTED, 0);
    }

    proptest! {
        /// Whatever comes in, an accepted login never grants an IU size the
        /// target cannot receive, and echoes the tag.
        #[test]
        fn accepted_logins_respect_the_limits(len in any::<u32>(), fmt in any::<u16>(),
                                              flags in any::<u8>(), off in any::<u16>(),
                                              open in 0u32..100, found in any::<bool>(),
                                              allowed in any::<bool>(), tag in any::<u64>()) {
            let l = LoginLimits::default();
            let r = LoginReq { tag, req_it_iu_len: len, req_buf_fmt: fmt, req_flags: flags,
                               imm_data_offset: off, ..req(0) };
            let f = LoginFacts { target_found: found, initiator_allowed: allowed, open_channels: open };
            if let Ok(a) = decide(&r, &f, &l) {
                prop_assert!(found && allowed);
                prop_assert!(a.max_it_iu_len <= l.max_it_iu_len && a.max_it_iu_len >= MIN_IU_LEN);
                prop_assert_eq!(a.rsp.tag, tag);
                prop_assert!(open < l.max_channels || a.end_other_channels);
                if let Some(o) = a.imm_data_offset {
                    prop_assert!((o as u32) < a.max_it_iu_len && o as usize >= CMD_FIXED_LEN);
                }
            }
        }
    }
}
