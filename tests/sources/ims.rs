//! The IMS source against a double that serves records shaped like the IMS API
//! (ims-api.md), quirks included.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use sbps_marshal::inventory::ims::{join_url, ImsSettings, ImsSource};
use sbps_marshal::inventory::Tagging;
use serde_json::json;

use sbps_testkit::ims::{Answer, Ims};

use crate::support::Served;

/// Records as IMS ≥ 3.24 emits them, plus the real-world deviations.
pub fn records() -> serde_json::Value {
    json!([
        {"id": "46a2731e-a1d0-4f98-ba92-4f78c756bb12", "created": "2024-07-18T22:05:16.565885",
         "name": "compute-tagged", "arch": "x86_64",
         "link": {"path": "s3://boot-images/46a2731e-a1d0-4f98-ba92-4f78c756bb12/manifest.json",
                  "etag": "f04af5f34635ae7c507322985e60c00c-131", "type": "s3"},
         "metadata": {"sbps-project": "true"}},
        {"id": "11111111-0000-0000-0000-000000000001", "created": "2024-07-18T22:05:16+00:00",
         "name": "no-link", "arch": "x86_64", "link": null, "metadata": {}},
        {"id": "11111111-0000-0000-0000-000000000002", "name": "no-etag", "arch": "aarch64",
         "link": {"path": "s3://boot-images/2/manifest.json", "type": "s3"}},
        {"id": "11111111-0000-0000-0000-000000000003", "name": "buggy-create",
         "link": {"path": "s3://boot-images/3/manifest.json", "etag": "x", "type": "s3"},
         "metadata": {"key": "sbps-project", "value": "true"}},
        {"id": "11111111-0000-0000-0000-000000000004", "name": "non-string",
         "link": {"path": "s3://boot-images/4/manifest.json", "etag": "y", "type": "s3"},
         "metadata": {"sbps-project": true, "count": 3, "nested": {"a": 1}}},
        {"id": 5, "name": "numeric-id"},
        {"name": "no-id"},
    ])
}

fn source(base: &url::Url, timeout: Duration) -> ImsSource {
    let url = join_url(base.as_str().trim_end_matches('/'), "apis/ims/v3/images").unwrap();
    let mut cfg = ImsSettings::new(url);
    cfg.timeout = timeout;
    ImsSource::new(cfg).unwrap()
}

#[tokio::test]
async fn parses_quirky_records_and_sends_the_bearer() {
    let double = Arc::new(Ims::new(&records()).with_token("tok.en.x"));
    let srv = Served::start(double.clone().router()).await;
    let ims = source(&srv.url(), Duration::from_secs(5));
    let l = ims.list("tok.en.x").await.unwrap();
    assert_eq!(double.seen(), [Some("Bearer tok.en.x".to_string())]);
    assert_eq!(l.records.len(), 5);
    assert_eq!(l.skipped.len(), 2);
    assert_eq!(l.skipped[0].index, 5);
    assert!(l.skipped[0].reason.contains("id is a JSON number"));
    assert_eq!(l.skipped[1].reason, "no id");
    let r = &l.records;
    assert_eq!(r[0].tagging.tag(), Some("true"));
    assert_eq!(
        r[0].link.as_ref().unwrap().etag.as_deref(),
        Some("f04af5f34635ae7c507322985e60c00c-131")
    );
    assert_eq!(r[1].link, None);
    assert_eq!(r[2].link.as_ref().unwrap().etag, None);
    assert_eq!(r[2].tagging, Tagging::NoMetadata);
    assert!(
        matches!(&r[3].tagging, Tagging::BuggyKeyValue { key, value } if key == "sbps-project" && value == "true")
    );
    // Only the projection tag is kept of the metadata map.
    assert_eq!(
        r[4].tagging,
        Tagging::Map {
            tag: Some("true".into())
        }
    );

    // Wrong token: the gateway's 401 is an error, not an empty list.
    let e = ims.list("wrong").await.unwrap_err().to_string();
    assert!(e.contains("401"), "{e}");
}

#[tokio::test]
async fn whole_answer_failures_are_errors() {
    let double = Arc::new(Ims::default());
    let srv = Served::start(double.clone().router()).await;
    let mut cfg = ImsSettings::new(srv.url().join("apis/ims/v3/images").unwrap());
    cfg.timeout = Duration::from_millis(300);
    let ims = ImsSource::new(cfg).unwrap();

    double.set_answer(Answer::text(StatusCode::INTERNAL_SERVER_ERROR, "boom"));
    let e = ims.list("t").await.unwrap_err().to_string();
    assert!(e.contains("HTTP 500") && e.contains("boom"), "{e}");
    double.respond(StatusCode::OK, &json!({"images": []}));
    let e = ims.list("t").await.unwrap_err().to_string();
    assert!(e.contains("not an array"), "{e}");
    double.set(&[]);
    double.set_delay(Duration::from_secs(5));
    let t = std::time::Instant::now();
    let e = ims.list("t").await.unwrap_err().to_string();
    assert!(e.contains("timed out"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2));
    double.set_delay(Duration::ZERO);
    double.set_answer(Answer::raw("application/json", "[{\"id\": "));
    let e = ims.list("t").await.unwrap_err().to_string();
    assert!(e.contains("not JSON"), "{e}");
    assert_eq!(double.hits(), 4, "one request each, none retried");
    // A closed port: unknown, not empty.
    let closed: url::Url = format!("http://127.0.0.1:{}", crate::support::free_port())
        .parse()
        .unwrap();
    assert!(source(&closed, Duration::from_secs(2))
        .list("t")
        .await
        .is_err());
}

#[tokio::test]
async fn oversized_answer_is_refused() {
    let big = json!([{"id": "x", "name": "y".repeat(2_000)}]);
    let srv = Served::start(Arc::new(Ims::new(&big)).router()).await;
    let mut cfg = ImsSettings::new(srv.url().join("apis/ims/v3/images").unwrap());
    cfg.max_body = 1_000;
    let e = ImsSource::new(cfg).unwrap().list("t").await.unwrap_err();
    assert!(e.to_string().contains("1000-byte limit"), "{e}");
}
