//! Every `unsafe` block of the agent: the few system calls that neither std nor rustix offer
//! safely (fork, unshare, a `pre_exec` dup2, AF_VSOCK sockets). Each is a thin wrapper with
//! its safety argument next to it.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The fd number the container-init helper finds its control socket on.
pub const CTL_FD: RawFd = 3;

/// The namespaces a container gets (never `CLONE_FILES`/`CLONE_FS`/`CLONE_NEWUSER`).
#[derive(Debug, Clone, Copy)]
pub enum Unshare {
    /// A new PID namespace for the caller's future children.
    Pid,
    /// New mount, UTS and IPC namespaces for the caller.
    MountUtsIpc,
}

/// `unshare(2)` with one of the fixed flag sets of [`Unshare`].
pub fn unshare(which: Unshare) -> io::Result<()> {
    use rustix::thread::UnshareFlags as F;
    let flags = match which {
        Unshare::Pid => F::NEWPID,
        Unshare::MountUtsIpc => F::NEWNS | F::NEWUTS | F::NEWIPC,
    };
    // SAFETY: rustix marks unshare unsafe only because of `UnshareFlags::FILES` (a thread
    // could then see a different fd table); the flag sets above never include it.
    unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(io::Error::from)
}

/// What [`fork`] returned.
#[derive(Debug, Clone, Copy)]
pub enum Forked {
    /// In the child.
    Child,
    /// In the parent, with the child's pid.
    Parent(i32),
}

/// `fork(2)`. Call only from a single-threaded process (the container-init helper).
pub fn fork() -> io::Result<Forked> {
    // SAFETY: the only caller is the container-init helper, a freshly exec'd process that
    // never starts a second thread, so the child inherits no lock held by another thread and
    // may allocate freely.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        p => Ok(Forked::Parent(p)),
    }
}

/// Makes `fd` the child's fd [`CTL_FD`] (without close-on-exec) when `cmd` spawns.
pub fn pass_ctl_fd(cmd: &mut tokio::process::Command, fd: RawFd) {
    // SAFETY: the closure runs between fork and exec in the child of a multi-threaded
    // process: it only calls dup2, which is async-signal-safe, allocates nothing and touches
    // no lock. `fd` is kept open by the caller until `spawn` returns. dup2 onto a different
    // number clears FD_CLOEXEC on the copy; when fd == CTL_FD already, the flag is cleared with
    // fcntl (also async-signal-safe).
    unsafe {
        cmd.pre_exec(move || {
            if fd == CTL_FD {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags == -1 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) == -1 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, CTL_FD) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The control socket the helper inherited as fd [`CTL_FD`].
pub fn take_ctl_fd() -> io::Result<OwnedFd> {
    // F_GETFD succeeds only on an open descriptor.
    let probe = rustix::io::fcntl_getfd(
        // SAFETY: a borrowed view of fd 3 used for one fcntl call; it is not closed here.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(CTL_FD) },
    );
    probe.map_err(|_| io::Error::other("no control socket on fd 3: this subcommand is internal to the agent"))?;
    // SAFETY: fd 3 is open (checked above) and nothing else in the helper owns it: the helper
    // is exec'd by the agent with exactly stdin/stdout/stderr and this socket.
    Ok(unsafe { OwnedFd::from_raw_fd(CTL_FD) })
}

/// A listening, non-blocking, close-on-exec AF_VSOCK stream socket on `port` (any CID).
pub fn vsock_listen(port: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked and owned immediately.
    let raw = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_vm is plain old data; all-zero is a valid value before the fields are set.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_port = port;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_vm of `len` bytes living across the call.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast::<libc::sockaddr>(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen(2) on a socket we own.
    if unsafe { libc::listen(fd.as_raw_fd(), 16) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Accepts one connection (non-blocking, close-on-exec); `WouldBlock` when none is pending.
pub fn vsock_accept(listener: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: accept4(2) with no address buffer on a socket we own; the result is checked and
    // owned immediately.
    let raw = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Registers an owned descriptor with the tokio reactor.
pub fn async_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: `OwnedFd` owns an open descriptor, closes it only when dropped (which the
    // `AsyncFd` does last), and its `as_raw_fd` always returns that same descriptor.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(io::Error::from)
}
