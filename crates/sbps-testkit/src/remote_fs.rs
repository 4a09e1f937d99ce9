//! The fake configfs in another process: an [`Fs`] whose calls go over a Unix socket
//! to a server holding the fake (wrapped in a [`Recorder`]).
//!
//! Why: the agent's peak RSS is what a worker node pays for it, and an in-process
//! fake kernel (every attribute of every backstore as strings in hash maps) weighs
//! four times the agent at 5,000 images. With the fake served from the benchmark's
//! parent, the child holds the agent alone. Each call is one round trip on a pooled
//! connection (one per concurrent caller), so parallel applies stay parallel.
//!
//! Framing: a u32 length, then the body. Request: an opcode byte and its strings,
//! each a u32 length and bytes. Answer: 0 and the payload, or 1, the errno (i32,
//! -1 for none) and the message.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::{FakeConfigfs, Recorder};
use sbps_marshal::lio::fs::{Entry, FileKind, Fs, Meta};

const MKDIR: u8 = 0;
const RMDIR: u8 = 1;
const READ: u8 = 2;
const WRITE: u8 = 3;
const SYMLINK: u8 = 4;
const READLINK: u8 = 5;
const UNLINK: u8 = 6;
const READ_DIR: u8 = 7;
const METADATA: u8 = 8;
// The recorder's controls (what the benchmark asks of the kernel, not the agent).
const WRITES: u8 = 20;
const START_RECORDING: u8 = 21;
const TAKE: u8 = 22;

/// The served kernel.
pub type Kernel = Recorder<FakeConfigfs>;

// ------------------------------------------------------------------- encoding

#[derive(Default)]
struct Out(Vec<u8>);

impl Out {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
        self
    }
    fn path(&mut self, p: &Path) -> &mut Self {
        self.bytes(p.as_os_str().as_bytes())
    }
}

struct In<'a>(&'a [u8]);

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "short message"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn path(&mut self) -> io::Result<&'a Path> {
        Ok(Path::new(OsStr::from_bytes(self.bytes()?)))
    }
    fn string(&mut self) -> io::Result<String> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }
}

fn send(s: &mut UnixStream, body: &[u8]) -> io::Result<()> {
    let mut m = Vec::with_capacity(4 + body.len());
    m.extend_from_slice(&(body.len() as u32).to_le_bytes());
    m.extend_from_slice(body);
    s.write_all(&m)
}

fn recv(s: &mut UnixStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    buf.resize(u32::from_le_bytes(len) as usize, 0);
    s.read_exact(buf)
}

fn kind_byte(k: FileKind) -> u8 {
    match k {
        FileKind::Dir => 0,
        FileKind::File => 1,
        FileKind::Symlink => 2,
    }
}

fn byte_kind(b: u8) -> FileKind {
    match b {
        0 => FileKind::Dir,
        1 => FileKind::File,
        _ => FileKind::Symlink,
    }
}

// --------------------------------------------------------------------- server

/// Serves `kernel` on a socket in `dir` (a thread per connection, for as long as the
/// process lives); returns the socket's path.
pub fn serve(kernel: Arc<Kernel>, dir: &Path) -> PathBuf {
    let sock = dir.join("configfs.sock");
    let l = UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            let k = kernel.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                while recv(&mut conn, &mut buf).is_ok() {
                    let answer = answer(&k, &buf);
                    if send(&mut conn, &answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    sock
}

fn answer(k: &Kernel, req: &[u8]) -> Vec<u8> {
    let mut o = Out::default();
    match call(k, &mut In(req), &mut o) {
        Ok(()) => {
            let mut ok = Out::default();
            ok.u8(0).0.extend_from_slice(&o.0);
            ok.0
        }
        Err(e) => {
            let mut err = Out::default();
            err.u8(1)
                .u32(e.raw_os_error().unwrap_or(-1) as u32)
                .bytes(e.to_string().as_bytes());
            err.0
        }
    }
}

fn call(k: &Kernel, r: &mut In, o: &mut Out) -> io::Result<()> {
    match r.u8()? {
        MKDIR => k.mkdir(r.path()?),
        RMDIR => k.rmdir(r.path()?),
        READ => {
            o.bytes(k.read(r.path()?)?.as_bytes());
            Ok(())
        }
        WRITE => {
            let p = r.path()?;
            let d = r.string()?;
            k.write(p, &d)
        }
        SYMLINK => {
            let t = r.path()?;
            k.symlink(t, r.path()?)
        }
        READLINK => {
            o.path(&k.readlink(r.path()?)?);
            Ok(())
        }
        UNLINK => k.unlink(r.path()?),
        READ_DIR => {
            let v = k.read_dir(r.path()?)?;
            o.u32(v.len() as u32);
            for e in v {
                o.bytes(e.name.as_bytes()).u8(kind_byte(e.kind)).u64(e.ino);
            }
            Ok(())
        }
        METADATA => {
            let m = k.metadata(r.path()?)?;
            o.u8(kind_byte(m.kind)).u32(m.mode);
            Ok(())
        }
        WRITES => {
            o.u64(k.writes() as u64);
            Ok(())
        }
        START_RECORDING => {
            k.start_recording();
            Ok(())
        }
        TAKE => {
            let v = k.take();
            o.u32(v.len() as u32);
            for l in v {
                o.bytes(l.as_bytes());
            }
            Ok(())
        }
        op => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unknown op {op}"),
        )),
    }
}

// --------------------------------------------------------------------- client

/// The client: an [`Fs`] on the served kernel, plus the recorder's controls.
pub struct RemoteFs {
    sock: PathBuf,
    idle: Mutex<Vec<UnixStream>>,
}

impl RemoteFs {
    pub fn new(sock: PathBuf) -> RemoteFs {
        RemoteFs {
            sock,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// One round trip; `read` decodes the payload of a success.
    fn rpc<T>(&self, req: &Out, read: impl FnOnce(&mut In) -> io::Result<T>) -> io::Result<T> {
        let pooled = self.idle.lock().unwrap().pop();
        let mut s = match pooled {
            Some(s) => s,
            None => UnixStream::connect(&self.sock)?,
        };
        send(&mut s, &req.0)?;
        let mut buf = Vec::new();
        recv(&mut s, &mut buf)?;
        self.idle.lock().unwrap().push(s);
        let mut r = In(&buf);
        if r.u8()? == 0 {
            return read(&mut r);
        }
        let errno = r.u32()? as i32;
        let msg = r.string()?;
        Err(if errno >= 0 {
            io::Error::from_raw_os_error(errno)
        } else {
            io::Error::other(msg)
        })
    }

    fn unit(&self, op: u8, p: &Path) -> io::Result<()> {
        self.rpc(Out::default().u8(op).path(p), |_| Ok(()))
    }

    /// The kernel's mutating calls so far.
    pub fn writes(&self) -> u64 {
        self.rpc(Out::default().u8(WRITES), |r| r.u64()).unwrap()
    }

    pub fn start_recording(&self) {
        self.rpc(Out::default().u8(START_RECORDING), |_| Ok(()))
            .unwrap()
    }

    pub fn take(&self) -> Vec<String> {
        self.rpc(Out::default().u8(TAKE), |r| {
            (0..r.u32()?).map(|_| r.string()).collect()
        })
        .unwrap()
    }
}

impl Fs for RemoteFs {
    fn mkdir(&self, p: &Path) -> io::Result<()> {
        self.unit(MKDIR, p)
    }
    fn rmdir(&self, p: &Path) -> io::Result<()> {
        self.unit(RMDIR, p)
    }
    fn read(&self, p: &Path) -> io::Result<String> {
        self.rpc(Out::default().u8(READ).path(p), |r| r.string())
    }
    fn write(&self, p: &Path, d: &str) -> io::Result<()> {
        self.rpc(Out::default().u8(WRITE).path(p).bytes(d.as_bytes()), |_| {
            Ok(())
        })
    }
    fn symlink(&self, t: &Path, l: &Path) -> io::Result<()> {
        self.rpc(Out::default().u8(SYMLINK).path(t).path(l), |_| Ok(()))
    }
    fn readlink(&self, p: &Path) -> io::Result<PathBuf> {
        self.rpc(Out::default().u8(READLINK).path(p), |r| {
            Ok(r.path()?.to_path_buf())
        })
    }
    fn unlink(&self, p: &Path) -> io::Result<()> {
        self.unit(UNLINK, p)
    }
    fn read_dir(&self, p: &Path) -> io::Result<Vec<Entry>> {
        self.rpc(Out::default().u8(READ_DIR).path(p), |r| {
            (0..r.u32()?)
                .map(|_| {
                    Ok(Entry {
                        name: r.string()?,
                        kind: byte_kind(r.u8()?),
                        ino: r.u64()?,
                    })
                })
                .collect()
        })
    }
    fn metadata(&self, p: &Path) -> io::Result<Meta> {
        self.rpc(Out::default().u8(METADATA).path(p), |r| {
            Ok(Meta {
                kind: byte_kind(r.u8()?),
                mode: r.u32()?,
            })
        })
    }
}
