//! What earlier observations of configfs read, and when the kernel vouches that it is
//! still so: a steady scan then lists names and links and reads no attribute.
//!
//! configfs keeps the inode of every directory and link for as long as it exists and
//! numbers each new one afresh, and `readdir` reports that number. So an object listed
//! with the inode it had is the very object seen before, not one removed and made again
//! under its name. Of what the plan reads of a backstore, the kernel lets nothing change
//! on an enabled object but its unit serial (`enable` cannot be undone; `fd_dev_name`,
//! `fd_dev_size` and `fd_buffered_io` are configuration read once when it is enabled),
//! and it refuses to change the serial while a LUN exports the object (EINVAL). A
//! backstore is therefore read again unless it is the same enabled object, linked by
//! exactly the same LUN links (same inodes: a link removed and made again, even in the
//! same `lun_N`, is a new inode) as when it was read. Objects that are new, replaced,
//! disabled or not exported are read in full at every observation; so is everything
//! when the filesystem reports no inode numbers (0).
//!
//! A LUN's link cannot be pointed elsewhere without being made again either, so its
//! target is read again only when the `lun_N` directory or its link is new.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::model::{Backstore, BackstoreRef};

/// One backstore as last read.
#[derive(Debug)]
struct SeenBackstore {
    ino: u64,
    /// Inodes of the TPG's links to it, sorted.
    links: Vec<u64>,
    /// Shared with the saveconfig.json index ([`super::saved`]), which keeps what the
    /// observation said of each object it wrote: one copy of thousands, not two.
    value: Arc<Backstore>,
    /// The observation that last listed it.
    epoch: u64,
}

/// One LUN's link as last read.
#[derive(Debug)]
struct SeenLun {
    dir: u64,
    link: u64,
    alias: String,
    backstore: Option<BackstoreRef>,
}

/// The memory of a [`super::ConfigfsTarget`]'s observations.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    backstores: FxHashMap<BackstoreRef, SeenBackstore>,
    luns: FxHashMap<u64, SeenLun>,
    epoch: u64,
}

impl Seen {
    /// Starts an observation: what it does not list again is forgotten at [`Seen::end`].
    pub(crate) fn begin(&mut self) {
        self.epoch += 1;
    }

    /// Forgets the backstores this observation did not list.
    pub(crate) fn end(&mut self) {
        let epoch = self.epoch;
        self.backstores.retain(|_, s| s.epoch == epoch);
    }

    /// The target of LUN `index`'s link `alias` when the same directory holds the same
    /// link as when it was read (`Some(None)`: it linked nothing the model knows).
    pub(crate) fn lun(
        &self,
        index: u64,
        dir: u64,
        link: u64,
        alias: &str,
    ) -> Option<Option<BackstoreRef>> {
        let s = self.luns.get(&index)?;
        (dir != 0 && link != 0 && s.dir == dir && s.link == link && s.alias == alias)
            .then(|| s.backstore.clone())
    }

    /// Remembers what LUN `index`'s link was read to be.
    pub(crate) fn saw_lun(
        &mut self,
        index: u64,
        dir: u64,
        link: u64,
        alias: &str,
        backstore: Option<&BackstoreRef>,
    ) {
        self.luns.insert(
            index,
            SeenLun {
                dir,
                link,
                alias: alias.to_string(),
                backstore: backstore.cloned(),
            },
        );
    }

    /// Forgets LUN `index`'s link (its directory holds none).
    pub(crate) fn forget_lun(&mut self, index: u64) {
        self.luns.remove(&index);
    }

    /// Forgets the LUNs not in `listed`.
    pub(crate) fn keep_luns(&mut self, listed: impl Fn(u64) -> bool) {
        self.luns.retain(|i, _| listed(*i));
    }

    /// The backstore at `at` as last read, when the kernel vouches it is unchanged: the
    /// same enabled object (`ino`), exported through the same links (`links`, sorted).
    pub(crate) fn backstore(
        &mut self,
        at: &BackstoreRef,
        ino: u64,
        links: &[u64],
    ) -> Option<Backstore> {
        let epoch = self.epoch;
        let s = self.backstores.get_mut(at)?;
        let vouched = ino != 0
            && s.ino == ino
            && s.value.enabled
            && !links.is_empty()
            && !links.contains(&0)
            && s.links == links;
        if !vouched {
            return None;
        }
        s.epoch = epoch;
        Some(Backstore::clone(&s.value))
    }

    /// Forgets the backstore at `at` (removed).
    pub(crate) fn forget_backstore(&mut self, at: &BackstoreRef) {
        self.backstores.remove(at);
    }

    /// Remembers what the backstore at `value.at` was read to be.
    pub(crate) fn saw_backstore(&mut self, ino: u64, links: &[u64], value: &Backstore) {
        let s = SeenBackstore {
            ino,
            links: links.to_vec(),
            value: Arc::new(value.clone()),
            epoch: self.epoch,
        };
        self.backstores.insert(value.at.clone(), s);
    }
}

/// A LUN's link as the last observation saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeenLink<'a> {
    pub(crate) index: u64,
    pub(crate) dir: u64,
    pub(crate) link: u64,
    pub(crate) alias: &'a str,
    pub(crate) backstore: &'a BackstoreRef,
}

impl Seen {
    /// Every backstore the last observation listed, with its inode: after
    /// [`Seen::end`], exactly the backstores of the [`super::Actual`] it returned.
    pub(crate) fn listed(&self) -> impl Iterator<Item = (u64, &Arc<Backstore>)> {
        self.backstores.values().map(|s| (s.ino, &s.value))
    }

    /// Every LUN link of the last observation that names a backstore.
    pub(crate) fn links(&self) -> impl Iterator<Item = SeenLink<'_>> {
        self.luns.iter().filter_map(|(index, s)| {
            Some(SeenLink {
                index: *index,
                dir: s.dir,
                link: s.link,
                alias: &s.alias,
                backstore: s.backstore.as_ref()?,
            })
        })
    }
}
