//! Text Requests in the full feature phase (RFC 7143 §11.10-11, Appendix C):
//! SendTargets, and the few keys that may change after login.
//!
//! One [`TextExchange`] per connection follows an exchange across PDUs:
//! - a request with C=1 is answered with an empty response (F=0, a TTT) and
//!   its text joined to the next one;
//! - an answer longer than the initiator's MaxRecvDataSegmentLength goes out
//!   in pieces (C=1, a TTT), each fetched by an empty request echoing the TTT;
//! - a request with TTT 0xffffffff starts a new exchange, dropping any
//!   unfinished one; a TTT that is not the one handed out is answered with a
//!   Reject (Invalid PDU Field).
//!
//! Keys:
//! - `SendTargets=All` lists every target the initiator may reach in a
//!   Discovery session, and only the session's target in a Normal session;
//!   `SendTargets=` (empty) is the session's target; `SendTargets=<name>`
//!   that target (in a Normal session, only if it is the session's); any
//!   other value is answered `SendTargets=Reject`. Each target is a
//!   `TargetName=` line followed by `TargetAddress=ip:port,tag` lines.
//! - `MaxRecvDataSegmentLength` (declarative, "ALL") is taken: the reply
//!   carries the new value for the caller to apply after sending it.
//! - `InitiatorAlias` is taken without answer.
//! - Other known keys cannot change in the full feature phase: `Reject`.
//! - Unknown and `X-`/`X#` keys: `NotUnderstood`.
//! - Malformed text, duplicate keys, `Reject`/`Irrelevant`/`NotUnderstood`
//!   offered as values, keys only a target sends: Reject PDU, Protocol Error.
//!
//! The TTTs handed out here belong to text exchanges only: Text Requests are
//! told apart from Data-Outs by opcode, so they may share values with R2T TTTs.

use super::params::{
    is_reserved_answer, Key, SessionType, MAX_DATA_SEGMENT_LEN, MIN_DATA_SEGMENT_LEN,
};
use super::pdu::{Lun, RejectReason, StatusSeq, TextRequest, TextResponse, RESERVED_TAG};
use super::policy::{InitiatorInfo, TargetDirectory, TargetQuery};
use super::text::{self, is_iscsi_name, parse_number, TextAssembler, TextSegments, TextWriter};

/// What the exchange needs to know about the session.
#[derive(Clone, Copy, Debug)]
pub struct TextContext<'a> {
    pub session_type: SessionType,
    /// The target of a Normal session.
    pub target_name: Option<&'a str>,
    pub initiator: InitiatorInfo<'a>,
    /// The portal group the connection came in on.
    pub portal_group_tag: u16,
    /// The initiator's MaxRecvDataSegmentLength: no piece is longer.
    pub max_send_data_segment_length: u32,
}

/// A Text Response to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextReply {
    pub final_bit: bool,
    pub continue_bit: bool,
    pub ttt: u32,
    pub data: Vec<u8>,
    /// A MaxRecvDataSegmentLength the initiator declared: the new
    /// `ConnectionParams::max_send_data_segment_length`, in force once this
    /// reply is sent.
    pub max_send_data_segment_length: Option<u32>,
}

impl TextReply {
    /// The Text Response header for this reply.
    pub fn response(&self, itt: u32, lun: Lun, seq: StatusSeq) -> TextResponse {
        TextResponse {
            final_bit: self.final_bit,
            continue_bit: self.continue_bit,
            lun,
            itt,
            ttt: self.ttt,
            seq,
            data_len: self.data.len() as u32,
        }
    }
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    /// Gathering a request's text sent with C=1.
    Gathering {
        itt: u32,
        ttt: u32,
        text: TextAssembler,
    },
    /// Sending a long answer in pieces.
    Sending {
        itt: u32,
        ttt: u32,
        segments: TextSegments,
        /// The request the answer is for had F=1.
        final_request: bool,
        max_send: Option<u32>,
    },
    /// Answered a request sent with F=0: the initiator goes on with this TTT.
    Open { itt: u32, ttt: u32 },
}

/// The text exchanges of one connection.
#[derive(Debug, Default)]
pub struct TextExchange {
    state: State,
    last_ttt: u32,
}

impl TextExchange {
    pub fn new() -> Self {
        Self::default()
    }

    fn new_ttt(&mut self) -> u32 {
        self.last_ttt = self.last_ttt.wrapping_add(1);
        if self.last_ttt == RESERVED_TAG {
            self.last_ttt = 0;
        }
        self.last_ttt
    }

    /// Handles one Text Request and its data segment. An error is the
    /// reason of the Reject PDU to send instead of a Text Response.
    pub fn handle(
        &mut self,
        req: &TextRequest,
        data: &[u8],
        ctx: &TextContext<'_>,
        directory: &dyn TargetDirectory,
    ) -> Result<TextReply, RejectReason> {
        let state = std::mem::take(&mut self.state);
        let mut gathered = TextAssembler::new();
        if req.ttt != RESERVED_TAG {
            match state {
                State::Gathering { itt, ttt, text } if itt == req.itt && ttt == req.ttt => {
                    gathered = text
                }
                State::Sending {
                    itt,
                    ttt,
                    segments,
                    final_request,
                    max_send,
                } if itt == req.itt && ttt == req.ttt => {
                    if !data.is_empty() || req.continue_bit {
                        return Err(RejectReason::ProtocolError);
                    }
                    return Ok(self.send_piece(req, ttt, segments, final_request, max_send, ctx));
                }
                State::Open { itt, ttt } if itt == req.itt && ttt == req.ttt => {}
                other => {
                    // Keep whatever was under way for the right PDU.
                    self.state = other;
                    return Err(RejectReason::InvalidPduField);
                }
            }
        }

        if gathered.push(data).is_err() {
            return Err(RejectReason::ProtocolError);
        }
        if req.continue_bit {
            let ttt = self.new_ttt();
            self.state = State::Gathering {
                itt: req.itt,
                ttt,
                text: gathered,
            };
            return Ok(TextReply {
                final_bit: false,
                continue_bit: false,
                ttt,
                data: Vec::new(),
                max_send_data_segment_length: None,
            });
        }

        let text = gathered.take();
        let pairs = text::parse(&text).map_err(|_| RejectReason::ProtocolError)?;
        let mut answers = TextWriter::new();
        let mut max_send = None;
        for pair in &pairs {
            if is_reserved_answer(pair.value) {
                return Err(RejectReason::ProtocolError);
            }
            match Key::from_name(pair.key) {
                None => answers.push(pair.key, "NotUnderstood"),
                Some(Key::SendTargets) => send_targets(pair.value, ctx, directory, &mut answers),
                Some(Key::MaxRecvDataSegmentLength) => match parse_number(pair.value) {
                    Ok(v) => {
                        let v = v.clamp(
                            u64::from(MIN_DATA_SEGMENT_LEN),
                            u64::from(MAX_DATA_SEGMENT_LEN),
                        );
                        max_send = Some(v as u32);
                    }
                    Err(_) => answers.push(pair.key, "Reject"),
                },
                Some(Key::InitiatorAlias) => {}
                Some(Key::TargetAlias | Key::TargetAddress | Key::TargetPortalGroupTag) => {
                    return Err(RejectReason::ProtocolError)
                }
                Some(_) => answers.push(pair.key, "Reject"),
            }
        }
        let ttt = self.new_ttt();
        let segments = TextSegments::new(answers.into_bytes());
        Ok(self.send_piece(req, ttt, segments, req.final_bit, max_send, ctx))
    }

    fn send_piece(
        &mut self,
        req: &TextRequest,
        ttt: u32,
        mut segments: TextSegments,
        final_request: bool,
        max_send: Option<u32>,
        ctx: &TextContext<'_>,
    ) -> TextReply {
        let (data, more) = segments.next_segment(ctx.max_send_data_segment_length as usize);
        if more {
            self.state = State::Sending {
                itt: req.itt,
                ttt,
                segments,
                final_request,
                max_send,
            };
            return TextReply {
                final_bit: false,
                continue_bit: true,
                ttt,
                data,
                max_send_data_segment_length: None,
            };
        }
        if final_request {
            self.state = State::Idle;
            TextReply {
                final_bit: true,
                continue_bit: false,
                ttt: RESERVED_TAG,
                data,
                max_send_data_segment_length: max_send,
            }
        } else {
            self.state = State::Open { itt: req.itt, ttt };
            TextReply {
                final_bit: false,
                continue_bit: false,
                ttt,
                data,
                max_send_data_segment_length: max_send,
            }
        }
    }
}

/// Appends the answer to one SendTargets key.
fn send_targets(
    value: &str,
    ctx: &TextContext<'_>,
    directory: &dyn TargetDirectory,
    out: &mut TextWriter,
) {
    let session_target = match ctx.session_type {
        SessionType::Normal => ctx.target_name,
        SessionType::Discovery => None,
    };
    let query = match (value, ctx.session_type) {
        ("All", SessionType::Discovery) => Some(TargetQuery::All),
        ("All" | "", SessionType::Normal) => session_target.map(TargetQuery::Named),
        (name, SessionType::Discovery) if is_iscsi_name(name) => Some(TargetQuery::Named(name)),
        (name, SessionType::Normal) if is_iscsi_name(name) => {
            if session_target == Some(name) {
                Some(TargetQuery::Named(name))
            } else {
                // Another target than the session's: nothing to report.
                return;
            }
        }
        _ => None,
    };
    let Some(query) = query else {
        out.push(Key::SendTargets.name(), "Reject");
        return;
    };
    let records = directory.send_targets(&ctx.initiator, ctx.portal_group_tag, query);
    for record in records {
        if let TargetQuery::Named(name) = query {
            if record.name != name {
                continue;
            }
        }
        out.push(Key::TargetName.name(), &record.name);
        for portal in &record.portals {
            out.push(Key::TargetAddress.name(), &portal.target_address());
        }
    }
}

#[cfg(test)]
mod tests;
