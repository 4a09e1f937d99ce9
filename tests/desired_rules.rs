//! `desired()` over hand-made inventories: one test per rule.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sbps_marshal::desired::{
    desired, manifest_wanted, mount_candidates, Kind, Outcome, Reason, Settings,
};
use sbps_marshal::identity::{self, Identity};
use sbps_marshal::inventory::{
    Artifact, ImageRecord, Inventory, Link, Manifest, MountEntry, S3Object, Tagging,
    ROOTFS_ARTIFACT_TYPE,
};

fn settings() -> Settings {
    Settings {
        bucket: "boot-images".into(),
        mount_root: PathBuf::from("/mnt/bi"),
        ims_tagging: true,
    }
}

fn obj(key: &str, etag: &str, size: u64) -> S3Object {
    S3Object {
        key: key.into(),
        etag: etag.into(),
        size,
    }
}

fn tagged(v: &str) -> Tagging {
    Tagging::Map(BTreeMap::from([(
        "sbps-project".to_string(),
        v.to_string(),
    )]))
}

fn record(id: &str, tagging: Tagging) -> ImageRecord {
    ImageRecord {
        id: id.into(),
        name: format!("name-{id}"),
        link: Some(Link {
            path: format!("s3://boot-images/{id}/manifest.json"),
            etag: Some("m".into()),
            kind: Some("s3".into()),
        }),
        tagging,
    }
}

fn manifest(id: &str, etag: Option<&str>) -> Manifest {
    Manifest {
        artifacts: vec![
            Artifact {
                kind: "application/vnd.cray.image.kernel".into(),
                link: Some(Link {
                    path: format!("s3://boot-images/{id}/kernel"),
                    etag: Some("k".into()),
                    kind: None,
                }),
            },
            Artifact {
                kind: ROOTFS_ARTIFACT_TYPE.into(),
                link: Some(Link {
                    path: format!("s3://boot-images/{id}/rootfs"),
                    etag: etag.map(String::from),
                    kind: Some("s3".into()),
                }),
            },
        ],
    }
}

/// One tagged image `img1` (rootfs etag e1, 4096 bytes) and PE/a.squashfs, all present.
fn base() -> Inventory {
    Inventory {
        s3: Ok(vec![
            obj("PE/a.squashfs", "pa", 100),
            obj("PE/", "d", 0),
            obj("img1/manifest.json", "m", 10),
            obj("img1/rootfs", "e1", 4096),
        ]),
        ims: Ok(vec![record("img1", tagged("true"))]),
        ims_unreadable: Vec::new(),
        manifests: BTreeMap::from([(
            "s3://boot-images/img1/manifest.json".to_string(),
            Ok(manifest("img1", Some("e1"))),
        )]),
        mount: BTreeMap::from([
            ("PE/a.squashfs".to_string(), MountEntry::File { size: 100 }),
            ("img1/rootfs".to_string(), MountEntry::File { size: 4096 }),
        ]),
    }
}

fn reason_of(inv: &Inventory, s: &Settings, subject_contains: &str) -> Outcome {
    let d = desired(inv, s);
    d.verdicts
        .into_iter()
        .find(|v| format!("{:?}", v.subject).contains(subject_contains))
        .map(|v| v.outcome)
        .expect("verdict")
}

#[test]
fn projects_pe_and_tagged_rootfs_with_original_keys() {
    let d = desired(&base(), &settings());
    assert_eq!(d.projections.len(), 2);
    let pe = Identity::of_key(&identity::pe_key("boot-images", "PE/a.squashfs"));
    let rootfs = Identity::of_key("s3://boot-images/img1/rootfs|e1");
    let p = &d.projections[&pe.serial];
    assert_eq!(p.kind, Kind::Pe);
    assert_eq!(p.path, PathBuf::from("/mnt/bi/PE/a.squashfs"));
    let r = &d.projections[&rootfs.serial];
    assert_eq!(
        (r.kind, r.size, r.image_id.as_deref()),
        (Kind::Rootfs, 4096, Some("img1"))
    );
    assert!(d.uncertainty.is_empty());
    // The "PE/" directory placeholder is skipped with its reason.
    assert_eq!(
        reason_of(&base(), &settings(), "\"PE/\""),
        Outcome::Skipped {
            reason: Reason::DirectoryKey
        }
    );
}

#[test]
fn tagging_rules_match_the_original() {
    let s = settings();
    let mut inv = base();
    inv.ims = Ok(vec![record("img1", tagged("false"))]);
    assert!(
        matches!(reason_of(&inv, &s, "img1"), Outcome::Skipped { reason: Reason::Untagged { value: Some(v) } } if v == "false")
    );
    inv.ims = Ok(vec![record("img1", Tagging::Map(BTreeMap::new()))]);
    assert!(matches!(
        reason_of(&inv, &s, "img1"),
        Outcome::Skipped {
            reason: Reason::Untagged { value: None }
        }
    ));
    // No metadata at all: an IMS without tagging, projected as the original did.
    inv.ims = Ok(vec![record("img1", Tagging::NoMetadata)]);
    assert!(matches!(
        reason_of(&inv, &s, "img1"),
        Outcome::Projected { .. }
    ));
    inv.ims = Ok(vec![record(
        "img1",
        Tagging::BuggyKeyValue {
            key: "sbps-project".into(),
            value: "true".into(),
        },
    )]);
    assert!(matches!(
        reason_of(&inv, &s, "img1"),
        Outcome::Skipped {
            reason: Reason::BuggyMetadata { .. }
        }
    ));
    // Tagging off: untagged images are projected. PE objects never need a tag.
    inv.ims = Ok(vec![record("img1", tagged("no"))]);
    let off = Settings {
        ims_tagging: false,
        ..settings()
    };
    assert!(matches!(
        reason_of(&inv, &off, "img1"),
        Outcome::Projected { .. }
    ));
    assert_eq!(desired(&inv, &s).projections.len(), 1);
    // Untagged images need no manifest fetch.
    assert_eq!(manifest_wanted(&record("x", tagged("false")), &s), None);
    assert_eq!(
        manifest_wanted(&record("x", tagged("true")), &s),
        Some("s3://boot-images/x/manifest.json")
    );
}

#[test]
fn manifest_problems() {
    let s = settings();
    let mpath = "s3://boot-images/img1/manifest.json".to_string();
    let mut inv = base();
    // A rootfs artifact without etag: the identity cannot be computed, so the image is
    // unknown (a live LUN of it is kept), not skipped.
    inv.manifests
        .insert(mpath.clone(), Ok(manifest("img1", None)));
    assert_eq!(
        reason_of(&inv, &s, "img1"),
        Outcome::Unknown {
            reason: Reason::EtagMissing
        }
    );
    assert!(desired(&inv, &s).uncertainty.images.contains("img1"));
    inv.manifests
        .insert(mpath.clone(), Ok(manifest("img1", Some("other"))));
    assert!(matches!(
        reason_of(&inv, &s, "img1"),
        Outcome::Skipped {
            reason: Reason::EtagMismatch { .. }
        }
    ));
    let mut two = manifest("img1", Some("e1"));
    two.artifacts.push(two.artifacts[1].clone());
    // Several rootfs artifacts (IMS refuses such a manifest; the original took the
    // last one): which is meant cannot be read, so unknown.
    inv.manifests.insert(mpath.clone(), Ok(two));
    assert_eq!(
        reason_of(&inv, &s, "img1"),
        Outcome::Unknown {
            reason: Reason::SeveralRootfsArtifacts { count: 2 }
        }
    );
    assert!(desired(&inv, &s).uncertainty.images.contains("img1"));
    inv.manifests.insert(mpath.clone(), Ok(Manifest::default()));
    assert_eq!(
        reason_of(&inv, &s, "img1"),
        Outcome::Skipped {
            reason: Reason::NoRootfsArtifact
        }
    );
    // A fetch error for a manifest that is listed: unknown, and the image is protected.
    inv.manifests.insert(mpath.clone(), Err("HTTP 500".into()));
    assert!(matches!(
        reason_of(&inv, &s, "img1"),
        Outcome::Unknown {
            reason: Reason::ManifestError { .. }
        }
    ));
    assert!(desired(&inv, &s).uncertainty.images.contains("img1"));
    // …but a manifest that is not in the listing is known absent.
    if let Ok(list) = &mut inv.s3 {
        list.retain(|o| o.key != "img1/manifest.json");
    }
    assert!(matches!(
        reason_of(&inv, &s, "img1"),
        Outcome::Skipped {
            reason: Reason::ManifestMissing { .. }
        }
    ));
}

#[test]
fn mount_and_size_rules() {
    let s = settings();
    let mut inv = base();
    inv.mount
        .insert("img1/rootfs".into(), MountEntry::File { size: 1000 });
    assert_eq!(
        reason_of(&inv, &s, "img1"),
        Outcome::Unknown {
            reason: Reason::NotReady {
                s3_size: 4096,
                mount_size: 1000
            }
        }
    );
    inv.mount.insert("img1/rootfs".into(), MountEntry::Missing);
    assert!(matches!(
        reason_of(&inv, &s, "img1"),
        Outcome::Unknown {
            reason: Reason::NotInMount { .. }
        }
    ));
    inv.mount.insert(
        "img1/rootfs".into(),
        MountEntry::Outside("symlink to /etc".into()),
    );
    assert!(matches!(
        reason_of(&inv, &s, "img1"),
        Outcome::Skipped {
            reason: Reason::OutsideMount { .. }
        }
    ));
    inv.mount
        .insert("img1/rootfs".into(), MountEntry::Error("EIO".into()));
    let d = desired(&inv, &s);
    assert_eq!(d.uncertainty.serials.len(), 1);
    inv.mount.remove("img1/rootfs");
    assert_eq!(
        reason_of(&inv, &s, "img1"),
        Outcome::Unknown {
            reason: Reason::MountNotChecked
        }
    );
    assert_eq!(
        mount_candidates(&base(), &s),
        vec!["PE/a.squashfs".to_string(), "img1/rootfs".to_string()]
    );
}

#[test]
fn hostile_keys_never_become_projections() {
    let s = settings();
    for key in [
        "PE/../../etc/shadow",
        "PE/a,fd_dev_size=1",
        "PE/new\nline",
        "PE/nul\0",
    ] {
        let inv = Inventory {
            s3: Ok(vec![obj(key, "e", 1)]),
            ims: Ok(vec![]),
            ims_unreadable: Vec::new(),
            manifests: BTreeMap::new(),
            mount: BTreeMap::from([(key.to_string(), MountEntry::File { size: 1 })]),
        };
        let d = desired(&inv, &s);
        assert!(d.projections.is_empty(), "{key:?}");
        assert!(
            matches!(d.verdicts[0].outcome, Outcome::Skipped { .. }),
            "{key:?}"
        );
    }
    let long = format!("PE/{}", "x".repeat(300));
    let inv = Inventory {
        s3: Ok(vec![obj(&long, "e", 1)]),
        ims: Ok(vec![]),
        ims_unreadable: Vec::new(),
        manifests: BTreeMap::new(),
        mount: BTreeMap::from([(long.clone(), MountEntry::File { size: 1 })]),
    };
    assert!(matches!(
        desired(&inv, &s).verdicts[0].outcome,
        Outcome::Skipped {
            reason: Reason::UnsafePath { .. }
        }
    ));
}

#[test]
fn failed_sources_are_unknown_not_empty() {
    let s = settings();
    let mut inv = base();
    inv.ims = Err("HTTP 503".into());
    let d = desired(&inv, &s);
    assert_eq!(d.projections.len(), 1, "PE still projected");
    assert!(d.uncertainty.rootfs.is_some());
    let mut inv = base();
    inv.s3 = Err("connection refused".into());
    let d = desired(&inv, &s);
    assert!(d.projections.is_empty());
    assert!(d.uncertainty.everything.is_some());
    assert!(d
        .verdicts
        .iter()
        .all(|v| matches!(v.outcome, Outcome::Unknown { .. })));
}

#[test]
fn links_outside_the_bucket_are_refused() {
    let s = settings();
    let mut inv = base();
    let mut r = record("img1", tagged("true"));
    r.link = Some(Link {
        path: "s3://other-bucket/img1/manifest.json".into(),
        etag: None,
        kind: None,
    });
    inv.ims = Ok(vec![r]);
    assert!(matches!(
        reason_of(&inv, &s, "img1"),
        Outcome::Skipped {
            reason: Reason::OutsideBucket { .. }
        }
    ));
    let mut r = record("img1", tagged("true"));
    r.link = None;
    inv.ims = Ok(vec![r]);
    assert_eq!(
        reason_of(&inv, &s, "img1"),
        Outcome::Skipped {
            reason: Reason::NoLink
        }
    );
}
