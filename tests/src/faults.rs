//! Faults a test injects from outside a node process: a small loop-mounted file system
//! that can be filled to the last byte and emptied again (`LoopFs`), and a TCP link
//! between two nodes that can be cut and healed (`Link`).
//!
//! `LoopFs` needs root and loop devices (mount, losetup); without them it fails saying
//! so. It unmounts on drop, so it must be dropped after the processes using it.
//!
//! A `Link` is a forwarding proxy on a loopback port in the test process: a node that
//! dials a peer through it reaches the peer while the link is up. `cut` closes every
//! connection through it and then swallows new ones (accepts them and reads and drops
//! what they send, as a network that loses packets would: the sender sees no error
//! until it times out); `heal` closes the swallowed connections, so the next attempt
//! goes through. No byte is ever dropped from the middle of a forwarded stream: a
//! connection is forwarded whole or closed. Its threads poll the link's state: dropping
//! the `Link` stops its listener and closes its connections within a poll (a forwarding
//! write blocked on a stopped process ends at its write timeout).

// Only tests use this module, and a panic with a message is how a test fails.
#![allow(clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::node_client::run_command;

const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a link's threads look at its state while they wait for bytes.
const LINK_POLL: Duration = Duration::from_millis(20);
const LINK_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A forwarded write to a peer that reads nothing (a paused process) for this long
/// closes the connection, as TCP's retransmission timeout would, much later.
const LINK_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a system command to completion (bounded), failing the test with its output.
fn run_system(program: &str, args: &[&str]) {
    let mut command = Command::new(program);
    command.args(args);
    let out = run_command(command, b"", COMMAND_TIMEOUT);
    assert_eq!(
        out.code,
        Some(0),
        "`{program} {}` failed: {}{}\nThis test needs root and loop devices (it loop-mounts a small ext4 image).",
        args.join(" "),
        out.stdout,
        out.stderr
    );
}

/// A loop-mounted ext4 file system in a temporary directory, unmounted when dropped.
pub struct LoopFs {
    tmp: tempfile::TempDir,
    /// Where it is mounted: the root of the file system, without lost+found, so a node
    /// can use it as its data directory. Its parent is on the ordinary file system.
    pub mount: PathBuf,
}

/// The file that `LoopFs::fill` writes.
const FILLER: &str = ".filler";

impl LoopFs {
    /// A new file system of `bytes` bytes (an image file, sparse until written).
    #[must_use]
    pub fn new(bytes: u64) -> LoopFs {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let image = tmp.path().join("disk.img");
        std::fs::File::create(&image).and_then(|f| f.set_len(bytes)).expect("creating the image file");
        let mount = tmp.path().join("mnt");
        std::fs::create_dir(&mount).expect("creating the mount point");
        let (image_arg, mount_arg) = (image.to_str().expect("utf-8 path"), mount.to_str().expect("utf-8 path"));
        run_system("mkfs.ext4", &["-q", "-F", "-m", "0", image_arg]);
        run_system("mount", &["-o", "loop", image_arg, mount_arg]);
        let fs = LoopFs { tmp, mount };
        // A node's data directory is the file system's root: fsck's directory goes.
        std::fs::remove_dir(fs.mount.join("lost+found")).expect("removing lost+found");
        fs
    }

    /// The directory holding the mount point, on the ordinary file system (for logs).
    #[must_use]
    pub fn outside(&self) -> &Path {
        self.tmp.path()
    }

    /// The bytes an unprivileged writer may still allocate.
    #[must_use]
    pub fn available(&self) -> u64 {
        let path = std::ffi::CString::new(self.mount.to_str().expect("utf-8 path")).expect("no NUL in the path");
        // SAFETY: statvfs(3) writes only into the zeroed struct we pass, and reads the
        // NUL-terminated path, which lives until the call returns.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
        assert_eq!(rc, 0, "statvfs({}): {}", self.mount.display(), std::io::Error::last_os_error());
        stat.f_bavail * stat.f_frsize
    }

    /// Takes every free block with one allocated file (a disk filled by someone else),
    /// leaving at most `spare` bytes free. Returns the bytes the file holds.
    pub fn fill(&self, spare: u64) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let path = self.mount.join(FILLER);
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("opening the filler");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // Ask for all that is free; what the file system cannot give (its own metadata
        // takes blocks too, and a node may be writing) is asked for again in halves.
        let mut want = self.available().saturating_sub(spare) & !4095;
        for _ in 0..64 {
            if want < 4096 {
                break;
            }
            let at = file.metadata().expect("the filler's size").len();
            // SAFETY: fallocate(2) on a descriptor we own, for a range past its end.
            let rc = unsafe { libc::fallocate(fd, 0, at as libc::off_t, want as libc::off_t) };
            want = if rc == 0 { self.available().saturating_sub(spare) & !4095 } else { (want / 2) & !4095 };
        }
        file.metadata().expect("the filler's blocks").blocks() * 512
    }

    /// Frees what `fill` took.
    pub fn unfill(&self) {
        match std::fs::remove_file(self.mount.join(FILLER)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => panic!("removing the filler in {}: {e}", self.mount.display()),
        }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let mount = self.mount.to_str().unwrap_or_default();
        for _ in 0..50 {
            // Right after a node exits its files may be held for a moment (io_uring's
            // workers): retry quietly.
            let quiet = Command::new("umount").arg(mount).stderr(std::process::Stdio::null()).status();
            let done = quiet.is_ok_and(|s| s.success());
            if done {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Busy: detach it lazily rather than leave it mounted.
        let _ = Command::new("umount").args(["-l", mount]).status();
    }
}

/// What a link's threads share.
struct LinkState {
    target: SocketAddr,
    cut: AtomicBool,
    /// Bumped by every cut and heal: a connection from an earlier generation is closed.
    generation: AtomicU64,
    stop: AtomicBool,
}

impl LinkState {
    fn current(&self, generation: u64) -> bool {
        !self.stop.load(Ordering::SeqCst) && self.generation.load(Ordering::SeqCst) == generation
    }
}

/// A one-way link to `target` (one node dialing another) that a test cuts and heals.
pub struct Link {
    addr: SocketAddr,
    state: Arc<LinkState>,
    acceptor: Option<JoinHandle<()>>,
}

impl Link {
    /// A link listening on a free loopback port, forwarding to `target`.
    #[must_use]
    pub fn new(target: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port for a link");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the link's address");
        let state = Arc::new(LinkState {
            target,
            cut: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let shared = state.clone();
        let acceptor = std::thread::spawn(move || accept(&listener, &shared));
        Link { addr, state, acceptor: Some(acceptor) }
    }

    /// Where to dial to reach the target through this link.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection through the link and swallows new ones until `heal`.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        self.state.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Closes the swallowed connections and forwards new ones again.
    pub fn heal(&self) {
        self.state.generation.fetch_add(1, Ordering::SeqCst);
        self.state.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept(listener: &TcpListener, state: &Arc<LinkState>) {
    while !state.stop.load(Ordering::SeqCst) {
        let incoming = match listener.accept() {
            Ok((incoming, _)) => incoming,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(LINK_POLL);
                continue;
            }
            Err(_) => {
                std::thread::sleep(LINK_POLL);
                continue;
            }
        };
        let generation = state.generation.load(Ordering::SeqCst);
        let _ = incoming.set_nonblocking(false);
        let _ = incoming.set_read_timeout(Some(LINK_POLL));
        let outgoing = if state.cut.load(Ordering::SeqCst) {
            None
        } else {
            match TcpStream::connect_timeout(&state.target, LINK_CONNECT_TIMEOUT) {
                Ok(s) => Some(s),
                // The target is down: so is the connection through the link.
                Err(_) => continue,
            }
        };
        let Some(outgoing) = outgoing else {
            let state = state.clone();
            std::thread::spawn(move || swallow(incoming, &state, generation));
            continue;
        };
        let _ = outgoing.set_nodelay(true);
        let _ = outgoing.set_read_timeout(Some(LINK_POLL));
        let _ = outgoing.set_write_timeout(Some(LINK_WRITE_TIMEOUT));
        let _ = incoming.set_write_timeout(Some(LINK_WRITE_TIMEOUT));
        let (Ok(incoming_back), Ok(outgoing_back)) = (incoming.try_clone(), outgoing.try_clone()) else { continue };
        let forth = state.clone();
        std::thread::spawn(move || pump(incoming, outgoing, &forth, generation));
        let back = state.clone();
        std::thread::spawn(move || pump(outgoing_back, incoming_back, &back, generation));
    }
}

/// Copies `from` to `to` while the link's generation stays `generation`, then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream, state: &LinkState, generation: u64) {
    let mut buf = vec![0u8; 64 << 10];
    while state.current(generation) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Reads and drops what a connection accepted during a cut sends, until the heal.
fn swallow(mut incoming: TcpStream, state: &LinkState, generation: u64) {
    let mut buf = vec![0u8; 64 << 10];
    while state.current(generation) {
        match incoming.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(_) => break,
        }
    }
    let _ = incoming.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn echo_server() -> (SocketAddr, Arc<AtomicBool>, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        let server = std::thread::spawn(move || {
            let mut echoes = Vec::new();
            while !done.load(Ordering::SeqCst) {
                if let Ok((mut s, _)) = listener.accept() {
                    s.set_nonblocking(false).unwrap();
                    echoes.push(std::thread::spawn(move || {
                        let mut buf = [0u8; 1024];
                        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 || s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            for e in echoes {
                let _ = e.join();
            }
        });
        (addr, stop, server)
    }

    fn echoed(addr: SocketAddr) -> Option<Vec<u8>> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        s.write_all(b"ping").ok()?;
        let mut got = [0u8; 4];
        s.read_exact(&mut got).ok()?;
        Some(got.to_vec())
    }

    #[test]
    fn a_filled_file_system_has_no_room_left_until_it_is_emptied() {
        let fs = LoopFs::new(32 << 20);
        let free = fs.available();
        assert!(free > 24 << 20, "{free} bytes free on a new 32 MiB file system");
        let taken = fs.fill(0);
        assert!(fs.available() < 64 << 10, "{} bytes still free after taking {taken}", fs.available());
        assert!(std::fs::write(fs.mount.join("more"), vec![1u8; 1 << 20]).is_err(), "a 1 MiB write fits a full disk");
        fs.unfill();
        assert!(fs.available() > free - (2 << 20), "{} bytes free after emptying", fs.available());
    }

    #[test]
    fn a_link_forwards_until_cut_swallows_while_cut_and_forwards_after_the_heal() {
        let (target, stop, server) = echo_server();
        let link = Link::new(target);
        assert_eq!(echoed(link.addr()), Some(b"ping".to_vec()));
        let mut open = TcpStream::connect(link.addr()).unwrap();
        open.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        open.read_exact(&mut got).unwrap();
        link.cut();
        // The connection from before the cut is closed; new ones are accepted and
        // answered with nothing.
        open.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert!(matches!(open.read(&mut got), Ok(0) | Err(_)), "a cut closes open connections");
        assert_eq!(echoed(link.addr()), None);
        link.heal();
        assert_eq!(echoed(link.addr()), Some(b"ping".to_vec()));
        drop(link);
        stop.store(true, Ordering::SeqCst);
        server.join().unwrap();
    }
}
