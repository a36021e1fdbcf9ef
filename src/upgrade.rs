//! Zero-downtime upgrades: a running process hands its listening sockets to its
//! successor (`rotagate run --upgrade`) over a Unix socket, as file descriptors
//! (SCM_RIGHTS), as pingora's own graceful upgrade does. Both processes then hold the
//! same sockets: nothing queued in the kernel's backlog is lost (unlike `SO_REUSEPORT`,
//! where connections queued on the closing process's socket are dropped).
//!
//! The exchange, on the upgrade socket (`listen.upgrade_socket`):
//! 1. the successor connects (only a process of the same user is served) and writes
//!    [`TAKE_OVER`] (a connection that only probes whether someone listens, and says
//!    nothing, gets nothing);
//! 2. the running process sends one message: [`encode_names`] of its listeners, with
//!    their descriptors attached in the same order;
//! 3. the successor starts accepting on them (binding anew what its config has and the
//!    message had not), then writes [`ACCEPTING`];
//! 4. the running process then stops accepting, drains and exits, and the successor
//!    listens on the upgrade socket for its own successor.
//!
//! A successor that quits before step 3 leaves the running process as it was; so does
//! one whose config's proxy address is none of the sockets it got (it connected to
//! another instance's upgrade socket: see [`take_over`]).
//!
//! The path is vetted before every use ([`vet`]): the default one lives in a directory
//! of our own (`/tmp/rotagate-<euid>`, mode 0700, created if absent); at any path, a
//! directory others can write to, a symlink, a file that is not a socket, or a socket
//! another user owns is refused. The socket file is made with mode 0600 (set before
//! `bind`, never by a `chmod` through the path).

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};

use crate::config::{default_upgrade_dir, default_upgrade_socket, MAX_UNIX_SOCKET_PATH};
use crate::listeners::{self, Handover, Listeners};

/// The most listening sockets one handover carries.
pub const MAX_SOCKETS: usize = 8;
/// What the successor writes first: it wants the sockets.
pub const TAKE_OVER: &[u8] = b"rotagate-upgrade 1 take-over\n";
/// What the successor writes once it accepts on the handed-over sockets.
pub const ACCEPTING: &[u8] = b"accepting\n";
/// How long a successor waits for the running process's sockets, and the running
/// process for a connected successor's [`TAKE_OVER`].
pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the running process waits for a successor to say [`ACCEPTING`] before it
/// gives up on it and goes on serving (a successor normally starts in milliseconds).
pub const ACCEPTING_TIMEOUT: Duration = Duration::from_secs(60);

/// The first line of the handover message: protocol and version.
const HELLO: &str = "rotagate-upgrade 1";
/// The last line of the handover message.
const END: &str = "end";
/// Longest handover message (names are short).
const MAX_MESSAGE: usize = 1024;

/// The handover message for listeners named `names`: the hello line, one name a line,
/// the end line.
pub fn encode_names(names: &[&str]) -> Vec<u8> {
    let mut s = String::from(HELLO);
    s.push('\n');
    for n in names {
        s.push_str(n);
        s.push('\n');
    }
    s.push_str(END);
    s.push('\n');
    s.into_bytes()
}

/// The listener names of a handover message, or why it is not one this version reads.
pub fn decode_names(message: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(message).map_err(|_| "the message is not text".to_string())?;
    let mut lines = text
        .strip_suffix('\n')
        .ok_or("the message is incomplete")?
        .split('\n');
    match lines.next() {
        Some(HELLO) => {}
        other => {
            return Err(format!(
                "expected {HELLO:?} (the same protocol version), found {:?}",
                other
                    .unwrap_or_default()
                    .chars()
                    .take(40)
                    .collect::<String>()
            ))
        }
    }
    let mut names: Vec<String> = lines.map(str::to_string).collect();
    if names.pop().as_deref() != Some(END) {
        return Err("the message is incomplete".into());
    }
    if names.len() > MAX_SOCKETS {
        return Err(format!("{} listeners, at most {MAX_SOCKETS}", names.len()));
    }
    for (i, n) in names.iter().enumerate() {
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(format!("{n:?} is not a listener name"));
        }
        if names[..i].contains(n) {
            return Err(format!("the listener {n:?} is named twice"));
        }
    }
    Ok(names)
}

/// The upgrade socket of a running process: where its successor connects.
#[derive(Debug)]
pub struct UpgradeSocket {
    path: PathBuf,
    listener: UnixListener,
    /// (device, inode) of the socket file we made, so we remove only our own.
    file_id: (u64, u64),
}

impl UpgradeSocket {
    /// Listens at `path`. A socket file nobody listens on (left by a process that was
    /// killed) is replaced; one a live process listens on is an error: that process
    /// is the one to upgrade, with `--upgrade`.
    pub async fn bind(path: &Path) -> Result<UpgradeSocket, String> {
        let path = &vet(path)?;
        match UnixStream::connect(path).await {
            Ok(_) => {
                return Err(format!(
                    "the upgrade socket {} is in use by a running rotagate (start this one with `--upgrade` to take over from it, or give it its own `listen.upgrade_socket`)",
                    path.display()
                ))
            }
            // nobody listens (a file left by a killed process) or no file: ours to make
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                ) => {}
            // anything else is no proof the socket is stale: leave it
            Err(e) => {
                return Err(format!(
                    "cannot tell whether the upgrade socket {} is in use: {e}",
                    path.display()
                ))
            }
        }
        Self::listen_at(path)
    }

    /// Listens at `path`, replacing whatever socket file is there: the successor takes
    /// the upgrade socket over from the process it took the listeners from.
    pub fn replace(path: &Path) -> Result<UpgradeSocket, String> {
        // never unlink (or listen through) a symlink or another user's file
        Self::listen_at(&vet(path)?)
    }

    /// Replaces whatever socket file is at `path`, which [`vet`] returned: from here on
    /// the path is one nobody else can change.
    fn listen_at(path: &Path) -> Result<UpgradeSocket, String> {
        let what = |e: io::Error| {
            format!(
                "cannot listen on the upgrade socket {}: {e}",
                path.display()
            )
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(what(e)),
        }
        let listener = listen_private(path).map_err(what)?;
        // lstat, not stat: the id is of the file we made (the directory is ours alone,
        // see `vet`, so nobody swapped it meanwhile; checked all the same)
        let meta = std::fs::symlink_metadata(path).map_err(what)?;
        let made = PathInfo::from(&meta);
        if made.kind != PathKind::Socket || made.mode & 0o077 != 0 {
            return Err(format!(
                "refused: the upgrade socket {} is not the private socket just made ({made:?})",
                path.display()
            ));
        }
        Ok(UpgradeSocket {
            path: path.to_path_buf(),
            listener,
            file_id: (meta.dev(), meta.ino()),
        })
    }

    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for a successor, hands it the sockets of `handover` and returns once it
    /// accepts on them. A successor that fails before that is logged, and the next one
    /// is waited for; this process serves on meanwhile.
    pub async fn successor(&self, handover: &Handover) {
        loop {
            let stream = match self.listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "upgrade socket accept failed");
                    // e.g. EMFILE: do not spin
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match hand_over(stream, handover).await {
                Ok(true) => return,
                Ok(false) => {
                    tracing::debug!("a connection to the upgrade socket asked for nothing")
                }
                Err(e) => tracing::warn!("upgrade abandoned, serving on: {e}"),
            }
        }
    }

    /// Removes the socket file if it is still ours (a process that stops without a
    /// successor). After a handover the successor owns the path: do not call this.
    pub fn remove(self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) == self.file_id)
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A Unix listener at `path` whose file has mode 0600 from the moment it exists: the
/// mode is set on the socket before `bind` (Linux makes the file with the socket's mode
/// less the umask), never by path afterwards (a `chmod` by path follows a symlink
/// someone put there meanwhile).
fn listen_private(path: &Path) -> io::Result<UnixListener> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(0o600))?;
    rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
    rustix::net::listen(&fd, 16)?;
    UnixListener::from_std(std::os::unix::net::UnixListener::from(fd))
}

/// The running process's side of one handover: `Ok(true)` once the successor accepts,
/// `Ok(false)` for a connection that did not ask for the sockets.
async fn hand_over(mut stream: UnixStream, handover: &Handover) -> Result<bool, String> {
    check_peer(&stream)?;
    let mut request = vec![0u8; TAKE_OVER.len()];
    match tokio::time::timeout(RECEIVE_TIMEOUT, stream.read_exact(&mut request)).await {
        Ok(Ok(_)) if request == TAKE_OVER => {}
        Ok(Ok(_)) => return Err("a successor of another protocol version connected".into()),
        // closed (a probe) or silent: nothing was asked for
        Ok(Err(_)) | Err(_) => return Ok(false),
    }
    let names: Vec<&str> = handover.sockets().iter().map(|(n, _)| *n).collect();
    let fds: Vec<BorrowedFd<'_>> = handover
        .sockets()
        .iter()
        .map(|(_, fd)| fd.as_fd())
        .collect();
    let message = encode_names(&names);
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
                return Err(io::Error::other("too many listeners to hand over"));
            }
            rustix::net::sendmsg(
                &stream,
                &[IoSlice::new(&message)],
                &mut control,
                SendFlags::NOSIGNAL,
            )
            .map_err(io::Error::from)
        })
        .await
        .map_err(|e| format!("cannot send the listening sockets: {e}"))?;
    if sent != message.len() {
        return Err("the handover message was cut short".into());
    }
    tracing::info!(listeners = ?names, "listening sockets handed to a successor; waiting for it to accept");
    let mut got = Vec::with_capacity(ACCEPTING.len());
    let read = async {
        let mut byte = [0u8; 1];
        while got.len() < ACCEPTING.len() {
            let n = stream.read(&mut byte).await?;
            if n == 0 {
                break;
            }
            got.push(byte[0]);
        }
        Ok::<_, io::Error>(())
    };
    match tokio::time::timeout(ACCEPTING_TIMEOUT, read).await {
        Err(_) => Err(format!(
            "the successor did not start accepting within {} s",
            ACCEPTING_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(format!("the successor's connection failed: {e}")),
        Ok(Ok(())) if got == ACCEPTING => {
            tracing::info!("the successor accepts: stopping accepting and draining");
            Ok(true)
        }
        Ok(Ok(())) => Err("the successor quit before it accepted (see its own error)".into()),
    }
}

/// Only a process of our own user (or root) may have our sockets, or give us its own.
fn check_peer(stream: &UnixStream) -> Result<(), String> {
    let peer = rustix::net::sockopt::socket_peercred(stream)
        .map_err(|e| format!("cannot tell who connected to the upgrade socket: {e}"))?;
    let me = rustix::process::geteuid();
    if peer.uid == me || peer.uid.is_root() {
        Ok(())
    } else {
        Err(format!(
            "refused: the other end of the upgrade socket runs as uid {} (this process as uid {})",
            peer.uid.as_raw(),
            me.as_raw()
        ))
    }
}

/// The successor's end of the exchange, held until it accepts on the sockets.
#[derive(Debug)]
pub struct Predecessor {
    stream: UnixStream,
}

/// Connects to the process listening on the upgrade socket at `path` and receives its
/// listening sockets, by name. Fails, with a message saying what to do, when the path
/// is refused by [`vet`], no process listens there, it does not answer within
/// [`RECEIVE_TIMEOUT`], or none of its sockets is this config's proxy listener `proxy`
/// (see [`listeners::is_predecessor`]): that process is another instance, which then
/// serves on (the connection closes without [`ACCEPTING`]).
pub async fn take_over(path: &Path, proxy: SocketAddr) -> Result<(Listeners, Predecessor), String> {
    let path = &vet(path).map_err(|e| format!("--upgrade: {e}"))?;
    let mut stream = UnixStream::connect(path).await.map_err(|e| {
        format!(
            "--upgrade: no running rotagate to take over from at the upgrade socket {} ({e}); start without --upgrade",
            path.display()
        )
    })?;
    // only sockets of our own user (or root) are taken: a socket file another local
    // user made at a shared path (/tmp) must not hand us listeners of theirs
    check_peer(&stream).map_err(|e| format!("--upgrade: {}: {e}", path.display()))?;
    stream.write_all(TAKE_OVER).await.map_err(|e| {
        format!(
            "--upgrade: cannot ask the process at {} for its sockets: {e}",
            path.display()
        )
    })?;
    let received = tokio::time::timeout(RECEIVE_TIMEOUT, receive(&stream))
        .await
        .map_err(|_| {
            format!(
                "--upgrade: the process at {} did not hand over its sockets within {} s",
                path.display(),
                RECEIVE_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("--upgrade: from {}: {e}", path.display()))?;
    let listeners = Listeners::inherit(received)?;
    let inherited = listeners.inherited_addresses();
    if !listeners::is_predecessor(proxy, &inherited) {
        let theirs: Vec<String> = inherited.iter().map(|(n, a)| format!("{n} {a}")).collect();
        return Err(format!(
            "--upgrade: refused: the process at the upgrade socket {} is another rotagate instance, not this one's predecessor: it listens on {} but this config's proxy listener is {proxy}; it serves on. Give each instance its own `listen.upgrade_socket`, or keep `listen.address` across the upgrade",
            path.display(),
            if theirs.is_empty() { "nothing".to_string() } else { theirs.join(", ") }
        ));
    }
    Ok((listeners, Predecessor { stream }))
}

/// Reads the handover message and its descriptors.
async fn receive(stream: &UnixStream) -> Result<Vec<(String, OwnedFd)>, String> {
    let mut buf = [0u8; MAX_MESSAGE];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let (n, truncated, fds) = stream
        .async_io(Interest::READABLE, || {
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let r = rustix::net::recvmsg(stream, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)
                .map_err(io::Error::from)?;
            let mut fds = Vec::new();
            for m in control.drain() {
                if let RecvAncillaryMessage::ScmRights(rights) = m {
                    fds.extend(rights);
                }
            }
            let truncated = r.flags.contains(rustix::net::ReturnFlags::CTRUNC);
            Ok((r.bytes, truncated, fds))
        })
        .await
        .map_err(|e| format!("cannot receive the listening sockets: {e}"))?;
    if n == 0 {
        return Err(
            "the process closed the connection without handing over (another upgrade took over?)"
                .into(),
        );
    }
    if truncated {
        return Err(format!("more than {MAX_SOCKETS} sockets were sent"));
    }
    let names = decode_names(&buf[..n]).map_err(|e| format!("not a rotagate handover: {e}"))?;
    if names.len() != fds.len() {
        return Err(format!("{} names but {} sockets", names.len(), fds.len()));
    }
    Ok(names.into_iter().zip(fds).collect())
}

impl Predecessor {
    /// Tells the predecessor this process accepts on the sockets: it stops accepting,
    /// drains and exits. An error means it went away first (it then no longer accepts
    /// either), which the caller logs; it is no reason to stop.
    pub async fn accepting(mut self) -> Result<(), String> {
        self.stream
            .write_all(ACCEPTING)
            .await
            .map_err(|e| format!("cannot tell the previous process that we accept: {e}"))
    }
}

/// What `lstat` tells of a path, as far as the upgrade socket checks need: the input
/// of the pure checks [`private_dir_problem`] and [`socket_file_problem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathInfo {
    /// The kind of file (a symlink is not followed).
    pub kind: PathKind,
    /// The owner.
    pub uid: u32,
    /// The permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

/// The kinds of file the upgrade socket checks tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// A Unix socket.
    Socket,
    /// Anything else (a regular file, a FIFO, a device…).
    Other,
}

impl From<&std::fs::Metadata> for PathInfo {
    fn from(m: &std::fs::Metadata) -> PathInfo {
        use std::os::unix::fs::FileTypeExt;
        let t = m.file_type();
        let kind = if t.is_symlink() {
            PathKind::Symlink
        } else if t.is_dir() {
            PathKind::Dir
        } else if t.is_socket() {
            PathKind::Socket
        } else {
            PathKind::Other
        };
        PathInfo {
            kind,
            uid: m.uid(),
            mode: m.mode() & 0o7777,
        }
    }
}

/// Why the directory of the default upgrade socket, as `info`, is not one only `euid`
/// can write to (a real directory, ours, no group or other bits), or `None`.
pub fn private_dir_problem(info: &PathInfo, euid: u32) -> Option<String> {
    match info.kind {
        PathKind::Dir => {}
        PathKind::Symlink => return Some("is a symbolic link, not a directory".into()),
        _ => return Some("is not a directory".into()),
    }
    if info.uid != euid {
        return Some(format!(
            "is owned by uid {}, not by us (uid {euid})",
            info.uid
        ));
    }
    if info.mode & 0o077 != 0 {
        return Some(format!(
            "has mode {:04o}: other users have access (expected 0700)",
            info.mode
        ));
    }
    None
}

/// Why a directory on the upgrade socket's path, as `info` (from `lstat`: a symlink is
/// not followed), lets someone other than `euid` or root change what the path leads
/// to, or `None`. `last` is the socket's own directory. Every directory must be a real
/// one (a symlink could be re-pointed), owned by us or root; one others can write to
/// must be sticky (only an entry's owner can rename or remove it there, as in `/tmp`),
/// and the socket's own directory must not be writable by others at all (in a sticky
/// one, another user could create the socket's name before us).
pub fn path_dir_problem(info: &PathInfo, last: bool, euid: u32) -> Option<String> {
    match info.kind {
        PathKind::Dir => {}
        PathKind::Symlink => {
            return Some(
                "is a symbolic link (it could be re-pointed; give the path without symlinks)"
                    .into(),
            )
        }
        _ => return Some("is not a directory".into()),
    }
    if info.uid != euid && info.uid != 0 {
        return Some(format!(
            "is owned by uid {}, neither us (uid {euid}) nor root",
            info.uid
        ));
    }
    let others_write = info.mode & 0o022 != 0;
    if others_write && (last || info.mode & 0o1000 == 0) {
        return Some(format!(
            "has mode {:04o}: other users can create or replace files in it",
            info.mode
        ));
    }
    None
}

/// `path` made absolute (against the working directory) with `.` and `..` resolved as
/// text: exact here, because [`vet`] then refuses a symlink anywhere on it.
pub fn normalise(path: &Path) -> Result<PathBuf, String> {
    use std::path::Component;
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("cannot resolve the upgrade socket {}: {e}", path.display()))?
            .join(path)
    };
    let mut out = PathBuf::from("/");
    for c in absolute.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    Ok(out)
}

/// Why the file at the upgrade socket's path, as `info`, must not be connected to or
/// replaced by `euid`: a symlink (it may point at another instance's socket), not a
/// socket (replacing would delete it), or a socket of another user; else `None`.
pub fn socket_file_problem(info: &PathInfo, euid: u32) -> Option<String> {
    match info.kind {
        PathKind::Socket if info.uid == euid => None,
        PathKind::Socket => Some(format!(
            "is a socket owned by uid {}, not by us (uid {euid})",
            info.uid
        )),
        PathKind::Symlink => {
            Some("is a symbolic link (it could lead to another instance's socket)".into())
        }
        PathKind::Dir => Some("is a directory, not a socket".into()),
        PathKind::Other => Some("is not a socket (it is left as it is)".into()),
    }
}

/// Checks the upgrade socket path before it is connected to or listened on, and
/// returns it as it is then used ([`normalise`]d). Every directory from `/` down must
/// pass [`path_dir_problem`] (`lstat`, no symlinks), so no other user can change where
/// the path leads between this check and its use; an existing file must pass
/// [`socket_file_problem`]. For the default path, its directory is created (mode 0700)
/// if absent and must pass [`private_dir_problem`]. The error names the path and what
/// is wrong.
pub fn vet(path: &Path) -> Result<PathBuf, String> {
    let euid = rustix::process::geteuid().as_raw();
    let path = normalise(path)?;
    // checked again here, made absolute: a relative path the config accepted can be
    // longer, and a path that cannot be connected to must be refused before `replace`
    // unlinks anything
    if path.as_os_str().len() > MAX_UNIX_SOCKET_PATH {
        return Err(format!(
            "refused: the upgrade socket {} is {} bytes long, at most {MAX_UNIX_SOCKET_PATH} (the limit of a Unix socket address)",
            path.display(),
            path.as_os_str().len()
        ));
    }
    if path == default_upgrade_socket() {
        let dir = default_upgrade_dir();
        use std::os::unix::fs::DirBuilderExt;
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(format!(
                    "cannot create the upgrade socket's directory {}: {e}",
                    dir.display()
                ))
            }
        }
        let meta = std::fs::symlink_metadata(&dir).map_err(|e| {
            format!(
                "cannot check the upgrade socket's directory {}: {e}",
                dir.display()
            )
        })?;
        if let Some(p) = private_dir_problem(&PathInfo::from(&meta), euid) {
            return Err(format!(
                "refused: the upgrade socket's directory {} {p}; remove it, or set `listen.upgrade_socket`",
                dir.display()
            ));
        }
    }
    let Some(dir) = path.parent() else {
        return Err(format!(
            "refused: the upgrade socket {} names no file",
            path.display()
        ));
    };
    let dirs: Vec<&Path> = dir.ancestors().collect();
    for (i, d) in dirs.iter().rev().enumerate() {
        let meta = std::fs::symlink_metadata(d).map_err(|e| {
            format!(
                "cannot check {} on the upgrade socket's path {}: {e}",
                d.display(),
                path.display()
            )
        })?;
        if let Some(p) = path_dir_problem(&PathInfo::from(&meta), i + 1 == dirs.len(), euid) {
            return Err(format!(
                "refused: on the upgrade socket's path {}, {} {p}; choose a `listen.upgrade_socket` in a directory only this user (or root) can change",
                path.display(),
                d.display()
            ));
        }
    }
    match std::fs::symlink_metadata(&path) {
        Ok(meta) => match socket_file_problem(&PathInfo::from(&meta), euid) {
            Some(p) => Err(format!(
                "refused: the upgrade socket {} {p}",
                path.display()
            )),
            None => Ok(path),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(path),
        Err(e) => Err(format!(
            "cannot check the upgrade socket {}: {e}",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_message_round_trips_and_strangers_are_refused() {
        let m = encode_names(&["proxy", "admin"]);
        assert_eq!(m, b"rotagate-upgrade 1\nproxy\nadmin\nend\n");
        assert_eq!(decode_names(&m).unwrap(), ["proxy", "admin"]);
        assert_eq!(
            decode_names(&encode_names(&[])).unwrap(),
            Vec::<String>::new()
        );
        for (bad, why) in [
            (&b"rotagate-upgrade 2\nproxy\nend\n"[..], "protocol version"),
            (b"rotagate-upgrade 1\nproxy\n", "incomplete"),
            (b"rotagate-upgrade 1\nproxy", "incomplete"),
            (b"rotagate-upgrade 1\nPro xy\nend\n", "not a listener name"),
            (b"rotagate-upgrade 1\n\nend\n", "not a listener name"),
            (b"\xff\n", "not text"),
            (b"rotagate-upgrade 1\nproxy\nproxy\nend\n", "named twice"),
        ] {
            let e = decode_names(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let many: Vec<&str> = std::iter::repeat_n("proxy", MAX_SOCKETS + 1).collect();
        assert!(decode_names(&encode_names(&many)).is_err());
    }

    /// The whole exchange between two ends in one process: the successor gets the
    /// same listening socket (a connection to it is accepted through the inherited
    /// descriptor), and the running process learns when it accepts.
    #[tokio::test]
    async fn sockets_pass_to_the_successor_which_then_says_it_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("up.sock");
        let up = UpgradeSocket::bind(&path).await.unwrap();
        // a second process on the same path is told to upgrade instead
        let e = UpgradeSocket::bind(&path).await.unwrap_err();
        assert!(e.contains("--upgrade"), "{e}");

        let mut mine = Listeners::fresh();
        let proxy = mine
            .bind("proxy", "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = proxy.local_addr().unwrap();
        let handover = mine.finish();

        let old = async {
            up.successor(&handover).await;
        };
        let new = async {
            let (mut inherited, predecessor) = take_over(&path, "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            let l = inherited
                .bind("proxy", "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            assert_eq!(l.local_addr().unwrap(), addr);
            let (c, a) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
            assert!(c.is_ok() && a.is_ok());
            predecessor.accepting().await.unwrap();
            inherited
        };
        // `successor` returns only once the successor said it accepts
        let ((), _inherited) = tokio::join!(old, new);
    }

    #[tokio::test]
    async fn taking_over_from_nobody_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("none.sock");
        let e = take_over(&path, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap_err();
        assert!(
            e.contains("no running rotagate") && e.contains("none.sock"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_stale_socket_file_is_replaced_and_removed_only_while_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("up.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // file left, nobody listens
        let first = UpgradeSocket::bind(&path).await.unwrap();
        // a successor replaced the file: the first must not remove the successor's
        let second = UpgradeSocket::replace(&path).unwrap();
        first.remove();
        assert!(path.exists());
        second.remove();
        assert!(!path.exists());
    }

    fn info(kind: PathKind, uid: u32, mode: u32) -> PathInfo {
        PathInfo { kind, uid, mode }
    }

    #[test]
    fn the_default_directory_must_be_a_real_private_directory_of_ours() {
        assert_eq!(
            private_dir_problem(&info(PathKind::Dir, 1000, 0o700), 1000),
            None
        );
        let bad = [
            (info(PathKind::Symlink, 1000, 0o777), "symbolic link"),
            (info(PathKind::Other, 1000, 0o600), "not a directory"),
            (info(PathKind::Socket, 1000, 0o600), "not a directory"),
            (info(PathKind::Dir, 65534, 0o700), "owned by uid 65534"),
            // root's directory is not ours either when we are not root
            (info(PathKind::Dir, 0, 0o700), "owned by uid 0"),
            (info(PathKind::Dir, 1000, 0o1777), "mode 1777"),
            (info(PathKind::Dir, 1000, 0o750), "mode 0750"),
            (info(PathKind::Dir, 1000, 0o701), "mode 0701"),
        ];
        for (i, want) in bad {
            let p = private_dir_problem(&i, 1000).unwrap_or_else(|| panic!("{i:?} passed"));
            assert!(p.contains(want), "{i:?}: {p}");
        }
        assert_eq!(private_dir_problem(&info(PathKind::Dir, 0, 0o700), 0), None);
    }

    #[test]
    fn only_a_socket_of_our_own_is_connected_to_or_replaced() {
        assert_eq!(
            socket_file_problem(&info(PathKind::Socket, 1000, 0o600), 1000),
            None
        );
        assert_eq!(
            socket_file_problem(&info(PathKind::Socket, 0, 0o600), 0),
            None
        );
        let bad = [
            (info(PathKind::Symlink, 1000, 0o777), 1000, "symbolic link"),
            // a symlink is refused whoever made it, root included
            (info(PathKind::Symlink, 0, 0o777), 0, "symbolic link"),
            (
                info(PathKind::Socket, 65534, 0o777),
                1000,
                "owned by uid 65534",
            ),
            (
                info(PathKind::Socket, 65534, 0o777),
                0,
                "owned by uid 65534",
            ),
            (info(PathKind::Socket, 0, 0o600), 1000, "owned by uid 0"),
            (info(PathKind::Other, 1000, 0o644), 1000, "not a socket"),
            (info(PathKind::Dir, 1000, 0o700), 1000, "directory"),
        ];
        for (i, euid, want) in bad {
            let p = socket_file_problem(&i, euid).unwrap_or_else(|| panic!("{i:?} passed"));
            assert!(p.contains(want), "{i:?} as {euid}: {p}");
        }
    }

    #[test]
    fn every_directory_on_the_path_must_be_unchangeable_by_others() {
        for (ok, last) in [
            (info(PathKind::Dir, 1000, 0o700), true),
            (info(PathKind::Dir, 1000, 0o755), true),
            // root's /run, /: only root can change them
            (info(PathKind::Dir, 0, 0o755), true),
            (info(PathKind::Dir, 0, 0o755), false),
            // /tmp above the socket's directory: sticky, so our entry in it stays ours
            (info(PathKind::Dir, 0, 0o1777), false),
        ] {
            assert_eq!(
                path_dir_problem(&ok, last, 1000),
                None,
                "{ok:?} last={last}"
            );
        }
        let bad = [
            (info(PathKind::Dir, 1000, 0o1777), true, "mode 1777"),
            (info(PathKind::Dir, 0, 0o1777), true, "mode 1777"),
            (info(PathKind::Dir, 1000, 0o770), true, "mode 0770"),
            (info(PathKind::Dir, 1000, 0o702), true, "mode 0702"),
            // writable by others and not sticky: they could rename the next directory
            (info(PathKind::Dir, 0, 0o777), false, "mode 0777"),
            (
                info(PathKind::Dir, 65534, 0o700),
                true,
                "owned by uid 65534",
            ),
            (
                info(PathKind::Dir, 65534, 0o755),
                false,
                "owned by uid 65534",
            ),
            (info(PathKind::Symlink, 1000, 0o777), false, "symbolic link"),
            (info(PathKind::Symlink, 0, 0o777), true, "symbolic link"),
            (info(PathKind::Other, 1000, 0o700), true, "not a directory"),
        ];
        for (i, last, want) in bad {
            let p = path_dir_problem(&i, last, 1000)
                .unwrap_or_else(|| panic!("{i:?} last={last} passed"));
            assert!(p.contains(want), "{i:?}: {p}");
        }
    }

    #[test]
    fn paths_are_made_absolute_and_dot_dot_resolved_as_text() {
        assert_eq!(
            normalise(Path::new("/tmp/../tmp/./rotagate-1/x.sock")).unwrap(),
            Path::new("/tmp/rotagate-1/x.sock")
        );
        assert_eq!(normalise(Path::new("/../a")).unwrap(), Path::new("/a"));
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            normalise(Path::new("up.sock")).unwrap(),
            cwd.join("up.sock")
        );
    }

    /// Listening, replacing and taking over at `path` all fail, naming the path and
    /// `want`.
    async fn refused_every_way(path: &Path, want: &str) {
        let name = path.display().to_string();
        let errors = [
            UpgradeSocket::bind(path).await.unwrap_err(),
            UpgradeSocket::replace(path).unwrap_err(),
            take_over(path, "127.0.0.1:0".parse().unwrap())
                .await
                .unwrap_err(),
        ];
        for e in errors {
            assert!(e.contains(want) && e.contains(&name), "{want}: {e}");
        }
    }

    /// Red team (third round): a symlink anywhere on the path could be re-pointed
    /// between the check and the use, to another instance's directory or a shared one:
    /// refused wherever it is, and nothing is made or connected to through it.
    #[tokio::test]
    async fn a_symlinked_directory_on_the_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let other = UpgradeSocket::bind(&real.join("up.sock")).await.unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        refused_every_way(&link.join("up.sock"), "symbolic link").await;
        // and deeper: a symlinked directory above the socket's directory
        std::fs::create_dir(real.join("sub")).unwrap();
        let e = UpgradeSocket::bind(&link.join("sub").join("x.sock"))
            .await
            .unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(!real.join("sub/x.sock").exists());
        // the other instance's socket is untouched
        let meta = std::fs::symlink_metadata(real.join("up.sock")).unwrap();
        assert_eq!(PathInfo::from(&meta).kind, PathKind::Socket);
        other.remove();
    }

    /// Red team R1/R4: in a directory others can write to (a shared `/tmp`-like one),
    /// the upgrade socket is neither listened on, replaced nor connected to; however
    /// the path is spelt, the check is of the directory it names.
    #[tokio::test]
    async fn an_upgrade_socket_in_a_shared_directory_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let path = shared.join("up.sock");
        refused_every_way(&path, "mode 1777").await;
        assert!(!path.exists());
        // spelt another way, the same directory
        let odd = shared.join("..").join("shared").join("up.sock");
        let e = UpgradeSocket::bind(&odd).await.unwrap_err();
        assert!(e.contains("mode 1777"), "{e}");
        // a private one is fine, and the socket is the owner's alone from the start
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o700)).unwrap();
        let up = UpgradeSocket::bind(&odd).await.unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(PathInfo::from(&meta).kind, PathKind::Socket);
        assert_eq!(meta.mode() & 0o7777, 0o600);
        up.remove();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_symlink_or_a_plain_file_at_the_path_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.sock");
        let _real = UpgradeSocket::bind(&real).await.unwrap();
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = take_over(&link, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap_err();
        assert!(
            e.contains("symbolic link") && e.contains("link.sock"),
            "{e}"
        );
        let e = UpgradeSocket::bind(&link).await.unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        let e = UpgradeSocket::replace(&link).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());

        // too long once absolute: refused before anything is unlinked
        let deep = dir.path().join("d".repeat(MAX_UNIX_SOCKET_PATH));
        let e = UpgradeSocket::bind(&deep.join("up.sock"))
            .await
            .unwrap_err();
        assert!(e.contains("bytes long"), "{e}");

        let file = dir.path().join("notes.txt");
        std::fs::write(&file, "keep me").unwrap();
        let e = UpgradeSocket::replace(&file).unwrap_err();
        assert!(e.contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }

    #[test]
    fn the_default_path_is_in_a_directory_of_our_own() {
        let euid = rustix::process::geteuid().as_raw();
        assert_eq!(
            default_upgrade_socket(),
            Path::new(&format!("/tmp/rotagate-{euid}/upgrade.sock"))
        );
        vet(&default_upgrade_socket()).unwrap();
        let meta = std::fs::symlink_metadata(default_upgrade_dir()).unwrap();
        assert_eq!(private_dir_problem(&PathInfo::from(&meta), euid), None);
    }
}
