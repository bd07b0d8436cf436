//! The keys of RFC 7143 §13 and RFC 7145 §6 (iSER), and the target side of
//! operational parameter negotiation.
//!
//! Each key has a [`KeySpec`]: how its value is settled ([`KeyKind`]), when it
//! may be sent ([`Usage`]), by whom ([`Sender`]) and whether it is irrelevant
//! to discovery sessions. [`Negotiator`] answers the operational keys of one
//! connection's login, clamped to the target's [`TargetLimits`], and produces
//! the negotiated [`SessionParams`] and [`ConnectionParams`]. Identity keys
//! (InitiatorName, TargetName, SessionType, ...) and security keys (AuthMethod,
//! CHAP_*) belong to the login state machine.
//!
//! Rules applied (RFC 7143 §6.2):
//! - list values: the first value of the initiator's list that the target
//!   supports, or `Reject`;
//! - booleans: the AND/OR of the offer and the target's preference;
//! - numbers: the minimum/maximum of the offer and the target's value; an
//!   offer out of the key's range is clamped into it first (the RFC lets the
//!   acceptor "select an admissible value" instead of answering `Reject`);
//! - a malformed value is answered `Reject`; `Reject`, `Irrelevant` and
//!   `NotUnderstood` offered as values are protocol errors;
//! - unknown keys, including `X-` and `X#` extension keys, are `NotUnderstood`;
//! - keys irrelevant to the session (discovery, non-leading connection, iSER
//!   keys on TCP) are `Irrelevant`;
//! - the obsolete marker keys get `No` (IFMarker, OFMarker: the RFC allows it
//!   and every initiator accepts it) and `Reject` (IFMarkInt, OFMarkInt);
//! - offering a key again in the same login is allowed only when it yields
//!   the same result; anything else is a renegotiation, which fails the login.

use std::fmt;

use super::text::{parse_number, KeyValue};

/// Smallest MaxRecvDataSegmentLength (and the burst lengths).
pub const MIN_DATA_SEGMENT_LEN: u32 = 512;
/// Largest MaxRecvDataSegmentLength (and the burst lengths).
pub const MAX_DATA_SEGMENT_LEN: u32 = (1 << 24) - 1;
/// The iSCSIProtocolLevel this implementation speaks (RFC 7143).
pub const ISCSI_PROTOCOL_LEVEL: u8 = 1;

/// Every key this implementation knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    HeaderDigest,
    DataDigest,
    MaxConnections,
    SendTargets,
    TargetName,
    InitiatorName,
    TargetAlias,
    InitiatorAlias,
    TargetAddress,
    TargetPortalGroupTag,
    InitialR2T,
    ImmediateData,
    MaxRecvDataSegmentLength,
    MaxBurstLength,
    FirstBurstLength,
    DefaultTime2Wait,
    DefaultTime2Retain,
    MaxOutstandingR2T,
    DataPDUInOrder,
    DataSequenceInOrder,
    ErrorRecoveryLevel,
    SessionType,
    AuthMethod,
    TaskReporting,
    IscsiProtocolLevel,
    RdmaExtensions,
    TargetRecvDataSegmentLength,
    InitiatorRecvDataSegmentLength,
    MaxOutstandingUnexpectedPdus,
    IfMarker,
    OfMarker,
    IfMarkInt,
    OfMarkInt,
    ChapA,
    ChapI,
    ChapC,
    ChapN,
    ChapR,
}

/// How a key's value is settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// The sender states a value; nothing is answered.
    Declarative,
    /// A declared number within a range.
    DeclarativeNumber { min: u64, max: u64 },
    /// The responder picks the first value of the offered list it supports.
    List,
    /// Boolean whose result is the AND of both sides.
    BooleanAnd,
    /// Boolean whose result is the OR of both sides.
    BooleanOr,
    /// Number whose result is the smaller of both sides.
    NumberMin { min: u64, max: u64 },
    /// Number whose result is the larger of both sides.
    NumberMax { min: u64, max: u64 },
    /// MaxOutstandingUnexpectedPDUs: the minimum, where 0 means no limit.
    NumberMinZeroUnlimited { min: u64, max: u64 },
    /// AuthMethod and the CHAP keys (login and `chap`).
    Security,
    /// SendTargets: a query answered with target records.
    Query,
    /// IFMarker/OFMarker of RFC 3720, answered `No`.
    ObsoleteMarker,
    /// IFMarkInt/OFMarkInt of RFC 3720, answered `Reject`.
    ObsoleteMarkInt,
}

/// When a key may be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// IO: only during login.
    InitializeOnly,
    /// LO: only during the login of the leading connection.
    LeadingOnly,
    /// ALL: during login and in the full feature phase.
    All,
    /// FFPO: only in the full feature phase.
    FullFeatureOnly,
}

/// Who may send a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    Initiator,
    Target,
    Both,
}

/// A key's negotiation rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeySpec {
    pub kind: KeyKind,
    pub usage: Usage,
    pub sender: Sender,
    /// Answered `Irrelevant` in discovery sessions.
    pub irrelevant_in_discovery: bool,
    /// An iSER key (RFC 7145), `Irrelevant` on a TCP connection.
    pub iser_only: bool,
}

const LEN_RANGE: (u64, u64) = (MIN_DATA_SEGMENT_LEN as u64, MAX_DATA_SEGMENT_LEN as u64);

const fn spec(kind: KeyKind, usage: Usage, sender: Sender) -> KeySpec {
    KeySpec {
        kind,
        usage,
        sender,
        irrelevant_in_discovery: false,
        iser_only: false,
    }
}

const fn normal_only(mut s: KeySpec) -> KeySpec {
    s.irrelevant_in_discovery = true;
    s
}

const fn iser(mut s: KeySpec) -> KeySpec {
    s.iser_only = true;
    s
}

const NAMES: &[(Key, &str)] = &[
    (Key::HeaderDigest, "HeaderDigest"),
    (Key::DataDigest, "DataDigest"),
    (Key::MaxConnections, "MaxConnections"),
    (Key::SendTargets, "SendTargets"),
    (Key::TargetName, "TargetName"),
    (Key::InitiatorName, "InitiatorName"),
    (Key::TargetAlias, "TargetAlias"),
    (Key::InitiatorAlias, "InitiatorAlias"),
    (Key::TargetAddress, "TargetAddress"),
    (Key::TargetPortalGroupTag, "TargetPortalGroupTag"),
    (Key::InitialR2T, "InitialR2T"),
    (Key::ImmediateData, "ImmediateData"),
    (Key::MaxRecvDataSegmentLength, "MaxRecvDataSegmentLength"),
    (Key::MaxBurstLength, "MaxBurstLength"),
    (Key::FirstBurstLength, "FirstBurstLength"),
    (Key::DefaultTime2Wait, "DefaultTime2Wait"),
    (Key::DefaultTime2Retain, "DefaultTime2Retain"),
    (Key::MaxOutstandingR2T, "MaxOutstandingR2T"),
    (Key::DataPDUInOrder, "DataPDUInOrder"),
    (Key::DataSequenceInOrder, "DataSequenceInOrder"),
    (Key::ErrorRecoveryLevel, "ErrorRecoveryLevel"),
    (Key::SessionType, "SessionType"),
    (Key::AuthMethod, "AuthMethod"),
    (Key::TaskReporting, "TaskReporting"),
    (Key::IscsiProtocolLevel, "iSCSIProtocolLevel"),
    (Key::RdmaExtensions, "RDMAExtensions"),
    (
        Key::TargetRecvDataSegmentLength,
        "TargetRecvDataSegmentLength",
    ),
    (
        Key::InitiatorRecvDataSegmentLength,
        "InitiatorRecvDataSegmentLength",
    ),
    (
        Key::MaxOutstandingUnexpectedPdus,
        "MaxOutstandingUnexpectedPDUs",
    ),
    (Key::IfMarker, "IFMarker"),
    (Key::OfMarker, "OFMarker"),
    (Key::IfMarkInt, "IFMarkInt"),
    (Key::OfMarkInt, "OFMarkInt"),
    (Key::ChapA, "CHAP_A"),
    (Key::ChapI, "CHAP_I"),
    (Key::ChapC, "CHAP_C"),
    (Key::ChapN, "CHAP_N"),
    (Key::ChapR, "CHAP_R"),
];

impl Key {
    /// The key with this exact (case-sensitive) name.
    pub fn from_name(name: &str) -> Option<Key> {
        NAMES.iter().find(|(_, n)| *n == name).map(|(k, _)| *k)
    }

    /// The key's name on the wire.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("", |(_, n)| n)
    }

    /// The key's rules.
    pub fn spec(self) -> KeySpec {
        use KeyKind::*;
        use Sender::*;
        use Usage::*;
        let (len_min, len_max) = LEN_RANGE;
        match self {
            Key::HeaderDigest | Key::DataDigest => spec(List, InitializeOnly, Both),
            Key::MaxConnections => {
                normal_only(spec(NumberMin { min: 1, max: 65535 }, LeadingOnly, Both))
            }
            Key::SendTargets => spec(Query, FullFeatureOnly, Initiator),
            Key::TargetName => spec(Declarative, InitializeOnly, Both),
            Key::InitiatorName => spec(Declarative, InitializeOnly, Initiator),
            Key::TargetAlias | Key::TargetAddress => spec(Declarative, All, Target),
            Key::InitiatorAlias => spec(Declarative, All, Initiator),
            Key::TargetPortalGroupTag => spec(
                DeclarativeNumber { min: 0, max: 65535 },
                InitializeOnly,
                Target,
            ),
            Key::InitialR2T | Key::DataPDUInOrder | Key::DataSequenceInOrder => {
                normal_only(spec(BooleanOr, LeadingOnly, Both))
            }
            Key::ImmediateData => normal_only(spec(BooleanAnd, LeadingOnly, Both)),
            Key::MaxRecvDataSegmentLength => spec(
                DeclarativeNumber {
                    min: len_min,
                    max: len_max,
                },
                All,
                Both,
            ),
            Key::MaxBurstLength | Key::FirstBurstLength => normal_only(spec(
                NumberMin {
                    min: len_min,
                    max: len_max,
                },
                LeadingOnly,
                Both,
            )),
            Key::DefaultTime2Wait => spec(NumberMax { min: 0, max: 3600 }, LeadingOnly, Both),
            Key::DefaultTime2Retain => spec(NumberMin { min: 0, max: 3600 }, LeadingOnly, Both),
            Key::MaxOutstandingR2T => {
                normal_only(spec(NumberMin { min: 1, max: 65535 }, LeadingOnly, Both))
            }
            Key::ErrorRecoveryLevel => spec(NumberMin { min: 0, max: 2 }, LeadingOnly, Both),
            Key::SessionType => spec(Declarative, LeadingOnly, Initiator),
            Key::AuthMethod => spec(Security, InitializeOnly, Both),
            Key::TaskReporting => normal_only(spec(List, LeadingOnly, Both)),
            Key::IscsiProtocolLevel => spec(NumberMin { min: 0, max: 31 }, LeadingOnly, Both),
            // RFC 7145 §6.3: RDMAExtensions is answered on every transport
            // (No on TCP), so it is not iser_only.
            Key::RdmaExtensions => normal_only(spec(BooleanAnd, LeadingOnly, Both)),
            Key::TargetRecvDataSegmentLength | Key::InitiatorRecvDataSegmentLength => iser(spec(
                NumberMin {
                    min: len_min,
                    max: len_max,
                },
                InitializeOnly,
                Both,
            )),
            Key::MaxOutstandingUnexpectedPdus => iser(normal_only(spec(
                NumberMinZeroUnlimited {
                    min: 2,
                    max: u64::from(u32::MAX),
                },
                LeadingOnly,
                Both,
            ))),
            Key::IfMarker | Key::OfMarker => spec(ObsoleteMarker, InitializeOnly, Both),
            Key::IfMarkInt | Key::OfMarkInt => spec(ObsoleteMarkInt, InitializeOnly, Both),
            Key::ChapA | Key::ChapI | Key::ChapC | Key::ChapN | Key::ChapR => {
                spec(Security, InitializeOnly, Both)
            }
        }
    }
}

/// Values that only a responder may use (RFC 7143 §6.2).
pub fn is_reserved_answer(value: &str) -> bool {
    matches!(value, "Reject" | "Irrelevant" | "NotUnderstood")
}

/// Normal or Discovery session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SessionType {
    #[default]
    Normal,
    Discovery,
}

impl SessionType {
    /// The SessionType key's value, if it is one of the two.
    pub fn from_value(value: &str) -> Option<Self> {
        match value {
            "Normal" => Some(SessionType::Normal),
            "Discovery" => Some(SessionType::Discovery),
            _ => None,
        }
    }
}

/// A digest in use on a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DigestType {
    #[default]
    None,
    Crc32c,
}

impl DigestType {
    fn name(self) -> &'static str {
        match self {
            DigestType::None => "None",
            DigestType::Crc32c => "CRC32C",
        }
    }
}

/// The digests a target node allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllowedDigests {
    pub none: bool,
    pub crc32c: bool,
}

impl AllowedDigests {
    /// None or CRC32C, as the initiator prefers.
    pub const ANY: AllowedDigests = AllowedDigests {
        none: true,
        crc32c: true,
    };
    /// Digests off.
    pub const NONE_ONLY: AllowedDigests = AllowedDigests {
        none: true,
        crc32c: false,
    };
    /// Digests required.
    pub const CRC32C_ONLY: AllowedDigests = AllowedDigests {
        none: false,
        crc32c: true,
    };

    fn allows(self, d: DigestType) -> bool {
        match d {
            DigestType::None => self.none,
            DigestType::Crc32c => self.crc32c,
        }
    }
}

impl Default for AllowedDigests {
    fn default() -> Self {
        AllowedDigests::ANY
    }
}

/// What a target node accepts: its preferred values and its maxima.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetLimits {
    /// The largest data segment the target receives; declared to the
    /// initiator in the operational stage.
    pub max_recv_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    /// Whether the target accepts immediate data (ImmediateData, AND).
    pub immediate_data: bool,
    /// Whether the target insists on an R2T before any write data
    /// (InitialR2T, OR: `true` forces Yes).
    pub initial_r2t: bool,
    pub max_connections: u16,
    pub max_outstanding_r2t: u16,
    /// 0: this implementation does no error recovery.
    pub max_error_recovery_level: u8,
    /// The target's DefaultTime2Wait (result: the larger).
    pub default_time2wait: u16,
    /// The target's DefaultTime2Retain (result: the smaller).
    pub default_time2retain: u16,
    pub header_digests: AllowedDigests,
    pub data_digests: AllowedDigests,
    /// iSER: the largest unsolicited PDU the target receives.
    pub iser_target_recv_data_segment_length: u32,
    /// iSER: the largest PDU the target is willing to send.
    pub iser_initiator_recv_data_segment_length: u32,
    /// iSER: unexpected PDUs in flight the target can take; 0 = no limit.
    pub max_outstanding_unexpected_pdus: u32,
}

impl Default for TargetLimits {
    fn default() -> Self {
        TargetLimits {
            max_recv_data_segment_length: 256 * 1024,
            max_burst_length: 1024 * 1024,
            first_burst_length: 64 * 1024,
            immediate_data: true,
            initial_r2t: true,
            max_connections: 1,
            max_outstanding_r2t: 1,
            max_error_recovery_level: 0,
            default_time2wait: 2,
            default_time2retain: 20,
            header_digests: AllowedDigests::ANY,
            data_digests: AllowedDigests::ANY,
            // The RFC 7145 defaults, what isert and Linux ib_iser post receive
            // buffers for; an iSER connection sets what its buffers hold.
            iser_target_recv_data_segment_length: 8192,
            iser_initiator_recv_data_segment_length: 8192,
            max_outstanding_unexpected_pdus: 0,
        }
    }
}

impl TargetLimits {
    /// The limits with every value moved into its key's range, the first
    /// burst no larger than the maximum burst, and at least one digest.
    pub fn sanitized(mut self) -> Self {
        let len = |v: u32| v.clamp(MIN_DATA_SEGMENT_LEN, MAX_DATA_SEGMENT_LEN);
        self.max_recv_data_segment_length = len(self.max_recv_data_segment_length);
        self.max_burst_length = len(self.max_burst_length);
        self.first_burst_length = len(self.first_burst_length).min(self.max_burst_length);
        self.max_connections = self.max_connections.max(1);
        self.max_outstanding_r2t = self.max_outstanding_r2t.max(1);
        self.max_error_recovery_level = self.max_error_recovery_level.min(2);
        self.default_time2wait = self.default_time2wait.min(3600);
        self.default_time2retain = self.default_time2retain.min(3600);
        for digests in [&mut self.header_digests, &mut self.data_digests] {
            if !digests.none && !digests.crc32c {
                *digests = AllowedDigests::NONE_ONLY;
            }
        }
        self.iser_target_recv_data_segment_length = len(self.iser_target_recv_data_segment_length);
        self.iser_initiator_recv_data_segment_length =
            len(self.iser_initiator_recv_data_segment_length);
        if self.max_outstanding_unexpected_pdus == 1 {
            self.max_outstanding_unexpected_pdus = 2;
        }
        self
    }
}

/// The negotiated session-wide values (RFC defaults until negotiated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionParams {
    pub session_type: SessionType,
    pub target_portal_group_tag: u16,
    pub max_connections: u16,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    pub max_outstanding_r2t: u16,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u8,
    pub iscsi_protocol_level: u8,
    /// iSER-assisted mode (RFC 7145).
    pub rdma_extensions: bool,
    /// 0 = no limit.
    pub max_outstanding_unexpected_pdus: u32,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            session_type: SessionType::Normal,
            target_portal_group_tag: 0,
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
            iscsi_protocol_level: 1,
            rdma_extensions: false,
            max_outstanding_unexpected_pdus: 0,
        }
    }
}

/// The negotiated values of one connection (RFC defaults until negotiated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionParams {
    pub header_digest: DigestType,
    pub data_digest: DigestType,
    /// The largest data segment the initiator may send us: what the target
    /// declared (8192 if it never got to).
    pub max_recv_data_segment_length: u32,
    /// The largest data segment the target may send: what the initiator
    /// declared (8192 by default).
    pub max_send_data_segment_length: u32,
    /// iSER: TargetRecvDataSegmentLength.
    pub iser_target_recv_data_segment_length: u32,
    /// iSER: InitiatorRecvDataSegmentLength.
    pub iser_initiator_recv_data_segment_length: u32,
    /// An iSER connection in iSER-assisted mode (a Normal session with
    /// RDMAExtensions=Yes): the iSER lengths replace MaxRecvDataSegmentLength
    /// (RFC 7145 §6.3-6.5). An iSER Discovery session keeps the latter.
    pub iser_assisted: bool,
}

impl ConnectionParams {
    /// The largest data segment the initiator may send in one PDU (immediate
    /// data, unsolicited Data-Out, text): TargetRecvDataSegmentLength in
    /// iSER-assisted mode, else the MaxRecvDataSegmentLength the target
    /// declared.
    pub fn recv_segment_limit(&self) -> u32 {
        if self.iser_assisted {
            self.iser_target_recv_data_segment_length
        } else {
            self.max_recv_data_segment_length
        }
    }

    /// The largest data segment the target may send in one PDU:
    /// InitiatorRecvDataSegmentLength in iSER-assisted mode, else the
    /// initiator's MaxRecvDataSegmentLength.
    pub fn send_segment_limit(&self) -> u32 {
        if self.iser_assisted {
            self.iser_initiator_recv_data_segment_length
        } else {
            self.max_send_data_segment_length
        }
    }
}

impl Default for ConnectionParams {
    fn default() -> Self {
        ConnectionParams {
            header_digest: DigestType::None,
            data_digest: DigestType::None,
            max_recv_data_segment_length: 8192,
            max_send_data_segment_length: 8192,
            iser_target_recv_data_segment_length: 8192,
            iser_initiator_recv_data_segment_length: 8192,
            iser_assisted: false,
        }
    }
}

/// What the negotiation is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NegotiationScope {
    pub session_type: SessionType,
    /// The leading connection (TSIH 0): LO keys are negotiated only there.
    pub leading: bool,
    /// The connection is iSER-capable (an RDMA connection).
    pub iser: bool,
}

/// One key=value to send back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub key: String,
    pub value: String,
}

impl Answer {
    fn new(key: &str, value: impl Into<String>) -> Self {
        Answer {
            key: key.to_string(),
            value: value.into(),
        }
    }
}

/// A negotiation the initiator broke; the login fails with Status 0x0200
/// (initiator error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NegotiationError {
    /// `Reject`, `Irrelevant` or `NotUnderstood` offered as a value.
    ReservedValue(String),
    /// A key offered again with a different result.
    Renegotiated(String),
    /// A declaration with a malformed value.
    BadDeclaration(String),
    /// A key only the target may send.
    WrongSender(String),
    /// An answer to a target offer that the target cannot live with.
    UnacceptableAnswer(String),
    /// RDMAExtensions=No on an iSER connection: over RDMA there is no
    /// byte stream for traditional iSCSI to fall back to (RFC 7145 §5.1).
    RdmaExtensionsRequired,
}

impl fmt::Display for NegotiationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NegotiationError::ReservedValue(k) => write!(f, "{k}: reserved value offered"),
            NegotiationError::Renegotiated(k) => write!(f, "{k}: renegotiated"),
            NegotiationError::BadDeclaration(k) => write!(f, "{k}: malformed declaration"),
            NegotiationError::WrongSender(k) => write!(f, "{k}: only a target may send it"),
            NegotiationError::UnacceptableAnswer(k) => write!(f, "{k}: unacceptable answer"),
            NegotiationError::RdmaExtensionsRequired => write!(
                f,
                "RDMAExtensions=No on an iSER portal, which speaks iSER-assisted mode only"
            ),
        }
    }
}

impl std::error::Error for NegotiationError {}

/// The answer computed for one offered key.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Reply {
    Value(String),
    Irrelevant,
    Reject,
    NotUnderstood,
    /// A declaration: nothing is sent back.
    Nothing,
}

impl Reply {
    fn text(&self) -> Option<&str> {
        match self {
            Reply::Value(v) => Some(v),
            Reply::Irrelevant => Some("Irrelevant"),
            Reply::Reject => Some("Reject"),
            Reply::NotUnderstood => Some("NotUnderstood"),
            Reply::Nothing => None,
        }
    }
}

/// Where a key stands in this login.
#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyState {
    /// Answered (or declared) with this value.
    Settled(Option<String>),
    /// Offered by the target; the initiator's answer is awaited.
    Offered(u64),
}

/// The target side of one connection's operational negotiation.
#[derive(Clone, Debug)]
pub struct Negotiator {
    limits: TargetLimits,
    scope: NegotiationScope,
    session: SessionParams,
    conn: ConnectionParams,
    states: Vec<(Key, KeyState)>,
    declared: bool,
}

impl Negotiator {
    pub fn new(limits: TargetLimits, scope: NegotiationScope) -> Self {
        Negotiator {
            limits: limits.sanitized(),
            scope,
            session: SessionParams {
                session_type: scope.session_type,
                ..SessionParams::default()
            },
            conn: ConnectionParams::default(),
            states: Vec::new(),
            declared: false,
        }
    }

    /// The limits in force (sanitized).
    pub fn limits(&self) -> &TargetLimits {
        &self.limits
    }

    fn state(&self, key: Key) -> Option<&KeyState> {
        self.states.iter().find(|(k, _)| *k == key).map(|(_, s)| s)
    }

    fn set_state(&mut self, key: Key, state: KeyState) {
        match self.states.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = state,
            None => self.states.push((key, state)),
        }
    }

    /// Answers the operational keys of one (complete) request, in order.
    /// Unknown keys are answered `NotUnderstood`; identity and security keys
    /// must have been taken out by the caller (they are answered `Reject`).
    pub fn negotiate(&mut self, pairs: &[KeyValue<'_>]) -> Result<Vec<Answer>, NegotiationError> {
        let mut answers = Vec::with_capacity(pairs.len());
        for pair in pairs {
            let reply = match Key::from_name(pair.key) {
                None => Reply::NotUnderstood,
                Some(key) => self.negotiate_key(key, pair.value)?,
            };
            if let Some(text) = reply.text() {
                answers.push(Answer::new(pair.key, text));
            }
        }
        self.keep_first_burst_within_max_burst(&mut answers);
        Ok(answers)
    }

    fn negotiate_key(&mut self, key: Key, value: &str) -> Result<Reply, NegotiationError> {
        if let Some(KeyState::Offered(offer)) = self.state(key) {
            let offer = *offer;
            self.take_answer_to_offer(key, offer, value)?;
            return Ok(Reply::Nothing);
        }
        let name = key.name();
        if is_reserved_answer(value) {
            return Err(NegotiationError::ReservedValue(name.into()));
        }
        let spec = key.spec();
        if spec.sender == Sender::Target {
            return Err(NegotiationError::WrongSender(name.into()));
        }
        let (reply, setting) = self.evaluate(key, spec, value)?;
        if key == Key::RdmaExtensions && self.scope.iser && reply == Reply::Value("No".into()) {
            return Err(NegotiationError::RdmaExtensionsRequired);
        }
        match self.state(key) {
            Some(KeyState::Settled(previous)) => {
                if previous.as_deref() != reply.text().or(Some(value)) {
                    return Err(NegotiationError::Renegotiated(name.into()));
                }
            }
            _ => {
                if let Some(v) = setting {
                    self.apply(key, v);
                }
                let record = reply.text().unwrap_or(value).to_string();
                self.set_state(key, KeyState::Settled(Some(record)));
            }
        }
        Ok(reply)
    }

    /// Computes the reply to an offer without changing anything; the second
    /// value is the setting to store if the reply stands.
    fn evaluate(
        &self,
        key: Key,
        spec: KeySpec,
        value: &str,
    ) -> Result<(Reply, Option<u64>), NegotiationError> {
        if self.scope.session_type == SessionType::Discovery && spec.irrelevant_in_discovery {
            return Ok((Reply::Irrelevant, None));
        }
        if !self.scope.leading && spec.usage == Usage::LeadingOnly {
            return Ok((Reply::Irrelevant, None));
        }
        if spec.iser_only && !self.scope.iser {
            return Ok((Reply::Irrelevant, None));
        }
        let limits = &self.limits;
        Ok(match spec.kind {
            KeyKind::List => match key {
                Key::HeaderDigest | Key::DataDigest => {
                    let allowed = if self.scope.iser {
                        // iSER moves no digests (RFC 7145 §6.2).
                        AllowedDigests::NONE_ONLY
                    } else if key == Key::HeaderDigest {
                        limits.header_digests
                    } else {
                        limits.data_digests
                    };
                    let choice = value
                        .split(',')
                        .filter_map(|v| match v {
                            "None" => Some(DigestType::None),
                            "CRC32C" => Some(DigestType::Crc32c),
                            _ => None,
                        })
                        .find(|d| allowed.allows(*d));
                    match choice {
                        Some(d) => (Reply::Value(d.name().into()), Some(d as u64)),
                        None => (Reply::Reject, None),
                    }
                }
                Key::TaskReporting => {
                    // Only the RFC 3720 semantics are implemented.
                    if value.split(',').any(|v| v == "RFC3720") {
                        (Reply::Value("RFC3720".into()), None)
                    } else {
                        (Reply::Reject, None)
                    }
                }
                _ => (Reply::Reject, None),
            },
            KeyKind::BooleanAnd | KeyKind::BooleanOr => {
                let offer = match value {
                    "Yes" => true,
                    "No" => false,
                    _ => return Ok((Reply::Reject, None)),
                };
                let ours = match key {
                    Key::ImmediateData => limits.immediate_data,
                    Key::InitialR2T => limits.initial_r2t,
                    Key::RdmaExtensions => self.scope.iser,
                    // Out-of-order data is not implemented: Yes wins the OR.
                    _ => true,
                };
                let result = if spec.kind == KeyKind::BooleanAnd {
                    offer && ours
                } else {
                    offer || ours
                };
                let text = if result { "Yes" } else { "No" };
                (Reply::Value(text.into()), Some(u64::from(result)))
            }
            KeyKind::NumberMin { min, max } | KeyKind::NumberMax { min, max } => {
                let Ok(offer) = parse_number(value) else {
                    return Ok((Reply::Reject, None));
                };
                let offer = offer.clamp(min, max);
                let ours = self.target_value(key);
                let mut result = if matches!(spec.kind, KeyKind::NumberMin { .. }) {
                    offer.min(ours)
                } else {
                    offer.max(ours)
                };
                if key == Key::FirstBurstLength && self.state(Key::MaxBurstLength).is_some() {
                    result = result.min(u64::from(self.session.max_burst_length));
                }
                (Reply::Value(result.to_string()), Some(result))
            }
            KeyKind::NumberMinZeroUnlimited { min, max } => {
                let Ok(offer) = parse_number(value) else {
                    return Ok((Reply::Reject, None));
                };
                let offer = if offer == 0 { 0 } else { offer.clamp(min, max) };
                let ours = u64::from(limits.max_outstanding_unexpected_pdus);
                let result = match (offer, ours) {
                    (0, v) | (v, 0) => v,
                    (a, b) => a.min(b),
                };
                (Reply::Value(result.to_string()), Some(result))
            }
            KeyKind::DeclarativeNumber { min, max } => {
                let declared = parse_number(value)
                    .map_err(|_| NegotiationError::BadDeclaration(key.name().into()))?;
                (Reply::Nothing, Some(declared.clamp(min, max)))
            }
            KeyKind::ObsoleteMarker => (Reply::Value("No".into()), None),
            KeyKind::ObsoleteMarkInt => (Reply::Reject, None),
            KeyKind::Declarative | KeyKind::Security | KeyKind::Query => (Reply::Reject, None),
        })
    }

    /// The target's side of a numerical negotiation.
    fn target_value(&self, key: Key) -> u64 {
        let l = &self.limits;
        u64::from(match key {
            Key::MaxConnections => u32::from(l.max_connections),
            Key::MaxBurstLength => l.max_burst_length,
            Key::FirstBurstLength => l.first_burst_length,
            Key::DefaultTime2Wait => u32::from(l.default_time2wait),
            Key::DefaultTime2Retain => u32::from(l.default_time2retain),
            Key::MaxOutstandingR2T => u32::from(l.max_outstanding_r2t),
            Key::ErrorRecoveryLevel => u32::from(l.max_error_recovery_level),
            Key::IscsiProtocolLevel => u32::from(ISCSI_PROTOCOL_LEVEL),
            Key::TargetRecvDataSegmentLength => l.iser_target_recv_data_segment_length,
            Key::InitiatorRecvDataSegmentLength => l.iser_initiator_recv_data_segment_length,
            _ => 0,
        })
    }

    /// Stores a settled value (numbers as is, booleans as 0/1, digests as
    /// their discriminant). Values are already within the key's range.
    fn apply(&mut self, key: Key, v: u64) {
        let s = &mut self.session;
        let c = &mut self.conn;
        let as_u16 = |v: u64| u16::try_from(v).unwrap_or(u16::MAX);
        let as_u32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        let digest = |v: u64| {
            if v == DigestType::Crc32c as u64 {
                DigestType::Crc32c
            } else {
                DigestType::None
            }
        };
        match key {
            Key::HeaderDigest => c.header_digest = digest(v),
            Key::DataDigest => c.data_digest = digest(v),
            Key::MaxConnections => s.max_connections = as_u16(v),
            Key::InitialR2T => s.initial_r2t = v != 0,
            Key::ImmediateData => s.immediate_data = v != 0,
            Key::MaxRecvDataSegmentLength => c.max_send_data_segment_length = as_u32(v),
            Key::MaxBurstLength => s.max_burst_length = as_u32(v),
            Key::FirstBurstLength => s.first_burst_length = as_u32(v),
            Key::DefaultTime2Wait => s.default_time2wait = as_u16(v),
            Key::DefaultTime2Retain => s.default_time2retain = as_u16(v),
            Key::MaxOutstandingR2T => s.max_outstanding_r2t = as_u16(v),
            Key::DataPDUInOrder => s.data_pdu_in_order = v != 0,
            Key::DataSequenceInOrder => s.data_sequence_in_order = v != 0,
            Key::ErrorRecoveryLevel => s.error_recovery_level = v.min(2) as u8,
            Key::IscsiProtocolLevel => s.iscsi_protocol_level = v.min(31) as u8,
            Key::RdmaExtensions => s.rdma_extensions = v != 0,
            Key::TargetRecvDataSegmentLength => c.iser_target_recv_data_segment_length = as_u32(v),
            Key::InitiatorRecvDataSegmentLength => {
                c.iser_initiator_recv_data_segment_length = as_u32(v)
            }
            Key::MaxOutstandingUnexpectedPdus => s.max_outstanding_unexpected_pdus = as_u32(v),
            _ => {}
        }
    }

    /// FirstBurstLength must not exceed MaxBurstLength (RFC 7143 §13.14),
    /// whatever order the two came in.
    fn keep_first_burst_within_max_burst(&mut self, answers: &mut [Answer]) {
        let max = self.session.max_burst_length;
        if self.session.first_burst_length <= max {
            return;
        }
        self.session.first_burst_length = max;
        let name = Key::FirstBurstLength.name();
        if let Some(a) = answers.iter_mut().find(|a| a.key == name) {
            if a.value.parse::<u32>().is_ok() {
                a.value = max.to_string();
                self.set_state(
                    Key::FirstBurstLength,
                    KeyState::Settled(Some(a.value.clone())),
                );
            }
        }
    }

    /// Keys the target must offer itself because their defaults break its
    /// limits and the initiator did not offer them. Call when the initiator
    /// asks to leave the operational stage; the login must then wait for the
    /// answers (T=0) before going on.
    pub fn target_offers(&mut self) -> Vec<Answer> {
        let mut offers = Vec::new();
        let normal_leading = self.scope.session_type == SessionType::Normal && self.scope.leading;
        let untouched = |n: &Negotiator, k: Key| n.state(k).is_none();
        if normal_leading {
            // An iSER connection must enter iSER-assisted mode; ask for it if
            // the initiator did not (RFC 7145 §5.1.1).
            if self.scope.iser && untouched(self, Key::RdmaExtensions) {
                offers.push((Key::RdmaExtensions, 1));
            }
            if !self.limits.immediate_data && untouched(self, Key::ImmediateData) {
                offers.push((Key::ImmediateData, 0));
            }
            let default = SessionParams::default();
            if self.limits.max_burst_length < default.max_burst_length
                && untouched(self, Key::MaxBurstLength)
            {
                offers.push((Key::MaxBurstLength, u64::from(self.limits.max_burst_length)));
            }
            let max_burst = if untouched(self, Key::MaxBurstLength) {
                self.limits.max_burst_length.min(default.max_burst_length)
            } else {
                self.session.max_burst_length
            };
            let first = self.limits.first_burst_length.min(max_burst);
            if first < default.first_burst_length && untouched(self, Key::FirstBurstLength) {
                offers.push((Key::FirstBurstLength, u64::from(first)));
            }
        }
        if !self.scope.iser {
            if !self.limits.header_digests.none && untouched(self, Key::HeaderDigest) {
                offers.push((Key::HeaderDigest, DigestType::Crc32c as u64));
            }
            if !self.limits.data_digests.none && untouched(self, Key::DataDigest) {
                offers.push((Key::DataDigest, DigestType::Crc32c as u64));
            }
        }
        offers
            .into_iter()
            .map(|(key, value)| {
                self.set_state(key, KeyState::Offered(value));
                let text = match key {
                    Key::HeaderDigest | Key::DataDigest => "CRC32C".to_string(),
                    Key::ImmediateData => "No".to_string(),
                    Key::RdmaExtensions => "Yes".to_string(),
                    _ => value.to_string(),
                };
                Answer::new(key.name(), text)
            })
            .collect()
    }

    /// Whether target offers still await the initiator's answer.
    pub fn awaiting_answers(&self) -> bool {
        self.states
            .iter()
            .any(|(_, s)| matches!(s, KeyState::Offered(_)))
    }

    fn take_answer_to_offer(
        &mut self,
        key: Key,
        offer: u64,
        answer: &str,
    ) -> Result<(), NegotiationError> {
        let bad = || NegotiationError::UnacceptableAnswer(key.name().into());
        let accepted = match key {
            Key::HeaderDigest | Key::DataDigest => (answer == "CRC32C").then_some(offer),
            Key::ImmediateData => (answer == "No").then_some(0),
            Key::RdmaExtensions if answer == "Yes" => Some(1),
            Key::RdmaExtensions => return Err(NegotiationError::RdmaExtensionsRequired),
            Key::FirstBurstLength if answer == "Irrelevant" => None,
            _ => match parse_number(answer) {
                Ok(v) if v <= offer && v >= u64::from(MIN_DATA_SEGMENT_LEN) => Some(v),
                _ => return Err(bad()),
            },
        };
        match accepted {
            Some(v) => self.apply(key, v),
            // FirstBurstLength=Irrelevant only holds without unsolicited data.
            None if key == Key::FirstBurstLength
                && answer == "Irrelevant"
                && self.session.initial_r2t
                && !self.session.immediate_data => {}
            None => return Err(bad()),
        }
        self.set_state(key, KeyState::Settled(Some(answer.to_string())));
        Ok(())
    }

    /// Declarations the target makes unasked, once: its
    /// MaxRecvDataSegmentLength (not in iSER-assisted mode, where the iSER
    /// keys replace it).
    pub fn declarations(&mut self) -> Vec<Answer> {
        if self.declared {
            return Vec::new();
        }
        self.declared = true;
        if self.scope.iser && self.session.rdma_extensions {
            return Vec::new();
        }
        let mrdsl = self.limits.max_recv_data_segment_length;
        self.conn.max_recv_data_segment_length = mrdsl;
        vec![Answer::new(
            Key::MaxRecvDataSegmentLength.name(),
            mrdsl.to_string(),
        )]
    }

    /// The session values negotiated so far.
    pub fn session_params(&self) -> SessionParams {
        let mut s = self.session;
        s.first_burst_length = s.first_burst_length.min(s.max_burst_length);
        s
    }

    /// The connection values negotiated so far.
    pub fn connection_params(&self) -> ConnectionParams {
        let mut c = self.conn;
        // A connection joining a session takes the session's mode (the login
        // refuses a mismatch); RDMAExtensions is leading-only.
        c.iser_assisted = self.scope.iser
            && self.scope.session_type == SessionType::Normal
            && (self.session.rdma_extensions || !self.scope.leading);
        c
    }
}

#[cfg(test)]
mod tests;
