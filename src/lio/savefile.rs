//! saveconfig.json written piece by piece: the text given and byte ranges of the file it
//! replaces go straight into the temporary file, so neither the old file nor the new
//! text (megabytes at thousands of objects) is ever held whole in memory.
//!
//! One pass over the old file does all that needs its bytes: the ranges copied, the
//! digest that tells whether it is still the text [`super::saved`] wrote last (read
//! to its end, so a file changed anywhere is noticed), and the gzip of targetcli's
//! backup. The new file's digest is taken in the same blocks as it is written, so
//! "nothing changed" is known without keeping either text; it is then confirmed byte
//! for byte.

use std::collections::hash_map::RandomState;
use std::fs::File;
use std::hash::BuildHasher;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::Path;

use super::saveconfig;
use super::LioError;

/// A piece of the new text: given, a byte range of the file it replaces, or made by the
/// caller when its turn comes (a storage object dumped from the kernel: a whole dump's
/// pieces are then never all held at once).
pub(crate) enum Segment<'a> {
    Text(&'a str),
    Old(Range<usize>),
    Made(usize),
}

/// What the file holds after [`write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Written {
    /// Whether it was replaced (false: it already held exactly this text).
    pub(crate) changed: bool,
    pub(crate) len: usize,
    /// See [`Digest`].
    pub(crate) digest: u64,
}

/// Writes the `segments` to `path` (temp file, fsync, rename), only if that changes
/// it, after targetcli's backup of the old file. `expect` is the length and digest the
/// old file must have for its ranges to be copied: when it has others (someone else
/// wrote it), or a range is not in it, nothing is written and the answer is `None`.
/// `state` keys the digests (the same for the old file and the new).
pub(crate) fn write(
    path: &Path,
    segments: &[Segment<'_>],
    expect: Option<(usize, u64)>,
    state: &RandomState,
    max_backups: usize,
) -> Result<Option<Written>, LioError> {
    let none = |_| {
        Err(LioError::Saveconfig {
            path: path.to_path_buf(),
            detail: "a made segment without a maker".into(),
        })
    };
    Ok(write_made(path, segments, none, expect, state, max_backups)?.map(|(w, _)| w))
}

/// [`write`] with [`Segment::Made`] pieces: `make(i)` gives the text of `Made(i)` as it is
/// written; its error stops the write (nothing replaced) and is the answer. Also returns
/// where each segment starts in the new text, then its length (`segments.len() + 1`
/// offsets), since the made pieces' lengths are known only then.
pub(crate) fn write_made(
    path: &Path,
    segments: &[Segment<'_>],
    mut make: impl FnMut(usize) -> Result<String, LioError>,
    expect: Option<(usize, u64)>,
    state: &RandomState,
    max_backups: usize,
) -> Result<Option<(Written, Vec<usize>)>, LioError> {
    let serr = |detail: String| LioError::Saveconfig {
        path: path.to_path_buf(),
        detail,
    };
    let old = match File::open(path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(serr(format!("cannot read: {e}"))),
    };
    if old.is_none() && expect.is_some() {
        return Ok(None);
    }
    let backup = match &old {
        Some(f) if max_backups > 0 => {
            let len = f
                .metadata()
                .map_err(|e| serr(format!("cannot read: {e}")))?
                .len();
            !saveconfig::newest_backup_holds(path, len)
                .map_err(|e| serr(format!("backup failed: {e}")))?
        }
        _ => false,
    };
    let had_old = old.is_some();
    let mut outcome = None;
    let mut failed = None;
    let mut starts = Vec::with_capacity(segments.len() + 1);
    let t0 = std::time::Instant::now();
    let mut pass = std::time::Duration::ZERO;
    let written = crate::atomic_file::write_with(path, 0o600, |tmp| {
        let mut out = Out::new(tmp, state);
        let mut src = Source::new(old, state, backup);
        for s in segments {
            starts.push(out.offset());
            let copied = match s {
                Segment::Text(t) => out.put(t.as_bytes()).map(|()| true)?,
                Segment::Old(r) => src.copy(r.clone(), &mut out)?,
                Segment::Made(i) => match make(*i) {
                    Ok(t) => out.put(t.as_bytes()).map(|()| true)?,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                },
            };
            if !copied {
                return Ok(None);
            }
        }
        starts.push(out.offset());
        let (len, digest) = out.finish()?;
        let (old_len, old_digest, gz) = src.finish()?;
        pass = t0.elapsed();
        if expect.is_some_and(|e| e != (old_len, old_digest)) {
            return Ok(None);
        }
        let same = had_old && len == old_len && digest == old_digest && same_bytes(tmp, path)?;
        outcome = Some(Written {
            changed: !same,
            len,
            digest,
        });
        if same {
            return Ok(None);
        }
        if let Some(gz) = gz {
            saveconfig::store_backup(path, &gz, max_backups)
                .map_err(|e| io::Error::other(format!("backup failed: {e}")))?;
        }
        Ok(Some(()))
    })
    .map_err(|e| serr(format!("cannot write: {e}")))?;
    if let Some(e) = failed {
        return Err(e);
    }
    if written.is_some() {
        tracing::info!(path = %path.display(), "saveconfig.json written");
    }
    // What the pass over both files and the rest (backup, fsync, rename) took.
    tracing::debug!(
        pass_ms = pass.as_secs_f64() * 1e3,
        total_ms = t0.elapsed().as_secs_f64() * 1e3,
        backup,
        "saveconfig.json pass"
    );
    Ok(outcome.map(|w| (w, starts)))
}

/// Whether `tmp` (just written) holds exactly the bytes of the file at `path`.
fn same_bytes(tmp: &mut File, path: &Path) -> io::Result<bool> {
    tmp.seek(SeekFrom::Start(0))?;
    let mut old = File::open(path)?;
    let (mut a, mut b) = (vec![0u8; BLOCK], vec![0u8; BLOCK]);
    loop {
        let n = read_full(tmp, &mut a)?;
        let m = read_full(&mut old, &mut b)?;
        if a[..n] != b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends; the count read.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The digest is taken over blocks of this size at the same offsets in the file read
/// and the file written, whatever pieces either comes in.
const BLOCK: usize = 64 * 1024;

/// A keyed 64-bit digest of a file's bytes, block by block.
struct Digest<'a> {
    state: &'a RandomState,
    value: u64,
}

impl Digest<'_> {
    fn add(&mut self, block: &[u8]) {
        self.value = self.state.hash_one((self.value, block));
    }
}

/// The new file, written a block at a time.
struct Out<'a> {
    file: &'a mut File,
    buf: Vec<u8>,
    digest: Digest<'a>,
    len: usize,
}

impl<'a> Out<'a> {
    fn new(file: &'a mut File, state: &'a RandomState) -> Out<'a> {
        Out {
            file,
            buf: Vec::with_capacity(BLOCK),
            digest: Digest { state, value: 0 },
            len: 0,
        }
    }

    fn put(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let k = (BLOCK - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..k]);
            bytes = &bytes[k..];
            if self.buf.len() == BLOCK {
                self.block()?;
            }
        }
        Ok(())
    }

    /// Where the next byte goes in the new text.
    fn offset(&self) -> usize {
        self.len + self.buf.len()
    }

    fn block(&mut self) -> io::Result<()> {
        self.digest.add(&self.buf);
        self.file.write_all(&self.buf)?;
        self.len += self.buf.len();
        self.buf.clear();
        Ok(())
    }

    /// The length and digest of what was written.
    fn finish(mut self) -> io::Result<(usize, u64)> {
        if !self.buf.is_empty() {
            self.block()?;
        }
        Ok((self.len, self.digest.value))
    }
}

/// The old file, read once from start to end a block at a time: each block digested
/// and, when a backup is due, compressed; ranges copied out of it in increasing order.
struct Source<'a> {
    file: Option<File>,
    buf: Vec<u8>,
    /// The offset of `buf[0]`.
    at: usize,
    /// Where the next copy may start.
    cursor: usize,
    digest: Digest<'a>,
    gz: Option<flate2::write::GzEncoder<Vec<u8>>>,
}

impl<'a> Source<'a> {
    fn new(file: Option<File>, state: &'a RandomState, backup: bool) -> Source<'a> {
        // Backups are read by people and `targetcli restoreconfig`, any level of gzip:
        // the fastest keeps a save of thousands of objects cheap.
        let gz = (backup && file.is_some())
            .then(|| flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        Source {
            file,
            buf: Vec::with_capacity(BLOCK),
            at: 0,
            cursor: 0,
            digest: Digest { state, value: 0 },
            gz,
        }
    }

    /// The next block; false at the end of the file.
    fn load(&mut self) -> io::Result<bool> {
        self.at += self.buf.len();
        self.buf.resize(BLOCK, 0);
        let n = match &mut self.file {
            Some(f) => read_full(f, &mut self.buf)?,
            None => 0,
        };
        self.buf.truncate(n);
        if n == 0 {
            return Ok(false);
        }
        self.digest.add(&self.buf);
        if let Some(gz) = &mut self.gz {
            gz.write_all(&self.buf)?;
        }
        Ok(true)
    }

    /// Copies `r` of the old file to `out`; false when it is not there (before a range
    /// already copied, or past the end).
    fn copy(&mut self, r: Range<usize>, out: &mut Out<'_>) -> io::Result<bool> {
        if r.start < self.cursor {
            return Ok(false);
        }
        self.cursor = r.start;
        while self.cursor < r.end {
            while self.cursor >= self.at + self.buf.len() {
                if !self.load()? {
                    return Ok(false);
                }
            }
            let i = self.cursor - self.at;
            let k = (r.end - self.cursor).min(self.buf.len() - i);
            out.put(&self.buf[i..i + k])?;
            self.cursor += k;
        }
        Ok(true)
    }

    /// Reads the rest: the old file's length, digest and gzip (when a backup is due).
    fn finish(mut self) -> io::Result<(usize, u64, Option<Vec<u8>>)> {
        while self.load()? {}
        let gz = self.gz.take().map(|g| g.finish()).transpose()?;
        Ok((self.at, self.digest.value, gz))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gunzip(p: &Path) -> String {
        let mut s = String::new();
        flate2::read::GzDecoder::new(File::open(p).unwrap())
            .read_to_string(&mut s)
            .unwrap();
        s
    }

    #[test]
    fn ranges_copied_unchanged_kept_foreign_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("saveconfig.json");
        let state = RandomState::new();
        // Bigger than a block, so ranges straddle blocks.
        let big = "x".repeat(BLOCK + 17);
        let text = format!("[{big}|abc]");
        let first = write(&p, &[Segment::Text(&text)], None, &state, 2)
            .unwrap()
            .unwrap();
        assert!(first.changed);
        assert!(saveconfig::backups(&p).is_empty(), "no old file, no backup");
        let at = (first.len, first.digest);
        // The same text again: nothing written, no backup, same digest.
        let again = [Segment::Old(0..1), Segment::Text(&text[1..])];
        let w = write(&p, &again, Some(at), &state, 2).unwrap().unwrap();
        assert_eq!(
            w,
            Written {
                changed: false,
                ..first
            }
        );
        assert!(saveconfig::backups(&p).is_empty());
        // Ranges of the old file around a new piece; the old one backed up.
        let end = text.len();
        let patched = [
            Segment::Old(0..BLOCK + 18),
            Segment::Text("|new|"),
            Segment::Old(BLOCK + 19..end),
        ];
        let w = write(&p, &patched, Some(at), &state, 2).unwrap().unwrap();
        let want = format!("[{big}|new|abc]");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), want);
        assert_eq!(w.len, want.len());
        let b = saveconfig::backups(&p);
        assert_eq!(b.len(), 1);
        assert_eq!(gunzip(&b[0]), text);
        // The digest is the one a whole write of that text gives.
        let other = dir.path().join("other.json");
        let whole = write(&other, &[Segment::Text(&want)], None, &state, 0)
            .unwrap()
            .unwrap();
        assert_eq!((whole.len, whole.digest), (w.len, w.digest));
        // Rewritten by someone else with the same length: refused, file untouched.
        let foreign = want.replace("new", "NEW");
        std::fs::write(&p, &foreign).unwrap();
        let again = [Segment::Old(0..3), Segment::Text("!")];
        assert_eq!(
            write(&p, &again, Some((w.len, w.digest)), &state, 2).unwrap(),
            None
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), foreign);
        // Ranges out of order or past the end are refused too.
        let at = (foreign.len(), whole.digest);
        let back = [Segment::Old(5..9), Segment::Old(0..2)];
        assert_eq!(write(&other, &back, Some(at), &state, 2).unwrap(), None);
        let past = [Segment::Old(0..want.len() + 1)];
        assert_eq!(write(&other, &past, Some(at), &state, 2).unwrap(), None);
        assert_eq!(std::fs::read_to_string(&other).unwrap(), want);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n.contains(".tmp-")), "{names:?}");
    }
}
