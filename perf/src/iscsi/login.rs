//! The control path of the initiator, on blocking sockets from the main thread:
//! login (security stage with AuthMethod=None or CHAP MD5, operational stage,
//! multi-round stages and continued text), READ CAPACITY(16) and logout. The
//! I/O path ([`super::conn`]) takes the socket over once the session is in its
//! full feature phase.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use ferrite_transport::iscsi::chap::md5_response;
use ferrite_transport::iscsi::digest::{data_digest, header_digest, DIGEST_LEN};
use ferrite_transport::iscsi::text::{self, decode_binary, encode_hex, parse_number};

use super::pdu::{self, opcode, Bhs, Lun, BHS_LEN, RESERVED_TAG};

/// How long a login step, READ CAPACITY or logout may take.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// What we declare and offer.
pub const OUR_MAX_RECV_DATA_SEGMENT_LENGTH: u32 = 262_144;
pub const OUR_FIRST_BURST_LENGTH: u32 = 262_144;
pub const OUR_MAX_BURST_LENGTH: u32 = 1_048_576;
pub const OUR_MAX_OUTSTANDING_R2T: u32 = 16;

const STAGE_SECURITY: u8 = 0;
const STAGE_OPERATIONAL: u8 = 1;
const STAGE_FULL_FEATURE: u8 = 3;
/// Login rounds per stage before we give up on a target that never transits.
const MAX_ROUNDS: usize = 16;

/// Who logs in where, and how.
#[derive(Debug, Clone)]
pub struct LoginConfig {
    pub initiator_name: String,
    pub target_name: String,
    pub chap: Option<(String, String)>,
    /// Insist on CRC32C digests (otherwise offer None first, CRC32C second).
    pub header_digest: bool,
    pub data_digest: bool,
    /// Connections the session will have (offered MaxConnections).
    pub connections: u16,
}

/// The session's negotiated operational parameters (RFC 7143 defaults for keys
/// the target did not answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub initial_r2t: bool,
    pub immediate_data: bool,
    pub first_burst_length: u32,
    pub max_burst_length: u32,
    pub max_connections: u32,
    pub max_outstanding_r2t: u32,
}

impl Default for Negotiated {
    fn default() -> Self {
        Negotiated {
            initial_r2t: true,
            immediate_data: true,
            first_burst_length: 65_536,
            max_burst_length: 262_144,
            max_connections: 1,
            max_outstanding_r2t: 1,
        }
    }
}

/// Per-connection results of the login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub header_digest: bool,
    pub data_digest: bool,
    /// The target's MaxRecvDataSegmentLength: the largest data segment we may send.
    pub target_mrdsl: u32,
}

/// A session's command numbering, shared by its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The CmdSN of the next non-immediate command.
    pub cmd_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
}

impl Window {
    /// Takes ExpCmdSN/MaxCmdSN from a target PDU (RFC 7143 §4.2.2.1): both are
    /// ignored when MaxCmdSN < ExpCmdSN - 1; each only moves forward.
    #[inline]
    pub fn update(&mut self, exp: u32, max: u32) {
        if pdu::sn_gt(exp.wrapping_sub(1), max) {
            return;
        }
        if pdu::sn_gt(exp, self.exp_cmd_sn) {
            self.exp_cmd_sn = exp;
        }
        if pdu::sn_gt(max, self.max_cmd_sn) {
            self.max_cmd_sn = max;
        }
    }

    /// Whether a command with the next CmdSN may be sent.
    #[inline]
    pub fn open(&self) -> bool {
        pdu::sn_le(self.cmd_sn, self.max_cmd_sn)
    }
}

/// A connection in blocking mode.
pub struct SyncConn {
    pub stream: TcpStream,
    pub cid: u16,
    pub exp_stat_sn: u32,
    pub limits: ConnLimits,
    /// Digests are on only in the full feature phase.
    digests_on: bool,
    /// A human name for messages.
    pub what: String,
}

/// A received PDU.
pub struct Pdu {
    pub bhs: Bhs,
    pub data: Vec<u8>,
}

fn io_err(what: &str, e: std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            format!("{what}: no answer within {CONTROL_TIMEOUT:?}")
        }
        std::io::ErrorKind::UnexpectedEof => format!("{what}: the target closed the connection"),
        _ => format!("{what}: {e}"),
    }
}

impl SyncConn {
    /// Connects (blocking, with timeouts).
    pub fn connect(addr: &str, cid: u16, what: String) -> Result<SyncConn, String> {
        let addrs: Vec<_> = addr
            .to_socket_addrs()
            .map_err(|e| format!("{what}: cannot resolve {addr}: {e}"))?
            .collect();
        let mut last = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, CONTROL_TIMEOUT) {
                Ok(stream) => {
                    stream
                        .set_nodelay(true)
                        .and_then(|()| stream.set_read_timeout(Some(CONTROL_TIMEOUT)))
                        .and_then(|()| stream.set_write_timeout(Some(CONTROL_TIMEOUT)))
                        .map_err(|e| io_err(&what, e))?;
                    return Ok(SyncConn {
                        stream,
                        cid,
                        exp_stat_sn: 0,
                        limits: ConnLimits {
                            header_digest: false,
                            data_digest: false,
                            target_mrdsl: 8192,
                        },
                        digests_on: false,
                        what,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) => format!("{what}: cannot connect to {addr}: {e}"),
            None => format!("{what}: {addr} resolves to no address"),
        })
    }

    /// Takes over a socket from the I/O path (for logout).
    pub fn resume(stream: TcpStream, cid: u16, exp_stat_sn: u32, limits: ConnLimits) -> SyncConn {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(CONTROL_TIMEOUT));
        let _ = stream.set_write_timeout(Some(CONTROL_TIMEOUT));
        SyncConn {
            stream,
            cid,
            exp_stat_sn,
            limits,
            digests_on: true,
            what: String::new(),
        }
    }

    /// Sends a BHS and its data segment (padding and digests added).
    pub fn send(&mut self, bhs: &Bhs, data: &[u8]) -> Result<(), String> {
        let mut out = Vec::with_capacity(BHS_LEN + 8 + pdu::padded_len(data.len()));
        out.extend_from_slice(bhs);
        if self.digests_on && self.limits.header_digest {
            out.extend_from_slice(&header_digest(bhs, &[]));
        }
        if !data.is_empty() {
            out.extend_from_slice(data);
            out.resize(out.len() + pdu::pad_len(data.len()), 0);
            if self.digests_on && self.limits.data_digest {
                out.extend_from_slice(&data_digest([data]));
            }
        }
        tracing::debug!(
            "{}: send opcode {:#04x}, {} data bytes, {} on the wire",
            self.what,
            pdu::opcode_of(bhs),
            data.len(),
            out.len()
        );
        self.stream
            .write_all(&out)
            .map_err(|e| io_err(&self.what, e))
    }

    /// Reads one PDU (checking digests).
    pub fn recv(&mut self) -> Result<Pdu, String> {
        let mut bhs = [0u8; BHS_LEN];
        self.stream
            .read_exact(&mut bhs)
            .map_err(|e| io_err(&self.what, e))?;
        let mut ahs = vec![0u8; pdu::ahs_len(&bhs)];
        self.stream
            .read_exact(&mut ahs)
            .map_err(|e| io_err(&self.what, e))?;
        if self.digests_on && self.limits.header_digest {
            let mut d = [0u8; DIGEST_LEN];
            self.stream
                .read_exact(&mut d)
                .map_err(|e| io_err(&self.what, e))?;
            if d != header_digest(&bhs, &ahs) {
                return Err(format!("{}: header digest mismatch", self.what));
            }
        }
        let len = pdu::data_len(&bhs);
        tracing::debug!(
            "{}: received opcode {:#04x}, flags {:#04x}, {len} data bytes",
            self.what,
            pdu::opcode_of(&bhs),
            bhs[1]
        );
        if len > OUR_MAX_RECV_DATA_SEGMENT_LENGTH as usize {
            return Err(format!(
                "{}: the target sent a {len}-byte data segment (more than our \
                 MaxRecvDataSegmentLength, {OUR_MAX_RECV_DATA_SEGMENT_LENGTH})",
                self.what
            ));
        }
        let mut data = vec![0u8; pdu::padded_len(len)];
        self.stream
            .read_exact(&mut data)
            .map_err(|e| io_err(&self.what, e))?;
        if len > 0 && self.digests_on && self.limits.data_digest {
            let mut d = [0u8; DIGEST_LEN];
            self.stream
                .read_exact(&mut d)
                .map_err(|e| io_err(&self.what, e))?;
            if d != data_digest([&data[..len]]) {
                return Err(format!("{}: data digest mismatch", self.what));
            }
        }
        data.truncate(len);
        if pdu::carries_status(&bhs) && opcode_of_full_feature(&bhs) {
            let sn = pdu::stat_sn(&bhs);
            if pdu::sn_le(self.exp_stat_sn, sn) {
                self.exp_stat_sn = sn.wrapping_add(1);
            }
        }
        Ok(Pdu { bhs, data })
    }

    /// Answers a NOP-In ping (the target's, TTT not reserved); ignores other NOP-Ins.
    fn answer_ping(&mut self, p: &Pdu, window: &Window) -> Result<(), String> {
        let ttt = pdu::ttt(&p.bhs);
        if ttt == RESERVED_TAG {
            return Ok(());
        }
        let mut lun = [0u8; 8];
        lun.copy_from_slice(&p.bhs[8..16]);
        let nop = pdu::NopOut {
            lun,
            itt: RESERVED_TAG,
            ttt,
            cmd_sn: window.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            len: p.data.len() as u32,
        };
        self.send(&nop.encode(), &p.data)
    }
}

/// Full-feature PDUs whose StatSN counts (login responses are handled by the
/// login code).
fn opcode_of_full_feature(bhs: &Bhs) -> bool {
    pdu::opcode_of(bhs) != opcode::LOGIN_RESPONSE
}

/// A login failure, in words.
fn login_status(class: u8, detail: u8) -> String {
    let what = match (class, detail) {
        (1, _) => "the target moved (redirection is not supported)",
        (2, 0) => "initiator error",
        (2, 1) => "authentication failure",
        (2, 2) => "authorization failure (this initiator may not log in to this target)",
        (2, 3) => "target not found",
        (2, 4) => "target removed",
        (2, 5) => "unsupported version",
        (2, 6) => "too many connections",
        (2, 7) => "missing parameter",
        (2, 8) => "cannot include this connection in the session",
        (2, 9) => "session type not supported",
        (2, 10) => "session does not exist",
        (2, 11) => "invalid request during login",
        (3, 0) => "target error",
        (3, 1) => "service unavailable",
        (3, 2) => "out of resources",
        _ => "login refused",
    };
    format!(
        "{what} (status {:#06x})",
        u16::from(class) << 8 | u16::from(detail)
    )
}

/// What a Login Response said: its T bit, CSG, NSG and keys.
struct Answer {
    transit: bool,
    csg: u8,
    nsg: u8,
    keys: Vec<(String, String)>,
}

/// One login exchange: the request's stages and keys, the response's.
struct Step {
    transit: bool,
    csg: u8,
    nsg: u8,
    keys: Vec<(String, String)>,
}

/// The login of one connection.
pub struct Login<'a> {
    cfg: &'a LoginConfig,
    isid: [u8; 6],
    tsih: u16,
    window: &'a mut Window,
    leading: bool,
    first_pdu: bool,
    itt: u32,
    negotiated: Negotiated,
}

/// What a finished login gives.
pub struct LoggedIn {
    pub conn: SyncConn,
    pub tsih: u16,
    /// Session parameters (leading connection only; defaults otherwise).
    pub negotiated: Negotiated,
}

/// Logs connection `cid` in to `addr`: a new session when `tsih` is 0 (the
/// leading connection: `window` is set from the target's answer), else a
/// connection added to session `tsih`.
pub fn login(
    addr: &str,
    cfg: &LoginConfig,
    isid: [u8; 6],
    tsih: u16,
    cid: u16,
    window: &mut Window,
    what: String,
) -> Result<LoggedIn, String> {
    let mut conn = SyncConn::connect(addr, cid, what)?;
    let mut l = Login {
        cfg,
        isid,
        tsih,
        leading: tsih == 0,
        window,
        first_pdu: true,
        itt: 0x1000 + u32::from(cid),
        negotiated: Negotiated::default(),
    };
    let negotiated = l.run(&mut conn)?;
    conn.digests_on = true;
    Ok(LoggedIn {
        tsih: l.tsih,
        conn,
        negotiated,
    })
}

fn kv(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_string(), v.into())
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "Yes"
    } else {
        "No"
    }
}

impl Login<'_> {
    fn run(&mut self, conn: &mut SyncConn) -> Result<Negotiated, String> {
        let mut stage = self.security(conn)?;
        if stage == STAGE_OPERATIONAL {
            stage = self.operational(conn)?;
        }
        if stage != STAGE_FULL_FEATURE {
            return Err(format!(
                "{}: the login ended in stage {stage}, not the full feature phase",
                conn.what
            ));
        }
        Ok(self.negotiated)
    }

    /// One request/response exchange (with continued response text gathered).
    fn exchange(&mut self, conn: &mut SyncConn, step: Step) -> Result<Answer, String> {
        let mut keys = Vec::new();
        if self.first_pdu {
            keys.push(kv("InitiatorName", self.cfg.initiator_name.clone()));
            keys.push(kv("SessionType", "Normal"));
            keys.push(kv("TargetName", self.cfg.target_name.clone()));
            self.first_pdu = false;
        }
        keys.extend(step.keys);
        let mut text = text::TextWriter::new();
        for (k, v) in &keys {
            text.push(k, v);
        }
        let mut data = text.into_bytes();
        let mut gathered = Vec::new();
        loop {
            let req = pdu::LoginRequest {
                transit: step.transit,
                csg: step.csg,
                nsg: step.nsg,
                isid: self.isid,
                tsih: self.tsih,
                itt: self.itt,
                cid: conn.cid,
                cmd_sn: self.window.cmd_sn,
                exp_stat_sn: conn.exp_stat_sn,
                len: data.len() as u32,
            };
            conn.send(&req.encode(), &data)?;
            let p = conn.recv()?;
            if pdu::opcode_of(&p.bhs) != opcode::LOGIN_RESPONSE {
                return Err(format!(
                    "{}: expected a Login Response, got opcode {:#04x}",
                    conn.what,
                    pdu::opcode_of(&p.bhs)
                ));
            }
            let r = pdu::LoginResponse::decode(&p.bhs);
            if r.status_class != 0 {
                let hint = match (r.status_class, r.status_detail, &self.cfg.chap) {
                    (2, 1, Some(_)) => ": CHAP authentication failed (wrong user or secret?)",
                    (2, 1, None) => {
                        ": the target may require CHAP (give --chap-user and --chap-secret)"
                    }
                    _ => "",
                };
                return Err(format!(
                    "{}: login refused: {}{hint}",
                    conn.what,
                    login_status(r.status_class, r.status_detail)
                ));
            }
            conn.exp_stat_sn = r.stat_sn.wrapping_add(1);
            if self.leading {
                // The session's numbering starts where the target expects it.
                self.window.cmd_sn = r.exp_cmd_sn;
                self.window.exp_cmd_sn = r.exp_cmd_sn;
                self.window.max_cmd_sn = r.max_cmd_sn;
            } else {
                self.window.update(r.exp_cmd_sn, r.max_cmd_sn);
            }
            if r.tsih != 0 {
                self.tsih = r.tsih;
            }
            gathered.extend_from_slice(&p.data);
            if r.cont {
                // More text to come: ask for it with an empty request.
                data.clear();
                continue;
            }
            let pairs = text::parse(&gathered)
                .map_err(|e| format!("{}: bad login response text: {e}", conn.what))?;
            let keys: Vec<(String, String)> = pairs
                .iter()
                .map(|p| (p.key.to_string(), p.value.to_string()))
                .collect();
            tracing::debug!("{}: login response keys {keys:?}", conn.what);
            return Ok(Answer {
                transit: r.transit,
                csg: r.csg,
                nsg: r.nsg,
                keys,
            });
        }
    }

    /// The security stage; returns the stage we are in afterwards.
    fn security(&mut self, conn: &mut SyncConn) -> Result<u8, String> {
        let chap = self.cfg.chap.clone();
        let offer = if chap.is_some() { "CHAP,None" } else { "None" };
        let first = self.exchange(
            conn,
            Step {
                transit: chap.is_none(),
                csg: STAGE_SECURITY,
                nsg: STAGE_OPERATIONAL,
                keys: vec![kv("AuthMethod", offer)],
            },
        )?;
        let (mut t, mut nsg) = (first.transit, first.nsg);
        let method = first
            .keys
            .iter()
            .find(|(k, _)| k == "AuthMethod")
            .map(|(_, v)| v.as_str());
        match (method, &chap) {
            (Some("CHAP"), Some((user, secret))) => {
                let keys = self
                    .exchange(
                        conn,
                        Step {
                            transit: false,
                            csg: STAGE_SECURITY,
                            nsg: STAGE_OPERATIONAL,
                            keys: vec![kv("CHAP_A", "5")],
                        },
                    )?
                    .keys;
                let get = |k: &str| keys.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone());
                if get("CHAP_A").as_deref() != Some("5") {
                    return Err(format!(
                        "{}: the target does not do CHAP with MD5 (CHAP_A={})",
                        conn.what,
                        get("CHAP_A").unwrap_or_default()
                    ));
                }
                let id = get("CHAP_I")
                    .and_then(|v| parse_number(&v).ok())
                    .filter(|&v| v <= 255)
                    .ok_or_else(|| format!("{}: bad or missing CHAP_I", conn.what))?;
                let challenge = get("CHAP_C")
                    .and_then(|v| decode_binary(&v).ok())
                    .ok_or_else(|| format!("{}: bad or missing CHAP_C", conn.what))?;
                let response = md5_response(id as u8, secret.as_bytes(), &challenge);
                let r = self.exchange(
                    conn,
                    Step {
                        transit: true,
                        csg: STAGE_SECURITY,
                        nsg: STAGE_OPERATIONAL,
                        keys: vec![
                            kv("CHAP_N", user.clone()),
                            kv("CHAP_R", encode_hex(&response)),
                        ],
                    },
                )?;
                (t, nsg) = (r.transit, r.nsg);
            }
            (Some("CHAP"), None) => {
                return Err(format!(
                    "{}: the target requires CHAP: give --chap-user and --chap-secret",
                    conn.what
                ))
            }
            (Some("None"), _) | (None, _) => {}
            (Some(other), _) => {
                return Err(format!(
                    "{}: the target answered AuthMethod={other}{}",
                    conn.what,
                    if chap.is_none() {
                        " (it may require CHAP: give --chap-user and --chap-secret)"
                    } else {
                        ""
                    }
                ))
            }
        }
        // Ask to move on until the target does.
        let mut rounds = 0;
        while !t {
            rounds += 1;
            if rounds > MAX_ROUNDS {
                return Err(format!(
                    "{}: the target never left the security stage",
                    conn.what
                ));
            }
            let r = self.exchange(
                conn,
                Step {
                    transit: true,
                    csg: STAGE_SECURITY,
                    nsg: STAGE_OPERATIONAL,
                    keys: Vec::new(),
                },
            )?;
            (t, nsg) = (r.transit, r.nsg);
        }
        Ok(nsg)
    }

    /// The operational stage; returns the stage we are in afterwards.
    fn operational(&mut self, conn: &mut SyncConn) -> Result<u8, String> {
        let digest = |on: bool| if on { "CRC32C" } else { "None,CRC32C" };
        let mut keys = vec![
            kv("HeaderDigest", digest(self.cfg.header_digest)),
            kv("DataDigest", digest(self.cfg.data_digest)),
            kv(
                "MaxRecvDataSegmentLength",
                OUR_MAX_RECV_DATA_SEGMENT_LENGTH.to_string(),
            ),
        ];
        if self.leading {
            keys.extend([
                kv("InitialR2T", "No"),
                kv("ImmediateData", "Yes"),
                kv("FirstBurstLength", OUR_FIRST_BURST_LENGTH.to_string()),
                kv("MaxBurstLength", OUR_MAX_BURST_LENGTH.to_string()),
                kv("MaxConnections", self.cfg.connections.to_string()),
                kv("MaxOutstandingR2T", OUR_MAX_OUTSTANDING_R2T.to_string()),
                kv("ErrorRecoveryLevel", "0"),
                kv("DefaultTime2Wait", "0"),
                kv("DefaultTime2Retain", "0"),
                kv("DataPDUInOrder", "Yes"),
                kv("DataSequenceInOrder", "Yes"),
            ]);
        }
        let mut offered: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
        let mut rounds = 0;
        loop {
            rounds += 1;
            if rounds > MAX_ROUNDS {
                return Err(format!(
                    "{}: the target never left the operational stage",
                    conn.what
                ));
            }
            let r = self.exchange(
                conn,
                Step {
                    transit: true,
                    csg: STAGE_OPERATIONAL,
                    nsg: STAGE_FULL_FEATURE,
                    keys: std::mem::take(&mut keys),
                },
            )?;
            let mut answers = Vec::new();
            for (k, v) in &r.keys {
                let ours = offered.iter().any(|o| o == k);
                if let Some(answer) = self.take_key(conn, k, v, ours)? {
                    answers.push(kv(k, answer));
                }
            }
            if r.transit {
                // The target moved on: the stage is over.
                return Ok(r.nsg);
            }
            if r.csg != STAGE_OPERATIONAL {
                return Err(format!(
                    "{}: the target answered from stage {} in the operational stage",
                    conn.what, r.csg
                ));
            }
            // Another round: answer what the target offered, ask to move on.
            offered.extend(answers.iter().map(|(k, _)| k.clone()));
            keys = answers;
        }
    }

    /// Applies a key the target sent. `ours`: it answers our offer. Returns the
    /// answer owed when the target offered it.
    fn take_key(
        &mut self,
        conn: &mut SyncConn,
        key: &str,
        value: &str,
        ours: bool,
    ) -> Result<Option<String>, String> {
        let what = &conn.what;
        if matches!(value, "NotUnderstood" | "Irrelevant") {
            return Ok(None);
        }
        let number = |v: &str| {
            parse_number(v)
                .ok()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("{what}: bad value {key}={v}"))
        };
        let boolean = |v: &str| match v {
            "Yes" => Ok(true),
            "No" => Ok(false),
            _ => Err(format!("{what}: bad value {key}={v}")),
        };
        let n = &mut self.negotiated;
        match key {
            "HeaderDigest" | "DataDigest" => {
                let insist = if key == "HeaderDigest" {
                    self.cfg.header_digest
                } else {
                    self.cfg.data_digest
                };
                // The target's answer, or (its offer) the first value of its list we take.
                let pick = value
                    .split(',')
                    .find(|d| matches!(*d, "CRC32C" | "None") && (*d == "CRC32C" || !insist));
                let on = match pick {
                    Some("CRC32C") => true,
                    Some(_) => false,
                    None if insist => {
                        return Err(format!(
                            "{what}: the target refused {key}=CRC32C (answered {value})"
                        ))
                    }
                    None => {
                        return Err(format!("{what}: the target answered {key}={value}"));
                    }
                };
                if key == "HeaderDigest" {
                    conn.limits.header_digest = on;
                } else {
                    conn.limits.data_digest = on;
                }
                Ok((!ours).then(|| if on { "CRC32C" } else { "None" }.to_string()))
            }
            "MaxRecvDataSegmentLength" => {
                conn.limits.target_mrdsl = number(value)?.clamp(512, 16_777_215);
                Ok(None)
            }
            "InitialR2T" => {
                let v = boolean(value)?;
                n.initial_r2t = v; // OR with our No: the target's value
                Ok((!ours).then(|| yes_no(v).to_string()))
            }
            "ImmediateData" => {
                let v = boolean(value)?;
                n.immediate_data = v; // AND with our Yes
                Ok((!ours).then(|| yes_no(v).to_string()))
            }
            "FirstBurstLength" | "MaxBurstLength" | "MaxConnections" | "MaxOutstandingR2T" => {
                let (slot, mine) = match key {
                    "FirstBurstLength" => (&mut n.first_burst_length, OUR_FIRST_BURST_LENGTH),
                    "MaxBurstLength" => (&mut n.max_burst_length, OUR_MAX_BURST_LENGTH),
                    "MaxConnections" => (&mut n.max_connections, u32::from(self.cfg.connections)),
                    _ => (&mut n.max_outstanding_r2t, OUR_MAX_OUTSTANDING_R2T),
                };
                let v = number(value)?.min(mine).max(1);
                *slot = v;
                Ok((!ours).then(|| v.to_string()))
            }
            "ErrorRecoveryLevel" => {
                if number(value)? != 0 && ours {
                    return Err(format!("{what}: the target answered {key}={value}"));
                }
                Ok((!ours).then(|| "0".to_string()))
            }
            "DefaultTime2Wait" | "DefaultTime2Retain" => {
                let v = number(value)?;
                Ok((!ours).then(|| v.to_string()))
            }
            "DataPDUInOrder" | "DataSequenceInOrder" => {
                if !boolean(value)? {
                    return Err(format!(
                        "{what}: the target wants {key}=No, which this initiator does not do"
                    ));
                }
                Ok((!ours).then(|| "Yes".to_string()))
            }
            "TargetAlias" | "TargetAddress" | "TargetPortalGroupTag" => Ok(None),
            _ if ours => Ok(None),
            _ if value == "Reject" => Ok(None),
            _ => Ok(Some("NotUnderstood".to_string())),
        }
    }
}

/// Sends one SCSI command that reads up to `alloc` bytes and waits for its
/// status (answering NOP-In pings meanwhile). Returns (status, data, sense
/// segment).
pub fn simple_read_command(
    conn: &mut SyncConn,
    window: &mut Window,
    lun: Lun,
    cdb: &[u8; 16],
    alloc: usize,
) -> Result<(u8, Vec<u8>, Vec<u8>), String> {
    if !window.open() {
        return Err(format!(
            "{}: the target's command window is closed (CmdSN {}, MaxCmdSN {})",
            conn.what, window.cmd_sn, window.max_cmd_sn
        ));
    }
    const ITT: u32 = 0x00ff_fff0;
    let cmd = pdu::Command {
        read: true,
        write: false,
        final_: true,
        lun,
        itt: ITT,
        edtl: alloc as u32,
        cmd_sn: window.cmd_sn,
        exp_stat_sn: conn.exp_stat_sn,
        immediate_data: 0,
        cdb,
    };
    window.cmd_sn = window.cmd_sn.wrapping_add(1);
    conn.send(&cmd.encode(), &[])?;
    let mut data = vec![0u8; alloc];
    let mut received = 0;
    loop {
        let p = conn.recv()?;
        let b = &p.bhs;
        if pdu::carries_window(b) {
            window.update(pdu::exp_cmd_sn(b), pdu::max_cmd_sn(b));
        }
        match pdu::opcode_of(b) {
            opcode::NOP_IN => conn.answer_ping(&p, window)?,
            opcode::SCSI_DATA_IN if pdu::itt(b) == ITT => {
                let off = pdu::buffer_offset(b) as usize;
                let end = off + p.data.len();
                if end > alloc {
                    return Err(format!(
                        "{}: Data-In beyond the allocation length ({end} > {alloc})",
                        conn.what
                    ));
                }
                data[off..end].copy_from_slice(&p.data);
                received = received.max(end);
                if b[1] & pdu::DATA_IN_STATUS != 0 {
                    data.truncate(received);
                    return Ok((b[3], data, Vec::new()));
                }
            }
            opcode::SCSI_RESPONSE if pdu::itt(b) == ITT => {
                if b[2] != 0 {
                    return Err(format!(
                        "{}: the target failed the command (iSCSI response {:#04x})",
                        conn.what, b[2]
                    ));
                }
                data.truncate(received);
                return Ok((b[3], data, p.data));
            }
            opcode::REJECT => {
                return Err(format!(
                    "{}: the target rejected a PDU (reason {:#04x})",
                    conn.what, b[2]
                ))
            }
            opcode::ASYNC_MESSAGE => {}
            other => {
                return Err(format!(
                    "{}: unexpected PDU (opcode {other:#04x}) while waiting for a response",
                    conn.what
                ))
            }
        }
    }
}

/// READ CAPACITY(16): (block size, number of blocks). Retries a few times
/// through unit attentions (a new session's first command meets one).
pub fn read_capacity(
    conn: &mut SyncConn,
    window: &mut Window,
    lun: Lun,
) -> Result<(u32, u64), String> {
    let mut last = String::new();
    for _ in 0..8 {
        let (status, data, sense) =
            simple_read_command(conn, window, lun, &pdu::read_capacity16(), 32)?;
        if status == pdu::STATUS_GOOD {
            if data.len() < 12 {
                return Err(format!(
                    "{}: READ CAPACITY(16) returned {} bytes",
                    conn.what,
                    data.len()
                ));
            }
            let last_lba = u64::from_be_bytes(data[0..8].try_into().expect("8 bytes"));
            let bs = u32::from_be_bytes(data[8..12].try_into().expect("4 bytes"));
            if bs == 0 || last_lba == u64::MAX {
                return Err(format!(
                    "{}: READ CAPACITY(16) says block size {bs}, last LBA {last_lba}",
                    conn.what
                ));
            }
            return Ok((bs, last_lba + 1));
        }
        last = pdu::describe_status(status, &sense);
        let unit_attention =
            sense.len() > 2 && pdu::sense_key(&sense[2..]).is_some_and(|(key, _, _)| key == 0x6);
        if !unit_attention {
            break;
        }
    }
    Err(format!("{}: READ CAPACITY(16) failed: {last}", conn.what))
}

/// Logs a connection out (`close_session`: the whole session, else only this
/// connection). Answers pings and skips stray PDUs while waiting.
pub fn logout(conn: &mut SyncConn, window: &mut Window, close_session: bool) -> Result<(), String> {
    const ITT: u32 = 0x00ff_fff1;
    let req = pdu::LogoutRequest {
        reason: if close_session {
            pdu::LOGOUT_CLOSE_SESSION
        } else {
            pdu::LOGOUT_CLOSE_CONNECTION
        },
        itt: ITT,
        cid: conn.cid,
        cmd_sn: window.cmd_sn,
        exp_stat_sn: conn.exp_stat_sn,
    };
    conn.send(&req.encode(), &[])?;
    for _ in 0..64 {
        let p = conn.recv()?;
        let b = &p.bhs;
        if pdu::carries_window(b) {
            window.update(pdu::exp_cmd_sn(b), pdu::max_cmd_sn(b));
        }
        match pdu::opcode_of(b) {
            opcode::NOP_IN => conn.answer_ping(&p, window)?,
            opcode::LOGOUT_RESPONSE if pdu::itt(b) == ITT => {
                return if b[2] == 0 {
                    Ok(())
                } else {
                    Err(format!("logout refused (response {:#04x})", b[2]))
                };
            }
            opcode::REJECT => return Err(format!("logout rejected (reason {:#04x})", b[2])),
            _ => {}
        }
    }
    Err("no Logout Response".into())
}
