//! Testbed: test doubles of S3, IMS and the Kubernetes API in one process, for
//! end-to-end runs of the real agent (tests/vm/run-agent, scripts/quickstart).
//!
//! ```text
//! testbed serve DIR [--s3 PORT] [--ims PORT] [--k8s PORT] [--bucket NAME] [--node NAME] [--ports-file FILE]
//! testbed make-fixtures DIR [--bucket NAME]
//! ```
//!
//! `serve` answers on 127.0.0.1 (port 0 = chosen; the chosen ports are printed as
//! `s3=PORT ims=PORT k8s=PORT` and written to `--ports-file`), from:
//!
//! The S3 and IMS doubles are the test kit's ([`sbps_testkit::s3`], [`sbps_testkit::ims`])
//! over the directory (`dir.rs`):
//!
//! * `DIR/bucket/<key>`: the bucket's objects. S3 double: path-style ListObjectsV2
//!   (`GET /<bucket>?list-type=2[&continuation-token=..][&max-keys=..][&prefix=..]`,
//!   1000 keys a page, quoted md5 ETags, XML as S3/moto write it) and GetObject
//!   (`GET /<bucket>/<key>`). Signatures are not checked.
//! * `DIR/ims.json`: the IMS records array, re-read on every request.
//!   `GET /apis/ims/v3/images` (and `/<id>`) needs `Authorization: Bearer <token>`; the
//!   token must equal `DIR/token` when that file exists.
//! * `DIR/node-labels.json`: the labels of the Node `--node NAME` (default `e2e-node`),
//!   which carries `kubernetes.io/hostname=NAME` too; file missing → no such Node.
//!   The Kubernetes API is the tests' one double of it (`sbps_testkit::kube_api`):
//!   HTTPS with its own CA, bearer token `testbed-k8s-token`, Nodes and ConfigMaps (the
//!   ledger) with the real API's semantics; `serve` writes `DIR/kubeconfig.run` for it
//!   before the ports file.
//! * `DIR/faults/<name>`: fault injection, read on every request:
//!   `ims` = `503` (any status) or `empty` (answer `[]`); `s3-list` = a status;
//!   `manifest-<image-id>` = a status for GetObject of `<image-id>/manifest.json`;
//!   `object-<key with / as _>` = a status for that GetObject; `k8s` = `down` (the API
//!   stops listening) or anything else (every request answers 500).
//!
//! `make-fixtures` builds real squashfs images with `mksquashfs` (each holds a file
//! `NAME` naming the image), the bucket layout, IMS records and helper files; see
//! [`make_fixtures`] and tests/vm/README.md.

mod dir;
mod fixtures;
mod md5;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use sbps_testkit::ims;
use sbps_testkit::kube_api;
use sbps_testkit::s3::S3;

use dir::{DirBucket, DirIms};
use fixtures::make_fixtures;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve_main(&args[1..]),
        Some("make-fixtures") => {
            let dir = args.get(1).context("make-fixtures DIR")?;
            let bucket = opt(&args[2..], "--bucket")?.unwrap_or_else(|| "boot-images".into());
            make_fixtures(Path::new(dir), &bucket)
        }
        Some("identity") => {
            // identity KEY: backstore name, serial, WWID (a debugging aid).
            let key = args.get(1).context("identity KEY")?;
            let id = sbps_core::identity::Identity::of_key(key);
            println!("{} {} {}", id.name, id.serial, id.wwid());
            Ok(())
        }
        _ => {
            eprintln!(
                "usage: testbed serve DIR [--s3 PORT] [--ims PORT] [--k8s PORT] [--bucket NAME] [--ports-file FILE]\n       testbed make-fixtures DIR [--bucket NAME]\n       testbed identity KEY"
            );
            std::process::exit(2);
        }
    }
}

fn opt(args: &[String], name: &str) -> Result<Option<String>> {
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(Some(
            args.get(i + 1)
                .with_context(|| format!("{name} needs a value"))?
                .clone(),
        )),
        None => Ok(None),
    }
}

fn serve_main(args: &[String]) -> Result<()> {
    let dir = PathBuf::from(args.first().context("serve DIR")?);
    let port = |n: &str| -> Result<u16> {
        Ok(opt(args, n)?
            .map(|p| p.parse())
            .transpose()
            .with_context(|| format!("{n} PORT"))?
            .unwrap_or(0))
    };
    let (s3p, imsp, k8sp) = (port("--s3")?, port("--ims")?, port("--k8s")?);
    let bucket = opt(args, "--bucket")?.unwrap_or_else(|| "boot-images".into());
    let ports_file = opt(args, "--ports-file")?;
    let node = opt(args, "--node")?.unwrap_or_else(|| "e2e-node".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let s3 = tokio::net::TcpListener::bind(("127.0.0.1", s3p)).await?;
        let ims = tokio::net::TcpListener::bind(("127.0.0.1", imsp)).await?;
        let api = kube_api::KubeApi::start_at(k8sp, kube_api::ClientAuth::CertificateOrToken).await;
        api.add_token(K8S_TOKEN, "testbed");
        kube_api::write_kubeconfig(
            &dir.join("kubeconfig.run"),
            &api.url(),
            Some(&api.pki.ca_pem()),
            kube_api::User::Token(K8S_TOKEN),
        );
        let line = format!(
            "s3={} ims={} k8s={}",
            s3.local_addr()?.port(),
            ims.local_addr()?.port(),
            api.addr.port()
        );
        println!("{line}");
        std::io::stdout().flush()?;
        if let Some(f) = ports_file {
            let tmp = format!("{f}.tmp");
            std::fs::write(&tmp, format!("{line}\n"))?;
            std::fs::rename(&tmp, &f)?;
        }
        let s3_app = S3 {
            bucket,
            ..S3::over(Arc::new(DirBucket::new(dir.clone())))
        }
        .router();
        let ims_app = ims::router(Arc::new(DirIms { dir: dir.clone() }));
        // The tests edit these while the agent runs; the double reads them per request.
        api.follow_files(
            &node,
            dir.join("node-labels.json"),
            dir.join("faults").join("k8s"),
        );
        tokio::try_join!(async { axum::serve(s3, s3_app).await }, async {
            axum::serve(ims, ims_app).await
        },)?;
        Ok(())
    })
}

/// The token of the testbed's kubeconfig.
const K8S_TOKEN: &str = "testbed-k8s-token";
