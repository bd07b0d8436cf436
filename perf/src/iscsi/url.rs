//! `iscsi://[USER[%SECRET]@]HOST[:PORT]/TARGET-IQN/LUN`, as libiscsi spells it.

use std::fmt;

/// The default iSCSI port.
pub const DEFAULT_PORT: u16 = 3260;

/// A parsed iSCSI URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IscsiUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    pub target: String,
    pub lun: u16,
    /// CHAP name and secret given in the URL (libiscsi's `user%secret@`).
    pub chap: Option<(String, String)>,
}

impl IscsiUrl {
    pub fn parse(s: &str) -> Result<IscsiUrl, String> {
        let bad = |why: &str| {
            format!("'{s}' is not an iSCSI URL ({why}; expected iscsi://HOST[:PORT]/IQN/LUN)")
        };
        let rest = s
            .strip_prefix("iscsi://")
            .ok_or_else(|| bad("it does not start with iscsi://"))?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) if !a.contains('/') => (Some(a), r),
            _ => (None, rest),
        };
        let chap = match auth {
            None => None,
            Some(a) => {
                let (u, p) = a
                    .split_once('%')
                    .ok_or_else(|| bad("the part before @ must be USER%SECRET"))?;
                if u.is_empty() || p.is_empty() {
                    return Err(bad("empty CHAP user or secret"));
                }
                Some((u.to_string(), p.to_string()))
            }
        };
        let (hostport, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("no /IQN/LUN after the host"))?;
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, after) = h.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
            };
            (h, port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad(&format!("bad port '{p}'")))?,
        };
        let (target, lun) = path
            .rsplit_once('/')
            .ok_or_else(|| bad("no /LUN after the target name"))?;
        if target.is_empty() || target.contains('/') {
            return Err(bad("bad target name"));
        }
        if !ferrite_transport::iscsi::text::is_iscsi_name(target) {
            return Err(bad(&format!("'{target}' is not an iSCSI name")));
        }
        let lun = lun
            .parse::<u16>()
            .ok()
            .filter(|&l| l < 16384)
            .ok_or_else(|| bad(&format!("bad LUN '{lun}' (0 to 16383)")))?;
        Ok(IscsiUrl {
            host: host.to_string(),
            port,
            target: target.to_string(),
            lun,
            chap,
        })
    }

    /// `host:port` for connecting (IPv6 in brackets).
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for IscsiUrl {
    /// The URL without its CHAP secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "iscsi://{}/{}/{}", self.addr(), self.target, self.lun)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = IscsiUrl::parse("iscsi://127.0.0.1:3261/iqn.2026-11.test:ref/1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str(), u.lun),
            ("127.0.0.1", 3261, "iqn.2026-11.test:ref", 1)
        );
        assert_eq!(
            u.to_string(),
            "iscsi://127.0.0.1:3261/iqn.2026-11.test:ref/1"
        );
        let u = IscsiUrl::parse("iscsi://[::1]/iqn.2026-11.io.ferrite:disk0/0").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 3260));
        assert_eq!(u.addr(), "[::1]:3260");
        let u = IscsiUrl::parse("iscsi://me%s3cret@host:1/iqn.2000-01.com.x:y/7").unwrap();
        assert_eq!(u.chap, Some(("me".into(), "s3cret".into())));
        assert!(!u.to_string().contains("s3cret"));
        for bad in [
            "http://h/iqn.2000-01.com.x:y/0",
            "iscsi://h",
            "iscsi://h/iqn.2000-01.com.x:y",
            "iscsi://h:0/iqn.2000-01.com.x:y/0",
            "iscsi://h:99999/iqn.2000-01.com.x:y/0",
            "iscsi://h/iqn.2000-01.com.x:y/lun",
            "iscsi://h/iqn.2000-01.com.x:y/20000",
            "iscsi:///iqn.2000-01.com.x:y/0",
            "iscsi://h/not an iqn/0",
            "iscsi://user@h/iqn.2000-01.com.x:y/0",
        ] {
            assert!(IscsiUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
