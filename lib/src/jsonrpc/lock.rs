//! The lock file beside the RPC socket (`PATH.lock`), so two targets cannot
//! serve one socket path: the second would unlink the first's socket and steal
//! its clients.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// An exclusive `flock` on `SOCKET.lock`, holding this process's pid. Dropping
/// it removes the file and releases the lock.
pub(crate) struct SocketLock {
    /// Held open for its lock, which closing it releases.
    _file: File,
    path: PathBuf,
}

impl SocketLock {
    /// Takes the lock for `socket`, or fails with `AddrInUse` naming the pid
    /// that holds it.
    pub(crate) fn acquire(socket: &Path) -> io::Result<SocketLock> {
        let mut path = OsString::from(socket.as_os_str());
        path.push(".lock");
        let path = PathBuf::from(path);
        // Another target may remove the file between our open and our lock (it
        // does so when it stops); a lock on a removed file guards nothing, so
        // check the file locked is still the one at the path, else start over.
        for _ in 0..10 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(&path)
                .map_err(|e| annotate(e, format!("cannot open lock file {}", path.display())))?;
            if !try_lock_exclusive(&file)? {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let pid = match holder.trim() {
                    "" => "unknown".to_string(),
                    pid => pid.to_string(),
                };
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "RPC socket {} is in use by another ferrite-tgt (pid {pid})",
                        socket.display()
                    ),
                ));
            }
            if !same_file(&file, &path) {
                continue;
            }
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())?;
            return Ok(SocketLock { _file: file, path });
        }
        Err(io::Error::other(format!(
            "cannot lock {}: it keeps being replaced",
            path.display()
        )))
    }
}

impl Drop for SocketLock {
    fn drop(&mut self) {
        // Remove the file while still holding the lock, so no one locks a file we
        // are deleting; the file is closed after this, which releases the lock.
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` when another open file holds it.
fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock takes a descriptor we own for the duration of the call and no
    // pointers.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(err)
}

fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn annotate(e: io::Error, context: String) -> io::Error {
    io::Error::new(e.kind(), format!("{context}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_with_the_holders_pid() {
        let socket = std::env::temp_dir().join(format!("ferrite-lock-{}.sock", std::process::id()));
        let first = SocketLock::acquire(&socket).unwrap();
        let err = SocketLock::acquire(&socket).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let expected = format!(
            "RPC socket {} is in use by another ferrite-tgt (pid {})",
            socket.display(),
            std::process::id()
        );
        assert_eq!(err.to_string(), expected);
        let lock_path = first.path.clone();
        drop(first);
        assert!(!lock_path.exists());
        let again = SocketLock::acquire(&socket).unwrap();
        drop(again);
    }
}
