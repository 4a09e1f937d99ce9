//! A hostile and malformed inventory, through the real adapters (S3 listing XML
//! from a double, IMS from a double, manifests over S3, a real mount directory)
//! and then `desired()`, `plan()` and an apply on the fake configfs. Every input
//! ends in a verdict with a reason or a clear error; no panic; no projection
//! outside the mount or unfit for the kernel; every op the plan makes succeeds.

use std::path::{Component, Path};
use std::time::{Duration, Instant};

use sbps_marshal::desired::{self, kernel_safe_path, Outcome, Reason};
use sbps_marshal::http::TlsOptions;
use sbps_marshal::inventory::ims::parse_listing;
use sbps_marshal::inventory::manifest::parse_manifest;
use sbps_marshal::inventory::s3::read_credentials;
use sbps_marshal::inventory::ROOTFS_ARTIFACT_TYPE;
use sbps_marshal::ledger::Ledger;
use sbps_marshal::lio::{self, attr, Target};
use sbps_marshal::plan::{plan, Policy};
use serde_json::{json, Value};

use crate::support::*;

fn manifest(rootfs: &[(&str, Value)]) -> Vec<u8> {
    let arts: Vec<Value> = rootfs
        .iter()
        .map(|(path, etag)| json!({"type": ROOTFS_ARTIFACT_TYPE, "link": {"path": path, "etag": etag, "type": "s3"}}))
        .collect();
    json!({"version": "1.0", "artifacts": arts})
        .to_string()
        .into_bytes()
}

fn nested(depth: usize) -> Vec<u8> {
    let mut s = String::from("{\"artifacts\": [");
    s.push_str(&"[".repeat(depth));
    s.push_str(&"]".repeat(depth));
    s.push_str("]}");
    s.into_bytes()
}

fn put(root: &Path, key: &str, size: u64) {
    let p = root.join(key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
}

/// Asserts what every projection must be, whatever the input.
pub fn assert_projections_safe(d: &desired::Desired, mount: &Path) {
    let canon_root = mount.canonicalize().unwrap();
    for p in d.projections.values() {
        assert!(p.path.starts_with(mount), "{}", p.path.display());
        assert!(
            !p.path.components().any(|c| c == Component::ParentDir),
            "{}",
            p.path.display()
        );
        kernel_safe_path(&p.path).unwrap();
        attr::check_control_path(p.path.to_str().unwrap())
            .unwrap_or_else(|e| panic!("projected, but the backend refuses it: {e}"));
        let real = p.path.canonicalize().unwrap();
        assert!(
            real.starts_with(&canon_root) && real != canon_root,
            "{}",
            real.display()
        );
        assert_eq!(real, canon_root.join(&p.object_key), "one key, one file");
        assert!(real.is_file());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_and_records_are_skipped_with_reasons() {
    let rig = Rig::new();
    let mount = rig.images.path().to_path_buf();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.squashfs"), vec![0u8; 100]).unwrap();
    std::fs::create_dir(outside.path().join("d")).unwrap();
    std::fs::write(outside.path().join("d/x.squashfs"), vec![0u8; 100]).unwrap();

    let long = format!("PE/{}", "a".repeat(1021));
    let mut objects = vec![
        Object::new("PE/ok.squashfs", "e-ok", 100),
        Object::new("PE/../../etc/passwd", "e", 100),
        Object::new("PE/a/../../../x.squashfs", "e", 100),
        Object::new("PE//double.squashfs", "e", 100),
        Object::new("/PE/lead.squashfs", "e", 100),
        Object::new("PE/with space.squashfs", "e", 100),
        Object::new("PE/new\nline.squashfs", "e", 100),
        Object::new("PE/tab\t.squashfs", "e", 100),
        Object::new("PE/nul\0.squashfs", "e", 100),
        Object::new(b"PE/\xff\xfe.squashfs".to_vec(), "e", 100),
        Object::new(long.clone(), "e", 100),
        Object::new("PE\u{ff0f}x.squashfs", "e", 100),
        Object::new("PE/\u{2025}/x.squashfs", "e", 100),
        Object::new("PE/", "e", 0),
        Object::new("PE/sub/", "e", 0),
        Object::new("PE/comma,fd_buffered_io=1.squashfs", "e", 100),
        Object::new("PE/eq=1.squashfs", "e", 100),
        Object::new("PE/link-out.squashfs", "e", 100),
        Object::new("PE/dir-out/x.squashfs", "e", 100),
        Object::new("PE/./dot.squashfs", "e", 100),
        Object::new("PE/alias.squashfs", "e", 100),
        Object::new("PE/cr\r.squashfs", "e", 100),
    ];
    for k in [
        "PE/ok.squashfs",
        "PE/double.squashfs",
        "PE/with space.squashfs",
        "PE/new\nline.squashfs",
        "PE/tab\t.squashfs",
        "PE/\u{2025}/x.squashfs",
        "PE/comma,fd_buffered_io=1.squashfs",
        "PE/eq=1.squashfs",
        "PE/dot.squashfs",
        "PE/cr\r.squashfs",
        "img/good/rootfs",
    ] {
        put(&mount, k, 100);
    }
    std::fs::create_dir_all(mount.join("PE/sub")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.squashfs"),
        mount.join("PE/link-out.squashfs"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path().join("d"), mount.join("PE/dir-out")).unwrap();
    std::os::unix::fs::symlink("ok.squashfs", mount.join("PE/alias.squashfs")).unwrap();

    // IMS side: rootfs objects with hostile keys, manifests of every kind of wrong.
    let mut records = Vec::new();
    let mut image = |id: &str, body: Option<Vec<u8>>, objects: &mut Vec<Object>| {
        let mkey = format!("img/{id}/manifest.json");
        if let Some(b) = body {
            objects.push(Object::with_body(mkey.clone(), &format!("m-{id}"), b));
        }
        records.push(json!({"id": id, "name": id, "link": {"path": format!("s3://{BUCKET}/{mkey}"), "etag": "x", "type": "s3"},
            "metadata": {"sbps-project": "true"}}));
    };
    objects.push(Object::new("img/good/rootfs", "e-good", 100));
    objects.push(Object::new("../../etc/shadow", "e-sh", 100));
    objects.push(Object::new("/abs/rootfs", "e-abs", 100));
    objects.push(Object::new("img/num/rootfs", "12345", 100));
    image(
        "good",
        Some(manifest(&[(
            &format!("s3://{BUCKET}/img/good/rootfs"),
            json!("e-good"),
        )])),
        &mut objects,
    );
    image(
        "dotdot",
        Some(manifest(&[(
            &format!("s3://{BUCKET}/../../etc/shadow"),
            json!("e-sh"),
        )])),
        &mut objects,
    );
    image(
        "abs",
        Some(manifest(&[(
            &format!("s3://{BUCKET}//abs/rootfs"),
            json!("e-abs"),
        )])),
        &mut objects,
    );
    image(
        "numetag",
        Some(manifest(&[(
            &format!("s3://{BUCKET}/img/num/rootfs"),
            json!(12345),
        )])),
        &mut objects,
    );
    image("huge", Some(vec![b' '; 2 * 1024 * 1024]), &mut objects);
    image("deep", Some(nested(100_000)), &mut objects);
    image(
        "wrongtypes",
        Some(br#"{"artifacts": "rootfs"}"#.to_vec()),
        &mut objects,
    );
    image(
        "several",
        Some(manifest(&[
            ("s3://boot-images/img/good/rootfs", json!("e-good")),
            ("s3://boot-images/img/good/rootfs", json!("e-good")),
        ])),
        &mut objects,
    );
    image("nulllink", Some(br#"{"artifacts": [{"type": "application/vnd.cray.image.rootfs.squashfs", "link": null}]}"#.to_vec()), &mut objects);
    image("notjson", Some(b"\xff\xfe garbage".to_vec()), &mut objects);
    image("missing", None, &mut objects);
    // Records of every wrong type, a duplicate id, and non-objects.
    records.push(json!({"id": 1, "name": [], "link": 5, "metadata": "x"}));
    records.push(json!({"id": "wt", "name": {}, "link": {"path": 7}, "metadata": []}));
    records.push(json!({"id": "wt2", "link": {"path": ["a"], "etag": {}}, "metadata": null}));
    records.push(json!(null));
    records.push(json!([1, 2]));
    records.push(json!("good"));
    records.push(json!({"id": "good", "name": "dup", "link": {"path": format!("s3://{BUCKET}/img/good/manifest.json"), "etag": "x"},
        "metadata": {"sbps-project": "true"}}));
    records.push(json!({"id": "other-bucket", "link": {"path": "s3://elsewhere/../../x"}, "metadata": {"sbps-project": "true"}}));

    let s3 = Served::start(S3::memory(objects).router()).await;
    let ims = Served::start(ims_router(Value::Array(records.clone()).to_string())).await;
    let dir = tempfile::tempdir().unwrap();
    let creds = cred_file(dir.path(), &format!("{ACCESS}:{S3_SECRET}\n"));
    let src = sources(
        s3.url(),
        ims.url(),
        creds,
        TlsOptions::default(),
        Duration::from_secs(10),
    );
    let set = settings(&mount);
    let g = src.gather(&set).await;
    let listing = g.inventory.s3.as_ref().expect("the listing parses");
    assert!(listing.iter().any(|o| o.key.contains('\0')), "NUL decoded");
    assert!(
        listing.iter().any(|o| o.key == "PE/%FF%FE.squashfs"),
        "non-UTF-8 stays encoded"
    );
    let unreadable = &g.inventory.ims_unreadable;
    assert_eq!(unreadable.len(), 6, "{unreadable:?}");
    assert!(unreadable.iter().all(|s| !s.reason.is_empty()));

    let d = desired::desired(&g.inventory, &set);
    assert_projections_safe(&d, &mount);
    let pe_candidates = listing.iter().filter(|o| o.key.starts_with("PE/")).count();
    let ims_records = g.inventory.ims.as_ref().unwrap().len();
    assert_eq!(
        d.verdicts.len(),
        pe_candidates + ims_records + unreadable.len(),
        "one verdict per candidate, unreadable records included"
    );

    let verdict = |subject: &str| -> Outcome {
        d.verdicts
            .iter()
            .find(|v| match &v.subject {
                desired::Subject::Pe { object_key } => object_key == subject,
                desired::Subject::Image { id, name } => id == subject && name == subject,
            })
            .unwrap_or_else(|| panic!("no verdict for {subject:?}"))
            .outcome
            .clone()
    };
    let skipped = |s: &str| match verdict(s) {
        Outcome::Skipped { reason } => reason,
        o => panic!("{s:?}: expected a skip, got {o:?}"),
    };
    let unknown = |s: &str| match verdict(s) {
        Outcome::Unknown { reason } => reason,
        o => panic!("{s:?}: expected unknown, got {o:?}"),
    };
    assert!(matches!(
        verdict("PE/ok.squashfs"),
        Outcome::Projected { .. }
    ));
    assert!(matches!(verdict("good"), Outcome::Projected { .. }));
    assert!(d.verdicts.iter().any(|v| matches!(&v.subject, desired::Subject::Image { id, name } if id == "good" && name == "dup")
        && matches!(v.outcome, Outcome::Skipped { reason: Reason::Duplicate { .. } })));
    for k in [
        "PE/../../etc/passwd",
        "PE/a/../../../x.squashfs",
        "PE/link-out.squashfs",
        "PE/dir-out/x.squashfs",
    ] {
        assert!(matches!(skipped(k), Reason::OutsideMount { .. }), "{k}");
    }
    for k in [
        "PE/new\nline.squashfs",
        "PE/tab\t.squashfs",
        "PE/comma,fd_buffered_io=1.squashfs",
        "PE/cr\r.squashfs",
        long.as_str(),
        // One key, one file: the mount reads these as PE/double and PE/dot.
        "PE//double.squashfs",
        "PE/./dot.squashfs",
        // A symlink inside the mount: a second name of PE/ok.squashfs.
        "PE/alias.squashfs",
    ] {
        assert!(matches!(skipped(k), Reason::UnsafePath { .. }), "{k:?}");
    }
    // `=` is safe in `fd_dev_name=` (the kernel takes the rest of the pair), and the
    // original projected such keys: projected here too, and created (checked below).
    assert!(matches!(
        verdict("PE/eq=1.squashfs"),
        Outcome::Projected { .. }
    ));
    assert!(matches!(
        skipped("PE/nul\0.squashfs"),
        Reason::OutsideMount { .. }
    ));
    assert!(matches!(skipped("PE/"), Reason::DirectoryKey));
    assert!(matches!(skipped("PE/sub/"), Reason::DirectoryKey));
    assert!(matches!(
        unknown("PE/%FF%FE.squashfs"),
        Reason::NotInMount { .. }
    ));
    assert!(matches!(skipped("dotdot"), Reason::OutsideMount { .. }));
    assert!(matches!(skipped("abs"), Reason::OutsideMount { .. }));
    assert!(matches!(
        verdict("numetag"),
        Outcome::Unknown {
            reason: Reason::NotInMount { .. }
        }
    ));
    assert!(matches!(unknown("huge"), Reason::ManifestError { .. }));
    assert!(matches!(unknown("deep"), Reason::ManifestError { .. }));
    assert!(matches!(
        unknown("wrongtypes"),
        Reason::ManifestError { .. }
    ));
    assert!(matches!(unknown("notjson"), Reason::ManifestError { .. }));
    // A rootfs artifact that cannot be read makes the image unknown, never absent.
    assert!(matches!(
        unknown("several"),
        Reason::SeveralRootfsArtifacts { count: 2 }
    ));
    assert!(matches!(unknown("nulllink"), Reason::RootfsWithoutLink));
    assert!(d.uncertainty.images.contains("several") && d.uncertainty.images.contains("nulllink"));
    // Records that cannot be read: unknown, with the reason; those with a string id
    // protect that image, the others every image the answer does not name.
    let unreadable: Vec<&Reason> = d
        .verdicts
        .iter()
        .filter_map(|v| match &v.outcome {
            Outcome::Unknown {
                reason: r @ Reason::UnreadableRecord { .. },
            } => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(unreadable.len(), 6, "{unreadable:?}");
    assert!(d.uncertainty.images.contains("wt") && d.uncertainty.images.contains("wt2"));
    assert_eq!(d.uncertainty.unattributed, 4);
    assert!(matches!(skipped("missing"), Reason::ManifestMissing { .. }));
    // Unicode lookalikes are not the PE/ prefix: no candidate at all.
    assert!(!d.verdicts.iter().any(|v| matches!(&v.subject, desired::Subject::Pe { object_key } if object_key.contains('\u{ff0f}'))));
    // "PE/‥/x" is a plain, inside name.
    assert!(matches!(
        verdict("PE/\u{2025}/x.squashfs"),
        Outcome::Projected { .. }
    ));

    // What is projected can really be exported.
    let p = plan(
        &d,
        &rig.target().observe().unwrap(),
        &Ledger::new(),
        &Policy {
            mount: mount.clone(),
            ..rig.policy()
        },
        NOW,
    );
    let t = rig.target();
    for r in lio::apply(&t, &p.ops, 2) {
        assert!(r.result.is_ok(), "{}: {:?}", r.op, r.result);
    }
}

#[test]
fn hundred_thousand_ims_records() {
    let mut body = String::from("[");
    for i in 0..100_000 {
        let tag = if i % 2 == 0 { "true" } else { "false" };
        body.push_str(&format!(
            r#"{{"id": "id-{i}", "name": "image {i}", "created": "2024-01-01T00:00:00", "link": {{"path": "s3://{BUCKET}/{i}/manifest.json", "etag": "{i:032x}", "type": "s3"}}, "metadata": {{"sbps-project": "{tag}"}}}},"#
        ));
    }
    for _ in 0..100 {
        body.push_str(r#"{"id": "dup", "name": "dup"},"#);
    }
    body.pop();
    body.push(']');
    let body = body.into_bytes();
    let rss = |what: &str| -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with(what))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    let before = rss("VmRSS:");
    // Reset the peak (Linux >= 4.0), so VmHWM is what parsing and judging took.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let t = Instant::now();
    let l = parse_listing(&body).unwrap();
    let parse = t.elapsed();
    assert_eq!(l.records.len(), 100_100);
    let inv = sbps_marshal::inventory::Inventory {
        s3: Ok(Vec::new()),
        ims: Ok(l.records),
        ims_unreadable: l.skipped,
        manifests: Default::default(),
        mount: Default::default(),
    };
    let t = Instant::now();
    let d = desired::desired(&inv, &settings(Path::new("/mnt/x")));
    let judge = t.elapsed();
    assert_eq!(d.verdicts.len(), 100_100);
    eprintln!(
        "100,000 IMS records: body {} MiB, parse {parse:?}, desired {judge:?}, peak RSS {} MiB over {} MiB before (whole test binary)",
        body.len() >> 20,
        rss("VmHWM:") >> 10,
        before >> 10
    );
    assert!(
        parse + judge < Duration::from_secs(20),
        "too slow: {parse:?} + {judge:?}"
    );
}

#[test]
fn ims_bodies_that_are_not_listings() {
    for (body, want) in [
        (&b"{}"[..], "object"),
        (b"null", "null"),
        (b"\"[]\"", "string"),
        (b"42", "number"),
        (b"", "not JSON"),
        (b"[", "not JSON"),
        (b"\xff\xfe", "not JSON"),
    ] {
        let e = parse_listing(body).unwrap_err().to_string();
        assert!(e.contains(want), "{body:?}: {e}");
    }
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(parse_listing(deep.as_bytes()).is_err());
    assert!(parse_manifest(&nested(100_000)).is_err());
}

#[test]
fn credential_files_of_every_shape() {
    let dir = tempfile::tempdir().unwrap();
    for (text, ok) in [
        ("", false),
        ("\n", false),
        ("AKID", false),
        ("AKID:a:b", false),
        ("AKID:s3kr1t:\r\n", false),
        ("AKID:s3kr1t\r\n", true),
        ("  AKID:s3kr1t  \n", true),
        ("AKID:s3kr1t\nAKID2:s3kr1t2\n", false),
        (":s3kr1t", false),
        ("AKID:", false),
    ] {
        let p = cred_file(dir.path(), text);
        match read_credentials(&p) {
            Ok(_) => assert!(ok, "{text:?} accepted"),
            Err(e) => {
                assert!(!ok, "{text:?} refused: {e}");
                let m = e.to_string();
                assert!(
                    m.contains(&p.display().to_string()) && !m.contains("s3kr1t"),
                    "{m}"
                );
            }
        }
    }
    let e = read_credentials(&dir.path().join("absent"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent"), "{e}");
}

/// IMS answers that are not a listing, through the double and `desired()`: IMS is
/// unknown (no rootfs image judged absent), PE images are still judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ims_answers_that_are_not_listings_make_ims_unknown() {
    let mount = tempfile::tempdir().unwrap();
    put(mount.path(), "PE/ok.squashfs", 100);
    let s3 = Served::start(S3::memory([Object::new("PE/ok.squashfs", "e", 100)]).router()).await;
    let dir = tempfile::tempdir().unwrap();
    let creds = cred_file(dir.path(), &format!("{ACCESS}:{S3_SECRET}\n"));
    for body in ["{}", "null", "\"x\"", "[1,", "<html>gateway</html>"] {
        let ims = Served::start(ims_router(body.into())).await;
        let src = sources(
            s3.url(),
            ims.url(),
            creds.clone(),
            TlsOptions::default(),
            Duration::from_secs(5),
        );
        let set = settings(mount.path());
        let g = src.gather(&set).await;
        let e = g.inventory.ims.as_ref().unwrap_err();
        assert!(
            e.contains("not an array") || e.contains("not JSON"),
            "{body}: {e}"
        );
        let d = desired::desired(&g.inventory, &set);
        assert!(d.uncertainty.rootfs.is_some(), "{body}");
        assert_eq!(d.projections.len(), 1, "{body}: PE still judged");
        assert_projections_safe(&d, mount.path());
    }
}
