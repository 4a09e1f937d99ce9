//! The S3 source against a real moto server, and against the test kit's S3 double
//! for the faults moto cannot produce (5xx, slowness, signature rejection).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sbps_marshal::inventory::retry::RetryPolicy;
use sbps_marshal::inventory::s3::{S3Error, S3Settings, S3Source};
use sbps_testkit::s3::{Fault, Object, On, Script, S3};

use crate::support::{credential_file, Moto, Served, ACCESS, SECRET};

fn config(endpoint: url::Url, dir: &std::path::Path) -> S3Settings {
    let mut c = S3Settings::new(endpoint, "boot-images", credential_file(dir));
    c.timeout = Duration::from_secs(5);
    c.retry = RetryPolicy {
        attempts: 3,
        backoff: Duration::from_millis(10),
    };
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_many_pages_with_etags_from_moto() {
    let moto = Moto::start().await;
    moto.create_bucket("boot-images").await;
    let keys: Vec<String> = (0..1_100).map(|i| format!("obj/{i:05}")).collect();
    let t = Instant::now();
    moto.put_many("boot-images", keys.clone()).await;
    eprintln!("uploaded {} objects in {:?}", keys.len(), t.elapsed());
    let quoted = moto
        .put("boot-images", "PE/CPE-base.squashfs", vec![7u8; 1234])
        .await;
    let multipart = moto
        .put_multipart(
            "boot-images",
            "img/rootfs",
            &[vec![1u8; 100], vec![2u8; 100], vec![3u8; 50]],
        )
        .await;
    assert!(quoted.starts_with('"'), "{quoted}");
    assert!(multipart.ends_with("-3\""), "{multipart}");

    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Source::new(config(moto.endpoint.clone(), dir.path())).unwrap();
    let list = s3.list_all().await.unwrap();
    assert_eq!(list.len(), 1_102);
    assert_eq!(s3.requests(), 2, "1,102 objects are two pages of 1,000");
    let pe = list
        .iter()
        .find(|o| o.key == "PE/CPE-base.squashfs")
        .unwrap();
    assert_eq!(pe.size, 1234);
    assert_eq!(pe.etag, quoted.trim_matches('"'));
    let mp = list.iter().find(|o| o.key == "img/rootfs").unwrap();
    assert_eq!(mp.etag, multipart.trim_matches('"'));
    assert_eq!(mp.size, 250);
    assert!(!mp.etag.contains('"'));
    let mut listed: Vec<_> = list.iter().map(|o| o.key.clone()).collect();
    listed.sort();
    listed.dedup();
    assert_eq!(listed.len(), 1_102, "no duplicates across pages");

    let body = s3.get_object("obj/00042", 1024).await.unwrap();
    assert_eq!(&body[..], b"obj/00042");
    assert!(matches!(
        s3.get_object("nope", 1024).await,
        Err(S3Error::NotFound { .. })
    ));
    let e = s3
        .get_object("PE/CPE-base.squashfs", 1000)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("1000-byte limit"), "{e}");
}

/// Keys with the characters a form encoding and XML both escape come back from a
/// real S3 server's listing (`encoding-type=url`) exactly as they were stored.
#[tokio::test]
async fn odd_keys_are_listed_as_stored() {
    let moto = Moto::start().await;
    moto.create_bucket("boot-images").await;
    let keys = [
        "PE/cpe 23.12 & friends/rootfs",
        "img/a+b%2Bc",
        "img/<squash>'\"quoted\"",
        "img/caf\u{e9}/\u{65e5}\u{672c}",
        "img/~tilde;semi=eq?q#frag",
    ];
    for (i, key) in keys.iter().enumerate() {
        moto.put("boot-images", key, vec![b'x'; i + 1]).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Source::new(config(moto.endpoint.clone(), dir.path())).unwrap();
    let list = s3.list_all().await.unwrap();
    let mut listed: Vec<_> = list.iter().map(|o| (o.key.as_str(), o.size)).collect();
    listed.sort();
    let mut stored: Vec<_> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, i as u64 + 1))
        .collect();
    stored.sort();
    assert_eq!(listed, stored);
}

/// A bucket answering from fixed pages, by continuation token (none: the first),
/// logging the tokens it was asked for.
async fn fixed_pages(
    pages: &'static [(&'static str, &'static str)],
) -> (Served, Arc<Mutex<Vec<String>>>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let router = axum::Router::new().fallback(
        move |axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>| {
            let log = log.clone();
            async move {
                let token = q.get("continuation-token").cloned().unwrap_or_default();
                log.lock().unwrap().push(token.clone());
                let body = pages
                    .iter()
                    .find(|(t, _)| *t == token)
                    .map_or("", |(_, b)| *b);
                format!("<ListBucketResult>{body}</ListBucketResult>")
            }
        },
    );
    (Served::start(router).await, asked)
}

/// Lists the bucket `srv` serves: the source (for its request count) and the keys.
async fn listed_keys(srv: &Served) -> (S3Source, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Source::new(config(srv.url(), dir.path())).unwrap();
    let list = s3.list_all().await.unwrap();
    (s3, list.into_iter().map(|o| o.key).collect())
}

/// A page that names its token before its objects has the next page asked for while
/// it is read; the whole page decides. Here the second page says, after its objects,
/// that the listing ends: the third page, already asked for, is not listed.
#[tokio::test]
async fn the_whole_page_decides_over_a_next_page_asked_for_early() {
    let (srv, asked) = fixed_pages(&[
        ("", "<NextContinuationToken>t1</NextContinuationToken><Contents><Key>a</Key></Contents><IsTruncated>true</IsTruncated>"),
        ("t1", "<NextContinuationToken>t2</NextContinuationToken><Contents><Key>b</Key></Contents><IsTruncated>false</IsTruncated>"),
        ("t2", "<Contents><Key>not-in-the-listing</Key></Contents><IsTruncated>false</IsTruncated>"),
    ])
    .await;
    let (s3, keys) = listed_keys(&srv).await;
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(
        s3.requests(),
        3,
        "t1 and t2 were asked for while pages 1 and 2 were read"
    );
    assert_eq!(asked.lock().unwrap()[..2], ["", "t1"]);
}

/// A page that names its token only after its objects is read whole before the next
/// page is asked for.
#[tokio::test]
async fn a_token_after_the_objects_is_followed_once_read() {
    let (srv, asked) = fixed_pages(&[
        ("", "<Contents><Key>a</Key></Contents><NextContinuationToken>t1</NextContinuationToken><IsTruncated>true</IsTruncated>"),
        ("t1", "<Contents><Key>b</Key></Contents><IsTruncated>false</IsTruncated><NextContinuationToken>t9</NextContinuationToken>"),
    ])
    .await;
    let (s3, keys) = listed_keys(&srv).await;
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(s3.requests(), 2);
    assert_eq!(*asked.lock().unwrap(), ["", "t1"]);
}

#[tokio::test]
async fn missing_bucket_is_an_error_not_empty() {
    let moto = Moto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Source::new(config(moto.endpoint.clone(), dir.path())).unwrap();
    let e = s3.list_all().await.unwrap_err();
    assert!(e.to_string().contains("404"), "{e}");
}

/// The test kit's S3 double holding one object, checking signatures against the
/// credential file's keys; its script and request log for the test.
fn double() -> (S3, Arc<Script>) {
    let s3 = S3::memory([Object::new("a", "abc", 3)]).signed_by(ACCESS, SECRET);
    let script = s3.script.clone();
    (s3, script)
}

#[tokio::test]
async fn retries_a_5xx_then_succeeds() {
    let (double, script) = double();
    script.once(On::List, Fault::slow_down());
    let srv = Served::start(double.router()).await;
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Source::new(config(srv.url(), dir.path())).unwrap();
    let list = s3.list_all().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].etag, "abc");
    assert_eq!(script.requests(), 2);
}

#[tokio::test]
async fn retries_a_timeout_then_gives_up() {
    let (double, script) = double();
    script.always(On::List, Fault::Delay(Duration::from_secs(5)));
    let srv = Served::start(double.router()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(srv.url(), dir.path());
    cfg.timeout = Duration::from_millis(200);
    cfg.retry.attempts = 2;
    let s3 = S3Source::new(cfg).unwrap();
    let t = Instant::now();
    let e = s3.list_all().await.unwrap_err();
    assert!(e.to_string().contains("timed out"), "{e}");
    assert_eq!(script.requests(), 2, "one retry");
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn signature_rejection_is_reported_and_not_retried() {
    // The double checks SigV4 against another secret than the credential file's.
    let double = S3::memory([Object::new("a", "abc", 3)]).signed_by(ACCESS, "another-secret");
    let script = double.script.clone();
    let srv = Served::start(double.router()).await;
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Source::new(config(srv.url(), dir.path())).unwrap();
    let e = s3.list_all().await.unwrap_err().to_string();
    assert!(
        e.contains("403") && e.contains("SignatureDoesNotMatch"),
        "{e}"
    );
    assert!(
        !e.contains("X-Amz-Signature"),
        "no presigned query in errors: {e}"
    );
    assert!(!e.contains(SECRET));
    let seen = script.seen();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].has_param("X-Amz-Signature"),
        "request is SigV4-presigned"
    );
}

#[tokio::test]
async fn bad_credential_file_fails_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config("http://127.0.0.1:9".parse().unwrap(), dir.path());
    std::fs::write(&cfg.credential_file, "no-colon-here\n").unwrap();
    let s3 = S3Source::new(cfg.clone()).unwrap();
    let e = s3.list_all().await.unwrap_err().to_string();
    assert!(e.contains("s3.passwd") && e.contains("no ':'"), "{e}");
    assert_eq!(s3.requests(), 0);
    cfg.credential_file = dir.path().join("absent");
    let s3 = S3Source::new(cfg).unwrap();
    assert!(s3.list_all().await.is_err());
}
