//! Parsing and checking what the target model is given as text: iSCSI names,
//! portal addresses, initiator-group entries (names and netmasks).
//!
//! Entries keep the text they were given (that is what `iscsi_get_*` shows and
//! `save_config` writes back) beside a parsed form that matching uses, so a
//! login never parses anything.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest iSCSI name, in bytes (RFC 7143 §4.2.7.1).
pub const MAX_NAME_LEN: usize = 223;

/// Checks an iSCSI name: at most 223 bytes, only the characters RFC 3722 keeps
/// (letters, digits, `-`, `.`, `:` and non-ASCII), and one of the three formats:
/// `iqn.YYYY-MM.naming-authority[:anything]`, `eui.` + 16 hex digits, `naa.` +
/// 16 or 32 hex digits.
pub fn check_iscsi_name(name: &str) -> Result<(), String> {
    check_name_chars(name)?;
    let lower = name.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("iqn.") {
        let b = rest.as_bytes();
        let date_ok = b.len() > 8
            && b[..4].iter().all(u8::is_ascii_digit)
            && b[4] == b'-'
            && b[5..7].iter().all(u8::is_ascii_digit)
            && b[7] == b'.'
            && (1..=12).contains(&((b[5] - b'0') * 10 + (b[6] - b'0')));
        if !date_ok {
            return Err(format!(
                "{name:?} is not an iqn name: expected iqn.YYYY-MM.reversed.domain[:name]"
            ));
        }
        Ok(())
    } else if let Some(hex) = lower.strip_prefix("eui.") {
        if hex.len() == 16 && hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            Ok(())
        } else {
            Err(format!(
                "{name:?} is not an eui name: expected eui. and 16 hex digits"
            ))
        }
    } else if let Some(hex) = lower.strip_prefix("naa.") {
        if (hex.len() == 16 || hex.len() == 32) && hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            Ok(())
        } else {
            Err(format!(
                "{name:?} is not an naa name: expected naa. and 16 or 32 hex digits"
            ))
        }
    } else {
        Err(format!(
            "{name:?} is not an iSCSI name: it must start with iqn., eui. or naa."
        ))
    }
}

/// Length and characters of an iSCSI name, without its format (initiator-group
/// entries name initiators, whatever format they chose).
pub fn check_name_chars(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an iSCSI name cannot be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "iSCSI name {name:?} is {} bytes long; the limit is {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c.is_ascii() && !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':')))
    {
        return Err(format!(
            "iSCSI name {name:?} contains {c:?}; only letters, digits, '-', '.' and ':' are allowed"
        ));
    }
    Ok(())
}

/// The full name of a target node: `name` as given when it already is an iSCSI
/// name (starts with `iqn.`, `eui.` or `naa.`), else `node_base:name`, as SPDK
/// builds it.
pub fn full_target_name(node_base: &str, name: &str) -> String {
    let lower = name.get(..4).map(str::to_ascii_lowercase);
    match lower.as_deref() {
        Some("iqn." | "eui." | "naa.") => name.to_string(),
        _ => format!("{node_base}:{name}"),
    }
}

/// A portal's host, checked and normalised: an IPv4 literal, an IPv6 literal in
/// brackets (`[::1]`; given without brackets it gets them), or a wildcard
/// (`0.0.0.0`, `[::]`; SPDK's `*` and `[*]` are read as those). Host names are
/// refused: what a portal listens on must not depend on name resolution.
pub fn parse_portal_host(host: &str) -> Result<(String, IpAddr), String> {
    let bad = || {
        format!(
            "portal host {host:?} is not a numeric address: use an IPv4 address, \
             an IPv6 address in brackets, 0.0.0.0 or [::]"
        )
    };
    match host {
        "*" => return Ok(("0.0.0.0".into(), IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
        "[*]" => return Ok(("[::]".into(), IpAddr::V6(Ipv6Addr::UNSPECIFIED))),
        _ => {}
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip: Ipv6Addr = inner.parse().map_err(|_| bad())?;
        return Ok((host.to_string(), IpAddr::V6(ip)));
    }
    match host.parse::<IpAddr>().map_err(|_| bad())? {
        IpAddr::V4(ip) => Ok((host.to_string(), IpAddr::V4(ip))),
        IpAddr::V6(ip) => Ok((format!("[{host}]"), IpAddr::V6(ip))),
    }
}

/// A TCP port given as SPDK gives it (a string) or as a number: 1..=65535.
pub fn parse_port(port: &str) -> Result<u16, String> {
    match port.parse::<u32>() {
        Ok(p @ 1..=65535) if !port.starts_with('+') => Ok(p as u16),
        _ => Err(format!(
            "portal port {port:?} is not a TCP port (1..=65535)"
        )),
    }
}

/// An address as a login sees it: IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`,
/// what a dual-stack socket reports) count as the IPv4 address.
pub fn canonical_ip(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => addr,
        },
        v4 => v4,
    }
}

/// One entry of an initiator group's `initiators`: `ANY`, a name, or either
/// behind `!` to deny it. Names compare without regard to case, as SPDK does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitiatorEntry {
    /// As given (`ALL` is stored as `ANY`, as SPDK does).
    pub text: String,
    pub deny: bool,
    /// `None` for `ANY`.
    pub name: Option<String>,
}

impl InitiatorEntry {
    pub fn parse(text: &str) -> Result<InitiatorEntry, String> {
        let (deny, rest) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if rest.eq_ignore_ascii_case("ANY") || rest.eq_ignore_ascii_case("ALL") {
            let text = if deny { "!ANY" } else { "ANY" };
            return Ok(InitiatorEntry {
                text: text.into(),
                deny,
                name: None,
            });
        }
        check_name_chars(rest).map_err(|e| format!("initiator {text:?}: {e}"))?;
        Ok(InitiatorEntry {
            text: text.to_string(),
            deny,
            name: Some(rest.to_string()),
        })
    }

    /// Whether this entry is about `initiator` (regardless of `deny`).
    pub fn matches(&self, initiator: &str) -> bool {
        match &self.name {
            None => true,
            Some(n) => n.eq_ignore_ascii_case(initiator),
        }
    }
}

/// One entry of an initiator group's `netmasks`: `ANY`, an IPv4 network
/// (`10.0.0.0/8`, or one address), an IPv6 network (`[fd00::]/8` as SPDK writes
/// it, or `fd00::/8`), or either behind `!` to deny it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetmaskEntry {
    /// As given (`ALL` is stored as `ANY`).
    pub text: String,
    pub deny: bool,
    /// `None` for `ANY`; else the network address and its prefix length.
    pub net: Option<(IpAddr, u8)>,
}

impl NetmaskEntry {
    pub fn parse(text: &str) -> Result<NetmaskEntry, String> {
        let (deny, rest) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if rest.eq_ignore_ascii_case("ANY") || rest.eq_ignore_ascii_case("ALL") {
            let text = if deny { "!ANY" } else { "ANY" };
            return Ok(NetmaskEntry {
                text: text.into(),
                deny,
                net: None,
            });
        }
        let bad = |why: &str| {
            format!(
                "netmask {text:?} {why}: expected ANY, an IPv4 address or CIDR network \
                 (10.0.0.0/8) or an IPv6 one ([fd00::]/8), optionally behind '!'"
            )
        };
        let (addr, prefix) = match rest.rsplit_once('/') {
            Some((a, p)) => {
                let bits: u8 = p
                    .parse()
                    .map_err(|_| bad("has a prefix length that is not a number"))?;
                (a, Some(bits))
            }
            None => (rest, None),
        };
        let bracketed = addr.strip_prefix('[').and_then(|a| a.strip_suffix(']'));
        let ip: IpAddr = match bracketed {
            Some(inner) => IpAddr::V6(inner.parse().map_err(|_| bad("is not an address"))?),
            None => addr.parse().map_err(|_| bad("is not an address"))?,
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad(&format!("has a prefix longer than {max} bits")));
        }
        Ok(NetmaskEntry {
            text: text.to_string(),
            deny,
            net: Some((ip, prefix)),
        })
    }

    /// Whether `addr` lies in this entry's network (regardless of `deny`).
    pub fn matches(&self, addr: IpAddr) -> bool {
        let Some((net, prefix)) = self.net else {
            return true;
        };
        match (canonical_ip(net), canonical_ip(addr)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - prefix.min(32) as u32)
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - prefix.min(128) as u32)
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iscsi_names() {
        for ok in [
            "iqn.2026-11.io.ferrite:disk0",
            "iqn.2016-06.io.spdk",
            "IQN.1994-05.COM.REDHAT:abc-1.2",
            "eui.0123456789ABCDEF",
            "naa.52004567ba64678d",
            "naa.60012345678901234567890123456789",
        ] {
            check_iscsi_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, needle) in [
            ("", "empty"),
            ("disk0", "must start with"),
            ("iqn.2026-1.io.x", "iqn.YYYY-MM"),
            ("iqn.2026-13.io.x", "iqn.YYYY-MM"),
            ("iqn.2026-11.", "iqn.YYYY-MM"),
            ("iqn.2026-11.io x", "contains ' '"),
            ("iqn.2026-11.io_x", "contains '_'"),
            ("iqn.2026-11.io/x", "contains '/'"),
            ("eui.0123", "16 hex"),
            ("naa.xyz", "hex"),
        ] {
            let e = check_iscsi_name(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        let long = format!("iqn.2026-11.io.ferrite:{}", "a".repeat(201));
        assert!(check_iscsi_name(&long)
            .unwrap_err()
            .contains("limit is 223"));
    }

    #[test]
    fn full_names_get_the_node_base_like_spdk() {
        let base = "iqn.2026-11.io.ferrite";
        assert_eq!(
            full_target_name(base, "disk0"),
            "iqn.2026-11.io.ferrite:disk0"
        );
        assert_eq!(full_target_name(base, "iqn.2000-01.x:y"), "iqn.2000-01.x:y");
        assert_eq!(
            full_target_name(base, "EUI.0123456789abcdef"),
            "EUI.0123456789abcdef"
        );
        assert_eq!(full_target_name(base, "a:b"), "iqn.2026-11.io.ferrite:a:b");
    }

    #[test]
    fn portal_hosts_and_ports() {
        assert_eq!(parse_portal_host("127.0.0.1").unwrap().0, "127.0.0.1");
        assert_eq!(parse_portal_host("*").unwrap().0, "0.0.0.0");
        assert_eq!(parse_portal_host("[*]").unwrap().0, "[::]");
        assert_eq!(parse_portal_host("[::1]").unwrap().0, "[::1]");
        assert_eq!(parse_portal_host("fe80::1").unwrap().0, "[fe80::1]");
        assert!(parse_portal_host("[::1]").unwrap().1.is_ipv6());
        for bad in ["localhost", "", "1.2.3", "[1.2.3.4]", "[::1", "300.1.1.1"] {
            let e = parse_portal_host(bad).unwrap_err();
            assert!(e.contains("not a numeric address"), "{bad}: {e}");
        }
        assert_eq!(parse_port("3260"), Ok(3260));
        for bad in ["0", "65536", "-1", "+3260", "x", "", "0x10"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn initiator_entries() {
        let any = InitiatorEntry::parse("ANY").unwrap();
        assert!(any.matches("iqn.x") && !any.deny && any.name.is_none());
        assert_eq!(InitiatorEntry::parse("all").unwrap().text, "ANY");
        assert_eq!(InitiatorEntry::parse("!ALL").unwrap().text, "!ANY");
        let deny = InitiatorEntry::parse("!iqn.2000-01.com.x:h1").unwrap();
        assert!(deny.deny && deny.matches("IQN.2000-01.COM.X:H1") && !deny.matches("iqn.b"));
        assert!(InitiatorEntry::parse("").is_err());
        assert!(InitiatorEntry::parse("!").is_err());
        assert!(InitiatorEntry::parse("a b")
            .unwrap_err()
            .contains("initiator"));
    }

    #[test]
    fn netmasks_match_v4_v6_and_mapped() {
        let m = |s: &str| NetmaskEntry::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(m("ANY").matches(ip("10.1.1.1")) && m("ANY").matches(ip("::1")));
        assert!(m("127.0.0.1/32").matches(ip("127.0.0.1")));
        assert!(!m("127.0.0.1/32").matches(ip("127.0.0.2")));
        assert!(m("127.0.0.1").matches(ip("127.0.0.1")));
        assert!(m("10.0.0.0/8").matches(ip("10.200.3.4")));
        assert!(m("10.9.9.9/8").matches(ip("10.200.3.4")));
        assert!(!m("10.0.0.0/8").matches(ip("11.0.0.1")));
        assert!(m("0.0.0.0/0").matches(ip("1.2.3.4")));
        assert!(m("10.0.0.0/8").matches(ip("::ffff:10.1.2.3")));
        assert!(m("[fd00::]/8").matches(ip("fd12::1")));
        assert!(m("fd00::/8").matches(ip("fd12::1")));
        assert!(!m("[fd00::]/8").matches(ip("fe80::1")));
        assert!(m("[::1]").matches(ip("::1")));
        assert!(!m("[::1]").matches(ip("127.0.0.1")));
        assert!(!m("10.0.0.0/8").matches(ip("fd00::1")));
        assert!(m("!10.0.0.0/8").deny);
        assert_eq!(m("all").text, "ANY");
        for bad in [
            "",
            "10.0.0.0/33",
            "[::]/129",
            "10.0.0/8",
            "10.0.0.0/x",
            "host.example",
            "[10.0.0.1]",
            "!",
        ] {
            let e = NetmaskEntry::parse(bad).unwrap_err();
            assert!(e.contains("netmask"), "{bad}: {e}");
        }
    }
}
