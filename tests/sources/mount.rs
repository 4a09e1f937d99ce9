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
    let keys: Vec<String> = [
        "img/rootfs",
        "link-in",
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
    assert_eq!(m["link-in"], MountEntry::File { size: 4096 });
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
