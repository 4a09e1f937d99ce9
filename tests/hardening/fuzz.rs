//! Bounded fuzzing on stable: proptest over arbitrary bytes/strings and over
//! structure-aware JSON for every parser that reads untrusted input. Each runs
//! `SBPS_FUZZ_CASES` cases (default 512); see FUZZING.md for long runs.

use std::path::{Component, Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::Config;
use sbps_marshal::desired::{kernel_safe_path, lexically_inside};
use sbps_marshal::inventory::ims::{parse_listing, parse_record};
use sbps_marshal::inventory::manifest::parse_manifest;
use sbps_marshal::inventory::s3::read_credentials;
use sbps_marshal::lio::targetcli::{TargetcliSettings, TargetcliTarget};
use sbps_marshal::lio::{attr, saveconfig};
use sbps_marshal::lio::{BackstoreRef, Op};
use sbps_marshal::paths::{backend_safe_path, key_under, one_name, Backend};
use sbps_marshal::plan::under_root;
use serde_json::{Map, Value};

fn cases() -> u32 {
    std::env::var("SBPS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

fn cfg() -> Config {
    Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Strings drawn mostly from the letters that matter to these parsers.
fn spicy() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9_:/.,= \\-\\n\\r\\t\\x00\"{}\\[\\]]{0,40}",
        prop::sample::select(vec![
            "id",
            "name",
            "link",
            "path",
            "etag",
            "type",
            "metadata",
            "sbps-project",
            "true",
            "artifacts",
            "s3://boot-images/x/rootfs",
            "application/vnd.cray.image.rootfs.squashfs",
            "key",
            "value",
            "storage_objects",
            "targets",
            "tpgs",
            "luns",
            "index",
            "storage_object",
            "/backstores/fileio/x",
            "plugin",
            "dev",
            "wwn",
            "tag",
            "portals",
            "ip_address",
            "port",
            "..",
            "/",
            "lun_",
            "core",
        ])
        .prop_map(str::to_string),
    ]
}

/// Arbitrary JSON whose object keys come mostly from the schemas' vocabulary.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        spicy().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((spicy(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Object keys made of segments, `.`, `..` and empty ones among them (`PE/./x`,
/// `PE//x`, `img/rootfs/`), and a few characters targetcli's command line misreads.
fn segmented_key() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        4 => "[a-zA-Z0-9_.+-]{1,6}",
        1 => "[a-z ;#'\"=%\\\\\u{e9}]{1,4}",
        1 => Just(".".to_string()),
        1 => Just("..".to_string()),
        1 => Just(String::new()),
    ];
    prop::collection::vec(seg, 1..6).prop_map(|s| s.join("/"))
}

/// The targetcli backend, for what it would hand targetcli (it runs nothing here).
fn targetcli() -> TargetcliTarget {
    TargetcliTarget::new(TargetcliSettings {
        bin: "/nonexistent/targetcli".into(),
        iqn: "iqn.2023-06.csm.iscsi:x1000c0s0b0n0".into(),
        tag: 1,
        mount: "/var/lib/cps-local/boot-images".into(),
        tmp_dir: "/tmp".into(),
        timeout: std::time::Duration::from_secs(60),
    })
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn ims_listing_bytes(b in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_listing(&b);
    }

    #[test]
    fn ims_records_structured(v in prop::collection::vec(json(), 0..6)) {
        let body = serde_json::to_vec(&Value::Array(v.clone())).unwrap();
        let l = parse_listing(&body).unwrap();
        prop_assert_eq!(l.records.len() + l.skipped.len(), v.len());
        for r in &l.records {
            prop_assert!(!r.id.trim().is_empty());
        }
        for item in &v {
            let _ = parse_record(item);
        }
    }

    #[test]
    fn manifest_bytes(b in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_manifest(&b);
    }

    #[test]
    fn manifest_structured(arts in prop::collection::vec(json(), 0..6), extra in json()) {
        let doc = serde_json::json!({"version": "1.0", "artifacts": arts, "x": extra});
        if let Ok(m) = parse_manifest(doc.to_string().as_bytes()) {
            prop_assert!(m.artifacts.len() <= arts.len());
        }
        let _ = parse_manifest(extra.to_string().as_bytes());
    }

    #[test]
    fn saveconfig_text(s in any::<String>()) {
        let _ = saveconfig::parse(&s);
    }

    #[test]
    fn saveconfig_structured(objs in prop::collection::vec(json(), 0..4), tgts in prop::collection::vec(json(), 0..3)) {
        let doc = serde_json::json!({"storage_objects": objs, "targets": tgts});
        let saved = saveconfig::parse(&doc.to_string()).unwrap();
        let _ = saved.to_actual("iqn.2023-06.csm.iscsi:x", 1);
    }

    #[test]
    fn configfs_attribute_parsers(s in spicy(), n in any::<u64>(), t in any::<u32>()) {
        let _ = attr::parse_info(&s);
        let _ = attr::parse_info(&format!("Status: ACTIVATED  File: {s}  Size: {n}  Mode: {s} Async: {s}"));
        let _ = attr::parse_serial(&s);
        let _ = attr::parse_flag(&s);
        let _ = attr::parse_hba_dir(&s);
        let _ = attr::parse_lun_dir(&s);
        let _ = attr::parse_tpg_dir(&s);
        let _ = attr::parse_link_target(Path::new(&s));
        let _ = attr::parse_portal(&s);
        let _ = attr::attr_value(&s);
        let _ = attr::check_name(&s);
        let _ = attr::check_control_path(&s);
        prop_assert_eq!(attr::parse_lun_dir(&format!("lun_{n}")), Some(n));
        prop_assert_eq!(attr::parse_tpg_dir(&format!("tpgt_{t}")), Some(t));
        prop_assert_eq!(attr::parse_hba_dir(&format!("fileio_{t}")), Some(("fileio".to_string(), t)));
        if let Some(i) = attr::parse_info(&format!("Status: DEACTIVATED  File: /m/{s}  Size: {n}  Mode: O_DSYNC Async: 0\n")).file {
            prop_assert!(i.starts_with("/m/"));
        }
    }

    #[test]
    fn credentials(text in "[A-Za-z0-9:\\r\\n \\t]{0,40}") {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c");
        std::fs::write(&p, &text).unwrap();
        match read_credentials(&p) {
            Ok(_) => prop_assert_eq!(text.trim().matches(':').count(), 1),
            Err(e) => {
                // The message names the file, never a part of its content.
                let m = e.to_string();
                let secret = text.trim().split(':').nth(1).unwrap_or("").trim();
                if secret.len() >= 4 {
                    prop_assert!(!m.contains(secret), "{}", m);
                }
            }
        }
    }

    /// What desired() hands on must be what the backend and the kernel take, and
    /// must stay inside the mount.
    #[test]
    fn kernel_path_safety(key in prop_oneof![any::<String>(), "[a-zA-Z0-9./ ,=\\n\\r\\t\\x00\u{2025}\u{ff0f}-]{0,80}", segmented_key()]) {
        let root = Path::new("/var/lib/cps-local/boot-images");
        let path: PathBuf = root.join(&key);
        if kernel_safe_path(&path).is_ok() {
            let s = path.to_str().unwrap();
            prop_assert!(s.len() <= 255 && !s.contains(',') && !s.chars().any(char::is_control));
            prop_assert!(attr::check_control_path(s).is_ok(), "kernel_safe_path accepts {:?}, the backend refuses it", s);
        }
        if lexically_inside(&key).is_ok() {
            prop_assert!(!key.is_empty() && !key.starts_with('/') && !key.contains('\0'));
            prop_assert!(!path.components().any(|c| c == Component::ParentDir));
            prop_assert!(path.starts_with(root));
            if Path::new(&key).components().any(|c| matches!(c, Component::Normal(_))) {
                prop_assert!(under_root(&path, root), "{:?}", path);
            }
            // One key, one file: a key that passes is the only spelling of its path,
            // segment for segment, so no other key reaches the same file by its letters.
            if one_name(&key).is_ok() {
                prop_assert!(key.split('/').all(|s| !s.is_empty() && s != "." && s != ".."), "{:?}", key);
                prop_assert_eq!(path.components().count(), root.components().count() + key.split('/').count());
                prop_assert_eq!(key_under(&path, root), Some(key.as_str()));
            }
        }
        // What desired() lets through for the targetcli backend, the backend hands to
        // targetcli as one word (and nothing else gets there).
        let create = Op::CreateBackstore {
            at: BackstoreRef::fileio(0, "a50dd52157e1636"),
            path: path.clone(),
            size: 1,
            serial: "a50dd52157e1636aaaaaaaaaaaaaaaa".into(),
        };
        let line = targetcli().command(&create);
        if backend_safe_path(&path, Backend::Targetcli).is_ok() {
            let line = line.unwrap().unwrap();
            prop_assert_eq!(line.split(' ').nth(3), path.to_str(), "{}", line);
        } else if kernel_safe_path(&path).is_ok() {
            prop_assert!(line.is_err(), "{:?} reaches targetcli", path);
        }
    }
}

/// Regressions found by the fuzzers (each was a failing case once).
#[test]
fn fuzz_regressions() {
    // kernel_safe_path and the configfs backend disagreed on '=': a key such as
    // `PE/a=b.squashfs` was projected and then failed to be created every scan. They
    // now agree (both accept it: the kernel takes everything after `fd_dev_name=`).
    let p = Path::new("/var/lib/cps-local/boot-images/PE/a=b.squashfs");
    assert_eq!(
        attr::check_control_path(p.to_str().unwrap()).is_ok(),
        kernel_safe_path(p).is_ok()
    );
    assert!(kernel_safe_path(p).is_ok());
    // `PE/./x` and `PE//x` passed every check and were exported with PE/x's bytes
    // under identities of their own.
    for k in ["PE/./x.squashfs", "PE//x.squashfs"] {
        assert!(lexically_inside(k).is_ok() && one_name(k).is_err(), "{k}");
    }
}
