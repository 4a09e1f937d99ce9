//! saveconfig.json after a change, at the cost of the change: the file last written is
//! patched instead of dumping every attribute of every object again.
//!
//! What was last written is remembered as an index into the file: where each storage
//! object and each LUN of the managed TPG lies in it, with what the observation then
//! said of it (the backstore's inode and model; the LUN's directory and link inodes).
//! The next save copies from the file each object and LUN the observation vouches for
//! (see [`super::seen`]: the same object, as observed then) and dumps the others from
//! the kernel: the new, the replaced, the changed, each with all its attributes. The
//! pieces go straight into the new file (`lio::savefile`), which reads the old one
//! once to its end: if it is not exactly the text written (length and digest;
//! otherwise someone else wrote it, e.g. targetcli's own save after an administrator's
//! change), nothing is written and everything is dumped again. The rest, the targets and TPGs with their
//! attributes, parameters and portals, is small and is always dumped. The text is what
//! [`saveconfig::dump`] would give byte for byte (the tests compare them after every
//! kind of change).
//!
//! What no observation can vouch for is a value written in place on an object that is
//! otherwise unchanged: an attribute (`attrib/*`, a LUN's ALUA group) or `udev_path`
//! (which the agent writes once, at create). That reaches the file when the object
//! changes, when someone else rewrote the file, or at the first save of the process
//! (which dumps everything); targetcli itself saves the file after such a change.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::fs::{Entry, FileKind, Fs};
use super::layout::{self, Layout};
use super::model::{Backstore, BackstoreRef, Lun};
use super::saveconfig::{self, DumpedLun};
use super::savefile::{self, Segment};
use super::seen::Seen;
use super::LioError;

/// Stands for the managed TPG's LUN list in the text of the rest; the control characters
/// are escaped in the text (`\u0001`), so it is found at most once unless something in
/// LIO carries it too, and then the document is written whole.
const MARKER: &str = "\u{1}sbps-marshal: the managed TPG's LUNs\u{1}";

/// What the file last written holds, and where.
#[derive(Debug)]
pub(crate) struct Document {
    path: PathBuf,
    len: usize,
    hash: u64,
    hasher: std::collections::hash_map::RandomState,
    objects: Vec<ObjectPiece>,
    luns: Vec<LunPiece>,
}

#[derive(Debug)]
struct ObjectPiece {
    at: BackstoreRef,
    ino: u64,
    /// What the observation said of it when it was dumped (None: it could not say).
    value: Option<Arc<Backstore>>,
    range: Range<usize>,
}

#[derive(Debug)]
struct LunPiece {
    dir: u64,
    link: u64,
    lun: Lun,
    range: Range<usize>,
}

/// A piece of the new text: from the old file, dumped now, or dumped from this
/// directory when it is written (a whole dump's objects: never all held at once).
enum Text {
    Old(Range<usize>),
    New(String),
    Later(PathBuf),
}

/// Writes `path` for the state `seen` last observed (only if its text changes),
/// patching `prior` where it can. Returns whether it wrote, and what it now holds.
pub(crate) fn save<F: Fs + ?Sized>(
    fs: &F,
    at: &Layout,
    seen: &Seen,
    prior: Option<Document>,
    path: &Path,
) -> Result<(bool, Option<Document>), LioError> {
    let len = match std::fs::metadata(path) {
        Ok(m) => Some(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(LioError::Saveconfig {
                path: path.to_path_buf(),
                detail: format!("cannot read: {e}"),
            })
        }
    };
    // Its length first: a file of another length is not the one written (the digest,
    // taken as the file is read, tells the rest).
    let prior = prior.filter(|d| d.path == path && len == Some(d.len as u64));
    let hasher = prior.as_ref().map(|d| d.hasher.clone()).unwrap_or_default();
    let expect = prior.as_ref().map(|d| (d.len, d.hash));
    let t0 = std::time::Instant::now();
    let managed = Some((at.iqn(), at.tag(), Value::String(MARKER.into())));
    let rest = saveconfig::dump_targets(fs, at.root(), managed)?;
    let skeleton = saveconfig::to_text(&saveconfig::document(Vec::new(), rest));
    let spliced = Skeleton::of(&skeleton);
    let (objects, luns) = match (prior, &spliced) {
        (Some(d), Some(k)) => (
            patch_objects(fs, at, seen, d.objects)?,
            patch_luns(fs, at, seen, d.luns, k.lun_pad)?,
        ),
        (None, Some(k)) => (dump_objects(fs, at, seen)?, dump_luns(fs, at, k.lun_pad)?),
        (_, None) => (Vec::new(), Vec::new()),
    };
    let dumped = t0.elapsed();
    let laid = spliced.as_ref().and_then(|k| k.layout(&objects, &luns));
    let Some((segments, object_at, lun_at)) = laid else {
        // The LUN list has no single place in the rest (a TPG gone, or something in LIO
        // carries the marker): the whole document, nothing remembered.
        tracing::debug!(
            "saveconfig.json dumped whole: the managed TPG's LUNs have no single place"
        );
        let doc = saveconfig::to_text(&saveconfig::dump(fs, at.root())?);
        let segments = [Segment::Text(&doc)];
        let written = savefile::write(path, &segments, None, &hasher, saveconfig::MAX_BACKUPS)?;
        return Ok((written.is_some_and(|w| w.changed), None));
    };
    let make = |i: usize| match objects.get(i) {
        Some((p, Text::Later(dir))) => {
            Ok(fragment(&saveconfig::dump_so(fs, dir, &p.at)?, OBJECT_PAD))
        }
        _ => Err(LioError::Saveconfig {
            path: path.to_path_buf(),
            detail: format!("no storage object {i} to dump"),
        }),
    };
    let written = savefile::write_made(
        path,
        &segments,
        make,
        expect,
        &hasher,
        saveconfig::MAX_BACKUPS,
    )?;
    drop(segments);
    let copied = objects
        .iter()
        .filter(|(_, t)| matches!(t, Text::Old(_)))
        .count()
        + luns
            .iter()
            .filter(|(_, t)| matches!(t, Text::Old(_)))
            .count();
    tracing::debug!(
        dump_ms = dumped.as_secs_f64() * 1e3,
        total_ms = t0.elapsed().as_secs_f64() * 1e3,
        copied,
        dumped = objects.len() + luns.len() - copied,
        "saveconfig.json patched"
    );
    let Some((written, starts)) = written else {
        if expect.is_none() {
            return Err(LioError::Saveconfig {
                path: path.to_path_buf(),
                detail: "vanished while written".into(),
            });
        }
        // Someone else wrote the file since: everything dumped again.
        tracing::debug!("saveconfig.json is not the text last written: dumped whole");
        return save(fs, at, seen, None, path);
    };
    // Where segment `i` landed in the new text.
    let bytes = |i: usize| starts[i]..starts[i + 1];
    let place = |((mut p, _), i): ((ObjectPiece, Text), usize)| {
        p.range = bytes(i);
        p
    };
    let place_lun = |((mut p, _), i): ((LunPiece, Text), usize)| {
        p.range = bytes(i);
        p
    };
    let doc = Document {
        path: path.to_path_buf(),
        len: written.len,
        hash: written.digest,
        hasher,
        objects: objects.into_iter().zip(object_at).map(place).collect(),
        luns: luns.into_iter().zip(lun_at).map(place_lun).collect(),
    };
    Ok((written.changed, Some(doc)))
}

/// The storage objects of the last observation, each copied from the old text when the
/// observation vouches for it, dumped from the kernel otherwise.
fn patch_objects<F: Fs + ?Sized>(
    fs: &F,
    at: &Layout,
    seen: &Seen,
    prior: Vec<ObjectPiece>,
) -> Result<Vec<(ObjectPiece, Text)>, LioError> {
    let mut listed: Vec<(u64, &Arc<Backstore>)> = seen.listed().collect();
    listed.sort_by(|a, b| a.1.at.cmp(&b.1.at));
    // Both in the document's order: one walk pairs them.
    let mut prior = prior.into_iter().peekable();
    let mut out = Vec::with_capacity(listed.len());
    for (ino, value) in listed {
        while prior.next_if(|p| p.at < value.at).is_some() {}
        let same = prior
            .next_if(|p| p.at == value.at)
            .filter(|p| p.ino == ino && ino != 0 && p.value.as_ref() == Some(value));
        if let Some(p) = same {
            let text = Text::Old(p.range.clone());
            out.push((p, text));
            continue;
        }
        let v = saveconfig::dump_so(fs, &at.so_dir(&value.at), &value.at)?;
        let piece = ObjectPiece {
            at: value.at.clone(),
            ino,
            value: Some(value.clone()),
            range: 0..0,
        };
        out.push((piece, Text::New(fragment(&v, OBJECT_PAD))));
    }
    Ok(out)
}

/// Every storage object, to be dumped from the kernel as it is written, with what the
/// last observation said of it when it saw that very object.
fn dump_objects<F: Fs + ?Sized>(
    fs: &F,
    at: &Layout,
    seen: &Seen,
) -> Result<Vec<(ObjectPiece, Text)>, LioError> {
    let observed: rustc_hash::FxHashMap<&BackstoreRef, (u64, &Arc<Backstore>)> =
        seen.listed().map(|(ino, b)| (&b.at, (ino, b))).collect();
    let found = saveconfig::find_objects(fs, at.root())?;
    Ok(found
        .into_iter()
        .map(|o| {
            let value = observed
                .get(&o.at)
                .filter(|(ino, _)| *ino == o.ino)
                .map(|(_, b)| Arc::clone(b));
            let piece = ObjectPiece {
                at: o.at,
                ino: o.ino,
                value,
                range: 0..0,
            };
            (piece, Text::Later(o.dir))
        })
        .collect())
}

/// The managed TPG's LUNs of the last observation, each copied from the old text when
/// its directory and link are those dumped then, read from the kernel otherwise.
fn patch_luns<F: Fs + ?Sized>(
    fs: &F,
    at: &Layout,
    seen: &Seen,
    prior: Vec<LunPiece>,
    pad: usize,
) -> Result<Vec<(LunPiece, Text)>, LioError> {
    let mut links: Vec<_> = seen.links().collect();
    links.sort_by_key(|l| l.index);
    let lun_root = at.luns_dir();
    let mut prior = prior.into_iter().peekable();
    let mut out = Vec::with_capacity(links.len());
    for l in links {
        while prior.next_if(|p| p.lun.index < l.index).is_some() {}
        let same = prior.next_if(|p| p.lun.index == l.index).filter(|p| {
            p.dir == l.dir
                && p.link == l.link
                && l.dir != 0
                && l.link != 0
                && p.lun.alias.as_deref() == Some(l.alias)
                && p.lun.backstore.as_ref() == Some(l.backstore)
        });
        if let Some(p) = same {
            let text = Text::Old(p.range.clone());
            out.push((p, text));
            continue;
        }
        let e = Entry {
            name: layout::lun_dir_name(l.index),
            kind: FileKind::Dir,
            ino: l.dir,
        };
        if let Some((d, v)) = saveconfig::dump_lun(fs, &lun_root, &e)? {
            out.push((lun_piece(d), Text::New(fragment(&v, pad))));
        }
    }
    Ok(out)
}

/// The managed TPG's LUNs dumped from the kernel.
fn dump_luns<F: Fs + ?Sized>(
    fs: &F,
    at: &Layout,
    pad: usize,
) -> Result<Vec<(LunPiece, Text)>, LioError> {
    let dir = at.tpg_dir();
    if !fs.exists(dir) {
        return Ok(Vec::new());
    }
    saveconfig::dump_luns(fs, dir, |d, v| (lun_piece(d), Text::New(fragment(&v, pad))))
}

fn lun_piece(d: DumpedLun) -> LunPiece {
    LunPiece {
        dir: d.dir,
        link: d.link,
        lun: d.lun,
        range: 0..0,
    }
}

/// The indentation of a storage object in the document (`storage_objects` is a member
/// of the top-level object).
const OBJECT_PAD: usize = 4;

/// `v` as it reads in the document at `pad` spaces of indentation (a value's text has
/// no raw line break: JSON escapes them).
fn fragment(v: &Value, pad: usize) -> String {
    let text = saveconfig::to_text(v);
    let text = text.trim_end_matches('\n');
    let indent = format!("\n{:pad$}", "");
    format!("{:pad$}{}", "", text.replace('\n', &indent))
}

/// The text of the document without its storage objects and with the marker for the
/// managed TPG's LUNs, and where those go.
struct Skeleton<'a> {
    text: &'a str,
    /// Where `"storage_objects": []` is.
    objects: Range<usize>,
    /// Where the marker is (None: no managed TPG).
    luns: Option<Range<usize>>,
    /// The indentation of a LUN of the list.
    lun_pad: usize,
}

impl<'a> Skeleton<'a> {
    fn of(text: &'a str) -> Option<Skeleton<'a>> {
        // The top-level members are the only lines indented by exactly 2 spaces.
        const OBJECTS: &str = "\n  \"storage_objects\": []";
        let o = text.find(OBJECTS)?;
        let objects = o + 3..o + OBJECTS.len();
        let marker = serde_json::to_string(MARKER).ok()?;
        let (luns, lun_pad) = match text.match_indices(&marker).collect::<Vec<_>>()[..] {
            [] => (None, 0),
            [(m, _)] if m > objects.end => {
                let line = text[..m].rfind('\n').map_or(0, |i| i + 1);
                let member = &text[line..m];
                let pad = member.len() - member.trim_start().len();
                (Some(m..m + marker.len()), pad + 2)
            }
            _ => return None,
        };
        Some(Skeleton {
            text,
            objects,
            luns,
            lun_pad,
        })
    }

    /// The document as segments, the pieces in place, and the segment each piece is.
    /// `None` when there are LUNs but no place for them.
    #[allow(clippy::type_complexity)]
    fn layout<'t>(
        &'t self,
        objects: &'t [(ObjectPiece, Text)],
        luns: &'t [(LunPiece, Text)],
    ) -> Option<(Vec<Segment<'t>>, Vec<usize>, Vec<usize>)> {
        if self.luns.is_none() && !luns.is_empty() {
            return None;
        }
        let mut out = Laid::default();
        out.text(&self.text[..self.objects.start]);
        out.text("\"storage_objects\": ");
        let object_at = out.list(objects.iter().map(|(_, t)| t), OBJECT_PAD - 2)?;
        let mut lun_at = Vec::new();
        let mut rest = self.objects.end;
        if let Some(m) = &self.luns {
            out.text(&self.text[rest..m.start]);
            lun_at = out.list(luns.iter().map(|(_, t)| t), self.lun_pad - 2)?;
            rest = m.end;
        }
        out.text(&self.text[rest..]);
        Some((out.segments, object_at, lun_at))
    }
}

/// Segments laid one after the other.
#[derive(Default)]
struct Laid<'t> {
    segments: Vec<Segment<'t>>,
}

impl<'t> Laid<'t> {
    fn text(&mut self, t: &'t str) {
        self.segments.push(Segment::Text(t));
    }

    /// An array of the already indented `items` whose closing bracket is at `pad`
    /// spaces (serde_json's pretty form: `[]` when empty), and the segment each item is
    /// (its bytes are known once written: a made piece's length only then). An item to
    /// dump later is [`Segment::Made`] of its position in `items`.
    fn list(&mut self, items: impl Iterator<Item = &'t Text>, pad: usize) -> Option<Vec<usize>> {
        const SPACES: &str = "                                ";
        let mut at = Vec::new();
        self.text("[");
        for (i, t) in items.enumerate() {
            self.text(if at.is_empty() { "\n" } else { ",\n" });
            at.push(self.segments.len());
            self.segments.push(match t {
                Text::Old(r) => Segment::Old(r.clone()),
                Text::New(s) => Segment::Text(s),
                Text::Later(_) => Segment::Made(i),
            });
        }
        if !at.is_empty() {
            self.text("\n");
            self.text(SPACES.get(..pad)?);
        }
        self.text("]");
        Some(at)
    }
}
