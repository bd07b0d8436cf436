//! What the login and text state machines ask of the target model: which
//! target nodes exist and who may reach them, how each authenticates, the
//! CHAP secrets, the session table, and the SendTargets directory.
//!
//! The target model (lib's target nodes, portal groups, initiator groups and
//! CHAP secrets) implements these traits; the state machines stay pure.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU16;

use super::chap::{ChapCredential, ChapSecret};
use super::params::{SessionParams, SessionType, TargetLimits};
use super::pdu::{Isid, LoginStatus};

/// Who is logging in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitiatorInfo<'a> {
    /// The InitiatorName key.
    pub name: &'a str,
    /// The initiator's IP address.
    pub address: IpAddr,
}

/// Why the target model turns a login down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Fail with this status (class 2 or 3).
    Status(LoginStatus),
    /// Send the initiator elsewhere (Status-Class 1): `target_address` is a
    /// TargetAddress value, `host[:port][,tag]`.
    Redirect {
        target_address: String,
        permanent: bool,
    },
}

impl From<LoginStatus> for Refusal {
    fn from(status: LoginStatus) -> Self {
        Refusal::Status(status)
    }
}

/// How a target node (or the discovery service) authenticates initiators.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChapMode {
    /// AuthMethod=None only.
    #[default]
    Disabled,
    /// The initiator must pass CHAP; the target answers a mutual challenge
    /// if it has a credential.
    Required,
    /// The initiator must pass CHAP and ask the target to authenticate too.
    Mutual,
}

/// Authentication settings of a target node or of discovery.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub chap: ChapMode,
    /// The target's own CHAP name and secret, for mutual CHAP.
    pub target_credential: Option<ChapCredential>,
    /// Refuse secrets shorter than this (RFC 7143 wants 12 bytes without
    /// IPsec; 0 accepts any non-empty secret, as tgtd and LIO do).
    pub min_secret_len: usize,
}

/// A target node as a Normal session sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetNode {
    /// TargetAlias, sent to the initiator when set.
    pub alias: Option<String>,
    pub auth: AuthConfig,
    pub limits: TargetLimits,
}

/// The discovery service of a portal group as a Discovery session sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryService {
    pub auth: AuthConfig,
    pub limits: TargetLimits,
}

/// The session a finished login asks to create or join.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionRequest {
    /// TSIH 0: a new session. If the model already has a session with the
    /// same initiator name, ISID and target (portal group), the login is a
    /// session reinstatement: the old session must be closed and its tasks
    /// ended before the new one starts (RFC 7143 §6.3.5).
    New,
    /// Add a connection to the session `tsih` (or reinstate connection
    /// `cid` in it if that CID is already in use).
    AddConnection { tsih: NonZeroU16 },
}

/// Everything the model needs to place the connection in a session.
#[derive(Clone, Copy, Debug)]
pub struct SessionBinding<'a> {
    pub request: SessionRequest,
    pub initiator: InitiatorInfo<'a>,
    pub isid: Isid,
    pub cid: u16,
    pub session_type: SessionType,
    /// `None` for Discovery sessions.
    pub target_name: Option<&'a str>,
    pub portal_group_tag: u16,
    /// What this login negotiated; a new session keeps these.
    pub params: &'a SessionParams,
}

/// The model's answer to a [`SessionBinding`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionAdmission {
    /// A new session with this TSIH. `reinstated` tells whether an older
    /// session of the same ISID was closed for it.
    New { tsih: NonZeroU16, reinstated: bool },
    /// The connection joins the existing session, whose negotiated values
    /// it takes.
    Joined { params: SessionParams },
}

/// One portal through which a target can be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Portal {
    pub address: SocketAddr,
    pub portal_group_tag: u16,
}

impl Portal {
    /// The TargetAddress value: `ip:port,tag`, IPv6 addresses in brackets
    /// (zone ids dropped).
    pub fn target_address(&self) -> String {
        match self.address.ip() {
            IpAddr::V4(ip) => format!("{ip}:{},{}", self.address.port(), self.portal_group_tag),
            IpAddr::V6(ip) => format!("[{ip}]:{},{}", self.address.port(), self.portal_group_tag),
        }
    }
}

/// A SendTargets record: a target and its portals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetRecord {
    pub name: String,
    pub portals: Vec<Portal>,
}

/// Which targets a SendTargets asks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetQuery<'a> {
    All,
    Named(&'a str),
}

/// The SendTargets directory.
pub trait TargetDirectory {
    /// The targets this initiator may see through portal group
    /// `portal_group_tag` (the one the question came in on), filtered by
    /// `query`, each with the portals it may use (ACLs and portal groups
    /// applied). A target the initiator may not access is left out.
    fn send_targets(
        &self,
        initiator: &InitiatorInfo<'_>,
        portal_group_tag: u16,
        query: TargetQuery<'_>,
    ) -> Vec<TargetRecord>;
}

/// The target model as the login state machine sees it.
pub trait LoginPolicy: TargetDirectory {
    /// The target node `target_name`, if it exists, the initiator may
    /// access it, and it is reachable through portal group
    /// `portal_group_tag`. Typical refusals: target not found (0x0203),
    /// authorization failure (0x0202), target removed (0x0204), or a
    /// redirect.
    fn target(
        &self,
        target_name: &str,
        initiator: &InitiatorInfo<'_>,
        portal_group_tag: u16,
    ) -> Result<TargetNode, Refusal>;

    /// The discovery service of portal group `portal_group_tag` for this
    /// initiator (0x0209 "session type not supported" to refuse discovery).
    fn discovery(
        &self,
        initiator: &InitiatorInfo<'_>,
        portal_group_tag: u16,
    ) -> Result<DiscoveryService, Refusal>;

    /// The secret of CHAP user `user` for logins to `target_name` (`None`
    /// for discovery), or `None` if there is no such user.
    fn chap_secret(&self, target_name: Option<&str>, user: &str) -> Option<ChapSecret>;

    /// Places the connection in a session once the login has succeeded.
    /// Typical refusals: session does not exist (0x020a), too many
    /// connections (0x0206), can't include in session (0x0208), out of
    /// resources (0x0302).
    fn bind_session(&mut self, binding: &SessionBinding<'_>) -> Result<SessionAdmission, Refusal>;
}
