//! Fixture builders: a fleet of N IMS images (records, manifests, the S3 objects they
//! name) and PE objects, shaped as CSM's are, for the benchmarks and the tests.

use std::path::Path;

use sbps_marshal::inventory::ROOTFS_ARTIFACT_TYPE;
use serde_json::{json, Value};

use crate::s3::{Object, BUCKET};

/// The IMS id of image `i`.
pub fn image_id(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-000000000000")
}

/// The rootfs etag of image `i` (multipart-style, as IMS uploads are).
pub fn rootfs_etag(i: usize) -> String {
    format!("{:032x}-{}", i, 1 + i % 7)
}

/// What one image adds: its IMS record and its S3 objects.
pub struct ImageFixture {
    pub record: Value,
    pub objects: Vec<Object>,
}

/// Image `i`: a record (tagged unless `tagged` is false), a manifest naming a
/// rootfs, a kernel and an initrd, and those four objects.
pub fn image(i: usize, tagged: bool) -> ImageFixture {
    let id = image_id(i);
    let art = |name: &str, etag: String, ty: &str| {
        json!({"link": {"path": format!("s3://{BUCKET}/{id}/{name}"), "etag": etag, "type": "s3"},
               "type": ty, "md5": "x"})
    };
    let (r_etag, k_etag, i_etag) = (
        rootfs_etag(i),
        format!("{:032x}", (i << 2) | 1),
        format!("{:032x}", (i << 2) | 2),
    );
    let manifest = json!({"version": "1.0", "created": "2024-07-18T22:05:16", "artifacts": [
        art("rootfs", r_etag.clone(), ROOTFS_ARTIFACT_TYPE),
        art("kernel", k_etag.clone(), "application/vnd.cray.image.kernel"),
        art("initrd", i_etag.clone(), "application/vnd.cray.image.initrd"),
    ]})
    .to_string()
    .into_bytes();
    let m_etag = format!("{:032x}", (i << 2) | 3);
    let objects = vec![
        Object::with_body(format!("{id}/manifest.json"), &m_etag, manifest),
        Object::new(
            format!("{id}/rootfs"),
            &r_etag,
            1_000_000_000 + i as u64 * 4096,
        ),
        Object::new(format!("{id}/kernel"), &k_etag, 12_000_000 + i as u64),
        Object::new(format!("{id}/initrd"), &i_etag, 90_000_000 + i as u64),
    ];
    let metadata = if tagged {
        json!({"sbps-project": "true"})
    } else {
        json!({})
    };
    let record = json!({"id": id, "name": format!("image-{i}"), "arch": "x86_64",
        "created": "2024-07-18T22:05:16.565885",
        "link": {"path": format!("s3://{BUCKET}/{id}/manifest.json"), "etag": m_etag, "type": "s3"},
        "metadata": metadata});
    ImageFixture { record, objects }
}

/// PE object `j`.
pub fn pe(j: usize) -> Object {
    Object::new(
        format!("PE/CPE-base-{j:02}.x86_64-24.11.squashfs"),
        &format!("{:032x}", 0xfe00 + j),
        2_000_000_000 + j as u64,
    )
}

/// N images (90 % tagged: every tenth is not) and `pe` PE objects.
pub struct Fixture {
    pub records: Vec<Value>,
    pub objects: Vec<Object>,
}

impl Fixture {
    pub fn new(n: usize, pes: usize) -> Fixture {
        let mut f = Fixture {
            records: Vec::with_capacity(n),
            objects: Vec::new(),
        };
        for i in 0..n {
            f.add(image(i, i % 10 != 9));
        }
        f.objects.extend((0..pes).map(pe));
        f
    }

    pub fn add(&mut self, im: ImageFixture) {
        self.records.push(im.record);
        self.objects.extend(im.objects);
    }

    /// Images that must be projected (tagged) plus PE objects.
    pub fn tagged(&self) -> usize {
        self.records
            .iter()
            .filter(|r| r["metadata"]["sbps-project"] == "true")
            .count()
    }
}

/// The mount tree (what s3fs would show): a sparse file of the listed size for every
/// object, or its body when it has one.
pub fn write_mount<'a>(
    root: &Path,
    objects: impl IntoIterator<Item = &'a Object>,
) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    for o in objects {
        let p = root.join(std::ffi::OsStr::from_bytes(&o.key));
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if o.body.is_empty() {
            std::fs::File::create(&p)?.set_len(o.size)?;
        } else {
            std::fs::write(&p, &o.body)?;
        }
    }
    Ok(())
}
