//! [`ByPath`]: any [`Fs`] read the way the trait reads by default, one whole path per
//! file, to hold an `Fs`'s own batched reads ([`Fs::read_each`], [`Fs::read_owner_rw`],
//! which the kernel's filesystem does through a directory handle) to the same answers.

use std::io;
use std::path::{Path, PathBuf};

use sbps_marshal::lio::fs::{Entry, Fs, Meta};

/// `inner` with the trait's path-based reads: every call but those two passed on.
pub struct ByPath<F>(pub F);

impl<F: Fs> Fs for ByPath<F> {
    fn mkdir(&self, p: &Path) -> io::Result<()> {
        self.0.mkdir(p)
    }
    fn rmdir(&self, p: &Path) -> io::Result<()> {
        self.0.rmdir(p)
    }
    fn read(&self, p: &Path) -> io::Result<String> {
        self.0.read(p)
    }
    fn write(&self, p: &Path, d: &str) -> io::Result<()> {
        self.0.write(p, d)
    }
    fn symlink(&self, t: &Path, l: &Path) -> io::Result<()> {
        self.0.symlink(t, l)
    }
    fn readlink(&self, p: &Path) -> io::Result<PathBuf> {
        self.0.readlink(p)
    }
    fn unlink(&self, p: &Path) -> io::Result<()> {
        self.0.unlink(p)
    }
    fn read_dir(&self, p: &Path) -> io::Result<Vec<Entry>> {
        self.0.read_dir(p)
    }
    fn metadata(&self, p: &Path) -> io::Result<Meta> {
        self.0.metadata(p)
    }
}
