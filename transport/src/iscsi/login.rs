//! The login phase (RFC 7143 §6.3, §11.12-13) as a pure state machine: feed
//! it each Login Request (decoded BHS and data segment), send back the reply
//! it makes, stop when it reports completion or failure.
//!
//! ```text
//! Login::new(ctx)
//!   handle(req, data, policy) -> LoginReply { header, data, progress }
//!     progress = InProgress           send, wait for the next Login Request
//!              | Complete(outcome)    send, then the full feature phase
//!              | Failed(status)       send, then close the connection
//! ```
//!
//! What it does:
//! - stages: security (AuthMethod, CHAP) → operational → full feature, or
//!   straight to operational when the target needs no authentication; the
//!   target sets T only when the initiator did and it is ready to move;
//! - the C bit both ways: a Login Request with C=1 gets an empty response
//!   and its text is joined to the next; an answer longer than 8192 bytes
//!   goes out in pieces with C=1, each fetched by an empty Login Request;
//! - the first text must hold InitiatorName (and TargetName for a Normal
//!   session); ISID, TSIH and CID must stay the same throughout;
//! - StatSN starts at the context's value and grows by one per response;
//!   ExpCmdSN is the request's CmdSN (login requests are immediate);
//! - the TSIH of a new session appears only in the final response
//!   (RFC 7143 §11.13.4); [`LoginPolicy::bind_session`] is asked for it (or
//!   to add the connection to an existing session) at that moment, after
//!   authentication and negotiation succeeded, so a failed login leaves no
//!   trace in the session table.
//!
//! Status codes: missing InitiatorName/TargetName 0x0207, bad SessionType
//! 0x0209, version 0x0205, authentication 0x0201, anything else the initiator
//! got wrong (bad text, duplicate or renegotiated keys, keys in the wrong
//! stage, bad stage transitions, ISID changes) 0x0200, a non-login PDU during
//! login 0x020b; the policy's refusals as it gives them.

use std::net::IpAddr;
use std::num::NonZeroU16;

use super::chap::{ChapError, ChapResponse, ChapTarget, VerifyOptions};
use super::params::{
    is_reserved_answer, ConnectionParams, Key, NegotiationScope, Negotiator, SessionParams,
    SessionType,
};
use super::pdu::{
    Bhs, Isid, LoginRequest, LoginResponse, LoginStatus, Stage, StatusSeq, ISCSI_VERSION,
};
use super::policy::{
    AuthConfig, ChapMode, InitiatorInfo, LoginPolicy, Refusal, SessionAdmission, SessionBinding,
    SessionRequest,
};
use super::text::{self, KeyValue, TextAssembler, TextSegments, TextWriter, LOGIN_SEGMENT_LEN};

/// What the login needs to know about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginContext {
    /// The portal group of the portal the connection came in on.
    pub portal_group_tag: u16,
    pub initiator_address: IpAddr,
    /// The connection is iSER-capable (RDMA): the iSER keys are negotiated.
    pub iser: bool,
    /// StatSN of the first Login Response.
    pub initial_stat_sn: u32,
    /// Commands the initiator may queue once logged in: MaxCmdSN is
    /// ExpCmdSN + window - 1 (at least 1).
    pub command_window: u32,
}

/// A Login Response to send.
#[derive(Debug)]
pub struct LoginReply {
    pub header: Bhs,
    pub data: Vec<u8>,
    pub progress: LoginProgress,
}

/// Where the login stands after a reply.
#[derive(Debug)]
pub enum LoginProgress {
    /// Send the reply and wait for the next Login Request.
    InProgress,
    /// Send the reply: the connection is in the full feature phase.
    Complete(Box<LoginOutcome>),
    /// Send the reply, then close the connection.
    Failed(LoginStatus),
}

/// A successful login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginOutcome {
    pub session_type: SessionType,
    pub initiator_name: String,
    pub initiator_alias: Option<String>,
    /// `None` for Discovery sessions.
    pub target_name: Option<String>,
    pub target_alias: Option<String>,
    pub isid: Isid,
    pub tsih: NonZeroU16,
    pub cid: u16,
    /// New (possibly reinstating) session or joined existing one.
    pub admission: SessionAdmission,
    pub session_params: SessionParams,
    pub conn_params: ConnectionParams,
    /// The CHAP user the initiator authenticated as.
    pub chap_user: Option<String>,
    /// The target proved itself to the initiator (mutual CHAP).
    pub target_authenticated: bool,
    /// The CmdSN the first non-immediate command will carry.
    pub exp_cmd_sn: u32,
    /// The StatSN of the next response after the final Login Response.
    pub next_stat_sn: u32,
    pub portal_group_tag: u16,
}

/// Who the initiator said it is, from the first text.
#[derive(Clone, Debug)]
struct Identity {
    initiator_name: String,
    initiator_alias: Option<String>,
    target_name: Option<String>,
    session_type: SessionType,
}

/// Where authentication stands.
#[derive(Debug)]
enum Auth {
    /// Nothing agreed yet.
    Pending,
    /// AuthMethod=None agreed.
    NoneAgreed,
    /// AuthMethod=CHAP agreed, exchange under way.
    Chap(ChapTarget),
    /// Authentication over (or not needed).
    Done {
        chap_user: Option<String>,
        target_authenticated: bool,
    },
}

/// A long answer still being sent in pieces.
#[derive(Debug)]
struct Outbound {
    segments: TextSegments,
    next_stage: Option<Stage>,
    tsih: u16,
    outcome: Option<Box<LoginOutcome>>,
}

/// How a key of a login text is handled.
enum KeyClass {
    Identity,
    AuthMethod,
    Chap(Key),
    /// Keys only a target sends.
    TargetOnly,
    /// SendTargets: full feature phase only.
    FullFeatureOnly,
    /// Everything else, unknown keys included: the negotiator's.
    Operational,
}

fn classify(key: &str) -> KeyClass {
    match Key::from_name(key) {
        Some(Key::InitiatorName | Key::TargetName | Key::SessionType | Key::InitiatorAlias) => {
            KeyClass::Identity
        }
        Some(Key::AuthMethod) => KeyClass::AuthMethod,
        Some(k @ (Key::ChapA | Key::ChapI | Key::ChapC | Key::ChapN | Key::ChapR)) => {
            KeyClass::Chap(k)
        }
        Some(Key::TargetAlias | Key::TargetAddress | Key::TargetPortalGroupTag) => {
            KeyClass::TargetOnly
        }
        Some(Key::SendTargets) => KeyClass::FullFeatureOnly,
        _ => KeyClass::Operational,
    }
}

fn find<'a>(pairs: &[KeyValue<'a>], key: Key) -> Option<&'a str> {
    let name = key.name();
    pairs.iter().find(|p| p.key == name).map(|p| p.value)
}

fn chap_status(err: &ChapError) -> LoginStatus {
    match err {
        ChapError::RandomUnavailable => LoginStatus::TARGET_ERROR,
        _ => LoginStatus::AUTHENTICATION_FAILURE,
    }
}

/// The login of one connection.
#[derive(Debug)]
pub struct Login {
    ctx: LoginContext,
    /// ISID, TSIH and CID of the first request.
    first: Option<(Isid, u16, u16)>,
    /// The stage the next request must be in.
    stage: Stage,
    identity: Option<Identity>,
    target_alias: Option<String>,
    auth_config: AuthConfig,
    auth: Auth,
    /// The AuthMethod answer given, to recognise a repeat.
    auth_method: Option<&'static str>,
    negotiator: Option<Negotiator>,
    /// The target declared its MaxRecvDataSegmentLength.
    declared: bool,
    inbound: TextAssembler,
    outbound: Option<Outbound>,
    stat_sn: u32,
    /// CmdSN of the last Login Request.
    cmd_sn: u32,
    finished: bool,
}

type Step<T> = Result<T, Refusal>;

impl Login {
    pub fn new(ctx: LoginContext) -> Self {
        Login {
            ctx,
            first: None,
            stage: Stage::SecurityNegotiation,
            identity: None,
            target_alias: None,
            auth_config: AuthConfig::default(),
            auth: Auth::Pending,
            auth_method: None,
            negotiator: None,
            declared: false,
            inbound: TextAssembler::new(),
            outbound: None,
            stat_sn: ctx.initial_stat_sn,
            cmd_sn: 0,
            finished: false,
        }
    }

    /// Handles one Login Request. `data` is its data segment: exactly
    /// DataSegmentLength bytes, without padding or digest (checked by the
    /// mover). Never panics, whatever the initiator sends.
    pub fn handle(
        &mut self,
        req: &LoginRequest,
        data: &[u8],
        policy: &mut dyn LoginPolicy,
    ) -> LoginReply {
        if self.finished {
            return self.fail(req, Refusal::Status(LoginStatus::INVALID_DURING_LOGIN));
        }
        match self.step(req, data, policy) {
            Ok(reply) => reply,
            Err(refusal) => self.fail(req, refusal),
        }
    }

    /// Answers a PDU other than a Login Request during login (0x020b); the
    /// connection must then be closed.
    pub fn reject_non_login_pdu(&mut self, itt: u32) -> LoginReply {
        let (isid, tsih, _) = self.first.unwrap_or_default();
        self.finished = true;
        let header = LoginResponse {
            continue_bit: false,
            current_stage: self.stage,
            next_stage: None,
            version_max: ISCSI_VERSION,
            version_active: ISCSI_VERSION,
            isid,
            tsih,
            itt,
            seq: self.next_seq(self.cmd_sn),
            status: LoginStatus::INVALID_DURING_LOGIN,
            data_len: 0,
        }
        .encode();
        LoginReply {
            header,
            data: Vec::new(),
            progress: LoginProgress::Failed(LoginStatus::INVALID_DURING_LOGIN),
        }
    }

    fn step(
        &mut self,
        req: &LoginRequest,
        data: &[u8],
        policy: &mut dyn LoginPolicy,
    ) -> Step<LoginReply> {
        let initiator_error = Refusal::Status(LoginStatus::INITIATOR_ERROR);
        self.cmd_sn = req.cmd_sn;
        match self.first {
            None => {
                if req.version_min > ISCSI_VERSION {
                    return Err(LoginStatus::UNSUPPORTED_VERSION.into());
                }
                self.first = Some((req.isid, req.tsih, req.cid));
            }
            Some(first) if first != (req.isid, req.tsih, req.cid) => return Err(initiator_error),
            Some(_) => {}
        }
        if data.len() != req.data_len as usize {
            return Err(initiator_error);
        }

        // The initiator fetches the rest of a long answer with empty requests.
        if self.outbound.is_some() {
            if !data.is_empty() || req.continue_bit || req.current_stage != self.stage {
                return Err(initiator_error);
            }
            return Ok(self.send_next_piece(req));
        }

        if self.inbound.push(data).is_err() {
            return Err(initiator_error);
        }
        if req.continue_bit {
            if self.identity.is_some() && req.current_stage != self.stage {
                return Err(initiator_error);
            }
            return Ok(self.reply(req, Vec::new(), None, req.tsih, None));
        }
        let text = self.inbound.take();

        let first_text = self.identity.is_none();
        if first_text {
            if req.current_stage == Stage::FullFeature {
                return Err(initiator_error);
            }
            self.stage = req.current_stage;
        } else if req.current_stage != self.stage {
            return Err(initiator_error);
        }
        if let Some(next) = req.next_stage {
            if next <= req.current_stage {
                return Err(initiator_error);
            }
        }
        let pairs = text::parse(&text).map_err(|_| initiator_error.clone())?;

        let mut answers = TextWriter::new();
        if first_text {
            self.establish(req, &pairs, policy)?;
        } else {
            self.check_identity(&pairs)?;
        }

        let ready = match self.stage {
            Stage::SecurityNegotiation => self.security_stage(req, &pairs, &mut answers, policy)?,
            _ => self.operational_stage(req, &pairs, &mut answers)?,
        };

        // TargetPortalGroupTag (required) and TargetAlias go in the first
        // response of a Normal session.
        if first_text && self.session_type() == SessionType::Normal {
            answers.push(
                Key::TargetPortalGroupTag.name(),
                &self.ctx.portal_group_tag.to_string(),
            );
            if let Some(alias) = &self.target_alias {
                answers.push(Key::TargetAlias.name(), alias);
            }
        }

        match req.next_stage {
            Some(Stage::FullFeature) if ready => self.finish(req, answers, policy),
            Some(next) if ready => {
                self.leave_security_stage();
                self.stage = next;
                Ok(self.reply(req, answers.into_bytes(), Some(next), req.tsih, None))
            }
            _ => Ok(self.reply(req, answers.into_bytes(), None, req.tsih, None)),
        }
    }

    fn session_type(&self) -> SessionType {
        self.identity
            .as_ref()
            .map_or(SessionType::Normal, |i| i.session_type)
    }

    /// Reads the identity keys of the first text and looks the target up.
    fn establish(
        &mut self,
        req: &LoginRequest,
        pairs: &[KeyValue<'_>],
        policy: &mut dyn LoginPolicy,
    ) -> Step<()> {
        let initiator_name = find(pairs, Key::InitiatorName)
            .filter(|n| !n.is_empty())
            .ok_or(LoginStatus::MISSING_PARAMETER)?;
        let session_type = match find(pairs, Key::SessionType) {
            None => SessionType::Normal,
            Some(v) => SessionType::from_value(v).ok_or(LoginStatus::SESSION_TYPE_NOT_SUPPORTED)?,
        };
        let target_name = match session_type {
            SessionType::Normal => Some(
                find(pairs, Key::TargetName)
                    .filter(|n| !n.is_empty())
                    .ok_or(LoginStatus::MISSING_PARAMETER)?,
            ),
            SessionType::Discovery => None,
        };
        let initiator = InitiatorInfo {
            name: initiator_name,
            address: self.ctx.initiator_address,
        };
        let pg = self.ctx.portal_group_tag;
        let limits = match target_name {
            Some(target) => {
                let node = policy.target(target, &initiator, pg)?;
                self.target_alias = node.alias;
                self.auth_config = node.auth;
                node.limits
            }
            None => {
                let service = policy.discovery(&initiator, pg)?;
                self.auth_config = service.auth;
                service.limits
            }
        };
        // Skipping the security stage is only for targets without CHAP.
        if req.current_stage != Stage::SecurityNegotiation
            && self.auth_config.chap != ChapMode::Disabled
        {
            return Err(LoginStatus::AUTHENTICATION_FAILURE.into());
        }
        self.negotiator = Some(Negotiator::new(
            limits,
            NegotiationScope {
                session_type,
                leading: req.tsih == 0,
                iser: self.ctx.iser,
            },
        ));
        self.identity = Some(Identity {
            initiator_name: initiator_name.to_string(),
            initiator_alias: find(pairs, Key::InitiatorAlias).map(str::to_string),
            target_name: target_name.map(str::to_string),
            session_type,
        });
        Ok(())
    }

    /// Identity keys may be repeated later only with the same values.
    fn check_identity(&self, pairs: &[KeyValue<'_>]) -> Step<()> {
        let Some(id) = &self.identity else {
            return Ok(());
        };
        let same = |key: Key, recorded: Option<&str>| match find(pairs, key) {
            None => true,
            Some(v) => recorded == Some(v),
        };
        let session_type = match id.session_type {
            SessionType::Normal => "Normal",
            SessionType::Discovery => "Discovery",
        };
        let target_ok = id.session_type == SessionType::Discovery
            || same(Key::TargetName, id.target_name.as_deref());
        if same(Key::InitiatorName, Some(&id.initiator_name))
            && same(Key::SessionType, Some(session_type))
            && same(Key::InitiatorAlias, id.initiator_alias.as_deref())
            && target_ok
        {
            Ok(())
        } else {
            Err(LoginStatus::INITIATOR_ERROR.into())
        }
    }

    fn security_stage(
        &mut self,
        req: &LoginRequest,
        pairs: &[KeyValue<'_>],
        answers: &mut TextWriter,
        policy: &mut dyn LoginPolicy,
    ) -> Step<bool> {
        let mut chap = ChapKeys::default();
        for pair in pairs {
            match classify(pair.key) {
                KeyClass::Identity => {}
                KeyClass::TargetOnly => return Err(LoginStatus::INITIATOR_ERROR.into()),
                KeyClass::FullFeatureOnly => answers.push(pair.key, "Reject"),
                KeyClass::AuthMethod => {
                    let chosen = self.negotiate_auth_method(pair.value)?;
                    answers.push(pair.key, chosen);
                }
                KeyClass::Chap(key) => chap.set(key, pair.value),
                KeyClass::Operational => {
                    // Operational keys wait for the operational stage;
                    // keys we do not know are simply not understood.
                    if Key::from_name(pair.key).is_some() {
                        return Err(LoginStatus::INITIATOR_ERROR.into());
                    }
                    answers.push(pair.key, "NotUnderstood");
                }
            }
        }
        if !chap.is_empty() {
            self.chap_step(&chap, answers, policy)?;
        }
        match &self.auth {
            Auth::Pending if self.auth_config.chap != ChapMode::Disabled => {
                // Leaving the stage without authenticating is refused.
                if req.next_stage.is_some() {
                    return Err(LoginStatus::AUTHENTICATION_FAILURE.into());
                }
                Ok(false)
            }
            Auth::Chap(_) => Ok(false),
            _ => Ok(true),
        }
    }

    fn negotiate_auth_method(&mut self, offer: &str) -> Step<&'static str> {
        if is_reserved_answer(offer) {
            return Err(LoginStatus::INITIATOR_ERROR.into());
        }
        let wanted = match self.auth_config.chap {
            ChapMode::Disabled => "None",
            ChapMode::Required | ChapMode::Mutual => "CHAP",
        };
        if !offer.split(',').any(|m| m == wanted) {
            return Err(LoginStatus::AUTHENTICATION_FAILURE.into());
        }
        match self.auth_method {
            Some(previous) if previous == wanted => return Ok(wanted),
            Some(_) => return Err(LoginStatus::INITIATOR_ERROR.into()),
            None => self.auth_method = Some(wanted),
        }
        self.auth = if wanted == "CHAP" {
            Auth::Chap(ChapTarget::new())
        } else {
            Auth::NoneAgreed
        };
        Ok(wanted)
    }

    fn chap_step(
        &mut self,
        keys: &ChapKeys<'_>,
        answers: &mut TextWriter,
        policy: &mut dyn LoginPolicy,
    ) -> Step<()> {
        let Auth::Chap(chap) = &mut self.auth else {
            // CHAP keys without AuthMethod=CHAP, or after it finished.
            return Err(LoginStatus::INITIATOR_ERROR.into());
        };
        let has_response_keys = keys.n.is_some() || keys.r.is_some();
        if !chap.awaiting_response() {
            let chap_a = match (
                keys.a,
                has_response_keys || keys.i.is_some() || keys.c.is_some(),
            ) {
                (Some(a), false) => a,
                _ => return Err(LoginStatus::AUTHENTICATION_FAILURE.into()),
            };
            let reply = chap.challenge(chap_a).map_err(|e| chap_status(&e))?;
            for (key, value) in reply {
                answers.push(key, &value);
            }
            return Ok(());
        }
        if keys.a.is_some() {
            return Err(LoginStatus::AUTHENTICATION_FAILURE.into());
        }
        let target_name = self.identity.as_ref().and_then(|i| i.target_name.clone());
        let options = VerifyOptions {
            min_secret_len: self.auth_config.min_secret_len,
            require_mutual: self.auth_config.chap == ChapMode::Mutual,
            target_credential: self.auth_config.target_credential.as_ref(),
        };
        let response = ChapResponse {
            name: keys.n,
            response: keys.r,
            mutual_id: keys.i,
            mutual_challenge: keys.c,
        };
        let success = chap
            .verify(
                &response,
                |user| policy.chap_secret(target_name.as_deref(), user),
                &options,
            )
            .map_err(|e| chap_status(&e))?;
        let target_authenticated = success.mutual_reply.is_some();
        if let Some((name, response)) = &success.mutual_reply {
            answers.push(Key::ChapN.name(), name);
            answers.push(Key::ChapR.name(), response);
        }
        self.auth = Auth::Done {
            chap_user: Some(success.user),
            target_authenticated,
        };
        Ok(())
    }

    fn leave_security_stage(&mut self) {
        if matches!(self.auth, Auth::Pending | Auth::NoneAgreed) {
            self.auth = Auth::Done {
                chap_user: None,
                target_authenticated: false,
            };
        }
    }

    fn operational_stage(
        &mut self,
        req: &LoginRequest,
        pairs: &[KeyValue<'_>],
        answers: &mut TextWriter,
    ) -> Step<bool> {
        self.leave_security_stage();
        let mut operational = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match classify(pair.key) {
                KeyClass::Identity => {}
                KeyClass::FullFeatureOnly => answers.push(pair.key, "Reject"),
                KeyClass::TargetOnly | KeyClass::AuthMethod | KeyClass::Chap(_) => {
                    return Err(LoginStatus::INITIATOR_ERROR.into())
                }
                KeyClass::Operational => operational.push(*pair),
            }
        }
        let Some(negotiator) = self.negotiator.as_mut() else {
            return Err(LoginStatus::TARGET_ERROR.into());
        };
        let negotiated = negotiator.negotiate(&operational).map_err(|e| {
            tracing::info!("login negotiation failed: {e}");
            Refusal::Status(LoginStatus::INITIATOR_ERROR)
        })?;
        for answer in negotiated {
            answers.push(&answer.key, &answer.value);
        }
        if !self.declared {
            self.declared = true;
            for answer in negotiator.declarations() {
                answers.push(&answer.key, &answer.value);
            }
        }
        if req.next_stage != Some(Stage::FullFeature) {
            return Ok(false);
        }
        let offers = negotiator.target_offers();
        let ready = offers.is_empty() && !negotiator.awaiting_answers();
        for offer in offers {
            answers.push(&offer.key, &offer.value);
        }
        Ok(ready)
    }

    /// The final step: place the connection in a session and answer with
    /// T=1, NSG=FullFeature.
    fn finish(
        &mut self,
        req: &LoginRequest,
        answers: TextWriter,
        policy: &mut dyn LoginPolicy,
    ) -> Step<LoginReply> {
        self.leave_security_stage();
        let (Some(identity), Some(negotiator)) = (&self.identity, &self.negotiator) else {
            return Err(LoginStatus::TARGET_ERROR.into());
        };
        let mut params = negotiator.session_params();
        params.target_portal_group_tag = self.ctx.portal_group_tag;
        let request = match NonZeroU16::new(req.tsih) {
            None => SessionRequest::New,
            Some(tsih) => SessionRequest::AddConnection { tsih },
        };
        let binding = SessionBinding {
            request,
            initiator: InitiatorInfo {
                name: &identity.initiator_name,
                address: self.ctx.initiator_address,
            },
            isid: req.isid,
            cid: req.cid,
            session_type: identity.session_type,
            target_name: identity.target_name.as_deref(),
            portal_group_tag: self.ctx.portal_group_tag,
            params: &params,
        };
        let admission = policy.bind_session(&binding)?;
        let (tsih, session_params) = match (admission, request) {
            (SessionAdmission::New { tsih, .. }, SessionRequest::New) => (tsih, params),
            (SessionAdmission::Joined { params }, SessionRequest::AddConnection { tsih }) => {
                // One session, one transport: an iSER connection cannot join
                // a session in traditional mode, nor a TCP one an iSER session.
                if params.session_type == SessionType::Normal
                    && params.rdma_extensions != self.ctx.iser
                {
                    tracing::info!(
                        "login: {} connection refused by session {tsih} over {}",
                        if self.ctx.iser { "an iSER" } else { "a TCP" },
                        if params.rdma_extensions {
                            "iSER"
                        } else {
                            "TCP"
                        }
                    );
                    return Err(LoginStatus::CANT_INCLUDE_IN_SESSION.into());
                }
                (tsih, params)
            }
            // The model answered a different question than was asked.
            _ => return Err(LoginStatus::TARGET_ERROR.into()),
        };
        let (chap_user, target_authenticated) = match &self.auth {
            Auth::Done {
                chap_user,
                target_authenticated,
            } => (chap_user.clone(), *target_authenticated),
            _ => (None, false),
        };
        let outcome = LoginOutcome {
            session_type: identity.session_type,
            initiator_name: identity.initiator_name.clone(),
            initiator_alias: identity.initiator_alias.clone(),
            target_name: identity.target_name.clone(),
            target_alias: self.target_alias.clone(),
            isid: req.isid,
            tsih,
            cid: req.cid,
            admission,
            session_params,
            conn_params: negotiator.connection_params(),
            chap_user,
            target_authenticated,
            exp_cmd_sn: req.cmd_sn,
            next_stat_sn: 0,
            portal_group_tag: self.ctx.portal_group_tag,
        };
        Ok(self.reply(
            req,
            answers.into_bytes(),
            Some(Stage::FullFeature),
            tsih.get(),
            Some(Box::new(outcome)),
        ))
    }

    fn next_seq(&mut self, cmd_sn: u32) -> StatusSeq {
        let stat_sn = self.stat_sn;
        self.stat_sn = self.stat_sn.wrapping_add(1);
        StatusSeq {
            stat_sn,
            exp_cmd_sn: cmd_sn,
            max_cmd_sn: cmd_sn.wrapping_add(self.ctx.command_window.max(1) - 1),
        }
    }

    /// Builds a response; text over one segment is sent in pieces, the
    /// real T bit and outcome going with the last piece.
    fn reply(
        &mut self,
        req: &LoginRequest,
        text: Vec<u8>,
        next_stage: Option<Stage>,
        tsih: u16,
        outcome: Option<Box<LoginOutcome>>,
    ) -> LoginReply {
        self.outbound = Some(Outbound {
            segments: TextSegments::new(text),
            next_stage,
            tsih,
            outcome,
        });
        self.send_next_piece(req)
    }

    fn send_next_piece(&mut self, req: &LoginRequest) -> LoginReply {
        let Some(mut out) = self.outbound.take() else {
            return self.fail(req, Refusal::Status(LoginStatus::TARGET_ERROR));
        };
        let (data, more) = out.segments.next_segment(LOGIN_SEGMENT_LEN);
        let seq = self.next_seq(req.cmd_sn);
        let (next_stage, tsih, progress) = if more {
            let tsih = req.tsih;
            self.outbound = Some(out);
            (None, tsih, LoginProgress::InProgress)
        } else {
            let progress = match out.outcome.take() {
                Some(mut outcome) => {
                    outcome.next_stat_sn = self.stat_sn;
                    self.finished = true;
                    LoginProgress::Complete(outcome)
                }
                None => LoginProgress::InProgress,
            };
            (out.next_stage, out.tsih, progress)
        };
        let header = LoginResponse {
            continue_bit: more,
            current_stage: req.current_stage,
            next_stage,
            version_max: ISCSI_VERSION,
            version_active: ISCSI_VERSION,
            isid: req.isid,
            tsih,
            itt: req.itt,
            seq,
            status: LoginStatus::SUCCESS,
            data_len: data.len() as u32,
        }
        .encode();
        LoginReply {
            header,
            data,
            progress,
        }
    }

    fn fail(&mut self, req: &LoginRequest, refusal: Refusal) -> LoginReply {
        self.finished = true;
        self.outbound = None;
        let (status, data) = match refusal {
            Refusal::Status(status) => (status, Vec::new()),
            Refusal::Redirect {
                target_address,
                permanent,
            } => {
                let mut text = TextWriter::new();
                text.push(Key::TargetAddress.name(), &target_address);
                let status = if permanent {
                    LoginStatus::TARGET_MOVED_PERMANENTLY
                } else {
                    LoginStatus::TARGET_MOVED_TEMPORARILY
                };
                (status, text.into_bytes())
            }
        };
        let header = LoginResponse {
            continue_bit: false,
            current_stage: req.current_stage,
            next_stage: None,
            version_max: ISCSI_VERSION,
            version_active: ISCSI_VERSION,
            isid: req.isid,
            tsih: req.tsih,
            itt: req.itt,
            seq: self.next_seq(req.cmd_sn),
            status,
            data_len: data.len() as u32,
        }
        .encode();
        LoginReply {
            header,
            data,
            progress: LoginProgress::Failed(status),
        }
    }
}

/// The CHAP keys of one request.
#[derive(Default)]
struct ChapKeys<'a> {
    a: Option<&'a str>,
    i: Option<&'a str>,
    c: Option<&'a str>,
    n: Option<&'a str>,
    r: Option<&'a str>,
}

impl<'a> ChapKeys<'a> {
    fn set(&mut self, key: Key, value: &'a str) {
        let slot = match key {
            Key::ChapA => &mut self.a,
            Key::ChapI => &mut self.i,
            Key::ChapC => &mut self.c,
            Key::ChapN => &mut self.n,
            _ => &mut self.r,
        };
        *slot = Some(value);
    }

    fn is_empty(&self) -> bool {
        self.a.is_none()
            && self.i.is_none()
            && self.c.is_none()
            && self.n.is_none()
            && self.r.is_none()
    }
}

#[cfg(test)]
mod tests;
