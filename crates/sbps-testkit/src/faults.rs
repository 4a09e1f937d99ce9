//! Wrappers of a [`Fs`] for tests: [`Faulty`] stops after the k-th change (crash
//! consistency, rollback), [`Recorder`] counts and logs the changes a step makes.
//!
//! Both wrap the fake configfs or the kernel's alike, so the contract suite asks the
//! same questions of either.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sbps_marshal::lio::fs::{Entry, Fs, Meta};

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
            fn read_each(&self, d: &Path, n: &[&str]) -> io::Result<Vec<io::Result<String>>> {
                self.inner.read_each(d, n)
            }
            fn read_owner_rw(&self, d: &Path) -> io::Result<Vec<(String, io::Result<String>)>> {
                self.inner.read_owner_rw(d)
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
