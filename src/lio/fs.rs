//! The few filesystem calls the configfs backend makes, behind a trait.
//!
//! The same backend code then runs on the kernel's configfs ([`RealFs`]), on the
//! in-memory fake that reproduces the kernel's semantics (`fake::FakeConfigfs`), and
//! through [`Faulty`], which stops after the k-th change to test crash consistency
//! on either. Paths are absolute; errors are plain `io::Error`s carrying the
//! kernel's errno so the backend can map each one to a specific [`super::LioError`].

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: Kind,
    /// The inode number `readdir` reports (`d_ino`); 0 when unknown. configfs keeps the
    /// inodes of directories and links for as long as they exist and numbers each new
    /// one afresh: an entry seen again with its number is the same object, not one
    /// removed and made again under that name (attribute files are numbered anew at
    /// every listing, so their numbers say nothing).
    pub ino: u64,
}

/// `lstat` of an entry: its kind and permission bits (saveconfig dumps only the
/// attribute files that are readable *and* writable, as rtslib does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    pub mode: u32,
}

/// The filesystem operations used on configfs. Writes are one `write(2)` each,
/// because configfs attribute stores see exactly one buffer per call.
pub trait Fs: Send + Sync {
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// Reads a whole attribute file (lossy UTF-8).
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Writes `data` with a single write to an existing file (no create, no truncate).
    fn write(&self, path: &Path, data: &str) -> io::Result<()>;
    /// Creates `link` pointing at `target`.
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    fn readlink(&self, path: &Path) -> io::Result<PathBuf>;
    /// Removes a symlink.
    fn unlink(&self, path: &Path) -> io::Result<()>;
    /// The entries of a directory, sorted by name.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<Entry>>;
    /// `lstat`.
    fn metadata(&self, path: &Path) -> io::Result<Meta>;

    fn exists(&self, path: &Path) -> bool {
        self.metadata(path).is_ok()
    }
}

/// Forwards every call to the inner `Fs` (for `Arc<dyn Fs>` and `&F`).
macro_rules! forward_fs {
    ($($t:tt)*) => {
        $($t)* {
            fn mkdir(&self, p: &Path) -> io::Result<()> {
                (**self).mkdir(p)
            }
            fn rmdir(&self, p: &Path) -> io::Result<()> {
                (**self).rmdir(p)
            }
            fn read(&self, p: &Path) -> io::Result<String> {
                (**self).read(p)
            }
            fn write(&self, p: &Path, d: &str) -> io::Result<()> {
                (**self).write(p, d)
            }
            fn symlink(&self, t: &Path, l: &Path) -> io::Result<()> {
                (**self).symlink(t, l)
            }
            fn readlink(&self, p: &Path) -> io::Result<PathBuf> {
                (**self).readlink(p)
            }
            fn unlink(&self, p: &Path) -> io::Result<()> {
                (**self).unlink(p)
            }
            fn read_dir(&self, p: &Path) -> io::Result<Vec<Entry>> {
                (**self).read_dir(p)
            }
            fn metadata(&self, p: &Path) -> io::Result<Meta> {
                (**self).metadata(p)
            }
        }
    };
}

forward_fs!(impl<T: Fs + ?Sized> Fs for std::sync::Arc<T>);
forward_fs!(impl<T: Fs + ?Sized> Fs for &T);

/// The real filesystem (the kernel's configfs at `/sys/kernel/config/target`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

fn kind_of(ft: fs::FileType) -> Kind {
    if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_dir() {
        Kind::Dir
    } else {
        Kind::File
    }
}

impl Fs for RealFs {
    fn mkdir(&self, p: &Path) -> io::Result<()> {
        fs::create_dir(p)
    }
    fn rmdir(&self, p: &Path) -> io::Result<()> {
        fs::remove_dir(p)
    }
    fn read(&self, p: &Path) -> io::Result<String> {
        let mut buf = Vec::new();
        fs::File::open(p)?.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
    fn write(&self, p: &Path, d: &str) -> io::Result<()> {
        let mut f = fs::OpenOptions::new().write(true).open(p)?;
        let n = f.write(d.as_bytes())?;
        if n != d.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write to configfs ({n} of {} bytes)", d.len()),
            ));
        }
        Ok(())
    }
    fn symlink(&self, t: &Path, l: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(t, l)
    }
    fn readlink(&self, p: &Path) -> io::Result<PathBuf> {
        fs::read_link(p)
    }
    fn unlink(&self, p: &Path) -> io::Result<()> {
        fs::remove_file(p)
    }
    fn read_dir(&self, p: &Path) -> io::Result<Vec<Entry>> {
        let mut v = Vec::new();
        for e in fs::read_dir(p)? {
            let e = e?;
            v.push(Entry {
                name: e.file_name().to_string_lossy().into_owned(),
                kind: kind_of(e.file_type()?),
                ino: std::os::unix::fs::DirEntryExt::ino(&e),
            });
        }
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }
    fn metadata(&self, p: &Path) -> io::Result<Meta> {
        use std::os::unix::fs::PermissionsExt;
        let m = fs::symlink_metadata(p)?;
        Ok(Meta {
            kind: kind_of(m.file_type()),
            mode: m.permissions().mode() & 0o7777,
        })
    }
}

/// The [`Fs`] of a wrapper (`inner: F`) that calls `self.$hook(verb, path)?` before
/// each mutating call and passes every call on to `inner`.
macro_rules! intercept_changes {
    ($wrapper:ident, $hook:ident) => {
        impl<F: Fs> Fs for $wrapper<F> {
            fn mkdir(&self, p: &Path) -> io::Result<()> {
                self.$hook("mkdir", p)?;
                self.inner.mkdir(p)
            }
            fn rmdir(&self, p: &Path) -> io::Result<()> {
                self.$hook("rmdir", p)?;
                self.inner.rmdir(p)
            }
            fn read(&self, p: &Path) -> io::Result<String> {
                self.inner.read(p)
            }
            fn write(&self, p: &Path, d: &str) -> io::Result<()> {
                self.$hook("write", p)?;
                self.inner.write(p, d)
            }
            fn symlink(&self, t: &Path, l: &Path) -> io::Result<()> {
                self.$hook("symlink", l)?;
                self.inner.symlink(t, l)
            }
            fn readlink(&self, p: &Path) -> io::Result<PathBuf> {
                self.inner.readlink(p)
            }
            fn unlink(&self, p: &Path) -> io::Result<()> {
                self.$hook("unlink", p)?;
                self.inner.unlink(p)
            }
            fn read_dir(&self, p: &Path) -> io::Result<Vec<Entry>> {
                self.inner.read_dir(p)
            }
            fn metadata(&self, p: &Path) -> io::Result<Meta> {
                self.inner.metadata(p)
            }
        }
    };
}

/// What [`Faulty`] does once its budget of changes is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// The next change fails once with EIO; later ones succeed (a transient error:
    /// exercises the backend's rollback).
    FailOnce,
    /// Every later change fails with EIO, reads still work: the process "died" at
    /// that point and nothing it would have done next (not even a rollback) happens.
    Crash,
}

/// Wraps an [`Fs`] and lets the first `budget` mutating calls through.
#[derive(Debug)]
pub struct Faulty<F> {
    inner: F,
    budget: usize,
    mode: FaultMode,
    calls: AtomicUsize,
}

impl<F: Fs> Faulty<F> {
    pub fn new(inner: F, budget: usize, mode: FaultMode) -> Self {
        Faulty {
            inner,
            budget,
            mode,
            calls: AtomicUsize::new(0),
        }
    }

    /// An unlimited budget: only counts the mutating calls.
    pub fn counting(inner: F) -> Self {
        Self::new(inner, usize::MAX, FaultMode::Crash)
    }

    /// Mutating calls attempted so far (including refused ones).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn gate(&self, what: &str, p: &Path) -> io::Result<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let refused = match self.mode {
            FaultMode::FailOnce => n == self.budget,
            FaultMode::Crash => n >= self.budget,
        };
        if refused {
            tracing::debug!(call = n + 1, what, path = %p.display(), "injected fault");
            return Err(io::Error::other(format!(
                "injected fault at change {} ({what})",
                n + 1
            )));
        }
        Ok(())
    }
}

intercept_changes!(Faulty, gate);

/// Wraps an [`Fs`] and counts its mutating calls ("kernel writes"), and records
/// each as `verb path-relative-to-root` while recording: which writes a change
/// makes, in order (contract tests, benchmarks).
#[derive(Debug)]
pub struct Recorder<F> {
    inner: F,
    root: PathBuf,
    writes: AtomicUsize,
    log: std::sync::Mutex<Option<Vec<String>>>,
}

impl<F: Fs> Recorder<F> {
    /// Counts and records from the start.
    pub fn new(inner: F, root: &Path) -> Self {
        let r = Self::counting(inner, root);
        r.start_recording();
        r
    }

    /// Counts only, until [`start_recording`](Self::start_recording) (a log of every
    /// write of a 5,000-image setup would weigh on what a benchmark measures).
    pub fn counting(inner: F, root: &Path) -> Self {
        Recorder {
            inner,
            root: root.to_path_buf(),
            writes: AtomicUsize::new(0),
            log: std::sync::Mutex::new(None),
        }
    }

    /// Records from now on, into an empty log.
    pub fn start_recording(&self) {
        if let Ok(mut log) = self.log.lock() {
            *log = Some(Vec::new());
        }
    }

    /// The calls recorded since the last `take` (recording goes on).
    pub fn take(&self) -> Vec<String> {
        self.log
            .lock()
            .ok()
            .and_then(|mut log| log.as_mut().map(std::mem::take))
            .unwrap_or_default()
    }

    /// Mutating calls so far.
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    fn record(&self, verb: &str, p: &Path) -> io::Result<()> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut log) = self.log.lock() {
            if let Some(log) = log.as_mut() {
                let rel = p.strip_prefix(&self.root).unwrap_or(p);
                log.push(format!("{verb} {}", rel.display()));
            }
        }
        Ok(())
    }
}

intercept_changes!(Recorder, record);
