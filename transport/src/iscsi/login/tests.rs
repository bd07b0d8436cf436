//! Login sequences as libiscsi (lib/login.c) and open-iscsi (usr/login.c,
//! usr/auth.c) send them, plus every failure path.

use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::iscsi::chap::{md5_response, ChapCredential, ChapSecret};
use crate::iscsi::params::{AllowedDigests, DigestType, TargetLimits};
use crate::iscsi::pdu::{opcode, InitiatorPdu, BHS_LEN};
use crate::iscsi::policy::{
    DiscoveryService, TargetDirectory, TargetNode, TargetQuery, TargetRecord,
};
use crate::iscsi::text::{decode_binary, encode_hex};

const IQN_I: &str = "iqn.2026-11.test:initiator";
const IQN_T: &str = "iqn.2026-11.test:disk1";
const ISID: Isid = Isid([0x80, 0x12, 0x34, 0x56, 0x78, 0x9a]);
const SEC: Stage = Stage::SecurityNegotiation;
const OP: Stage = Stage::OperationalNegotiation;
const FFP: Stage = Stage::FullFeature;

// ---------------------------------------------------------------------------
// A target model.

#[derive(Default)]
struct Model {
    nodes: Vec<(String, TargetNode)>,
    denied: Vec<String>,
    discovery: DiscoveryService,
    discovery_off: bool,
    secrets: Vec<(Option<String>, String, String)>,
    sessions: Vec<(u16, SessionParams)>,
    bindings: Vec<SessionRequest>,
    redirect: Option<String>,
    reinstate: bool,
    bind_refusal: Option<LoginStatus>,
}

impl Model {
    fn with_target(node: TargetNode) -> Self {
        Model {
            nodes: vec![(IQN_T.to_string(), node)],
            ..Model::default()
        }
    }

    fn secret(mut self, target: Option<&str>, user: &str, secret: &str) -> Self {
        self.secrets
            .push((target.map(str::to_string), user.into(), secret.into()));
        self
    }
}

impl TargetDirectory for Model {
    fn send_targets(
        &self,
        _initiator: &InitiatorInfo<'_>,
        _portal_group_tag: u16,
        _query: TargetQuery<'_>,
    ) -> Vec<TargetRecord> {
        Vec::new()
    }
}

impl LoginPolicy for Model {
    fn target(
        &self,
        target_name: &str,
        initiator: &InitiatorInfo<'_>,
        _portal_group_tag: u16,
    ) -> Result<TargetNode, Refusal> {
        if let Some(address) = &self.redirect {
            return Err(Refusal::Redirect {
                target_address: address.clone(),
                permanent: false,
            });
        }
        let node = self
            .nodes
            .iter()
            .find(|(n, _)| n == target_name)
            .ok_or(LoginStatus::TARGET_NOT_FOUND)?;
        if self.denied.iter().any(|d| d == initiator.name) {
            return Err(LoginStatus::AUTHORIZATION_FAILURE.into());
        }
        Ok(node.1.clone())
    }

    fn discovery(
        &self,
        _initiator: &InitiatorInfo<'_>,
        _portal_group_tag: u16,
    ) -> Result<DiscoveryService, Refusal> {
        if self.discovery_off {
            return Err(LoginStatus::SESSION_TYPE_NOT_SUPPORTED.into());
        }
        Ok(self.discovery.clone())
    }

    fn chap_secret(&self, target_name: Option<&str>, user: &str) -> Option<ChapSecret> {
        self.secrets
            .iter()
            .find(|(t, u, _)| t.as_deref() == target_name && u == user)
            .map(|(_, _, s)| ChapSecret::new(s.as_bytes()))
    }

    fn bind_session(&mut self, binding: &SessionBinding<'_>) -> Result<SessionAdmission, Refusal> {
        self.bindings.push(binding.request);
        if let Some(status) = self.bind_refusal {
            return Err(status.into());
        }
        match binding.request {
            SessionRequest::New => {
                let tsih = 0x100 + self.sessions.len() as u16;
                self.sessions.push((tsih, *binding.params));
                Ok(SessionAdmission::New {
                    tsih: NonZeroU16::new(tsih).unwrap(),
                    reinstated: self.reinstate,
                })
            }
            SessionRequest::AddConnection { tsih } => self
                .sessions
                .iter()
                .find(|(t, _)| *t == tsih.get())
                .map(|(_, params)| SessionAdmission::Joined { params: *params })
                .ok_or(LoginStatus::SESSION_DOES_NOT_EXIST.into()),
        }
    }
}

// ---------------------------------------------------------------------------
// An initiator that talks to a Login through real BHS bytes.

struct Response {
    transit: bool,
    cont: bool,
    csg: u8,
    nsg: u8,
    tsih: u16,
    itt: u32,
    stat_sn: u32,
    exp_cmd_sn: u32,
    max_cmd_sn: u32,
    status: LoginStatus,
    answers: Vec<(String, String)>,
    raw_data: Vec<u8>,
    progress: LoginProgress,
}

impl Response {
    fn get(&self, key: &str) -> Option<&str> {
        self.answers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.answers.iter().map(|(k, _)| k.as_str()).collect()
    }

    fn outcome(self) -> LoginOutcome {
        match self.progress {
            LoginProgress::Complete(outcome) => *outcome,
            other => panic!("login not complete: {other:?}"),
        }
    }

    fn failed(&self) -> Option<LoginStatus> {
        match self.progress {
            LoginProgress::Failed(status) => Some(status),
            _ => None,
        }
    }

    fn in_progress(&self) -> bool {
        matches!(self.progress, LoginProgress::InProgress)
    }
}

fn u32_at(b: &Bhs, at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn parse_answers(data: &[u8]) -> Vec<(String, String)> {
    // The last piece of a long answer does not parse on its own.
    text::parse(data)
        .unwrap_or_default()
        .into_iter()
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect()
}

fn decode(reply: LoginReply) -> Response {
    let b = reply.header;
    assert_eq!(b[0], opcode::LOGIN_RESPONSE);
    assert_eq!(
        u32::from_be_bytes([0, b[5], b[6], b[7]]) as usize,
        reply.data.len()
    );
    let answers = if reply.data.is_empty() || b[1] & 0x40 != 0 {
        Vec::new()
    } else {
        parse_answers(&reply.data)
    };
    Response {
        transit: b[1] & 0x80 != 0,
        cont: b[1] & 0x40 != 0,
        csg: (b[1] >> 2) & 3,
        nsg: b[1] & 3,
        tsih: u16::from_be_bytes([b[14], b[15]]),
        itt: u32_at(&b, 16),
        stat_sn: u32_at(&b, 24),
        exp_cmd_sn: u32_at(&b, 28),
        max_cmd_sn: u32_at(&b, 32),
        status: LoginStatus {
            class: b[36],
            detail: b[37],
        },
        answers,
        raw_data: reply.data,
        progress: reply.progress,
    }
}

fn text_of(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut w = TextWriter::new();
    for (k, v) in pairs {
        w.push(k, v);
    }
    w.into_bytes()
}

struct Initiator {
    login: Login,
    model: Model,
    isid: Isid,
    tsih: u16,
    cid: u16,
    itt: u32,
    cmd_sn: u32,
    version_min: u8,
}

impl Initiator {
    fn new(model: Model) -> Self {
        Self::with_context(model, context())
    }

    fn with_context(model: Model, ctx: LoginContext) -> Self {
        Initiator {
            login: Login::new(ctx),
            model,
            isid: ISID,
            tsih: 0,
            cid: 1,
            itt: 0x77,
            cmd_sn: 0x500,
            version_min: 0,
        }
    }

    /// Builds the Login Request's 48 bytes per RFC 7143 §11.12 and decodes
    /// them as the target would.
    fn bhs(&self, csg: Stage, nsg: Option<Stage>, cont: bool, data_len: usize) -> LoginRequest {
        let mut b = [0u8; BHS_LEN];
        b[0] = 0x40 | opcode::LOGIN_REQUEST;
        b[1] = (csg as u8) << 2;
        if let Some(nsg) = nsg {
            b[1] |= 0x80 | nsg as u8;
        }
        if cont {
            b[1] |= 0x40;
        }
        b[2] = 0; // Version-max
        b[3] = self.version_min;
        b[5..8].copy_from_slice(&(data_len as u32).to_be_bytes()[1..]);
        b[8..14].copy_from_slice(&self.isid.0);
        b[14..16].copy_from_slice(&self.tsih.to_be_bytes());
        b[16..20].copy_from_slice(&self.itt.to_be_bytes());
        b[20..22].copy_from_slice(&self.cid.to_be_bytes());
        b[24..28].copy_from_slice(&self.cmd_sn.to_be_bytes());
        match InitiatorPdu::decode(&b).unwrap() {
            InitiatorPdu::Login(req) => req,
            other => panic!("{other:?}"),
        }
    }

    fn send_data(&mut self, csg: Stage, nsg: Option<Stage>, cont: bool, data: &[u8]) -> Response {
        let req = self.bhs(csg, nsg, cont, data.len());
        decode(self.login.handle(&req, data, &mut self.model))
    }

    fn send(&mut self, csg: Stage, nsg: Option<Stage>, pairs: &[(&str, &str)]) -> Response {
        self.send_data(csg, nsg, false, &text_of(pairs))
    }
}

fn context() -> LoginContext {
    LoginContext {
        portal_group_tag: 1,
        initiator_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        iser: false,
        initial_stat_sn: 0x1000,
        command_window: 32,
    }
}

fn chap_node(mode: ChapMode, target_credential: Option<ChapCredential>) -> TargetNode {
    TargetNode {
        alias: None,
        auth: AuthConfig {
            chap: mode,
            target_credential,
            min_secret_len: 0,
        },
        limits: TargetLimits::default(),
    }
}

/// libiscsi's operational keys, in its order.
const LIBISCSI_OP_KEYS: &[(&str, &str)] = &[
    ("HeaderDigest", "None,CRC32C"),
    ("DataDigest", "None"),
    ("InitialR2T", "No"),
    ("ImmediateData", "Yes"),
    ("MaxBurstLength", "262144"),
    ("FirstBurstLength", "262144"),
    ("DefaultTime2Wait", "2"),
    ("DefaultTime2Retain", "0"),
    ("MaxOutstandingR2T", "1"),
    ("ErrorRecoveryLevel", "0"),
    ("IFMarker", "No"),
    ("OFMarker", "No"),
    ("MaxConnections", "1"),
    ("MaxRecvDataSegmentLength", "262144"),
    ("DataPDUInOrder", "Yes"),
    ("DataSequenceInOrder", "Yes"),
];

/// open-iscsi's operational keys for a normal TCP session, in its order.
const OPEN_ISCSI_OP_KEYS: &[(&str, &str)] = &[
    ("HeaderDigest", "None"),
    ("DataDigest", "None"),
    ("DefaultTime2Wait", "2"),
    ("DefaultTime2Retain", "0"),
    ("IFMarker", "No"),
    ("OFMarker", "No"),
    ("ErrorRecoveryLevel", "0"),
    ("InitialR2T", "No"),
    ("ImmediateData", "Yes"),
    ("MaxBurstLength", "16776192"),
    ("FirstBurstLength", "262144"),
    ("MaxOutstandingR2T", "1"),
    ("MaxConnections", "1"),
    ("DataPDUInOrder", "Yes"),
    ("DataSequenceInOrder", "Yes"),
    ("MaxRecvDataSegmentLength", "262144"),
];

fn libiscsi_first_keys(session: &str) -> Vec<(&'static str, String)> {
    let mut keys = vec![("InitiatorName", IQN_I.to_string())];
    if session == "Normal" {
        keys.push(("TargetName", IQN_T.to_string()));
    }
    keys.push(("SessionType", session.to_string()));
    keys
}

fn with<'a>(
    first: &'a [(&'static str, String)],
    more: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    first
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(more.iter().copied())
        .collect()
}

// ---------------------------------------------------------------------------
// Successful logins.

#[test]
fn libiscsi_without_chap_in_one_request() {
    let mut model = Model::with_target(chap_node(ChapMode::Disabled, None));
    model.nodes[0].1.alias = Some("disk one".into());
    let mut ini = Initiator::new(model);
    let first = libiscsi_first_keys("Normal");
    let r = ini.send(OP, Some(FFP), &with(&first, LIBISCSI_OP_KEYS));
    assert_eq!(r.status, LoginStatus::SUCCESS);
    assert!(r.transit && !r.cont);
    assert_eq!((r.csg, r.nsg), (1, 3));
    assert_eq!(r.itt, 0x77);
    assert_eq!(r.stat_sn, 0x1000);
    assert_eq!((r.exp_cmd_sn, r.max_cmd_sn), (0x500, 0x500 + 31));
    assert_eq!(r.tsih, 0x100);
    assert_eq!(
        r.answers,
        [
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("InitialR2T", "Yes"),
            ("ImmediateData", "Yes"),
            ("MaxBurstLength", "262144"),
            ("FirstBurstLength", "65536"),
            ("DefaultTime2Wait", "2"),
            ("DefaultTime2Retain", "0"),
            ("MaxOutstandingR2T", "1"),
            ("ErrorRecoveryLevel", "0"),
            ("IFMarker", "No"),
            ("OFMarker", "No"),
            ("MaxConnections", "1"),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
            ("MaxRecvDataSegmentLength", "262144"),
            ("TargetPortalGroupTag", "1"),
            ("TargetAlias", "disk one"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    let out = r.outcome();
    assert_eq!(out.session_type, SessionType::Normal);
    assert_eq!(out.initiator_name, IQN_I);
    assert_eq!(out.target_name.as_deref(), Some(IQN_T));
    assert_eq!(out.target_alias.as_deref(), Some("disk one"));
    assert_eq!(out.isid, ISID);
    assert_eq!(out.tsih.get(), 0x100);
    assert_eq!(out.cid, 1);
    assert_eq!(
        out.admission,
        SessionAdmission::New {
            tsih: NonZeroU16::new(0x100).unwrap(),
            reinstated: false
        }
    );
    assert_eq!(out.exp_cmd_sn, 0x500);
    assert_eq!(out.next_stat_sn, 0x1001);
    assert_eq!(out.chap_user, None);
    assert_eq!(out.session_params.target_portal_group_tag, 1);
    assert_eq!(out.session_params.first_burst_length, 65536);
    assert_eq!(out.conn_params.max_send_data_segment_length, 262144);
    assert_eq!(out.conn_params.max_recv_data_segment_length, 262144);
    assert_eq!(ini.model.bindings, vec![SessionRequest::New]);
    assert_eq!(ini.model.sessions[0].1, out.session_params);
}

#[test]
fn libiscsi_with_one_way_chap() {
    let model = Model::with_target(chap_node(ChapMode::Required, None)).secret(
        Some(IQN_T),
        "libiscsi",
        "libiscsi",
    );
    let mut ini = Initiator::new(model);
    let first = libiscsi_first_keys("Normal");

    // 1. Names and AuthMethod; T=1 towards the operational stage.
    let r = ini.send(SEC, Some(OP), &with(&first, &[("AuthMethod", "CHAP,None")]));
    assert!(r.in_progress());
    assert!(!r.transit, "CHAP is not done: the target must not transit");
    assert_eq!(r.csg, 0);
    assert_eq!(r.tsih, 0);
    assert_eq!(r.get("AuthMethod"), Some("CHAP"));
    assert_eq!(r.get("TargetPortalGroupTag"), Some("1"));

    // 2. CHAP_A with T=0.
    let r = ini.send(SEC, None, &[("CHAP_A", "5")]);
    assert!(!r.transit);
    assert_eq!(r.keys(), ["CHAP_A", "CHAP_I", "CHAP_C"]);
    assert_eq!(r.get("CHAP_A"), Some("5"));
    let id: u8 = r.get("CHAP_I").unwrap().parse().unwrap();
    let challenge = decode_binary(r.get("CHAP_C").unwrap()).unwrap();
    assert!(challenge.len() >= 16);
    assert_eq!(r.stat_sn, 0x1001);

    // 3. CHAP_N/CHAP_R, T=1: MD5(id || secret || challenge), computed here.
    let response = encode_hex(&md5_response(id, b"libiscsi", &challenge));
    let r = ini.send(
        SEC,
        Some(OP),
        &[("CHAP_N", "libiscsi"), ("CHAP_R", &response)],
    );
    assert!(r.transit);
    assert_eq!((r.csg, r.nsg), (0, 1));
    assert!(r.answers.is_empty());

    // 4. Operational keys only (libiscsi does not repeat the names).
    let r = ini.send(OP, Some(FFP), LIBISCSI_OP_KEYS);
    assert!(r.transit);
    assert_eq!((r.csg, r.nsg), (1, 3));
    assert_eq!(
        r.get("TargetPortalGroupTag"),
        None,
        "only in the first response"
    );
    let out = r.outcome();
    assert_eq!(out.chap_user.as_deref(), Some("libiscsi"));
    assert!(!out.target_authenticated);
    assert_eq!(out.next_stat_sn, 0x1004);
}

fn chap_exchange(ini: &mut Initiator, first_keys: &[(&str, &str)], chap_a: &str) -> (u8, Vec<u8>) {
    let r = ini.send(SEC, Some(OP), first_keys);
    assert_eq!(r.get("AuthMethod"), Some("CHAP"), "{:?}", r.failed());
    let r = ini.send(SEC, None, &[("CHAP_A", chap_a)]);
    assert_eq!(r.get("CHAP_A"), Some("5"));
    let id = r.get("CHAP_I").unwrap().parse().unwrap();
    (id, decode_binary(r.get("CHAP_C").unwrap()).unwrap())
}

#[test]
fn libiscsi_with_mutual_chap() {
    let target = ChapCredential {
        name: "outgoing".into(),
        secret: ChapSecret::new("outgoing"),
    };
    let model = Model::with_target(chap_node(ChapMode::Mutual, Some(target))).secret(
        Some(IQN_T),
        "libiscsi",
        "libiscsi",
    );
    let mut ini = Initiator::new(model);
    let first = libiscsi_first_keys("Normal");
    let (id, challenge) =
        chap_exchange(&mut ini, &with(&first, &[("AuthMethod", "CHAP,None")]), "5");
    // libiscsi's mutual challenge: twice the response size, identifier + 1.
    let mutual_challenge: Vec<u8> = (0..32).map(|i| i * 7 + 1).collect();
    let response = encode_hex(&md5_response(id, b"libiscsi", &challenge));
    let mutual_hex = encode_hex(&mutual_challenge);
    let r = ini.send(
        SEC,
        Some(OP),
        &[
            ("CHAP_N", "libiscsi"),
            ("CHAP_R", &response),
            ("CHAP_I", "1"),
            ("CHAP_C", &mutual_hex),
        ],
    );
    // libiscsi insists on CHAP_N and CHAP_R in the transit response.
    assert!(r.transit);
    assert_eq!(r.get("CHAP_N"), Some("outgoing"));
    let expected = md5_response(1, b"outgoing", &mutual_challenge);
    assert_eq!(r.get("CHAP_R"), Some(encode_hex(&expected).as_str()));
    let out = ini.send(OP, Some(FFP), LIBISCSI_OP_KEYS).outcome();
    assert!(out.target_authenticated);
}

#[test]
fn open_iscsi_normal_session_without_auth() {
    let mut model = Model::with_target(chap_node(ChapMode::Disabled, None));
    model.nodes[0].1.alias = Some("disk one".into());
    let mut ini = Initiator::new(model);
    let r = ini.send(
        SEC,
        Some(OP),
        &[
            ("InitiatorName", IQN_I),
            ("InitiatorAlias", "host1"),
            ("TargetName", IQN_T),
            ("SessionType", "Normal"),
            ("AuthMethod", "None"),
        ],
    );
    assert!(r.transit);
    assert_eq!((r.csg, r.nsg), (0, 1));
    // open-iscsi understands exactly these in the security stage.
    assert_eq!(
        r.keys(),
        ["AuthMethod", "TargetPortalGroupTag", "TargetAlias"]
    );
    let r = ini.send(OP, Some(FFP), OPEN_ISCSI_OP_KEYS);
    // open-iscsi fails the login on any key it did not send, except these.
    let sent: Vec<&str> = OPEN_ISCSI_OP_KEYS.iter().map(|(k, _)| *k).collect();
    for key in r.keys() {
        assert!(
            sent.contains(&key)
                || ["TargetAlias", "TargetAddress", "TargetPortalGroupTag"].contains(&key),
            "{key}"
        );
    }
    assert_eq!(r.get("MaxConnections"), Some("1"));
    assert_eq!(r.get("ErrorRecoveryLevel"), Some("0"));
    assert_eq!(r.get("HeaderDigest"), Some("None"));
    let out = r.outcome();
    assert_eq!(out.initiator_alias.as_deref(), Some("host1"));
    assert_eq!(out.session_params.max_burst_length, 1 << 20);
}

#[test]
fn open_iscsi_chap_with_algorithm_list_and_mutual() {
    let target = ChapCredential {
        name: "target-user".into(),
        secret: ChapSecret::new("target-secret-123"),
    };
    let model = Model::with_target(chap_node(ChapMode::Required, Some(target))).secret(
        Some(IQN_T),
        "iuser",
        "initiator-secret-1",
    );
    let mut ini = Initiator::new(model);
    let first = [
        ("InitiatorName", IQN_I),
        ("InitiatorAlias", "host1"),
        ("TargetName", IQN_T),
        ("SessionType", "Normal"),
        ("AuthMethod", "CHAP,None"),
    ];
    // Newer open-iscsi offers SHA3-256, SHA-256, SHA-1 before MD5.
    let (id, challenge) = chap_exchange(&mut ini, &first, "8,7,6,5");
    let response = encode_hex(&md5_response(id, b"initiator-secret-1", &challenge));
    let mutual = encode_hex(&[0xa5; 16]);
    let r = ini.send(
        SEC,
        Some(OP),
        &[
            ("CHAP_N", "iuser"),
            ("CHAP_R", &response),
            ("CHAP_I", "0x2a"),
            ("CHAP_C", &mutual),
        ],
    );
    assert!(r.transit);
    assert_eq!(r.get("CHAP_N"), Some("target-user"));
    let expected = md5_response(42, b"target-secret-123", &[0xa5; 16]);
    assert_eq!(r.get("CHAP_R"), Some(encode_hex(&expected).as_str()));
    let out = ini.send(OP, Some(FFP), OPEN_ISCSI_OP_KEYS).outcome();
    assert_eq!(out.chap_user.as_deref(), Some("iuser"));
    assert!(out.target_authenticated);
}

#[test]
fn discovery_straight_from_security_to_full_feature() {
    // open-iscsi with default digests and MRDSL: CSG=0 NSG=3.
    let mut ini = Initiator::new(Model::default());
    let r = ini.send(
        SEC,
        Some(FFP),
        &[
            ("InitiatorName", IQN_I),
            ("InitiatorAlias", "host1"),
            ("SessionType", "Discovery"),
            ("AuthMethod", "None"),
        ],
    );
    assert!(r.transit);
    assert_eq!((r.csg, r.nsg), (0, 3));
    assert_eq!(r.answers, [("AuthMethod".to_string(), "None".to_string())]);
    assert_ne!(r.tsih, 0);
    let out = r.outcome();
    assert_eq!(out.session_type, SessionType::Discovery);
    assert_eq!(out.target_name, None);
    // Nothing declared: both sides keep the 8192 default.
    assert_eq!(out.conn_params.max_recv_data_segment_length, 8192);
    assert_eq!(out.conn_params.max_send_data_segment_length, 8192);
}

#[test]
fn discovery_through_the_operational_stage() {
    let mut ini = Initiator::new(Model::default());
    let r = ini.send(
        SEC,
        Some(OP),
        &[
            ("InitiatorName", IQN_I),
            ("SessionType", "Discovery"),
            ("AuthMethod", "None"),
        ],
    );
    assert!(r.transit);
    // open-iscsi's discovery operational keys.
    let r = ini.send(
        OP,
        Some(FFP),
        &[
            ("HeaderDigest", "CRC32C,None"),
            ("DataDigest", "None"),
            ("DefaultTime2Wait", "2"),
            ("DefaultTime2Retain", "0"),
            ("IFMarker", "No"),
            ("OFMarker", "No"),
            ("ErrorRecoveryLevel", "0"),
            ("MaxRecvDataSegmentLength", "32768"),
        ],
    );
    assert_eq!(r.get("HeaderDigest"), Some("CRC32C"));
    assert!(r.answers.iter().all(|(_, v)| v != "Irrelevant"));
    assert_eq!(r.get("MaxRecvDataSegmentLength"), Some("262144"));
    let out = r.outcome();
    assert_eq!(out.conn_params.header_digest, DigestType::Crc32c);
    assert_eq!(out.conn_params.max_send_data_segment_length, 32768);

    // libiscsi's discovery login sends the normal-session keys too.
    let mut ini = Initiator::new(Model::default());
    let first = libiscsi_first_keys("Discovery");
    let r = ini.send(OP, Some(FFP), &with(&first, LIBISCSI_OP_KEYS));
    assert_eq!(r.get("InitialR2T"), Some("Irrelevant"));
    assert_eq!(r.get("MaxBurstLength"), Some("Irrelevant"));
    assert_eq!(r.get("TargetPortalGroupTag"), None);
    assert!(matches!(r.progress, LoginProgress::Complete(_)));
}

#[test]
fn continue_bit_from_the_initiator() {
    let mut ini = Initiator::new(Model::with_target(chap_node(ChapMode::Disabled, None)));
    let first = libiscsi_first_keys("Normal");
    let text = text_of(&with(&first, LIBISCSI_OP_KEYS));
    // Split in the middle of a key=value pair.
    let (a, b) = text.split_at(37);
    let r = ini.send_data(OP, None, true, a);
    assert!(r.in_progress());
    assert!(!r.transit && !r.cont);
    assert!(r.raw_data.is_empty());
    assert_eq!(r.status, LoginStatus::SUCCESS);
    let r = ini.send_data(OP, Some(FFP), false, b);
    assert_eq!(r.stat_sn, 0x1001);
    assert_eq!(r.get("HeaderDigest"), Some("None"));
    assert_eq!(r.outcome().initiator_name, IQN_I);
}

#[test]
fn long_answers_go_out_in_pieces() {
    let mut ini = Initiator::new(Model::with_target(chap_node(ChapMode::Disabled, None)));
    let names: Vec<String> = (0..500).map(|i| format!("X-test.key{i:04}")).collect();
    let first = libiscsi_first_keys("Normal");
    let mut pairs = with(&first, LIBISCSI_OP_KEYS);
    pairs.extend(names.iter().map(|n| (n.as_str(), "1")));
    let r = ini.send(OP, Some(FFP), &pairs);
    assert!(r.cont && !r.transit);
    assert_eq!(r.raw_data.len(), 8192);
    assert!(r.in_progress());
    let mut joined = r.raw_data;
    let mut pieces = 1;
    loop {
        // An empty request fetches the next piece.
        let r = ini.send_data(OP, Some(FFP), false, &[]);
        joined.extend_from_slice(&r.raw_data);
        pieces += 1;
        if !r.cont {
            assert!(r.transit);
            assert_eq!((r.csg, r.nsg), (1, 3));
            let out = r.outcome();
            assert_eq!(out.next_stat_sn, 0x1000 + pieces);
            break;
        }
        assert!(r.raw_data.len() == 8192 && !r.transit);
    }
    let answers = parse_answers(&joined);
    assert_eq!(
        answers.iter().filter(|(_, v)| v == "NotUnderstood").count(),
        500
    );
    // 15 answers (MRDSL is a declaration), 500 NotUnderstood, MRDSL, TPGT.
    assert_eq!(answers.len(), 15 + 500 + 2);
}

#[test]
fn target_offers_keys_its_limits_need() {
    let mut node = chap_node(ChapMode::Disabled, None);
    node.limits.immediate_data = false;
    node.limits.data_digests = AllowedDigests::CRC32C_ONLY;
    let mut ini = Initiator::new(Model::with_target(node));
    let r = ini.send(
        OP,
        Some(FFP),
        &[
            ("InitiatorName", IQN_I),
            ("TargetName", IQN_T),
            ("MaxBurstLength", "65536"),
        ],
    );
    // Not ready: the target offers and waits.
    assert!(!r.transit);
    assert_eq!(r.get("ImmediateData"), Some("No"));
    assert_eq!(r.get("DataDigest"), Some("CRC32C"));
    assert_eq!(r.get("MaxBurstLength"), Some("65536"));
    // The initiator answers and asks again.
    let r = ini.send(
        OP,
        Some(FFP),
        &[("ImmediateData", "No"), ("DataDigest", "CRC32C")],
    );
    assert!(r.transit);
    assert!(r.answers.is_empty());
    let out = r.outcome();
    assert!(!out.session_params.immediate_data);
    assert_eq!(out.conn_params.data_digest, DigestType::Crc32c);

    // An answer the target cannot accept.
    let mut node = chap_node(ChapMode::Disabled, None);
    node.limits.immediate_data = false;
    let mut ini = Initiator::new(Model::with_target(node));
    let r = ini.send(
        OP,
        Some(FFP),
        &[("InitiatorName", IQN_I), ("TargetName", IQN_T)],
    );
    assert!(!r.transit);
    let r = ini.send(OP, Some(FFP), &[("ImmediateData", "Yes")]);
    assert_eq!(r.failed(), Some(LoginStatus::INITIATOR_ERROR));
}

#[test]
fn iser_login_as_open_iscsi_sends_it() {
    let ctx = LoginContext {
        iser: true,
        ..context()
    };
    let mut ini =
        Initiator::with_context(Model::with_target(chap_node(ChapMode::Disabled, None)), ctx);
    let r = ini.send(
        SEC,
        Some(OP),
        &[
            ("InitiatorName", IQN_I),
            ("TargetName", IQN_T),
            ("SessionType", "Normal"),
            ("AuthMethod", "None"),
        ],
    );
    assert!(r.transit);
    let mut keys: Vec<(&str, &str)> = OPEN_ISCSI_OP_KEYS
        .iter()
        .copied()
        .filter(|(k, _)| !["HeaderDigest", "DataDigest", "MaxRecvDataSegmentLength"].contains(k))
        .collect();
    keys.extend([
        ("InitiatorRecvDataSegmentLength", "262144"),
        ("TargetRecvDataSegmentLength", "262144"),
        ("RDMAExtensions", "Yes"),
    ]);
    let r = ini.send(OP, Some(FFP), &keys);
    assert_eq!(r.get("RDMAExtensions"), Some("Yes"));
    assert_eq!(r.get("MaxRecvDataSegmentLength"), None);
    let out = r.outcome();
    assert!(out.session_params.rdma_extensions);
    // The target receives what its buffers hold (8192 by default).
    assert_eq!(out.conn_params.iser_target_recv_data_segment_length, 8192);
    assert!(out.conn_params.iser_assisted);
    assert_eq!(out.conn_params.recv_segment_limit(), 8192);
    assert_eq!(out.conn_params.header_digest, DigestType::None);
}

#[test]
fn iser_login_without_rdma_extensions_fails() {
    let ctx = LoginContext {
        iser: true,
        ..context()
    };
    let first = [
        ("InitiatorName", IQN_I),
        ("TargetName", IQN_T),
        ("SessionType", "Normal"),
        ("AuthMethod", "None"),
    ];
    // Offered No: the login fails at once.
    let mut ini =
        Initiator::with_context(Model::with_target(chap_node(ChapMode::Disabled, None)), ctx);
    assert!(ini.send(SEC, Some(OP), &first).transit);
    let r = ini.send(OP, Some(FFP), &[("RDMAExtensions", "No")]);
    assert_eq!(r.failed(), Some(LoginStatus::INITIATOR_ERROR));
    assert!(ini.model.bindings.is_empty());

    // Not offered: the target asks for Yes before the full feature phase.
    let mut ini =
        Initiator::with_context(Model::with_target(chap_node(ChapMode::Disabled, None)), ctx);
    ini.send(SEC, Some(OP), &first);
    let r = ini.send(OP, Some(FFP), &[("ErrorRecoveryLevel", "0")]);
    assert!(!r.transit);
    assert_eq!(r.get("RDMAExtensions"), Some("Yes"));
    let r = ini.send(OP, Some(FFP), &[("RDMAExtensions", "Yes")]);
    assert!(r.transit);
    assert!(r.outcome().session_params.rdma_extensions);
}

#[test]
fn one_transport_per_session() {
    // An iSER connection may not join a TCP session, nor the reverse.
    for (session_iser, conn_iser) in [(false, true), (true, false)] {
        let mut model = Model::with_target(chap_node(ChapMode::Disabled, None));
        let mut params = SessionParams {
            rdma_extensions: session_iser,
            ..SessionParams::default()
        };
        params.target_portal_group_tag = 1;
        model.sessions.push((0x42, params));
        let ctx = LoginContext {
            iser: conn_iser,
            ..context()
        };
        let mut ini = Initiator::with_context(model, ctx);
        ini.tsih = 0x42;
        ini.cid = 2;
        let first = libiscsi_first_keys("Normal");
        let r = ini.send(OP, Some(FFP), &with(&first, &[("ErrorRecoveryLevel", "0")]));
        assert_eq!(
            r.failed(),
            Some(LoginStatus::CANT_INCLUDE_IN_SESSION),
            "session iSER {session_iser}, connection iSER {conn_iser}"
        );
    }
}

#[test]
fn adding_a_connection_to_a_session() {
    let mut model = Model::with_target(chap_node(ChapMode::Disabled, None));
    let mut params = SessionParams {
        max_burst_length: 65536,
        ..SessionParams::default()
    };
    params.target_portal_group_tag = 1;
    model.sessions.push((0x42, params));
    let mut ini = Initiator::new(model);
    ini.tsih = 0x42;
    ini.cid = 2;
    let first = libiscsi_first_keys("Normal");
    let r = ini.send(OP, Some(FFP), &with(&first, LIBISCSI_OP_KEYS));
    assert_eq!(r.tsih, 0x42);
    // Session-wide keys are settled already.
    assert_eq!(r.get("MaxBurstLength"), Some("Irrelevant"));
    assert_eq!(r.get("HeaderDigest"), Some("None"));
    let out = r.outcome();
    assert_eq!(out.tsih.get(), 0x42);
    assert_eq!(out.cid, 2);
    assert_eq!(out.admission, SessionAdmission::Joined { params });
    assert_eq!(out.session_params.max_burst_length, 65536);
    assert_eq!(
        ini.model.bindings,
        vec![SessionRequest::AddConnection {
            tsih: NonZeroU16::new(0x42).unwrap()
        }]
    );

    // A TSIH the model does not know.
    let mut ini = Initiator::new(Model::with_target(chap_node(ChapMode::Disabled, None)));
    ini.tsih = 0x99;
    let r = ini.send(OP, Some(FFP), &with(&first, LIBISCSI_OP_KEYS));
    assert_eq!(r.failed(), Some(LoginStatus::SESSION_DOES_NOT_EXIST));
    assert_eq!(r.status.code(), 0x020a);
    assert_eq!(r.tsih, 0x99);
}

#[test]
fn session_reinstatement_is_reported() {
    let mut model = Model::with_target(chap_node(ChapMode::Disabled, None));
    model.reinstate = true;
    let mut ini = Initiator::new(model);
    let first = libiscsi_first_keys("Normal");
    let out = ini
        .send(OP, Some(FFP), &with(&first, LIBISCSI_OP_KEYS))
        .outcome();
    assert!(matches!(
        out.admission,
        SessionAdmission::New {
            reinstated: true,
            ..
        }
    ));
}

// ---------------------------------------------------------------------------
// Failures.

/// One Login Request: CSG, NSG (T bit), keys.
type Request<'a> = (Stage, Option<Stage>, &'a [(&'a str, &'a str)]);

fn fails_with(model: Model, steps: &[Request<'_>], status: LoginStatus) {
    let mut ini = Initiator::new(model);
    let mut last = None;
    for (csg, nsg, pairs) in steps {
        let r = ini.send(*csg, *nsg, pairs);
        if r.failed().is_some() {
            last = Some(r);
            break;
        }
    }
    let r = last.expect("login did not fail");
    assert_eq!(r.failed(), Some(status));
    assert_eq!(r.status, status);
    assert!(!r.transit);
    // Once failed, everything fails.
    let again = ini.send(SEC, None, &[]);
    assert_eq!(again.failed(), Some(LoginStatus::INVALID_DURING_LOGIN));
}

fn open_target() -> Model {
    Model::with_target(chap_node(ChapMode::Disabled, None))
}

#[test]
fn missing_names_and_bad_session_types() {
    fails_with(
        open_target(),
        &[(OP, Some(FFP), &[("TargetName", IQN_T)])],
        LoginStatus::MISSING_PARAMETER,
    );
    fails_with(
        open_target(),
        &[(
            OP,
            Some(FFP),
            &[("InitiatorName", IQN_I), ("SessionType", "Normal")],
        )],
        LoginStatus::MISSING_PARAMETER,
    );
    fails_with(
        open_target(),
        &[(
            OP,
            Some(FFP),
            &[("InitiatorName", ""), ("TargetName", IQN_T)],
        )],
        LoginStatus::MISSING_PARAMETER,
    );
    fails_with(
        open_target(),
        &[(
            OP,
            Some(FFP),
            &[("InitiatorName", IQN_I), ("SessionType", "Maintenance")],
        )],
        LoginStatus::SESSION_TYPE_NOT_SUPPORTED,
    );
    let mut no_discovery = open_target();
    no_discovery.discovery_off = true;
    fails_with(
        no_discovery,
        &[(
            SEC,
            Some(FFP),
            &[("InitiatorName", IQN_I), ("SessionType", "Discovery")],
        )],
        LoginStatus::SESSION_TYPE_NOT_SUPPORTED,
    );
}

#[test]
fn target_lookup_refusals() {
    fails_with(
        open_target(),
        &[(
            OP,
            Some(FFP),
            &[
                ("InitiatorName", IQN_I),
                ("TargetName", "iqn.2026-11.test:nope"),
            ],
        )],
        LoginStatus::TARGET_NOT_FOUND,
    );
    let mut denied = open_target();
    denied.denied.push(IQN_I.into());
    fails_with(
        denied,
        &[(
            OP,
            Some(FFP),
            &[("InitiatorName", IQN_I), ("TargetName", IQN_T)],
        )],
        LoginStatus::AUTHORIZATION_FAILURE,
    );
    let mut full = open_target();
    full.bind_refusal = Some(LoginStatus::OUT_OF_RESOURCES);
    fails_with(
        full,
        &[(
            OP,
            Some(FFP),
            &[("InitiatorName", IQN_I), ("TargetName", IQN_T)],
        )],
        LoginStatus::OUT_OF_RESOURCES,
    );
}

#[test]
fn redirect() {
    let mut model = open_target();
    model.redirect = Some("192.0.2.7:3260,2".into());
    let mut ini = Initiator::new(model);
    let r = ini.send(
        SEC,
        Some(OP),
        &[("InitiatorName", IQN_I), ("TargetName", IQN_T)],
    );
    assert_eq!(r.failed(), Some(LoginStatus::TARGET_MOVED_TEMPORARILY));
    assert_eq!(r.status.code(), 0x0101);
    assert_eq!(r.raw_data, b"TargetAddress=192.0.2.7:3260,2\0");
}

#[test]
fn unsupported_version() {
    let mut ini = Initiator::new(open_target());
    ini.version_min = 1;
    let r = ini.send(
        OP,
        Some(FFP),
        &[("InitiatorName", IQN_I), ("TargetName", IQN_T)],
    );
    assert_eq!(r.failed(), Some(LoginStatus::UNSUPPORTED_VERSION));
}

fn chap_target() -> Model {
    Model::with_target(chap_node(ChapMode::Required, None)).secret(
        Some(IQN_T),
        "libiscsi",
        "libiscsi",
    )
}

const NAMES_AND_CHAP: &[(&str, &str)] = &[
    ("InitiatorName", IQN_I),
    ("TargetName", IQN_T),
    ("AuthMethod", "CHAP,None"),
];

#[test]
fn authentication_failures() {
    // No credentials: AuthMethod=None against a CHAP target (libiscsi
    // without a user goes straight to the operational stage).
    fails_with(
        chap_target(),
        &[(
            SEC,
            Some(OP),
            &[
                ("InitiatorName", IQN_I),
                ("TargetName", IQN_T),
                ("AuthMethod", "None"),
            ],
        )],
        LoginStatus::AUTHENTICATION_FAILURE,
    );
    fails_with(
        chap_target(),
        &[(
            OP,
            Some(FFP),
            &[("InitiatorName", IQN_I), ("TargetName", IQN_T)],
        )],
        LoginStatus::AUTHENTICATION_FAILURE,
    );
    // Leaving the security stage without AuthMethod.
    fails_with(
        chap_target(),
        &[(
            SEC,
            Some(OP),
            &[("InitiatorName", IQN_I), ("TargetName", IQN_T)],
        )],
        LoginStatus::AUTHENTICATION_FAILURE,
    );
    // Bad CHAP_A lists (libiscsi's test_iscsi_chap_invalid).
    for bad in ["56", ""] {
        fails_with(
            chap_target(),
            &[
                (SEC, Some(OP), NAMES_AND_CHAP),
                (SEC, None, &[("CHAP_A", bad)]),
            ],
            LoginStatus::AUTHENTICATION_FAILURE,
        );
    }
    // CHAP_N/CHAP_R before CHAP_A.
    fails_with(
        chap_target(),
        &[
            (SEC, Some(OP), NAMES_AND_CHAP),
            (SEC, Some(OP), &[("CHAP_N", "libiscsi"), ("CHAP_R", "0x00")]),
        ],
        LoginStatus::AUTHENTICATION_FAILURE,
    );
}

#[test]
fn wrong_secret_wrong_user_and_reflection() {
    let cases: [(&str, &[u8], bool); 3] = [
        ("libiscsi", b"wrong", false),
        ("wrong", b"libiscsi", false),
        ("libiscsi", b"libiscsi", true),
    ];
    for (user, secret, reflect) in cases {
        let target = ChapCredential {
            name: "outgoing".into(),
            secret: ChapSecret::new("outgoing-secret"),
        };
        let model = Model::with_target(chap_node(ChapMode::Required, Some(target))).secret(
            Some(IQN_T),
            "libiscsi",
            "libiscsi",
        );
        let mut ini = Initiator::new(model);
        let (id, challenge) = chap_exchange(&mut ini, NAMES_AND_CHAP, "5");
        let response = encode_hex(&md5_response(id, secret, &challenge));
        let reflected = encode_hex(&challenge);
        let mut keys = vec![("CHAP_N", user), ("CHAP_R", response.as_str())];
        if reflect {
            keys.extend([("CHAP_I", "3"), ("CHAP_C", reflected.as_str())]);
        }
        let r = ini.send(SEC, Some(OP), &keys);
        assert_eq!(
            r.failed(),
            Some(LoginStatus::AUTHENTICATION_FAILURE),
            "{user} {reflect}"
        );
        assert!(r.raw_data.is_empty());
    }
}

#[test]
fn secrets_are_looked_up_per_target_and_for_discovery() {
    // A discovery secret is not a target secret.
    let mut model = Model::default().secret(None, "disc", "discovery-secret");
    model.discovery.auth.chap = ChapMode::Required;
    let mut ini = Initiator::new(model);
    let first = [
        ("InitiatorName", IQN_I),
        ("SessionType", "Discovery"),
        ("AuthMethod", "CHAP"),
    ];
    let (id, challenge) = chap_exchange(&mut ini, &first, "5");
    let response = encode_hex(&md5_response(id, b"discovery-secret", &challenge));
    let r = ini.send(SEC, Some(FFP), &[("CHAP_N", "disc"), ("CHAP_R", &response)]);
    assert_eq!(r.outcome().chap_user.as_deref(), Some("disc"));

    let model = Model::with_target(chap_node(ChapMode::Required, None)).secret(
        None,
        "disc",
        "discovery-secret",
    );
    let mut ini = Initiator::new(model);
    let (id, challenge) = chap_exchange(&mut ini, NAMES_AND_CHAP, "5");
    let response = encode_hex(&md5_response(id, b"discovery-secret", &challenge));
    let r = ini.send(SEC, Some(OP), &[("CHAP_N", "disc"), ("CHAP_R", &response)]);
    assert_eq!(r.failed(), Some(LoginStatus::AUTHENTICATION_FAILURE));
}

#[test]
fn short_secrets_can_be_refused() {
    let mut node = chap_node(ChapMode::Required, None);
    node.auth.min_secret_len = 12;
    let model = Model::with_target(node).secret(Some(IQN_T), "libiscsi", "libiscsi");
    let mut ini = Initiator::new(model);
    let (id, challenge) = chap_exchange(&mut ini, NAMES_AND_CHAP, "5");
    let response = encode_hex(&md5_response(id, b"libiscsi", &challenge));
    let r = ini.send(
        SEC,
        Some(OP),
        &[("CHAP_N", "libiscsi"), ("CHAP_R", &response)],
    );
    assert_eq!(r.failed(), Some(LoginStatus::AUTHENTICATION_FAILURE));
}

#[test]
fn mutual_mode_requires_the_initiator_to_ask() {
    let target = ChapCredential {
        name: "outgoing".into(),
        secret: ChapSecret::new("outgoing-secret"),
    };
    let model = Model::with_target(chap_node(ChapMode::Mutual, Some(target))).secret(
        Some(IQN_T),
        "libiscsi",
        "libiscsi",
    );
    let mut ini = Initiator::new(model);
    let (id, challenge) = chap_exchange(&mut ini, NAMES_AND_CHAP, "5");
    let response = encode_hex(&md5_response(id, b"libiscsi", &challenge));
    let r = ini.send(
        SEC,
        Some(OP),
        &[("CHAP_N", "libiscsi"), ("CHAP_R", &response)],
    );
    assert_eq!(r.failed(), Some(LoginStatus::AUTHENTICATION_FAILURE));
}

#[test]
fn protocol_errors_are_initiator_errors() {
    let names: &[(&str, &str)] = &[("InitiatorName", IQN_I), ("TargetName", IQN_T)];
    let err = LoginStatus::INITIATOR_ERROR;
    // The same key twice in one text.
    fails_with(
        open_target(),
        &[(
            OP,
            Some(FFP),
            &[
                ("InitiatorName", IQN_I),
                ("TargetName", IQN_T),
                ("MaxBurstLength", "512"),
                ("MaxBurstLength", "512"),
            ],
        )],
        err,
    );
    // A key renegotiated in a later request.
    fails_with(
        open_target(),
        &[
            (
                OP,
                None,
                &[
                    ("InitiatorName", IQN_I),
                    ("TargetName", IQN_T),
                    ("MaxBurstLength", "8192"),
                ],
            ),
            (OP, Some(FFP), &[("MaxBurstLength", "16384")]),
        ],
        err,
    );
    // A different InitiatorName later on.
    fails_with(
        open_target(),
        &[
            (OP, None, names),
            (
                OP,
                Some(FFP),
                &[("InitiatorName", "iqn.2026-11.test:other")],
            ),
        ],
        err,
    );
    // Operational keys in the security stage; security keys in the
    // operational stage; keys only targets send.
    fails_with(
        open_target(),
        &[(
            SEC,
            None,
            &[
                ("InitiatorName", IQN_I),
                ("TargetName", IQN_T),
                ("MaxBurstLength", "512"),
            ],
        )],
        err,
    );
    fails_with(
        open_target(),
        &[(
            OP,
            None,
            &[
                ("InitiatorName", IQN_I),
                ("TargetName", IQN_T),
                ("AuthMethod", "None"),
            ],
        )],
        err,
    );
    fails_with(
        open_target(),
        &[(
            OP,
            None,
            &[
                ("InitiatorName", IQN_I),
                ("TargetName", IQN_T),
                ("CHAP_A", "5"),
            ],
        )],
        err,
    );
    fails_with(
        open_target(),
        &[(
            OP,
            None,
            &[
                ("InitiatorName", IQN_I),
                ("TargetName", IQN_T),
                ("TargetAlias", "x"),
            ],
        )],
        err,
    );
    // A reserved value offered.
    fails_with(
        open_target(),
        &[(
            OP,
            None,
            &[
                ("InitiatorName", IQN_I),
                ("TargetName", IQN_T),
                ("ImmediateData", "Irrelevant"),
            ],
        )],
        err,
    );
    // CHAP keys with AuthMethod=None.
    fails_with(
        open_target(),
        &[(
            SEC,
            None,
            &[
                ("InitiatorName", IQN_I),
                ("TargetName", IQN_T),
                ("AuthMethod", "None"),
                ("CHAP_A", "5"),
            ],
        )],
        err,
    );
    // Stage errors: going backwards, staying, starting in the full feature
    // phase, a CSG that is not the agreed stage.
    fails_with(open_target(), &[(OP, Some(SEC), names)], err);
    fails_with(open_target(), &[(OP, Some(OP), names)], err);
    fails_with(open_target(), &[(FFP, None, names)], err);
    fails_with(
        open_target(),
        &[(SEC, None, names), (OP, Some(FFP), &[])],
        err,
    );
}

#[test]
fn malformed_text_and_changing_ids() {
    let mut ini = Initiator::new(open_target());
    let r = ini.send_data(OP, None, false, b"InitiatorName=x");
    assert_eq!(r.failed(), Some(LoginStatus::INITIATOR_ERROR));

    let mut ini = Initiator::new(open_target());
    let r = ini.send(
        SEC,
        None,
        &[("InitiatorName", IQN_I), ("TargetName", IQN_T)],
    );
    assert!(r.in_progress());
    ini.isid = Isid([0x80, 0, 0, 0, 0, 1]);
    let r = ini.send(SEC, None, &[]);
    assert_eq!(r.failed(), Some(LoginStatus::INITIATOR_ERROR));

    let mut ini = Initiator::new(open_target());
    ini.send(
        SEC,
        None,
        &[("InitiatorName", IQN_I), ("TargetName", IQN_T)],
    );
    ini.cid = 9;
    assert_eq!(
        ini.send(SEC, None, &[]).failed(),
        Some(LoginStatus::INITIATOR_ERROR)
    );

    // Data that does not match DataSegmentLength.
    let mut ini = Initiator::new(open_target());
    let req = ini.bhs(OP, None, false, 10);
    let r = decode(ini.login.handle(&req, b"abc", &mut ini.model));
    assert_eq!(r.failed(), Some(LoginStatus::INITIATOR_ERROR));
}

#[test]
fn unknown_keys_and_send_targets_during_login() {
    let mut ini = Initiator::new(open_target());
    let r = ini.send(
        SEC,
        None,
        &[
            ("InitiatorName", IQN_I),
            ("TargetName", IQN_T),
            ("X-com.example.Hello", "1"),
            ("SendTargets", "All"),
        ],
    );
    assert_eq!(r.get("X-com.example.Hello"), Some("NotUnderstood"));
    assert_eq!(r.get("SendTargets"), Some("Reject"));
    assert!(r.in_progress());
    // Identity keys may come again unchanged.
    let r = ini.send(
        SEC,
        Some(OP),
        &[
            ("InitiatorName", IQN_I),
            ("TargetName", IQN_T),
            ("AuthMethod", "None"),
        ],
    );
    assert!(r.transit);
}

#[test]
fn non_login_pdu_during_login() {
    let mut ini = Initiator::new(open_target());
    ini.send(
        SEC,
        None,
        &[("InitiatorName", IQN_I), ("TargetName", IQN_T)],
    );
    let r = decode(ini.login.reject_non_login_pdu(0x1234));
    assert_eq!(r.failed(), Some(LoginStatus::INVALID_DURING_LOGIN));
    assert_eq!(r.status.code(), 0x020b);
    assert_eq!(r.itt, 0x1234);
    assert_eq!(r.stat_sn, 0x1001);
    assert_eq!(r.exp_cmd_sn, 0x500);
}

#[test]
fn stat_sn_grows_per_response_and_wraps() {
    let ctx = LoginContext {
        initial_stat_sn: u32::MAX,
        command_window: 1,
        ..context()
    };
    let mut ini = Initiator::with_context(open_target(), ctx);
    ini.cmd_sn = u32::MAX;
    let r = ini.send(
        SEC,
        None,
        &[("InitiatorName", IQN_I), ("TargetName", IQN_T)],
    );
    assert_eq!(r.stat_sn, u32::MAX);
    assert_eq!((r.exp_cmd_sn, r.max_cmd_sn), (u32::MAX, u32::MAX));
    let r = ini.send(SEC, Some(FFP), &[("AuthMethod", "None")]);
    assert_eq!(r.stat_sn, 0);
    assert_eq!(r.outcome().next_stat_sn, 1);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn stage() -> impl Strategy<Value = Stage> {
        prop_oneof![Just(SEC), Just(OP), Just(FFP)]
    }

    fn pair() -> impl Strategy<Value = (String, String)> {
        let keys = prop_oneof![
            Just("InitiatorName".to_string()),
            Just("TargetName".to_string()),
            Just("SessionType".to_string()),
            Just("AuthMethod".to_string()),
            Just("CHAP_A".to_string()),
            Just("CHAP_N".to_string()),
            Just("CHAP_R".to_string()),
            Just("CHAP_I".to_string()),
            Just("CHAP_C".to_string()),
            Just("MaxBurstLength".to_string()),
            Just("HeaderDigest".to_string()),
            Just("ImmediateData".to_string()),
            "[A-Za-z_-]{1,10}",
        ];
        let values = prop_oneof![
            Just(IQN_I.to_string()),
            Just(IQN_T.to_string()),
            Just("Normal".to_string()),
            Just("Discovery".to_string()),
            Just("CHAP,None".to_string()),
            Just("None".to_string()),
            Just("5".to_string()),
            Just("libiscsi".to_string()),
            "0x[0-9a-f]{0,40}",
            "[ -~]{0,12}",
        ];
        (keys, values)
    }

    /// CSG, NSG, C bit, keys, or raw bytes instead of keys.
    type RawRequest = (
        Stage,
        Option<Stage>,
        bool,
        Vec<(String, String)>,
        Option<Vec<u8>>,
    );

    fn request() -> impl Strategy<Value = RawRequest> {
        (
            stage(),
            proptest::option::of(stage()),
            any::<bool>(),
            proptest::collection::vec(pair(), 0..6),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn login_never_panics(steps in proptest::collection::vec(request(), 1..8)) {
            let mut node = chap_node(ChapMode::Required, None);
            node.limits.immediate_data = false;
            let model = Model::with_target(node).secret(Some(IQN_T), "libiscsi", "libiscsi");
            let mut ini = Initiator::new(model);
            let mut done = false;
            for (csg, nsg, cont, pairs, raw) in steps {
                let cont = cont && nsg.is_none();
                let data = match raw {
                    Some(raw) => raw,
                    None => {
                        let refs: Vec<(&str, &str)> =
                            pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                        text_of(&refs)
                    }
                };
                let req = ini.bhs(csg, nsg, cont, data.len());
                let reply = ini.login.handle(&req, &data, &mut ini.model);
                prop_assert_eq!(reply.header[0], opcode::LOGIN_RESPONSE);
                if done {
                    prop_assert!(matches!(reply.progress, LoginProgress::Failed(_)));
                }
                if !matches!(reply.progress, LoginProgress::InProgress) {
                    done = true;
                }
            }
        }
    }
}
