//! The iSCSI service's side of login and discovery: the target model (lib's
//! portal groups, initiator groups, target nodes and CHAP secrets) seen through
//! the [`LoginPolicy`] the pure login state machine asks, the sessions it
//! creates, and the SCSI devices of target nodes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU16;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};

use ferrite_lib::scsi::{Nexus, ScsiDev, ScsiPort};
use ferrite_lib::target::{self as model, ModelSnapshot};

use super::chap::{ChapCredential, ChapSecret};
use super::conn::PortalInfo;
use super::login::{Login, LoginContext, LoginOutcome, LoginProgress};
use super::params::{AllowedDigests, ConnectionParams, SessionType, TargetLimits};
use super::pdu::{Bhs, Isid, LoginRequest, LoginStatus, RejectReason, TextRequest};
use super::policy::{
    AuthConfig, ChapMode, DiscoveryService, InitiatorInfo, LoginPolicy, Portal, Refusal,
    SessionAdmission, SessionBinding, SessionRequest, TargetDirectory, TargetNode, TargetQuery,
    TargetRecord,
};
use super::session::{self, Session, SessionEntry};
use super::text_request::{TextContext, TextExchange, TextReply};

/// The target's preferred data segment and burst sizes.
const MAX_RECV_DATA_SEGMENT: u32 = 256 * 1024;
const MAX_BURST: u32 = 1024 * 1024;

/// SCSI devices of target nodes, by target name: made at the first login to a
/// target, shared by its sessions (reservations and unit attentions live there).
static DEVICES: Mutex<Option<HashMap<String, Arc<ScsiDev>>>> = Mutex::new(None);

fn devices() -> MutexGuard<'static, Option<HashMap<String, Arc<ScsiDev>>>> {
    DEVICES.lock().unwrap_or_else(|e| e.into_inner())
}

/// The SCSI device of target `name`, made from the model if needed. On a reactor.
pub(crate) fn device(snap: &ModelSnapshot, name: &str) -> Result<Arc<ScsiDev>, String> {
    let node = snap
        .target(name)
        .ok_or_else(|| format!("no target node {name}"))?;
    let mut devs = devices();
    let map = devs.get_or_insert_with(HashMap::new);
    if let Some(d) = map.get(&node.name) {
        return Ok(d.clone());
    }
    let luns: Vec<(u64, String)> = node
        .luns
        .iter()
        .map(|l| (l.id as u64, l.bdev_name.clone()))
        .collect();
    let dev = ScsiDev::new(&node.name, &luns)?;
    map.insert(node.name.clone(), dev.clone());
    Ok(dev)
}

/// Adds LUN `id` to the device of target `name`, if it has one yet.
pub(crate) fn device_lun_added(snap: &ModelSnapshot, name: &str, id: u32) {
    let dev = devices().as_ref().and_then(|m| m.get(name).cloned());
    if let (Some(dev), Some(node)) = (dev, snap.target(name)) {
        if let Some(lun) = node.lun(id) {
            if let Err(e) = dev.add_lun(id as u64, &lun.bdev_name) {
                tracing::error!("target {name}: adding LUN {id}: {e}");
            }
        }
    }
}

/// Forgets the device of a deleted target (its LUNs close with the last session).
pub(crate) fn device_deleted(name: &str) {
    if let Some(m) = devices().as_mut() {
        if let Some(dev) = m.remove(name) {
            for lun in dev.luns() {
                dev.remove_lun(lun.id);
            }
        }
    }
}

/// Forgets every target's device (shutdown, after all sessions closed).
pub(crate) fn forget_devices() {
    let names: Vec<String> = devices()
        .as_ref()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for n in names {
        device_deleted(&n);
    }
}

/// An iSCSI TransportID (SPC-4 7.6.4.6), format 01b: name, ",i,0x", ISID.
fn transport_id(initiator: &str, isid: &Isid) -> Vec<u8> {
    let name = format!("{initiator},i,0x{isid}");
    let mut body = name.into_bytes();
    body.push(0);
    while body.len() % 4 != 0 {
        body.push(0);
    }
    let mut id = vec![0x45, 0];
    id.extend_from_slice(&(body.len() as u16).to_be_bytes());
    id.extend_from_slice(&body);
    id
}

fn auth_config(snap: &ModelSnapshot, chap: &model::ChapSettings) -> AuthConfig {
    let mode = if chap.disable_chap || !chap.require_chap {
        ChapMode::Disabled
    } else if chap.mutual_chap {
        ChapMode::Mutual
    } else {
        ChapMode::Required
    };
    let target_credential = snap
        .auth_group(chap.chap_group)
        .and_then(|g| g.secrets.iter().find_map(|s| s.mutual()))
        .map(|(name, secret)| ChapCredential {
            name: name.to_string(),
            secret: ChapSecret::new(secret.as_bytes().to_vec()),
        });
    AuthConfig {
        chap: mode,
        target_credential,
        min_secret_len: 0,
    }
}

fn limits(snap: &ModelSnapshot, node: Option<&model::TargetNode>) -> TargetLimits {
    let o = snap.options();
    let digests = |required: bool| {
        if required {
            AllowedDigests::CRC32C_ONLY
        } else {
            AllowedDigests::ANY
        }
    };
    TargetLimits {
        max_recv_data_segment_length: MAX_RECV_DATA_SEGMENT,
        max_burst_length: MAX_BURST,
        first_burst_length: o.first_burst_length.min(MAX_BURST),
        immediate_data: o.immediate_data,
        initial_r2t: true,
        max_connections: o.max_connections_per_session.clamp(1, u16::MAX as u32) as u16,
        max_outstanding_r2t: o.max_r2t_per_connection.clamp(1, 7) as u16,
        max_error_recovery_level: 0,
        default_time2wait: o.default_time2wait.min(3600) as u16,
        default_time2retain: o.default_time2retain.min(3600) as u16,
        header_digests: digests(node.is_some_and(|n| n.header_digest)),
        data_digests: digests(node.is_some_and(|n| n.data_digest)),
        ..TargetLimits::default()
    }
    .sanitized()
}

/// What the login asks of the model for one connection.
struct ModelPolicy {
    /// An iSER connection: its receive buffers bound TargetRecvDataSegmentLength.
    iser: bool,
    snap: Arc<ModelSnapshot>,
    local: SocketAddr,
    /// The session entry made by `bind_session` (and the one it reinstated).
    created: Option<(Arc<SessionEntry>, Option<Arc<SessionEntry>>)>,
    joined: Option<Arc<SessionEntry>>,
}

impl ModelPolicy {
    fn transport_limits(&self, mut limits: TargetLimits) -> TargetLimits {
        if self.iser {
            limits.iser_target_recv_data_segment_length =
                crate::iser::TARGET_RECV_DATA_SEGMENT_LENGTH;
        }
        limits
    }
}

impl TargetDirectory for ModelPolicy {
    fn send_targets(
        &self,
        initiator: &InitiatorInfo<'_>,
        _portal_group_tag: u16,
        query: TargetQuery<'_>,
    ) -> Vec<TargetRecord> {
        let which = match query {
            TargetQuery::All => "All",
            TargetQuery::Named(n) => n,
        };
        self.snap
            .send_targets(
                initiator.name,
                initiator.address,
                Some(self.local.ip()),
                which,
            )
            .into_iter()
            .map(|t| TargetRecord {
                name: t.name,
                portals: t
                    .addresses
                    .iter()
                    .filter_map(|a| {
                        let host = a.host.trim_start_matches('[').trim_end_matches(']');
                        let ip: IpAddr = host.parse().ok()?;
                        Some(Portal {
                            address: SocketAddr::new(ip, a.port),
                            portal_group_tag: a.pg_tag as u16,
                        })
                    })
                    .collect(),
            })
            .collect()
    }
}

impl LoginPolicy for ModelPolicy {
    fn target(
        &self,
        target_name: &str,
        initiator: &InitiatorInfo<'_>,
        portal_group_tag: u16,
    ) -> Result<TargetNode, Refusal> {
        match self.snap.login_target(
            target_name,
            portal_group_tag as u32,
            initiator.name,
            initiator.address,
        ) {
            Ok(node) => Ok(TargetNode {
                alias: (!node.alias.is_empty()).then(|| node.alias.clone()),
                auth: auth_config(&self.snap, &node.chap),
                limits: self.transport_limits(limits(&self.snap, Some(node))),
            }),
            Err(model::LoginRefusal::NotFound) => Err(LoginStatus::TARGET_NOT_FOUND.into()),
            Err(model::LoginRefusal::NotAllowed(why)) => {
                tracing::info!("login refused: {why}");
                Err(LoginStatus::AUTHORIZATION_FAILURE.into())
            }
        }
    }

    fn discovery(
        &self,
        _initiator: &InitiatorInfo<'_>,
        _portal_group_tag: u16,
    ) -> Result<DiscoveryService, Refusal> {
        Ok(DiscoveryService {
            auth: auth_config(&self.snap, &self.snap.discovery_chap()),
            limits: self.transport_limits(limits(&self.snap, None)),
        })
    }

    fn chap_secret(&self, target_name: Option<&str>, user: &str) -> Option<ChapSecret> {
        let group = match target_name {
            Some(t) => self.snap.target(t)?.chap.chap_group,
            None => self.snap.discovery_chap().chap_group,
        };
        self.snap
            .chap_secret(group, user)
            .map(|s| ChapSecret::new(s.secret.as_bytes().to_vec()))
    }

    fn bind_session(&mut self, b: &SessionBinding<'_>) -> Result<SessionAdmission, Refusal> {
        let reactor = ferrite_reactor::current_index().unwrap_or(0);
        match b.request {
            SessionRequest::New => {
                let max = self.snap.options().max_sessions as usize;
                if max > 0 && session::entries().len() >= max {
                    return Err(LoginStatus::OUT_OF_RESOURCES.into());
                }
                let (entry, old) = session::create_entry(
                    b.isid,
                    b.initiator.name,
                    b.target_name,
                    b.portal_group_tag,
                    reactor,
                    *b.params,
                )
                .ok_or(Refusal::Status(LoginStatus::OUT_OF_RESOURCES))?;
                let tsih = NonZeroU16::new(entry.tsih).expect("TSIH 0 is never assigned");
                let reinstated = old.is_some();
                self.created = Some((entry, old));
                Ok(SessionAdmission::New { tsih, reinstated })
            }
            SessionRequest::AddConnection { tsih } => {
                let entry = session::find_entry(tsih, b.isid, b.initiator.name)
                    .ok_or(Refusal::Status(LoginStatus::SESSION_DOES_NOT_EXIST))?;
                if entry.target.as_deref() != b.target_name
                    || entry.params.session_type != b.session_type
                {
                    return Err(LoginStatus::CANT_INCLUDE_IN_SESSION.into());
                }
                // (A connection that came in on another reactor moves to the
                // session's once its login is answered.)
                let _ = reactor;
                let conns = entry.conns.load(std::sync::atomic::Ordering::Acquire);
                if conns >= entry.params.max_connections as usize {
                    return Err(LoginStatus::TOO_MANY_CONNECTIONS.into());
                }
                let params = entry.params;
                self.joined = Some(entry);
                Ok(SessionAdmission::Joined { params })
            }
        }
    }
}

/// What a finished login hands the connection.
pub(crate) struct LoginDone {
    /// The session, when it lives on this reactor.
    pub session: Option<Rc<Session>>,
    /// The session this connection joins on another reactor: the connection
    /// moves there.
    pub remote: Option<Arc<SessionEntry>>,
    pub conn_params: ConnectionParams,
    pub cid: u16,
    pub next_stat_sn: u32,
    pub initiator_name: String,
}

/// The replies to one Login Request.
pub(crate) struct LoginStep {
    pub responses: Vec<(Bhs, Vec<u8>)>,
    pub failed: bool,
    pub done: Option<LoginDone>,
}

/// What the text exchange needs from the connection.
pub(crate) struct TextInfo {
    pub session_type: SessionType,
    pub target_name: Option<String>,
    pub initiator_name: String,
    pub max_send: u32,
}

/// A connection's login, then its text exchanges.
pub(crate) struct LoginDriver {
    iser: bool,
    login: Login,
    text: TextExchange,
}

impl LoginDriver {
    pub fn new(portal: PortalInfo, iser: bool) -> LoginDriver {
        let depth = model::snapshot().options().max_queue_depth.max(1);
        LoginDriver {
            iser,
            login: Login::new(LoginContext {
                portal_group_tag: portal.portal_group_tag,
                initiator_address: portal.peer.ip(),
                iser,
                initial_stat_sn: 1,
                command_window: depth,
            }),
            text: TextExchange::new(),
        }
    }

    /// Handles a Login Request.
    pub fn step(&mut self, req: &LoginRequest, data: &[u8], portal: PortalInfo) -> LoginStep {
        let mut policy = ModelPolicy {
            iser: self.iser,
            snap: model::snapshot(),
            local: portal.local,
            created: None,
            joined: None,
        };
        let reply = self.login.handle(req, data, &mut policy);
        let mut step = LoginStep {
            responses: vec![(reply.header, reply.data)],
            failed: false,
            done: None,
        };
        match reply.progress {
            LoginProgress::InProgress => {}
            LoginProgress::Failed(status) => {
                tracing::info!("login from {} refused: {status}", portal.peer);
                step.failed = true;
                if let Some((entry, _)) = policy.created {
                    // Bound, then failed: the session never started.
                    session::forget_entry(&entry);
                }
            }
            LoginProgress::Complete(outcome) => match self.start_session(&policy, &outcome) {
                Ok(place) => {
                    let (session, remote) = match place {
                        Ok(s) => (Some(s), None),
                        Err(entry) => (None, Some(entry)),
                    };
                    let tsih = session
                        .as_ref()
                        .map(|s| s.entry.tsih)
                        .or(remote.as_ref().map(|e| e.tsih))
                        .unwrap_or(0);
                    tracing::info!(
                        "login: {} to {} (tsih {tsih}, {:?}) from {}",
                        outcome.initiator_name,
                        outcome.target_name.as_deref().unwrap_or("discovery"),
                        outcome.session_type,
                        portal.peer
                    );
                    step.done = Some(LoginDone {
                        session,
                        remote,
                        conn_params: outcome.conn_params,
                        cid: outcome.cid,
                        next_stat_sn: outcome.next_stat_sn,
                        initiator_name: outcome.initiator_name.clone(),
                    });
                }
                Err(e) => {
                    tracing::error!("login from {}: {e}", portal.peer);
                    step.failed = true;
                }
            },
        }
        step
    }

    fn start_session(
        &self,
        policy: &ModelPolicy,
        outcome: &LoginOutcome,
    ) -> Result<Result<Rc<Session>, Arc<SessionEntry>>, String> {
        if let Some(entry) = &policy.joined {
            if ferrite_reactor::current_index() != Some(entry.reactor) {
                return Ok(Err(entry.clone()));
            }
            return Session::local(entry.tsih)
                .map(Ok)
                .ok_or_else(|| "the session ended during login".to_string());
        }
        let (entry, old) = policy
            .created
            .clone()
            .ok_or("login completed without a session")?;
        if let Some(old) = old {
            close_session(&old, "reinstated by a new login");
        }
        let (port, depth) = match (&outcome.target_name, outcome.session_type) {
            (Some(target), SessionType::Normal) => {
                let dev = device(&policy.snap, target)?;
                let node = policy
                    .snap
                    .target(target)
                    .ok_or("target deleted during login")?;
                let nexus = Arc::new(Nexus::new(
                    format!("{},i,0x{}", outcome.initiator_name, outcome.isid),
                    format!("{},t,0x{:04x}", node.name, outcome.portal_group_tag),
                    outcome.portal_group_tag,
                    transport_id(&outcome.initiator_name, &outcome.isid),
                ));
                (Some(ScsiPort::new(dev, nexus)), node.queue_depth)
            }
            _ => (None, 1),
        };
        Ok(Ok(Session::start(
            entry,
            port,
            outcome.exp_cmd_sn,
            depth.max(1),
        )))
    }

    /// Handles a Text Request in the full feature phase.
    pub fn text(
        &mut self,
        req: &TextRequest,
        data: &[u8],
        info: &TextInfo,
        portal: PortalInfo,
    ) -> Result<TextReply, RejectReason> {
        let policy = ModelPolicy {
            iser: self.iser,
            snap: model::snapshot(),
            local: portal.local,
            created: None,
            joined: None,
        };
        let ctx = TextContext {
            session_type: info.session_type,
            target_name: info.target_name.as_deref(),
            initiator: InitiatorInfo {
                name: &info.initiator_name,
                address: portal.peer.ip(),
            },
            portal_group_tag: portal.portal_group_tag,
            max_send_data_segment_length: info.max_send,
        };
        self.text.handle(req, data, &ctx, &policy)
    }
}

/// Closes every connection of a session, on whichever reactor it lives.
pub(crate) fn close_session(entry: &Arc<SessionEntry>, why: &'static str) {
    let tsih = entry.tsih;
    let close = move || {
        if let Some(s) = Session::local(tsih) {
            for c in s.live_conns() {
                c.close(why);
            }
            s.end();
        }
    };
    if ferrite_reactor::current_index() == Some(entry.reactor) {
        close();
    } else if let Err(e) = ferrite_reactor::send(entry.reactor, Box::new(close)) {
        tracing::error!("cannot close session {tsih}: {e}");
    }
}
