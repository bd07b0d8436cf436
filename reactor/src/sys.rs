//! The few raw syscalls a reactor needs to sleep and be woken: eventfd and epoll.
//! Each unsafe block is small and says why it is sound; everything above uses the
//! safe types here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A non-blocking eventfd used to wake a sleeping reactor.
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; a negative return is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Adds one to the counter; wakes any epoll waiting on it.
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64. EAGAIN (counter saturated) means a
        // wake-up is already pending, which is all we need.
        unsafe {
            libc::write(
                self.0.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            );
        }
    }

    /// Resets the counter.
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64; EAGAIN when already zero is fine.
        unsafe {
            libc::read(
                self.0.as_raw_fd(),
                &mut v as *mut u64 as *mut libc::c_void,
                8,
            );
        }
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// An epoll set: the things that may wake a sleeping reactor, and (as
/// [`PollSet`](crate::PollSet)) a transport's set of sockets to poll in one call.
pub struct Epoll(OwnedFd);

impl Epoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: no pointers; negative return is an error.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor we own.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` for readability (level-triggered), tagged with `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.add_events(fd, token, libc::EPOLLIN as u32)
    }

    /// Watches `fd` for `events` (`EPOLLIN`, `EPOLLOUT`, ...; level-triggered).
    pub fn add_events(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: ev is a valid epoll_event for the duration of the call.
        let rc = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watches `fd` for `interest`, reporting `token` when it is ready.
    pub fn watch(&self, fd: RawFd, token: u64, interest: crate::Interest) -> io::Result<()> {
        self.add_events(fd, token, interest.events())
    }

    /// Changes what `fd` is watched for.
    pub fn rewatch(&self, fd: RawFd, token: u64, interest: crate::Interest) -> io::Result<()> {
        self.modify(fd, token, interest.events())
    }

    /// Changes the events watched on `fd`.
    pub fn modify(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: ev is a valid epoll_event for the duration of the call.
        let rc = unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_MOD, fd, &mut ev) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: a null event pointer is allowed for EPOLL_CTL_DEL.
        let rc = unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Fills `tokens` with the tokens of ready fds without blocking; returns how
    /// many. Errors (EINTR) read as nothing ready.
    pub fn ready(&self, tokens: &mut [u64]) -> usize {
        const MAX: usize = 64;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX];
        let max = tokens.len().min(MAX);
        // SAFETY: events is a valid, writable array of at least `max` entries.
        let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), max as i32, 0) };
        let n = n.max(0) as usize;
        for (t, e) in tokens.iter_mut().zip(&events[..n]) {
            *t = e.u64;
        }
        n
    }

    /// Blocks until something is readable or `timeout_ms` passes (-1: forever).
    /// Returns how many sources fired.
    pub fn wait(&self, timeout_ms: i32) -> usize {
        let mut events: [libc::epoll_event; 8] = [libc::epoll_event { events: 0, u64: 0 }; 8];
        // SAFETY: events is a valid, writable array of 8 entries.
        let n = unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                timeout_ms,
            )
        };
        n.max(0) as usize
    }
}
