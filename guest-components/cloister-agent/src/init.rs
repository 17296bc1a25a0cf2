//! The container-init helper: the agent binary re-executed as `cloister-agent
//! __container-init` for every container and every exec'd process (see [`crate::container`]
//! for why). It is a fresh, single-threaded process, so it may unshare, setns and fork safely.
//!
//! The agent talks to it over a socket on fd 3, in frames of a u32 big-endian length and a JSON
//! body: first an [`InitConfig`]; then the helper sends [`InitMsg`]s (`Pid`, `Ready` for a
//! container waiting to be started, `Error`, `Started`, `Exit`). For a container the agent
//! sends one byte `S` to start it. The helper's stdin/stdout/stderr are the workload's: the
//! helper itself never writes to them and points its own at `/dev/null` once it has forked.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{FileType, Mode};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use serde::{Deserialize, Serialize};

use crate::sys;

/// The hidden subcommand.
pub const SUBCOMMAND: &str = "__container-init";

/// Largest control message.
pub const MAX_MSG: usize = 1 << 20;

/// What the workload runs as.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessConfig {
    /// Program and arguments (non-empty).
    pub args: Vec<String>,
    /// `NAME=value` environment.
    pub env: Vec<String>,
    /// Working directory inside the container (absolute).
    pub cwd: String,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Set `no_new_privs`.
    pub no_new_privileges: bool,
}

/// A mount the spec asks for besides the standard ones (only kernel filesystems).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExtraMount {
    /// Absolute destination inside the container.
    pub destination: String,
    /// `tmpfs` or `mqueue`.
    pub fstype: String,
}

/// What the helper is to do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum InitMode {
    /// A new container: new mount/UTS/IPC/PID namespaces, `rootfs` as its root.
    Create {
        /// The prepared root filesystem (a directory in the agent's mount namespace).
        rootfs: PathBuf,
        /// UTS hostname.
        hostname: String,
        /// Remount the root read-only.
        readonly_root: bool,
        /// Further kernel-filesystem mounts.
        mounts: Vec<ExtraMount>,
    },
    /// A process joining the namespaces of the running container whose init has `pid`.
    Exec {
        /// The container init's pid (agent's view).
        pid: i32,
    },
}

/// The helper's instructions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InitConfig {
    /// Create or exec.
    pub mode: InitMode,
    /// The workload.
    pub process: ProcessConfig,
}

/// What the helper reports.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum InitMsg {
    /// The workload's pid in the agent's PID namespace.
    Pid(i32),
    /// A container's namespaces and root are ready; it waits for `S`.
    Ready,
    /// Setup or exec failed.
    Error(String),
    /// The workload was exec'd.
    Started,
    /// The workload ended: exit code, or 128 + signal.
    Exit(i32),
}

/// Writes one control frame.
pub fn write_msg<W: Write, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf)
}

/// Reads one control frame.
pub fn read_msg<R: Read, T: for<'de> Deserialize<'de>>(r: &mut R) -> io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MSG {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "control message too large"));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The helper's entry point; returns the helper's exit code.
pub fn main() -> i32 {
    let ctl = match sys::take_ctl_fd() {
        Ok(fd) => File::from(fd),
        Err(e) => {
            // Only reachable when someone runs the hidden subcommand by hand.
            let _ = writeln!(io::stderr(), "cloister-agent {SUBCOMMAND}: {e}");
            return 2;
        }
    };
    let mut ctl = ctl;
    let config: InitConfig = match read_msg(&mut ctl) {
        Ok(c) => c,
        Err(e) => {
            let _ = write_msg(&mut ctl, &InitMsg::Error(format!("reading the configuration: {e}")));
            return 2;
        }
    };
    match run(&mut ctl, &config) {
        Ok(()) => 0,
        Err(e) => {
            let _ = write_msg(&mut ctl, &InitMsg::Error(e));
            1
        }
    }
}

fn ctx<T>(what: impl Into<String>) -> impl FnOnce(T) -> String
where
    T: std::fmt::Display,
{
    let what = what.into();
    move |e| format!("{what}: {e}")
}

/// Forks the workload and supervises it.
fn run(ctl: &mut File, config: &InitConfig) -> Result<(), String> {
    // Namespaces entered by the helper itself (the PID namespace applies to its children).
    match &config.mode {
        InitMode::Create { .. } => sys::unshare(sys::Unshare::Pid).map_err(ctx("unshare(CLONE_NEWPID)"))?,
        InitMode::Exec { pid } => join_namespaces(*pid)?,
    }
    // The child reports setup errors here; the pipe closes on a successful exec (CLOEXEC).
    let (status_r, status_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(ctx("pipe"))?;
    match sys::fork().map_err(ctx("fork"))? {
        sys::Forked::Child => {
            drop(status_r);
            let mut status_w = File::from(status_w);
            let err = child(ctl, &mut status_w, config);
            let _ = write_msg(&mut status_w, &InitMsg::Error(err));
            std::process::exit(127);
        }
        sys::Forked::Parent(pid) => {
            drop(status_w);
            // The workload holds the stdio pipes now; the helper must not keep them open.
            if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
                let _ = rustix::stdio::dup2_stdin(null.as_fd());
                let _ = rustix::stdio::dup2_stdout(null.as_fd());
                let _ = rustix::stdio::dup2_stderr(null.as_fd());
            }
            supervise(ctl, File::from(status_r), pid)
        }
    }
}

fn supervise(ctl: &mut File, mut status_r: File, pid: i32) -> Result<(), String> {
    write_msg(ctl, &InitMsg::Pid(pid)).map_err(ctx("reporting the pid"))?;
    let mut failed = false;
    // Relay the child's messages until the pipe closes (exec succeeded, or it died).
    loop {
        match read_msg::<_, InitMsg>(&mut status_r) {
            Ok(m) => {
                failed |= matches!(m, InitMsg::Error(_));
                write_msg(ctl, &m).map_err(ctx("relaying"))?;
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format!("reading the child's status: {e}")),
        }
    }
    if !failed {
        write_msg(ctl, &InitMsg::Started).map_err(ctx("reporting the start"))?;
    }
    let status = loop {
        match rustix::process::waitpid(rustix::process::Pid::from_raw(pid), rustix::process::WaitOptions::empty()) {
            Ok(Some((_, st))) => {
                if let Some(code) = st.exit_status() {
                    break code;
                }
                if let Some(sig) = st.terminating_signal() {
                    break 128 + sig;
                }
            }
            Ok(None) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(format!("waitpid: {e}")),
        }
    };
    write_msg(ctl, &InitMsg::Exit(status)).map_err(ctx("reporting the exit"))
}

/// The workload side: set up, wait to be started, exec. Returns only on failure.
fn child(ctl: &mut File, status: &mut File, config: &InitConfig) -> String {
    // Die with the helper rather than run unsupervised.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    if let InitMode::Create { rootfs, hostname, readonly_root, mounts } = &config.mode {
        if let Err(e) = setup_container(rootfs, hostname, *readonly_root, mounts) {
            return e;
        }
        if let Err(e) = write_msg(status, &InitMsg::Ready) {
            return format!("reporting readiness: {e}");
        }
        let mut go = [0u8; 1];
        match ctl.read_exact(&mut go) {
            Ok(()) if go[0] == b'S' => {}
            Ok(()) => return "unexpected start byte".into(),
            Err(e) => return format!("waiting for the start: {e}"),
        }
    }
    // The workload must not inherit the control socket.
    if let Err(e) = rustix::io::fcntl_setfd(ctl.as_fd(), rustix::io::FdFlags::CLOEXEC) {
        return format!("fcntl: {e}");
    }
    exec(&config.process)
}

fn exec(p: &ProcessConfig) -> String {
    if let Err(e) = rustix::process::chdir(p.cwd.as_str()) {
        return format!("chdir {}: {e}", p.cwd);
    }
    let groups: Vec<_> = p.additional_gids.iter().map(|g| rustix::process::Gid::from_raw(*g)).collect();
    if let Err(e) = rustix::thread::set_thread_groups(&groups) {
        return format!("setgroups: {e}");
    }
    let gid = rustix::process::Gid::from_raw(p.gid);
    if let Err(e) = rustix::thread::set_thread_res_gid(gid, gid, gid) {
        return format!("setresgid {}: {e}", p.gid);
    }
    let uid = rustix::process::Uid::from_raw(p.uid);
    if let Err(e) = rustix::thread::set_thread_res_uid(uid, uid, uid) {
        return format!("setresuid {}: {e}", p.uid);
    }
    if p.no_new_privileges
        && let Err(e) = rustix::thread::set_no_new_privs(true)
    {
        return format!("no_new_privs: {e}");
    }
    let Some((prog, args)) = p.args.split_first() else { return "no program to run".into() };
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args).env_clear();
    for kv in &p.env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let e = cmd.exec();
    format!("exec {prog}: {e}")
}

fn join_namespaces(pid: i32) -> Result<(), String> {
    use rustix::thread::LinkNameSpaceType as T;
    // Open every namespace first: entering the mount namespace changes what /proc is.
    let mut fds: Vec<(OwnedFd, T, &str)> = Vec::new();
    for (name, t) in [
        ("ipc", T::InterProcessCommunication),
        ("uts", T::HostNameAndNISDomainName),
        ("pid", T::ProcessID),
        ("mnt", T::Mount),
    ] {
        let path = format!("/proc/{pid}/ns/{name}");
        let f = File::open(&path).map_err(ctx(format!("opening {path}")))?;
        fds.push((f.into(), t, name));
    }
    for (fd, t, name) in &fds {
        rustix::thread::move_into_link_name_space(fd.as_fd(), Some(*t)).map_err(ctx(format!("setns {name}")))?;
    }
    Ok(())
}

/// `root` joined with the absolute container path `p`, refusing `..` and any symlink on the
/// way (the image must not redirect a mount outside its root). Missing directories are
/// created.
fn inside(root: &Path, p: &str) -> Result<PathBuf, String> {
    let mut out = root.to_path_buf();
    for c in Path::new(p).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => {
                out.push(n);
                match std::fs::symlink_metadata(&out) {
                    Ok(m) if m.file_type().is_symlink() => {
                        return Err(format!("{p}: {} is a symlink in the image", out.display()));
                    }
                    Ok(m) if !m.is_dir() => return Err(format!("{p}: {} is not a directory", out.display())),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        std::fs::create_dir(&out).map_err(ctx(format!("mkdir {}", out.display())))?;
                    }
                    Err(e) => return Err(format!("{}: {e}", out.display())),
                }
            }
            Component::ParentDir | Component::Prefix(_) => return Err(format!("{p}: not a plain absolute path")),
        }
    }
    Ok(out)
}

fn mount(src: &str, target: &Path, fstype: &str, flags: MountFlags, data: &str) -> Result<(), String> {
    let data = std::ffi::CString::new(data).map_err(ctx("mount options"))?;
    rustix::mount::mount(src, target, fstype, flags, data.as_c_str())
        .map_err(ctx(format!("mounting {fstype} on {}", target.display())))
}

/// Character devices of the minimal /dev: name, major, minor.
const DEVICES: &[(&str, u32, u32)] =
    &[("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];

fn setup_container(rootfs: &Path, hostname: &str, readonly: bool, extra: &[ExtraMount]) -> Result<(), String> {
    sys::unshare(sys::Unshare::MountUtsIpc).map_err(ctx("unshare(NEWNS|NEWUTS|NEWIPC)"))?;
    // Nothing done here may propagate back to the agent's namespace.
    rustix::mount::mount_change("/", MountPropagationFlags::REC | MountPropagationFlags::PRIVATE)
        .map_err(ctx("making / private"))?;
    // pivot_root needs the new root to be a mount point.
    rustix::mount::mount_bind_recursive(rootfs, rootfs).map_err(ctx(format!("bind-mounting {}", rootfs.display())))?;

    let nosuid_nodev_noexec = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    mount("proc", &inside(rootfs, "/proc")?, "proc", nosuid_nodev_noexec, "")?;

    let dev = inside(rootfs, "/dev")?;
    mount("tmpfs", &dev, "tmpfs", MountFlags::NOSUID | MountFlags::STRICTATIME, "mode=755,size=65536k")?;
    for (name, major, minor) in DEVICES {
        let path = dev.join(name);
        let node = rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rustix::fs::makedev(*major, *minor),
        );
        if node.is_err() {
            // Without CAP_MKNOD: bind the agent's own node instead.
            File::create(&path).map_err(ctx(format!("creating {}", path.display())))?;
            rustix::mount::mount_bind(format!("/dev/{name}").as_str(), &path)
                .map_err(ctx(format!("binding /dev/{name}")))?;
        } else {
            // mknod applies the umask.
            let _ = rustix::fs::chmod(&path, Mode::from_raw_mode(0o666));
        }
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link)).map_err(ctx(format!("/dev/{link}")))?;
    }
    mount("tmpfs", &inside(rootfs, "/dev/shm")?, "tmpfs", nosuid_nodev_noexec, "mode=1777,size=65536k")?;
    let pts = inside(rootfs, "/dev/pts")?;
    if mount("devpts", &pts, "devpts", MountFlags::NOSUID | MountFlags::NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
        .is_ok()
    {
        let _ = std::os::unix::fs::symlink("pts/ptmx", dev.join("ptmx"));
    }
    mount("sysfs", &inside(rootfs, "/sys")?, "sysfs", nosuid_nodev_noexec | MountFlags::RDONLY, "")?;
    for m in extra {
        let target = inside(rootfs, &m.destination)?;
        match m.fstype.as_str() {
            "tmpfs" => mount("tmpfs", &target, "tmpfs", MountFlags::NOSUID | MountFlags::NODEV, "mode=1777")?,
            "mqueue" => mount("mqueue", &target, "mqueue", nosuid_nodev_noexec, "")?,
            other => return Err(format!("mount type {other} is not supported")),
        }
    }

    rustix::process::chdir(rootfs).map_err(ctx("chdir to the rootfs"))?;
    // pivot_root(".", "."): the old root ends up stacked on the new one, then is detached.
    rustix::process::pivot_root(".", ".").map_err(ctx("pivot_root"))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH).map_err(ctx("detaching the old root"))?;
    rustix::process::chdir("/").map_err(ctx("chdir /"))?;
    if readonly {
        rustix::mount::mount_remount("/", MountFlags::BIND | MountFlags::RDONLY, "")
            .map_err(ctx("remounting / read-only"))?;
    }
    if !hostname.is_empty() {
        rustix::system::sethostname(hostname.as_bytes()).map_err(ctx("sethostname"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn control_frames_round_trip_and_are_bounded() {
        let mut buf = Vec::new();
        write_msg(&mut buf, &InitMsg::Exit(137)).unwrap();
        write_msg(&mut buf, &InitMsg::Error("x".into())).unwrap();
        let mut r = &buf[..];
        assert_eq!(read_msg::<_, InitMsg>(&mut r).unwrap(), InitMsg::Exit(137));
        assert_eq!(read_msg::<_, InitMsg>(&mut r).unwrap(), InitMsg::Error("x".into()));
        assert_eq!(read_msg::<_, InitMsg>(&mut r).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let huge = (MAX_MSG as u32 + 1).to_be_bytes();
        assert_eq!(read_msg::<_, InitMsg>(&mut &huge[..]).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn inside_refuses_escapes() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("proc")).unwrap();
        assert!(inside(d.path(), "/proc").unwrap_err().contains("symlink"));
        assert!(inside(d.path(), "/a/../b").is_err());
        assert_eq!(inside(d.path(), "/dev/shm").unwrap(), d.path().join("dev/shm"));
        assert!(d.path().join("dev/shm").is_dir());
    }
}
