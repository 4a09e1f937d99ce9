//! `testbed make-fixtures DIR`: real squashfs images, the bucket layout, IMS records
//! and helper files for the VM suites (tests/vm/README.md).

use std::path::Path;

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};

use crate::md5::md5_hex;

/// One IMS image of the fixture set.
struct ImageSpec {
    label: &'static str,
    id: &'static str,
    name: &'static str,
    /// How `rec/<label>.json` (the record as first listed) is tagged.
    tagged: bool,
    /// The manifest names a wrong rootfs etag.
    bad_etag: bool,
}

const IMAGES: &[ImageSpec] = &[
    ImageSpec {
        label: "A",
        id: "a0000000-0000-4000-8000-00000000000a",
        name: "rootfs-a",
        tagged: true,
        bad_etag: false,
    },
    ImageSpec {
        label: "B",
        id: "b0000000-0000-4000-8000-00000000000b",
        name: "rootfs-b",
        tagged: true,
        bad_etag: false,
    },
    ImageSpec {
        label: "C",
        id: "c0000000-0000-4000-8000-00000000000c",
        name: "rootfs-c",
        tagged: false,
        bad_etag: false,
    },
    ImageSpec {
        label: "D",
        id: "d0000000-0000-4000-8000-00000000000d",
        name: "rootfs-d",
        tagged: true,
        bad_etag: false,
    },
    ImageSpec {
        label: "E",
        id: "e0000000-0000-4000-8000-00000000000e",
        name: "rootfs-e-badetag",
        tagged: true,
        bad_etag: true,
    },
    ImageSpec {
        label: "F",
        id: "f0000000-0000-4000-8000-00000000000f",
        name: "rootfs-f-notinmount",
        tagged: true,
        bad_etag: false,
    },
    ImageSpec {
        label: "G",
        id: "90000000-0000-4000-8000-000000000009",
        name: "rootfs-g-manifesterror",
        tagged: true,
        bad_etag: false,
    },
];

const PES: &[(&str, &str)] = &[("P1", "cpe-one.squashfs"), ("P2", "cpe-two.squashfs")];

/// Size every fixture image is padded to, so a re-upload with other content keeps the size.
const IMAGE_SIZE: u64 = 128 * 1024;

const ROOTFS_TYPE: &str = "application/vnd.cray.image.rootfs.squashfs";

/// Builds the fixture tree:
///
/// * `bucket/<id>/rootfs`, `bucket/<id>/manifest.json`, `bucket/PE/<name>.squashfs`;
/// * `rec/<label>.tagged.json`, `rec/<label>.untagged.json`: each image's IMS record,
///   tagged `{"sbps-project":"true"}` or not (`{"owner":"testbed"}`); `rec/<label>.json`
///   is the one `ims.json` starts with;
/// * `ims.json`: records of A, B (tagged), C (untagged), E (etag mismatch), F (meant to
///   be removed from the agent's mount copy), G (with `faults/manifest-<G>` = 500);
///   D is kept back for tests that add an image;
/// * `alt/<pe name>`: other content of the same size for each PE (a re-upload);
/// * `keys.txt`: `LABEL KIND ID KEY` per image, KEY being the identity key (PE
///   `s3://<bucket>/PE/<name>`, rootfs `<rootfs link path>|<etag>`);
/// * `ids.env`: `ID_<LABEL>=<image id>` and `PE_<LABEL>=<pe name>`;
/// * `token`, `spire-agent` (a spire-agent CLI stand-in printing a JWT-SVID),
///   `s3.creds`,
///   `node-labels.json` (`{"iscsi":"sbps"}`), `faults/`.
pub fn make_fixtures(dir: &Path, bucket: &str) -> Result<()> {
    let b = dir.join("bucket");
    std::fs::create_dir_all(b.join("PE"))?;
    std::fs::create_dir_all(dir.join("rec"))?;
    std::fs::create_dir_all(dir.join("alt"))?;
    std::fs::create_dir_all(dir.join("faults"))?;
    let work = dir.join(".work");
    std::fs::create_dir_all(&work)?;
    let mut keys = String::new();
    let mut ids = String::new();
    let mut first = Vec::new();
    for img in IMAGES {
        let d = b.join(img.id);
        std::fs::create_dir_all(&d)?;
        let rootfs = d.join("rootfs");
        let content = format!("rootfs {} {}", img.label, img.name);
        squashfs(&work, &content, &rootfs)?;
        let md5 = md5_hex(&std::fs::read(&rootfs)?);
        let etag = if img.bad_etag {
            "0123456789abcdef0123456789abcdef".to_string()
        } else {
            md5.clone()
        };
        let rootfs_path = format!("s3://{bucket}/{}/rootfs", img.id);
        let manifest = json!({
            "version": "1.0",
            "created": "2024-06-01 12:00:00.000000",
            "artifacts": [
                {"type": ROOTFS_TYPE, "link": {"path": rootfs_path, "etag": etag, "type": "s3"}, "md5": md5},
                {"type": "application/vnd.cray.image.initrd",
                 "link": {"path": format!("s3://{bucket}/{}/initrd", img.id), "etag": "11111111111111111111111111111111", "type": "s3"},
                 "md5": "11111111111111111111111111111111"},
                {"type": "application/vnd.cray.image.kernel",
                 "link": {"path": format!("s3://{bucket}/{}/kernel", img.id), "etag": "22222222222222222222222222222222", "type": "s3"},
                 "md5": "22222222222222222222222222222222"}
            ]
        });
        let mtext = serde_json::to_string_pretty(&manifest)? + "\n";
        std::fs::write(d.join("manifest.json"), &mtext)?;
        let mmd5 = md5_hex(mtext.as_bytes());
        for (suffix, meta) in [
            ("tagged", json!({"sbps-project": "true"})),
            ("untagged", json!({"owner": "testbed"})),
        ] {
            let rec = json!({
                "id": img.id, "name": img.name, "created": "2024-06-01T12:00:00.000000+00:00",
                "link": {"path": format!("s3://{bucket}/{}/manifest.json", img.id), "etag": mmd5, "type": "s3"},
                "arch": "x86_64", "metadata": meta
            });
            std::fs::write(
                dir.join("rec").join(format!("{}.{suffix}.json", img.label)),
                serde_json::to_string(&rec)? + "\n",
            )?;
            if (suffix == "tagged") == img.tagged {
                std::fs::write(
                    dir.join("rec").join(format!("{}.json", img.label)),
                    serde_json::to_string(&rec)? + "\n",
                )?;
                if img.label != "D" {
                    first.push(rec);
                }
            }
        }
        keys += &format!("{} rootfs {} {rootfs_path}|{etag}\n", img.label, img.id);
        ids += &format!("ID_{}={}\n", img.label, img.id);
        ids += &format!("NAME_{}='{content}'\n", img.label);
    }
    for (label, name) in PES {
        squashfs(
            &work,
            &format!("pe {label} {name}"),
            &b.join("PE").join(name),
        )?;
        ids += &format!("NAME_{label}='pe {label} {name}'\n");
        squashfs(
            &work,
            &format!("pe {label} {name} v2"),
            &dir.join("alt").join(name),
        )?;
        keys += &format!("{label} pe - s3://{bucket}/PE/{name}\n");
        ids += &format!("PE_{label}={name}\n");
    }
    let g = IMAGES
        .iter()
        .find(|i| i.label == "G")
        .map(|i| i.id)
        .unwrap_or_default();
    std::fs::write(dir.join("faults").join(format!("manifest-{g}")), "500\n")?;
    std::fs::write(
        dir.join("ims.json"),
        serde_json::to_string_pretty(&first)? + "\n",
    )?;
    std::fs::write(dir.join("keys.txt"), keys)?;
    std::fs::write(dir.join("ids.env"), ids)?;
    std::fs::write(dir.join("node-labels.json"), "{\"iscsi\": \"sbps\"}\n")?;

    let jwt = jwt_far_future();
    std::fs::write(dir.join("token"), format!("{jwt}\n"))?;
    let agent = dir.join("spire-agent");
    std::fs::write(
        &agent,
        format!(
            "#!/bin/sh\n# spire-agent CLI stand-in: `spire-agent api fetch jwt -audience A -socketPath S -output json`.\n\
             # Exits 1 like the real CLI when $0.down exists.\n\
             if [ -e \"$0.down\" ]; then echo 'rpc error: code = Unavailable desc = connection error' >&2; exit 1; fi\n\
             printf '%s\\n' '[{{\"svids\":[{{\"spiffe_id\":\"spiffe://shasta/ncn/workload/sbps-marshal\",\"svid\":\"{jwt}\",\"hint\":\"\"}}]}},{{\"bundles\":{{\"spiffe://shasta\":\"e30=\"}}}}]'\n"
        ),
    )?;
    set_mode(&agent, 0o755)?;
    let creds = dir.join("s3.creds");
    std::fs::write(&creds, "TESTBEDACCESSKEY:testbed-secret-key\n")?;
    set_mode(&creds, 0o600)?;
    std::fs::remove_dir_all(&work)?;
    println!("fixtures in {}", dir.display());
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A squashfs image holding one file `NAME` with `content`, padded to [`IMAGE_SIZE`].
fn squashfs(work: &Path, content: &str, out: &Path) -> Result<()> {
    let src = work.join("src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src)?;
    std::fs::write(src.join("NAME"), format!("{content}\n"))?;
    let _ = std::fs::remove_file(out);
    let st = std::process::Command::new("mksquashfs")
        .arg(&src)
        .arg(out)
        .args([
            "-noappend",
            "-quiet",
            "-no-progress",
            "-all-root",
            "-mkfs-time",
            "0",
            "-all-time",
            "0",
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running mksquashfs (Debian package squashfs-tools)")?;
    if !st.success() {
        bail!("mksquashfs {} failed: {st}", out.display());
    }
    let len = std::fs::metadata(out)?.len();
    if len > IMAGE_SIZE {
        bail!("{} is {len} bytes, more than {IMAGE_SIZE}", out.display());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(out)?
        .set_len(IMAGE_SIZE)?;
    Ok(())
}

/// An unsigned-looking ES256 JWT-SVID with `exp` in 2100.
fn jwt_far_future() -> String {
    let e = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        e(json!({"alg": "ES256", "kid": "testbed", "typ": "JWT"})),
        e(
            json!({"sub": "spiffe://shasta/ncn/workload/sbps-marshal", "aud": ["system-compute"],
                 "iat": 1_700_000_000u64, "exp": 4_102_444_800u64})
        ),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 64])
    )
}
