//! An NVMe namespace's generic char device (`/dev/ngXnY`) on the control path:
//! checking that a path is one, and synchronous passthrough commands through
//! its ioctls (admin commands go to the controller through the namespace's
//! device, as nvme-cli does). The only unsafe code here is the ioctl calls.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::cmd::{self, Command};

const fn iowr(nr: u32, size: usize) -> libc::c_ulong {
    // _IOWR('N', nr, size): read and write, size, type 'N'.
    ((3u32 << 30) | ((size as u32) << 16) | ((b'N' as u32) << 8) | nr) as libc::c_ulong
}

/// `struct nvme_passthru_cmd64`, the argument of the 64-bit-result ioctls.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct PassthruCmd64 {
    opcode: u8,
    flags: u8,
    rsvd1: u16,
    nsid: u32,
    cdw2: u32,
    cdw3: u32,
    metadata: u64,
    addr: u64,
    metadata_len: u32,
    data_len: u32,
    cdw10: u32,
    cdw11: u32,
    cdw12: u32,
    cdw13: u32,
    cdw14: u32,
    cdw15: u32,
    timeout_ms: u32,
    rsvd2: u32,
    result: u64,
}

const NVME_IOCTL_ID: libc::c_ulong = ((b'N' as u32) << 8 | 0x40) as libc::c_ulong;
const NVME_IOCTL_ADMIN64_CMD: libc::c_ulong = iowr(0x47, std::mem::size_of::<PassthruCmd64>());
const NVME_IOCTL_IO64_CMD: libc::c_ulong = iowr(0x48, std::mem::size_of::<PassthruCmd64>());

/// Which queue a passthrough command goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    Admin,
    Io,
}

/// What the device answered to a passthrough command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The status field of the completion (SC in bits 7:0, SCT in 10:8, DNR
    /// in 14), 0 on success.
    pub status: u16,
    /// Command-specific DW0 (and DW1) of the completion.
    pub result: u64,
}

/// Checks that `path` is an NVMe namespace's generic char device and opens it
/// read-write. The error says what the path is instead.
pub(crate) fn open_generic(path: &Path) -> Result<File, String> {
    let shown = path.display();
    let md = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    let ft = md.file_type();
    if ft.is_block_device() {
        return Err(format!(
            "{shown} is a block device; an nvme bdev takes the namespace's generic char \
             device /dev/ngXnY (or use bdev_uring_create for a block device)"
        ));
    }
    if !ft.is_char_device() {
        return Err(format!(
            "{shown} is not a character device; an nvme bdev takes an NVMe namespace's \
             generic char device /dev/ngXnY"
        ));
    }
    let dev = md.rdev();
    let class = std::fs::read_link(format!(
        "/sys/dev/char/{}:{}/subsystem",
        libc::major(dev),
        libc::minor(dev)
    ))
    .ok()
    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    .unwrap_or_default();
    match class.as_str() {
        "nvme-generic" => {}
        "nvme" => {
            return Err(format!(
                "{shown} is an NVMe controller, not a namespace: use its namespace's \
                 generic char device /dev/ngXnY"
            ))
        }
        _ => {
            return Err(format!(
                "{shown} is not an NVMe generic char device (/dev/ngXnY)"
            ))
        }
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("{shown}: {e}"))
}

/// The namespace id of an open generic char device.
pub(crate) fn namespace_id(f: &File) -> std::io::Result<u32> {
    // SAFETY: NVME_IOCTL_ID takes no argument; the fd is open for the call.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), NVME_IOCTL_ID) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc as u32)
}

/// Runs `c` synchronously on `queue`, with `data` as its data buffer (sent to
/// the device when `c` writes, filled when it reads). Control path only: the
/// caller's thread blocks until the device answers or `timeout_ms` passes (0:
/// the kernel's default).
pub(crate) fn passthru(
    f: &File,
    queue: Queue,
    c: &Command,
    data: &mut [u8],
    timeout_ms: u32,
) -> std::io::Result<Answer> {
    let len =
        u32::try_from(data.len()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut arg = PassthruCmd64 {
        opcode: c.opcode,
        nsid: c.nsid,
        cdw2: c.cdw2,
        cdw3: c.cdw3,
        addr: if data.is_empty() {
            0
        } else {
            data.as_mut_ptr() as u64
        },
        data_len: len,
        cdw10: c.cdw[0],
        cdw11: c.cdw[1],
        cdw12: c.cdw[2],
        cdw13: c.cdw[3],
        cdw14: c.cdw[4],
        cdw15: c.cdw[5],
        timeout_ms,
        ..Default::default()
    };
    let req = match queue {
        Queue::Admin => NVME_IOCTL_ADMIN64_CMD,
        Queue::Io => NVME_IOCTL_IO64_CMD,
    };
    // SAFETY: `arg` is a valid nvme_passthru_cmd64 that lives across the call;
    // its `addr`/`data_len` describe `data`, which is borrowed mutably for the
    // call, so the kernel may read or write all of it and nothing else aliases it.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), req, &mut arg as *mut PassthruCmd64) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Answer {
        status: rc as u16,
        result: arg.result,
    })
}

/// Identify (CNS `cns`) into a 4 KiB buffer; an error names what failed.
pub(crate) fn identify(f: &File, cns: u8, nsid: u32) -> Result<Vec<u8>, String> {
    let mut data = vec![0u8; 4096];
    let what = if cns == cmd::CNS_CONTROLLER {
        "controller"
    } else {
        "namespace"
    };
    match passthru(f, Queue::Admin, &cmd::identify(cns, nsid), &mut data, 0) {
        Ok(a) if a.status == 0 => Ok(data),
        Ok(a) => Err(format!(
            "identify {what} failed: {}",
            cmd::status_text(a.status)
        )),
        Err(e) => Err(format!("identify {what} failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(std::mem::size_of::<PassthruCmd64>(), 80);
        assert_eq!(NVME_IOCTL_ID, 0x4e40);
        assert_eq!(NVME_IOCTL_ADMIN64_CMD, 0xc050_4e47);
        assert_eq!(NVME_IOCTL_IO64_CMD, 0xc050_4e48);
    }

    #[test]
    fn paths_that_are_not_generic_devices_are_refused_with_a_reason() {
        let e = open_generic(Path::new("/nonexistent/ng0n1")).unwrap_err();
        assert!(e.contains("No such file"), "{e}");
        let e = open_generic(Path::new("/dev/null")).unwrap_err();
        assert!(e.contains("not an NVMe generic char device"), "{e}");
        let e = open_generic(Path::new("/proc/self/status")).unwrap_err();
        assert!(e.contains("not a character device"), "{e}");
    }
}
