//! Descriptors the agent inherited from whoever started it (a shell redirection, a supervisor's
//! pipe, a test harness's job server) must not reach scripts: every one is marked close-on-exec
//! when the agent starts.
//!
//! This is the one place in the agent with `unsafe` code. Neither the standard library nor
//! rustix offers a safe way to act on a descriptor the process did not open itself (that
//! would need an `OwnedFd` or `BorrowedFd`, which only `unsafe` can make from a number), and
//! there is no other way to keep them from scripts without a `pre_exec` hook (also `unsafe`)
//! in every run.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use rustix::fs::{Dir, Mode, OFlags, open};
use rustix::io::{FdFlags, fcntl_getfd, fcntl_setfd};

/// Marks every descriptor above standard error close-on-exec; returns how many were not.
///
/// Call it first thing, while the process is single-threaded and has opened nothing of its
/// own: then every descriptor listed in `/proc/self/fd` other than the listing's own is an
/// inherited one that stays open for the whole call.
pub fn close_on_exec_inherited() -> io::Result<usize> {
    let listing = open(
        "/proc/self/fd",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let own = listing.as_raw_fd();
    let mut inherited: Vec<RawFd> = Vec::new();
    for entry in Dir::new(listing)? {
        let entry = entry?;
        let Some(fd) = entry
            .file_name()
            .to_str()
            .ok()
            .and_then(|name| name.parse::<RawFd>().ok())
        else {
            continue;
        };
        if fd > 2 && fd != own {
            inherited.push(fd);
        }
    }
    let mut marked = 0;
    for fd in inherited {
        // SAFETY: `fd` was listed as open, is not the listing's own descriptor (closed by now),
        // and nothing else runs in this process to close it while it is borrowed here.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let flags = fcntl_getfd(fd)?;
        if !flags.contains(FdFlags::CLOEXEC) {
            fcntl_setfd(fd, flags | FdFlags::CLOEXEC)?;
            marked += 1;
        }
    }
    Ok(marked)
}
