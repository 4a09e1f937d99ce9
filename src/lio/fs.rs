//! The few filesystem calls the configfs backend makes, behind a trait.
//!
//! The same backend code then runs on the kernel's configfs ([`RealFs`]) and, in
//! tests, on the in-memory fake that reproduces the kernel's semantics and through
//! the fault-injecting wrappers (both in the `sbps-testkit` crate, never shipped). Paths are absolute; errors are plain `io::Error`s carrying the
//! kernel's errno so the backend can map each one to a specific [`super::LioError`].

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File,
    Symlink,
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: FileKind,
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
    pub kind: FileKind,
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

fn kind_of(ft: fs::FileType) -> FileKind {
    if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else {
        FileKind::File
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
