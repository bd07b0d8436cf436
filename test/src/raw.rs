//! A minimal iSCSI initiator over a plain TCP socket, for tests that send
//! hand-made (and malformed) PDUs: log in, ping, send headers, read answers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

pub fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// A minimal initiator: enough to log in and send hand-made PDUs.
/// A fresh ISID (random-qualifier format) for each connection of this process.
fn next_isid() -> [u8; 6] {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() as u16;
    let [a, b] = pid.to_be_bytes();
    let [_, c, d, e] = n.to_be_bytes();
    [0x80, a, b, c, d, e]
}

pub struct Raw {
    pub s: TcpStream,
    /// The target node to log in to.
    pub target: String,
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    /// The session to join (0: a new one), and this connection's CID.
    pub tsih: u16,
    pub cid: u16,
    /// The session's ISID: unique per connection unless set (a connection
    /// joining a session uses its ISID; the same ISID again reinstates).
    pub isid: [u8; 6],
}

/// One PDU read back: its BHS and data.
pub struct Pdu {
    pub bhs: [u8; 48],
    pub data: Vec<u8>,
}

impl Pdu {
    pub fn opcode(&self) -> u8 {
        self.bhs[0] & 0x3f
    }
}

impl Raw {
    pub fn connect(port: u16, target: &str) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Headers and data go in separate writes: never wait for Nagle.
        s.set_nodelay(true).unwrap();
        Raw {
            s,
            target: target.to_string(),
            cmd_sn: 1,
            exp_stat_sn: 0,
            tsih: 0,
            cid: 0,
            isid: next_isid(),
        }
    }

    pub fn send(&mut self, bhs: &[u8; 48], data: &[u8]) -> std::io::Result<()> {
        let mut buf = bhs.to_vec();
        buf[5..8].copy_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        buf.extend_from_slice(data);
        while !buf.len().is_multiple_of(4) {
            buf.push(0);
        }
        self.s.write_all(&buf)
    }

    /// The next PDU, or None when the target closed the connection (or said
    /// nothing within the timeout).
    pub fn recv(&mut self) -> Option<Pdu> {
        let mut bhs = [0u8; 48];
        self.s.read_exact(&mut bhs).ok()?;
        let len = u32::from_be_bytes([0, bhs[5], bhs[6], bhs[7]]) as usize;
        let mut data = vec![0u8; (len + 3) & !3];
        self.s.read_exact(&mut data).ok()?;
        data.truncate(len);
        Some(Pdu { bhs, data })
    }

    pub fn login_pdu(&self, csg: u8, nsg: u8, keys: &str) -> ([u8; 48], Vec<u8>) {
        let mut bhs = [0u8; 48];
        bhs[0] = 0x43; // Login Request, immediate
        bhs[1] = 0x80 | (csg << 2) | nsg; // T bit
        bhs[8..14].copy_from_slice(&self.isid);
        bhs[14..16].copy_from_slice(&self.tsih.to_be_bytes());
        bhs[20..22].copy_from_slice(&self.cid.to_be_bytes());
        put_u32(&mut bhs, 16, 0x1000); // ITT
        put_u32(&mut bhs, 24, self.cmd_sn);
        put_u32(&mut bhs, 28, self.exp_stat_sn);
        let data = keys.replace(';', "\0").into_bytes();
        (bhs, data)
    }

    /// Logs in to the full feature phase with `op_keys` (`;`-separated),
    /// repeating a stage (with no new keys) until the target transits.
    pub fn login(&mut self, op_keys: &str) {
        let keys = format!(
            "InitiatorName=iqn.2026-11.test:raw;TargetName={};SessionType=Normal;AuthMethod=None;",
            self.target
        );
        for (csg, nsg, first_keys) in [(0u8, 1u8, keys.as_str()), (1, 3, op_keys)] {
            let mut keys = first_keys.to_string();
            for _ in 0..4 {
                let (bhs, data) = self.login_pdu(csg, nsg, &keys);
                self.send(&bhs, &data).unwrap();
                let r = self.recv().expect("login response");
                assert_eq!(r.opcode(), 0x23);
                assert_eq!(
                    (r.bhs[36], r.bhs[37]),
                    (0, 0),
                    "login refused: {}",
                    String::from_utf8_lossy(&r.data)
                );
                self.exp_stat_sn = get_u32(&r.bhs, 24) + 1;
                self.tsih = u16::from_be_bytes([r.bhs[14], r.bhs[15]]);
                if r.bhs[1] & 0x80 != 0 && r.bhs[1] & 0x03 == nsg {
                    break;
                }
                // The target offered keys it needs answers to: accept them
                // (not what we sent already, nor its own declarations).
                let sent: Vec<String> = keys
                    .split(';')
                    .filter_map(|kv| kv.split('=').next())
                    .map(str::to_string)
                    .collect();
                keys = String::from_utf8_lossy(&r.data)
                    .split('\0')
                    .filter(|kv| {
                        let k = kv.split('=').next().unwrap_or("");
                        !kv.is_empty()
                            && !sent.iter().any(|s| s == k)
                            && ![
                                "TargetPortalGroupTag",
                                "TargetAlias",
                                "MaxRecvDataSegmentLength",
                            ]
                            .contains(&k)
                    })
                    .map(|kv| format!("{kv};"))
                    .collect();
            }
        }
    }

    /// A NOP-Out ping; true when the target answers it.
    pub fn ping(&mut self) -> bool {
        let mut bhs = [0u8; 48];
        bhs[0] = 0x40; // NOP-Out, immediate
        bhs[1] = 0x80;
        put_u32(&mut bhs, 16, 0x7777);
        put_u32(&mut bhs, 20, 0xffff_ffff);
        put_u32(&mut bhs, 24, self.cmd_sn);
        put_u32(&mut bhs, 28, self.exp_stat_sn);
        if self.send(&bhs, b"ping").is_err() {
            return false;
        }
        loop {
            match self.recv() {
                Some(p) if p.opcode() == 0x20 && get_u32(&p.bhs, 16) == 0x7777 => {
                    return p.data == b"ping"
                }
                Some(_) => continue,
                None => return false,
            }
        }
    }

    /// A SCSI WRITE(10) of `blocks` at LBA 0 without data: the target answers R2T.
    pub fn write10_header(&mut self, itt: u32, blocks: u16) -> [u8; 48] {
        let mut bhs = [0u8; 48];
        bhs[0] = 0x01;
        bhs[1] = 0x80 | 0x20 | 0x01; // F, W, simple
        put_u32(&mut bhs, 16, itt);
        put_u32(&mut bhs, 20, blocks as u32 * 512);
        put_u32(&mut bhs, 24, self.cmd_sn);
        put_u32(&mut bhs, 28, self.exp_stat_sn);
        self.cmd_sn += 1;
        bhs[32] = 0x2a;
        bhs[39..41].copy_from_slice(&blocks.to_be_bytes());
        bhs
    }
}

/// A TEST UNIT READY; true when it is answered (GOOD, or the unit attention a
/// new I_T nexus gets first).
pub fn tur(r: &mut Raw, itt: u32) -> bool {
    let mut bhs = [0u8; 48];
    bhs[0] = 0x01;
    bhs[1] = 0x81;
    put_u32(&mut bhs, 16, itt);
    put_u32(&mut bhs, 24, r.cmd_sn);
    put_u32(&mut bhs, 28, r.exp_stat_sn);
    r.cmd_sn += 1;
    if r.send(&bhs, &[]).is_err() {
        return false;
    }
    loop {
        match r.recv() {
            Some(p) if p.opcode() == 0x21 && get_u32(&p.bhs, 16) == itt => return p.bhs[2] == 0,
            Some(_) => continue,
            None => return false,
        }
    }
}
