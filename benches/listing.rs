//! Reading a bucket listing: the agent's `ListObjectsV2` page reader against
//! rusty-s3's parser, on the pages the scan benchmark's 5,000-image bucket lists
//! (20,020 objects, 21 pages of at most 1,000, written as the test kit's S3 double
//! writes them).
//!
//! `cargo bench --bench listing` prints the best of 5 for each, and the objects read.
//! Under `cargo test` (no `--bench`) it reads one page each way as a smoke test.

use std::time::Instant;

use rusty_s3::actions::ListObjectsV2;
use sbps_marshal::inventory::s3::listing::parse_page;
use sbps_testkit::fixtures::Fixture;
use sbps_testkit::s3::{xml_escape, Object};

/// Images of the bucket, as the scan benchmark's largest.
const IMAGES: usize = 5_000;
/// PE images beside them, as the scan benchmark's.
const PES: usize = 20;
/// Objects: four per image (manifest, rootfs, kernel, initrd), one per PE image.
const OBJECTS: usize = 4 * IMAGES + PES;
const PAGE: usize = 1_000;

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let pages = pages(if bench { IMAGES } else { 2 });
    let ours = best_of(if bench { 5 } else { 1 }, || {
        let mut out = Vec::new();
        let mut tokens = 0;
        for p in &pages {
            tokens += usize::from(parse_page(p, &mut out).expect("our reader").is_some());
        }
        (out.len(), tokens)
    });
    let theirs = best_of(if bench { 5 } else { 1 }, || {
        let mut objects = 0;
        let mut tokens = 0;
        for p in &pages {
            let r = ListObjectsV2::parse_response(p).expect("rusty-s3");
            objects += r.contents.len();
            tokens += usize::from(r.next_continuation_token.is_some());
        }
        (objects, tokens)
    });
    assert_eq!(ours.1, theirs.1, "both read the same objects and tokens");
    let n = ours.1 .0;
    assert_eq!(n, if bench { OBJECTS } else { 8 + PES });
    if bench {
        let bytes: usize = pages.iter().map(String::len).sum();
        println!(
            "{n} objects in {} pages ({:.1} MiB of XML)",
            pages.len(),
            bytes as f64 / (1 << 20) as f64
        );
        println!("agent (quick-xml, key/ETag/size): {:.1} ms", ours.0);
        println!("rusty-s3 parse_response:          {:.1} ms", theirs.0);
    }
}

/// The best wall time of `runs` calls, in ms, and what the last call returned.
fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::MAX;
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        out = Some(f());
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    (best, out.expect("at least one run"))
}

/// The bucket of the scan benchmark at `images` images (`sbps_testkit::fixtures`),
/// listed in pages of 1,000 as the test kit's S3 double answers `encoding-type=url`.
fn pages(images: usize) -> Vec<String> {
    let mut objects = Fixture::new(images, PES).objects;
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    let chunks: Vec<&[Object]> = objects.chunks(PAGE).collect();
    let last = chunks.len() - 1;
    chunks
        .iter()
        .enumerate()
        .map(|(p, chunk)| {
            let key = |o: &Object| String::from_utf8_lossy(&o.key).into_owned();
            let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>boot-images</Name><Prefix></Prefix>");
            x += &format!("<KeyCount>{}</KeyCount><MaxKeys>{PAGE}</MaxKeys><EncodingType>url</EncodingType>", chunk.len());
            x += &format!("<IsTruncated>{}</IsTruncated>", p != last);
            if p != last {
                x += &format!("<NextContinuationToken>{}</NextContinuationToken>", hex::encode(&chunk[chunk.len() - 1].key));
            }
            for o in chunk.iter() {
                x += &format!(
                    "<Contents><Key>{}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>&quot;{}&quot;</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>",
                    key(o),
                    xml_escape(&o.etag),
                    o.size
                );
            }
            x + "</ListBucketResult>"
        })
        .collect()
}
