//! The mount checker: path-escape cases on a plain directory, and a real s3fs mount.

use std::os::unix::fs::symlink;

use sbps_marshal::inventory::mount::MountChecker;
use sbps_marshal::inventory::MountEntry;

use crate::support::{Moto, S3fsMount};

#[tokio::test]
async fn escapes_and_kinds_on_a_plain_tree() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "x").unwrap();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("img")).unwrap();
    std::fs::write(r.join("img/rootfs"), vec![0u8; 4096]).unwrap();
    std::fs::create_dir(r.join("dir")).unwrap();
    symlink(outside.path().join("secret"), r.join("link-out")).unwrap();
    symlink(outside.path(), r.join("dir-out")).unwrap();
    symlink("img/rootfs", r.join("link-in")).unwrap();
    symlink("nowhere", r.join("dangling")).unwrap();
    symlink("img", r.join("dir-in")).unwrap();
    let keys: Vec<String> = [
        "img/rootfs",
        "link-in",
        "dir-in/rootfs",
        "img/./rootfs",
        "img//rootfs",
        "./img/rootfs",
        "img/rootfs/",
        "dir",
        "missing",
        "img/rootfs/below-a-file",
        "../escape",
        "img/../../escape",
        "/etc/passwd",
        "link-out",
        "dir-out/secret",
        "dangling",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let m = MountChecker::default().check_all(r, &keys).await;
    assert_eq!(m["img/rootfs"], MountEntry::File { size: 4096 });
    // One key, one file: every other name of img/rootfs is refused, a symlink inside
    // the mount included (the kernel would export one file under two identities).
    for k in [
        "link-in",
        "dir-in/rootfs",
        "img/./rootfs",
        "img//rootfs",
        "./img/rootfs",
        "img/rootfs/",
    ] {
        assert!(matches!(m[k], MountEntry::Indirect(_)), "{k}: {:?}", m[k]);
    }
    assert_eq!(m["dir"], MountEntry::NotRegular);
    assert_eq!(m["missing"], MountEntry::Missing);
    assert_eq!(m["img/rootfs/below-a-file"], MountEntry::Missing);
    assert_eq!(m["dangling"], MountEntry::Missing);
    for k in [
        "../escape",
        "img/../../escape",
        "/etc/passwd",
        "link-out",
        "dir-out/secret",
    ] {
        assert!(matches!(m[k], MountEntry::Outside(_)), "{k}: {:?}", m[k]);
    }
}

/// Released at the end of the stalled-mount test, so the stuck thread can finish.
static RELEASE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A `stat` that hangs on one key, as on a hung FUSE mount.
fn hangs_on_b(root: &std::path::Path, key: &str) -> MountEntry {
    if key.starts_with("b-") {
        while !RELEASE.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    sbps_marshal::inventory::mount::check(root, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stat_makes_keys_unknown_not_a_stuck_scan() {
    let root = tempfile::tempdir().unwrap();
    for f in ["a-ok", "b-hangs", "c-ok", "d-ok"] {
        std::fs::write(root.path().join(f), "x").unwrap();
    }
    let keys: Vec<String> = ["a-ok", "b-hangs", "c-ok", "d-ok"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let checker = MountChecker {
        concurrency: 1, // in key order: a, then b stalls, then c and d
        timeout: std::time::Duration::from_millis(300),
    };
    let t0 = std::time::Instant::now();
    let m = checker.check_all_with(root.path(), &keys, hangs_on_b).await;
    let took = t0.elapsed();
    RELEASE.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(m["a-ok"], MountEntry::File { size: 1 });
    assert!(
        matches!(&m["b-hangs"], MountEntry::Error(e) if e.contains("did not answer within 0.3s")),
        "{:?}",
        m["b-hangs"]
    );
    // No more threads are queued behind the stalled one.
    for k in ["c-ok", "d-ok"] {
        assert!(
            matches!(&m[k], MountEntry::Error(e) if e.contains("the mount stalled")),
            "{k}: {:?}",
            m[k]
        );
    }
    // Generous: without the deadline the call would not return until RELEASE.
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
}

#[tokio::test]
async fn unusable_root_is_an_error_for_every_key() {
    let keys = vec!["a".to_string(), "b".to_string()];
    let m = MountChecker::default()
        .check_all(std::path::Path::new("/nonexistent/mount"), &keys)
        .await;
    assert!(
        m.values().all(|e| matches!(e, MountEntry::Error(_))),
        "{m:?}"
    );
}

/// Symlinks are followed in the mount root (configuration, e.g. a root moved to
/// another disk), not in the key: the same file is then fine through the link.
#[tokio::test]
async fn a_root_reached_through_a_symlink_is_followed() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("real/img")).unwrap();
    std::fs::write(d.path().join("real/img/rootfs"), [0u8; 10]).unwrap();
    symlink(d.path().join("real"), d.path().join("mnt")).unwrap();
    let keys = vec!["img/rootfs".to_string()];
    let m = MountChecker::default()
        .check_all(&d.path().join("mnt"), &keys)
        .await;
    assert_eq!(m["img/rootfs"], MountEntry::File { size: 10 });
    sbps_marshal::lio::configfs::check_backing_file(
        &d.path().join("mnt/img/rootfs"),
        10,
        &d.path().join("mnt"),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_s3fs_mount_of_moto() {
    let moto = Moto::start().await;
    moto.create_bucket("boot-images").await;
    moto.put(
        "boot-images",
        "PE/CPE-base.x86_64-25.09.squashfs",
        vec![1u8; 10_000],
    )
    .await;
    moto.put("boot-images", "a/b/c/rootfs", vec![2u8; 3_333])
        .await;
    moto.put_multipart(
        "boot-images",
        "mp/rootfs",
        &[vec![3u8; 700], vec![4u8; 300]],
    )
    .await;
    let mnt = S3fsMount::mount(&moto, "boot-images");
    let keys: Vec<String> = [
        "PE/CPE-base.x86_64-25.09.squashfs",
        "a/b/c/rootfs",
        "mp/rootfs",
        "a/b",
        "not/there",
        "../outside",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let m = MountChecker::default()
        .check_all(&mnt.mountpoint, &keys)
        .await;
    assert_eq!(
        m["PE/CPE-base.x86_64-25.09.squashfs"],
        MountEntry::File { size: 10_000 }
    );
    assert_eq!(m["a/b/c/rootfs"], MountEntry::File { size: 3_333 });
    assert_eq!(m["mp/rootfs"], MountEntry::File { size: 1_000 });
    assert_eq!(m["a/b"], MountEntry::NotRegular);
    assert_eq!(m["not/there"], MountEntry::Missing);
    assert!(matches!(m["../outside"], MountEntry::Outside(_)));

    // A new object shows up (stat_cache_expire=1).
    moto.put("boot-images", "not/there", vec![5u8; 42]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let m = MountChecker::default()
            .check_all(&mnt.mountpoint, &keys[4..5])
            .await;
        if m["not/there"] == (MountEntry::File { size: 42 }) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{m:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
