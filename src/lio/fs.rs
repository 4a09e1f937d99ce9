//! The few filesystem calls the configfs backend makes, behind a trait.
//!
//! The same backend code then runs on the kernel's configfs ([`RealFs`]) and, in
//! tests, on the in-memory fake that reproduces the kernel's semantics and through
//! the fault-injecting wrappers (both in the `sbps-testkit` crate, never shipped). Paths are absolute; errors are plain `io::Error`s carrying the
//! kernel's errno so the backend can map each one to a specific [`super::LioError`].

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::LioError;

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

    /// Reads the files `names` of the directory `dir` (each answer in the order asked).
    /// The error is the directory's; a file's own error is its answer.
    ///
    /// The kernel's filesystem reads them through one handle on `dir`: a storage object
    /// has some fifty attribute files, and walking the whole path to each was most of
    /// what a dump cost (reading by path took three times as long in the test VM).
    fn read_each(&self, dir: &Path, names: &[&str]) -> io::Result<Vec<io::Result<String>>> {
        self.metadata(dir)?;
        Ok(names.iter().map(|n| self.read(&dir.join(n))).collect())
    }

    /// Every regular file of `dir` that is readable and writable by its owner, sorted
    /// by name, with its text: rtslib's rule for what an object's `attributes` are. A
    /// file's own error (it went, it cannot be read) is its answer; the error is the
    /// directory's. Through one handle on `dir`, as [`Fs::read_each`].
    fn read_owner_rw(&self, dir: &Path) -> io::Result<Vec<(String, io::Result<String>)>> {
        let mut out = Vec::new();
        for e in self.read_dir(dir)? {
            if e.kind != FileKind::File {
                continue;
            }
            let p = dir.join(&e.name);
            let text = match self.metadata(&p) {
                Ok(m) if m.mode & 0o600 != 0o600 => continue,
                Ok(_) => self.read(&p),
                Err(e) => Err(e),
            };
            out.push((e.name, text));
        }
        Ok(out)
    }
}

/// The files of `dir` read through one handle on it ([`Fs::read_each`]), each given as
/// (what the read is, for an error, and its path under `dir`).
pub(crate) fn read_files<F: Fs + ?Sized, const N: usize>(
    fs: &F,
    dir: &Path,
    files: [(&'static str, &str); N],
) -> Result<[String; N], LioError> {
    let names = files.map(|(_, name)| name);
    let first = files.first().map_or("read", |(what, _)| *what);
    let texts = fs
        .read_each(dir, &names)
        .map_err(|e| LioError::from_io(first, dir, e))?;
    let mut out = Vec::with_capacity(N);
    for ((what, name), text) in files.iter().zip(texts) {
        out.push(text.map_err(|e| LioError::from_io(what, &dir.join(name), e))?);
    }
    out.try_into().map_err(|v: Vec<String>| {
        let e = io::Error::other(format!("{} answers for {N} files", v.len()));
        LioError::from_io(first, dir, e)
    })
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
            fn read_each(&self, d: &Path, n: &[&str]) -> io::Result<Vec<io::Result<String>>> {
                (**self).read_each(d, n)
            }
            fn read_owner_rw(&self, d: &Path) -> io::Result<Vec<(String, io::Result<String>)>> {
                (**self).read_owner_rw(d)
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
        use rustix::fs::{Mode, OFlags};
        read_whole(&rustix::fs::open(
            p,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
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
    fn read_each(&self, dir: &Path, names: &[&str]) -> io::Result<Vec<io::Result<String>>> {
        let d = open_dir(dir)?;
        Ok(names.iter().map(|n| read_at(&d, n)).collect())
    }
    fn read_owner_rw(&self, dir: &Path) -> io::Result<Vec<(String, io::Result<String>)>> {
        use rustix::fs::{statat, AtFlags, FileType};
        let d = open_dir(dir)?;
        let mut names = Vec::new();
        for e in rustix::fs::Dir::read_from(&d)? {
            let e = e?;
            let name = e.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(String::from_utf8_lossy(name).into_owned());
            }
        }
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let text = match statat(&d, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile => continue,
                Ok(st) if st.st_mode & 0o600 != 0o600 => continue,
                Ok(_) => read_at(&d, &name),
                Err(e) => Err(e.into()),
            };
            out.push((name, text));
        }
        Ok(out)
    }
}

/// A handle on the directory `dir` for the reads relative to it.
fn open_dir(dir: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The whole text of the file `name` of the directory `dir`, as [`RealFs::read`] reads
/// a path.
fn read_at(dir: &std::os::fd::OwnedFd, name: &str) -> io::Result<String> {
    use rustix::fs::{Mode, OFlags};
    read_whole(&rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// The whole text of an open file (lossy UTF-8), read in page-sized calls to the end,
/// without the size query std's `read_to_end` makes first (an attribute file is at
/// most a page).
fn read_whole(f: &std::os::fd::OwnedFd) -> io::Result<String> {
    let mut buf = Vec::new();
    let mut page = [0u8; 4096];
    loop {
        match rustix::io::read(f, &mut page) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&page[..n]),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
