//! Reading a bucket listing: the agent's `ListObjectsV2` page reader against
//! rusty-s3's parser, on the pages a 5,000-image bucket lists (20,020 objects, 21
//! pages of at most 1,000, written as the test kit's S3 double and S3 write them).
//!
//! `cargo bench --bench listing` prints the best of 5 for each, and the objects read.
//! Under `cargo test` (no `--bench`) it reads one page each way as a smoke test.

use std::time::Instant;

use rusty_s3::actions::ListObjectsV2;
use sbps_marshal::inventory::s3::listing::parse_page;
use sha2::{Digest, Sha256};

/// Objects of a 5,000-image bucket: four per image, and twenty PE images.
const OBJECTS: usize = 20_020;
const PAGE: usize = 1_000;

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let pages = pages(if bench { OBJECTS } else { 10 });
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
    assert_eq!(n, if bench { OBJECTS } else { 10 });
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

/// The listing's pages, `encoding-type=url` answered, as the S3 double writes them.
fn pages(objects: usize) -> Vec<String> {
    let keys: Vec<String> = (0..objects)
        .map(|i| {
            let h = hex::encode(Sha256::digest((i / 4).to_le_bytes()));
            let id = format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            );
            match i % 4 {
                0 => format!("{id}/manifest.json"),
                1 => format!("{id}/rootfs"),
                2 => format!("{id}/kernel"),
                _ => format!("{id}/initrd"),
            }
        })
        .collect();
    let chunks: Vec<&[String]> = keys.chunks(PAGE).collect();
    let last = chunks.len() - 1;
    chunks
        .iter()
        .enumerate()
        .map(|(p, chunk)| {
            let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>boot-images</Name><Prefix></Prefix>");
            x += &format!("<KeyCount>{}</KeyCount><MaxKeys>{PAGE}</MaxKeys><EncodingType>url</EncodingType>", chunk.len());
            x += &format!("<IsTruncated>{}</IsTruncated>", p != last);
            if p != last {
                x += &format!("<NextContinuationToken>{}</NextContinuationToken>", hex::encode(chunk[chunk.len() - 1].as_bytes()));
            }
            for (i, key) in chunk.iter().enumerate() {
                let etag = hex::encode(&Sha256::digest(key.as_bytes())[..16]);
                x += &format!(
                    "<Contents><Key>{key}</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><ETag>&quot;{etag}&quot;</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>",
                    1_000_000 + p * PAGE + i
                );
            }
            x + "</ListBucketResult>"
        })
        .collect()
}
