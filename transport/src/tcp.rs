//! The TCP data mover's sockets: non-blocking listeners and connections that
//! reactors poll. Readiness comes from a per-reactor [`PollSet`]; reads and writes
//! are vectored so PDU headers and arena buffers move in one call, without copies.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};

/// A listening socket.
pub struct Listener {
    inner: TcpListener,
    addr: SocketAddr,
}

impl Listener {
    /// Listens on `host:port` (IPv6 hosts may be given in brackets).
    pub fn bind(host: &str, port: u16) -> io::Result<Listener> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addr = (host, port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no such address"))?;
        let inner = TcpListener::bind(addr)?;
        inner.set_nonblocking(true)?;
        let addr = inner.local_addr()?;
        Ok(Listener { inner, addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The next pending connection, if any (never blocks).
    pub fn accept(&self) -> io::Result<Option<(Socket, SocketAddr)>> {
        match self.inner.accept() {
            Ok((s, peer)) => Ok(Some((Socket::new(s)?, peer))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

/// A connected, non-blocking socket.
pub struct Socket {
    inner: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
}

/// What a non-blocking read or write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Moved this many bytes (at least one).
    Bytes(usize),
    /// Nothing now; try when the socket is ready again.
    WouldBlock,
    /// The peer closed (reads only).
    Closed,
}

impl Socket {
    fn new(inner: TcpStream) -> io::Result<Socket> {
        inner.set_nonblocking(true)?;
        // Responses are small and latency-bound; never wait for Nagle.
        inner.set_nodelay(true)?;
        let local = inner.local_addr()?;
        let peer = inner.peer_addr()?;
        Ok(Socket { inner, local, peer })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Reads into `bufs` in order.
    pub fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<Progress> {
        loop {
            return match self.inner.read_vectored(bufs) {
                Ok(0) => Ok(Progress::Closed),
                Ok(n) => Ok(Progress::Bytes(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Progress::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// Reads into `buf`.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<Progress> {
        self.read_vectored(&mut [IoSliceMut::new(buf)])
    }

    /// Writes `bufs` in order, as much as the socket takes now.
    pub fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<Progress> {
        loop {
            return match self.inner.write_vectored(bufs) {
                Ok(0) => Ok(Progress::WouldBlock),
                Ok(n) => Ok(Progress::Bytes(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Progress::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// Closes both directions now (the fd itself closes on drop).
    pub fn shutdown(&self) {
        let _ = self.inner.shutdown(Shutdown::Both);
    }

    /// A second handle on the same connection (for moving it between reactors:
    /// the old handle is then dropped without `shutdown`).
    pub fn try_clone(&self) -> io::Result<Socket> {
        Ok(Socket {
            inner: self.inner.try_clone()?,
            local: self.local,
            peer: self.peer,
        })
    }

    /// Hands the socket to another thread (a connection moving reactors).
    pub fn into_parts(self) -> (TcpStream, SocketAddr, SocketAddr) {
        (self.inner, self.local, self.peer)
    }

    pub fn from_parts(inner: TcpStream, local: SocketAddr, peer: SocketAddr) -> Socket {
        Socket { inner, local, peer }
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonblocking_accept_read_write() {
        let l = Listener::bind("127.0.0.1", 0).unwrap();
        assert!(l.accept().unwrap().is_none());
        let mut client = TcpStream::connect(l.local_addr()).unwrap();
        let (mut s, _) = loop {
            if let Some(c) = l.accept().unwrap() {
                break c;
            }
        };
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf).unwrap(), Progress::WouldBlock);
        client.write_all(b"hello").unwrap();
        let n = loop {
            if let Progress::Bytes(n) = s.read(&mut buf).unwrap() {
                break n;
            }
        };
        assert_eq!(&buf[..n], b"hello");
        let (a, b) = (b"ab".as_slice(), b"cd".as_slice());
        assert_eq!(
            s.write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
                .unwrap(),
            Progress::Bytes(4)
        );
        let mut got = [0u8; 4];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"abcd");
        drop(client);
        let end = loop {
            match s.read(&mut buf).unwrap() {
                Progress::WouldBlock => continue,
                p => break p,
            }
        };
        assert_eq!(end, Progress::Closed);
    }
}
