//! One scan's gathering: every source, in the order their dependencies allow.
//!
//! ```text
//!   S3 listing ─┐
//!   SPIRE → IMS ┼─→ wanted manifests (cached) ─→ mount candidates (stat)
//!   node label ─┘
//! ```
//! The three first sources run concurrently. Manifests are fetched only for records
//! the [`Judge`] wants them for (those that pass the checks needing no manifest), and
//! only when the listing is known (without it nothing can be judged anyway); the mount
//! is checked only for keys the judge will ask about: the inventory is judged once
//! ([`Judge::begin`]), and the scan finishes that judgement with the mount's answers
//! (`Gathered::judging`).
//! Nothing here decides anything: the judge is asked (the core's `desired`, through
//! `agent::wiring`), and errors are carried into the [`Inventory`].

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::ims::{ImsError, ImsSettings, ImsSource};
use super::manifest::{ManifestFetcher, ManifestStats, Wanted, DEFAULT_CONCURRENCY};
use super::mount::MountChecker;
use super::node::{NodeSettings, NodeSource};
use super::s3::{S3Error, S3Settings, S3Source};
use super::spire::{SpireSettings, SpireTokens, TokenProvider};
use super::{ImageRecord, Inventory};
use crate::http::error_chain;

/// Everything needed to build the sources.
#[derive(Debug, Clone)]
pub struct SourcesSettings {
    pub s3: S3Settings,
    pub ims: ImsSettings,
    pub spire: SpireSettings,
    /// `None`: the node label is not checked (e.g. `scan --once` on a laptop).
    pub node: Option<NodeSettings>,
    pub manifest_concurrency: usize,
    pub mount_concurrency: usize,
    /// Deadline of one stat of the mount (a hung s3fs never returns).
    pub mount_timeout: std::time::Duration,
}

impl SourcesSettings {
    pub fn new(s3: S3Settings, ims: ImsSettings) -> SourcesSettings {
        SourcesSettings {
            s3,
            ims,
            spire: SpireSettings::default(),
            node: Some(NodeSettings::default()),
            manifest_concurrency: DEFAULT_CONCURRENCY,
            mount_concurrency: super::mount::DEFAULT_CONCURRENCY,
            mount_timeout: super::mount::DEFAULT_STAT_TIMEOUT,
        }
    }
}

/// A source that could not even be set up (bad CA bundle, bad endpoint).
#[derive(Debug, Error)]
pub enum SetupError {
    #[error("S3 source: {0}")]
    S3(#[from] S3Error),
    #[error("IMS source: {0}")]
    Ims(#[from] ImsError),
}

/// The sources, with the state they keep between scans (manifest and token caches).
pub struct Sources {
    s3: S3Source,
    ims: ImsSource,
    tokens: Arc<dyn TokenProvider>,
    node: Option<NodeSource>,
    manifests: ManifestFetcher,
    mount: MountChecker,
}

/// Requests, time and failure of one source in one scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceStats {
    pub requests: u64,
    pub duration: Duration,
    pub error: Option<String>,
}

/// What a gathering cost, for metrics and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatherStats {
    pub total: Duration,
    /// Listing requests to S3 (pages, retries included).
    pub s3_list: SourceStats,
    /// Token fetch (requests = CLI runs or RPCs; 0 when the cached token was used).
    pub(crate) token: SourceStats,
    pub ims: SourceStats,
    pub(crate) node: Option<SourceStats>,
    /// Manifest GETs to S3 (retries included) and time.
    pub manifest_fetch: SourceStats,
    pub manifests: ManifestStats,
    pub mount_checked: usize,
    pub mount_duration: Duration,
    /// Judging the inventory up to the mount ([`Judge::begin`]): part of `total`,
    /// though it is the judge's work.
    pub judging: Duration,
}

impl GatherStats {
    /// Each source's stats under the name logs and metrics use for it.
    pub(crate) fn by_source(&self) -> Vec<(&'static str, &SourceStats)> {
        let mut v = vec![
            ("s3", &self.s3_list),
            ("spire", &self.token),
            ("ims", &self.ims),
            ("manifests", &self.manifest_fetch),
        ];
        v.extend(self.node.as_ref().map(|n| ("kubernetes", n)));
        v
    }
}

/// What the gathering asks of whoever judges the inventory, so that it fetches and
/// stats only what a decision needs without deciding anything itself: which records'
/// manifests are worth fetching, and (once the listing, the records and the manifests
/// are in) the keys whose state on the mount the judgement waits for.
pub trait Judge {
    /// The judgement begun on the inventory, which the scan finishes with the mount's
    /// answers.
    type Judging;
    /// The manifest path to fetch for `record`, if its judgement can need it.
    fn manifest_wanted<'a>(&self, record: &'a ImageRecord) -> Option<&'a str>;
    /// Judges `inventory` up to the mount: the judgement so far, and the keys to stat.
    fn begin(&self, inventory: &Inventory) -> (Self::Judging, Vec<String>);
    /// The bucket the judge expects the listing of (a mismatch is logged).
    fn bucket(&self) -> &str;
    /// The s3fs mount the keys are looked up under.
    fn mount(&self) -> &Path;
}

/// The result of [`Sources::gather`]; `J` is the [`Judge`]'s judgement.
#[derive(Debug, Clone)]
pub struct Gathered<J> {
    pub inventory: Inventory,
    /// `Some(Ok(labelled))`, `Some(Err(why unknown))`, or `None` when not checked.
    pub(crate) node_labelled: Option<Result<bool, String>>,
    pub stats: GatherStats,
    /// The judge's judgement of `inventory` up to the mount (None when the gathering
    /// did not finish); the scan completes it with `inventory.mount`.
    pub(crate) judging: Option<J>,
}

impl<J> Gathered<J> {
    /// What a gathering that did not finish says: every source unknown, so the scan
    /// creates and removes nothing, and the TPG is neither enabled nor disabled.
    pub(crate) fn unfinished(why: &str, stats: GatherStats) -> Gathered<J> {
        Gathered {
            inventory: Inventory::unavailable(why),
            node_labelled: Some(Err(why.to_string())),
            stats,
            judging: None,
        }
    }
}

impl Sources {
    /// Builds the sources, with the SPIRE token provider the config asks for.
    pub fn new(cfg: SourcesSettings) -> Result<Sources, SetupError> {
        let tokens: Arc<dyn TokenProvider> = Arc::new(SpireTokens::new(cfg.spire.clone()));
        Sources::with_tokens(cfg, tokens)
    }

    /// Builds the sources with another token provider (tests, a fixed token).
    pub fn with_tokens(
        cfg: SourcesSettings,
        tokens: Arc<dyn TokenProvider>,
    ) -> Result<Sources, SetupError> {
        Ok(Sources {
            s3: S3Source::new(cfg.s3)?,
            ims: ImsSource::new(cfg.ims)?,
            tokens,
            node: cfg.node.map(NodeSource::new),
            manifests: ManifestFetcher::new(cfg.manifest_concurrency),
            mount: MountChecker {
                concurrency: cfg.mount_concurrency,
                timeout: cfg.mount_timeout,
            },
        })
    }

    /// Gathers one scan's inventory. Never fails as a whole: each source's failure
    /// is in the inventory as an error.
    pub async fn gather<J: Judge>(&self, judge: &J) -> Gathered<J::Judging> {
        let start = Instant::now();
        if judge.bucket() != self.s3.bucket() {
            tracing::warn!(
                listed = self.s3.bucket(),
                judged = judge.bucket(),
                "S3 source bucket differs from the bucket the inventory is judged against"
            );
        }
        let mut stats = GatherStats::default();
        let (s3, (ims, token_stats, ims_stats), node) =
            tokio::join!(self.list_s3(), self.list_ims(), self.node_label());
        let (s3, s3_stats) = s3;
        stats.s3_list = s3_stats;
        stats.token = token_stats;
        stats.ims = ims_stats;
        let node_labelled = node.map(|(r, st)| {
            stats.node = Some(st);
            r
        });
        let (ims, ims_unreadable) = match ims {
            Ok(l) => (Ok(l.records), l.skipped),
            Err(e) => (Err(e), Vec::new()),
        };
        let mut inventory = Inventory {
            s3,
            ims,
            ims_unreadable,
            manifests: Default::default(),
            mount: Default::default(),
        };

        if let (Ok(listing), Ok(records)) = (&inventory.s3, &inventory.ims) {
            let wanted: Vec<Wanted> = records
                .iter()
                .filter_map(|r| {
                    judge.manifest_wanted(r).map(|path| Wanted {
                        path,
                        ims_etag: r.link.as_ref().and_then(|l| l.etag.as_deref()),
                    })
                })
                .collect();
            let t = Instant::now();
            let before = self.s3.requests();
            let (manifests, mstats) = self.manifests.fetch_all(&self.s3, &wanted, listing).await;
            stats.manifest_fetch = SourceStats {
                requests: self.s3.requests() - before,
                duration: t.elapsed(),
                error: None,
            };
            stats.manifests = mstats;
            inventory.manifests = manifests;
        }

        let t = Instant::now();
        let (judging, candidates) = judge.begin(&inventory);
        stats.judging = t.elapsed();
        let t = Instant::now();
        stats.mount_checked = candidates.len();
        inventory.mount = self
            .mount
            .check_keys(judge.mount(), candidates, super::mount::check)
            .await;
        stats.mount_duration = t.elapsed();
        stats.total = start.elapsed();
        tracing::debug!(?stats, "inventory gathered");
        Gathered {
            inventory,
            node_labelled,
            stats,
            judging: Some(judging),
        }
    }

    async fn list_s3(&self) -> (Result<Vec<super::S3Object>, String>, SourceStats) {
        let t = Instant::now();
        let before = self.s3.requests();
        let r = self.s3.list_all().await.map_err(|e| e.to_string());
        if let Err(e) = &r {
            tracing::error!(error = %e, "S3 listing failed: S3 state unknown this scan");
        }
        let st = SourceStats {
            requests: self.s3.requests() - before,
            duration: t.elapsed(),
            error: r.as_ref().err().cloned(),
        };
        (r, st)
    }

    async fn list_ims(
        &self,
    ) -> (
        Result<super::ims::ImsListing, String>,
        SourceStats,
        SourceStats,
    ) {
        let t = Instant::now();
        let token = self.tokens.token().await;
        let token_stats = SourceStats {
            requests: 0,
            duration: t.elapsed(),
            error: token.as_ref().err().map(|e| error_chain(e)),
        };
        let token = match token {
            Ok(t) => t,
            Err(e) => {
                let e = ImsError::NoToken(error_chain(&e)).to_string();
                tracing::error!(error = %e, "IMS not asked: IMS state unknown this scan");
                return (
                    Err(e.clone()),
                    token_stats,
                    SourceStats {
                        error: Some(e),
                        ..Default::default()
                    },
                );
            }
        };
        let t = Instant::now();
        let before = self.ims.requests();
        let r = self
            .ims
            .list(token.secret())
            .await
            .map_err(|e| e.to_string());
        if let Err(e) = &r {
            tracing::error!(error = %e, "IMS listing failed: IMS state unknown this scan");
        }
        let st = SourceStats {
            requests: self.ims.requests() - before,
            duration: t.elapsed(),
            error: r.as_ref().err().cloned(),
        };
        (r, token_stats, st)
    }

    async fn node_label(&self) -> Option<(Result<bool, String>, SourceStats)> {
        let node = self.node.as_ref()?;
        let t = Instant::now();
        let before = node.requests();
        let r = node.labelled().await.map_err(|e| e.to_string());
        if let Err(e) = &r {
            tracing::warn!(error = %e, "node label unknown this scan");
        }
        let st = SourceStats {
            requests: node.requests() - before,
            duration: t.elapsed(),
            error: r.as_ref().err().cloned(),
        };
        Some((r, st))
    }
}
