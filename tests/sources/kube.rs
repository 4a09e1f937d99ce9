//! The Kubernetes client and the ConfigMap store against the Kubernetes API double:
//! every way of authenticating the agent supports, the TLS rules, optimistic
//! concurrency between two agents, RBAC refusals, the size limits, and an API that is
//! down or slow. The in-memory store is held to the same contract.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sbps_marshal::http::TlsOptions;
use sbps_marshal::k8s::{
    ConfigMapStore, InCluster, KubeConfigMaps, KubeConnector, KubeError, KubeSettings,
    MemoryConfigMaps, StoredConfigMap,
};

use crate::support::Capture;
use sbps_testkit::kube_api::{file, write_kubeconfig, ClientAuth, KubeApi, User};

const NS: &str = "services";

fn settings(kubeconfig: &Path) -> KubeSettings {
    KubeSettings {
        timeout: Duration::from_secs(2),
        ..KubeSettings::new(kubeconfig)
    }
}

fn store(s: KubeSettings) -> KubeConfigMaps {
    KubeConfigMaps::new(Arc::new(KubeConnector::new(s)), NS)
}

/// admin.conf for a certificate issued to `user`.
fn admin_conf(api: &KubeApi, dir: &Path, user: &str) -> PathBuf {
    let p = dir.join(format!("{user}.conf"));
    let cert = api.client_cert(user);
    write_kubeconfig(&p, &api.url(), Some(&api.pki.ca_pem()), User::Cert(&cert));
    p
}

fn ledger(name: &str, body: &str) -> StoredConfigMap {
    let mut cm = StoredConfigMap::new(name);
    cm.labels
        .insert("app.kubernetes.io/name".into(), "sbps-marshal".into());
    cm.data.insert("ledger.json".into(), body.into());
    cm
}

/// The store's contract, run against the API double and the in-memory store alike.
async fn contract(s: &dyn ConfigMapStore) {
    assert_eq!(s.get("sbps-ledger-ncn-w001").await.unwrap(), None);
    let made = s
        .create(&ledger("sbps-ledger-ncn-w001", "{}"))
        .await
        .unwrap();
    let v1 = made.resource_version.clone().expect("a version");
    assert_eq!(
        s.get("sbps-ledger-ncn-w001").await.unwrap(),
        Some(made.clone())
    );
    let e = s
        .create(&ledger("sbps-ledger-ncn-w001", "{}"))
        .await
        .unwrap_err();
    assert!(matches!(e, KubeError::AlreadyExists { .. }), "{e}");

    let mut next = made.clone();
    next.data.insert("ledger.json".into(), "{\"v\":2}".into());
    let stored = s.replace(&next).await.unwrap();
    assert_ne!(stored.resource_version.as_deref(), Some(v1.as_str()));
    assert_eq!(stored.data, next.data);
    // The version read before that write is stale now.
    let e = s.replace(&made).await.unwrap_err();
    assert!(matches!(e, KubeError::Conflict { .. }), "{e}");
    let mut unversioned = stored.clone();
    unversioned.resource_version = None;
    let e = s.replace(&unversioned).await.unwrap_err();
    assert!(matches!(e, KubeError::Invalid { .. }), "{e}");

    s.create(&ledger("sbps-ledger-ncn-w002", "{}"))
        .await
        .unwrap();
    let mut other = StoredConfigMap::new("unrelated");
    other
        .labels
        .insert("app.kubernetes.io/name".into(), "else".into());
    s.create(&other).await.unwrap();
    let mut names: Vec<String> = s
        .list("app.kubernetes.io/name=sbps-marshal")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    names.sort();
    assert_eq!(names, ["sbps-ledger-ncn-w001", "sbps-ledger-ncn-w002"]);

    let big = ledger("sbps-ledger-big", &"x".repeat(1024 * 1024 + 1));
    let e = s.create(&big).await.unwrap_err();
    assert!(matches!(e, KubeError::TooLarge { .. }), "{e}");
    let limit = ledger("sbps-ledger-limit", &"x".repeat(1024 * 1024));
    s.create(&limit).await.expect("exactly 1 MiB is allowed");
}

#[tokio::test]
async fn the_api_and_the_memory_store_keep_one_contract() {
    let api = KubeApi::start(ClientAuth::Required).await;
    let dir = tempfile::tempdir().unwrap();
    contract(&store(settings(&admin_conf(&api, dir.path(), "ncn-w001")))).await;
    contract(&MemoryConfigMaps::new(NS)).await;
    // What the API holds is what the store wrote, with the API's own fields.
    let cm = api.configmap(NS, "sbps-ledger-ncn-w001").unwrap();
    assert_eq!(cm["data"]["ledger.json"], "{\"v\":2}");
    assert_eq!(cm["metadata"]["namespace"], NS);
    assert!(cm["metadata"]["uid"].is_string());
}

/// Two agents write the same ConfigMap at once: one wins, the other gets a Conflict,
/// re-reads and then succeeds; nothing the first wrote is silently overwritten.
#[tokio::test]
async fn two_writers_one_conflict_then_success_after_rereading() {
    let api = KubeApi::start(ClientAuth::Required).await;
    let dir = tempfile::tempdir().unwrap();
    let a = store(settings(&admin_conf(&api, dir.path(), "ncn-w001")));
    let b = store(settings(&admin_conf(&api, dir.path(), "ncn-w002")));
    let base = a.create(&ledger("sbps-fleet", "")).await.unwrap();
    let read_a = a.get("sbps-fleet").await.unwrap().unwrap();
    let read_b = b.get("sbps-fleet").await.unwrap().unwrap();
    assert_eq!(read_a, base);
    let mut wa = read_a.clone();
    wa.data.insert("ncn-w001".into(), "lun 1".into());
    let mut wb = read_b.clone();
    wb.data.insert("ncn-w002".into(), "lun 2".into());
    let (ra, rb) = tokio::join!(a.replace(&wa), b.replace(&wb));
    let (winner, loser) = match (&ra, &rb) {
        (Ok(_), Err(KubeError::Conflict { .. })) => (ra.unwrap(), (&b, wb)),
        (Err(KubeError::Conflict { .. }), Ok(_)) => (rb.unwrap(), (&a, wa)),
        other => panic!("exactly one writer must conflict: {other:?}"),
    };
    let (store, mine) = loser;
    let mut fresh = store.get("sbps-fleet").await.unwrap().unwrap();
    assert_eq!(fresh, winner);
    for (k, v) in mine.data.iter().filter(|(k, _)| k.starts_with("ncn")) {
        fresh.data.insert(k.clone(), v.clone());
    }
    let done = store.replace(&fresh).await.unwrap();
    let stored = api.configmap(NS, "sbps-fleet").unwrap();
    assert_eq!(stored["data"]["ncn-w001"], "lun 1");
    assert_eq!(stored["data"]["ncn-w002"], "lun 2");
    assert_eq!(
        stored["metadata"]["resourceVersion"].as_str(),
        done.resource_version.as_deref()
    );
    // Writing what is stored changes nothing, not even the version (as etcd).
    assert_eq!(store.replace(&done).await.unwrap(), done);
}

#[tokio::test]
async fn replace_of_a_deleted_configmap_and_create_in_a_missing_namespace_are_not_found() {
    let api = KubeApi::start(ClientAuth::Required).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = admin_conf(&api, dir.path(), "ncn-w001");
    let s = store(settings(&kc));
    let made = s.create(&ledger("gone", "{}")).await.unwrap();
    api.remove_configmap(NS, "gone");
    let e = s.replace(&made).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let elsewhere = KubeConfigMaps::new(Arc::new(KubeConnector::new(settings(&kc))), "no-such-ns");
    let e = elsewhere.create(&ledger("x", "{}")).await.unwrap_err();
    assert!(
        e.is_not_found()
            && e.to_string()
                .contains("namespaces \"no-such-ns\" not found"),
        "{e}"
    );
}

/// RBAC missing: the message names the verb, the resource and the namespace, and the
/// server's own words (which user was refused).
#[tokio::test]
async fn forbidden_says_what_to_grant() {
    let api = KubeApi::start(ClientAuth::Required).await;
    let dir = tempfile::tempdir().unwrap();
    let s = store(settings(&admin_conf(
        &api,
        dir.path(),
        "system:node:ncn-w001",
    )));
    let made = s
        .create(&ledger("sbps-ledger-ncn-w001", "{}"))
        .await
        .unwrap();
    api.deny("update", "configmaps");
    let e = s.replace(&made).await.unwrap_err();
    assert!(matches!(e, KubeError::Forbidden { .. }), "{e}");
    let text = e.to_string();
    for part in [
        "refused to update configmaps in namespace \"services\"",
        "403 Forbidden",
        "User \"system:node:ncn-w001\" cannot update resource \"configmaps\"",
        "grant the agent's identity the \"update\" verb on \"configmaps\"",
    ] {
        assert!(text.contains(part), "{part:?} missing in: {text}");
    }
    api.deny("list", "configmaps");
    let e = s.list("a=b").await.unwrap_err();
    assert!(e.to_string().contains("refused to list configmaps"), "{e}");
}

#[tokio::test]
async fn down_and_slow_are_unavailable_within_the_timeout_and_recover() {
    let api = KubeApi::start(ClientAuth::Required).await;
    let dir = tempfile::tempdir().unwrap();
    let s = store(settings(&admin_conf(&api, dir.path(), "ncn-w001")));
    s.create(&ledger("l", "{}")).await.unwrap();

    api.slow(Some(Duration::from_secs(6)));
    let t = Instant::now();
    let e = s.get("l").await.unwrap_err();
    assert!(
        matches!(e, KubeError::Unavailable { .. }) && e.to_string().contains("timed out"),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    api.slow(None);

    api.down();
    let t = Instant::now();
    let e = s.get("l").await.unwrap_err();
    assert!(matches!(e, KubeError::Unavailable { .. }), "{e}");
    assert!(e.to_string().contains(&api.addr.to_string()), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3));
    api.up().await;
    assert!(
        s.get("l").await.unwrap().is_some(),
        "the same store works again"
    );
}

/// Each request opens its own connection: none rides a kept-alive connection to a
/// server that may have gone away in between (scans are minutes apart).
#[tokio::test]
async fn no_request_reuses_a_kept_alive_connection() {
    let api = KubeApi::start(ClientAuth::Required).await;
    let dir = tempfile::tempdir().unwrap();
    let s = store(settings(&admin_conf(&api, dir.path(), "ncn-w001")));
    for _ in 0..3 {
        assert_eq!(s.get("x").await.unwrap(), None);
    }
    assert_eq!(api.seen().len(), 3);
    assert_eq!(api.connections(), 3);
}

/// A client without a certificate fails the mTLS handshake; a token works where the
/// server accepts tokens, a wrong one is 401.
#[tokio::test]
async fn client_certificate_required_and_token_auth() {
    let mtls = KubeApi::start(ClientAuth::Required).await;
    mtls.add_token("t0ken", "ncn-w001");
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("token.conf");
    write_kubeconfig(
        &kc,
        &mtls.url(),
        Some(&mtls.pki.ca_pem()),
        User::Token("t0ken"),
    );
    let e = store(settings(&kc)).get("x").await.unwrap_err();
    assert!(
        matches!(e, KubeError::Unavailable { .. }),
        "refused at the handshake: {e}"
    );

    let api = KubeApi::start(ClientAuth::CertificateOrToken).await;
    api.add_token("t0ken", "ncn-w001");
    write_kubeconfig(
        &kc,
        &api.url(),
        Some(&api.pki.ca_pem()),
        User::Token("t0ken"),
    );
    assert_eq!(store(settings(&kc)).get("x").await.unwrap(), None);
    assert!(api
        .seen()
        .iter()
        .all(|s| s.user.as_deref() == Some("ncn-w001")));
    write_kubeconfig(
        &kc,
        &api.url(),
        Some(&api.pki.ca_pem()),
        User::Token("wrong"),
    );
    let e = store(settings(&kc)).get("x").await.unwrap_err();
    assert!(matches!(e, KubeError::Unauthorized { .. }), "{e}");
}

/// An exec plugin (as cloud kubeconfigs use) supplies the token.
#[tokio::test]
async fn exec_plugin_credentials() {
    let api = KubeApi::start(ClientAuth::CertificateOrToken).await;
    api.add_token("from-exec", "exec-user");
    let dir = tempfile::tempdir().unwrap();
    let plugin = file(
        dir.path(),
        "plugin.sh",
        "#!/bin/sh\necho '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"from-exec\"}}'\n",
    );
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let kc = dir.path().join("exec.conf");
    let cmd = plugin.to_str().unwrap();
    write_kubeconfig(
        &kc,
        &api.url(),
        Some(&api.pki.ca_pem()),
        User::Exec(cmd, &[]),
    );
    assert_eq!(store(settings(&kc)).get("x").await.unwrap(), None);
    assert!(api
        .seen()
        .iter()
        .any(|s| s.user.as_deref() == Some("exec-user")));
}

/// No kubeconfig file: the pod's service account (token + ca.crt) is used.
#[tokio::test]
async fn service_account_when_there_is_no_kubeconfig() {
    let api = KubeApi::start(ClientAuth::CertificateOrToken).await;
    api.add_token("sa-token", "system:serviceaccount:services:sbps-marshal");
    let dir = tempfile::tempdir().unwrap();
    file(dir.path(), "token", "sa-token");
    file(dir.path(), "ca.crt", &api.pki.ca_pem());
    file(dir.path(), "namespace", NS);
    let s = KubeSettings {
        in_cluster: Some(InCluster {
            host: "127.0.0.1".into(),
            port: api.addr.port().to_string(),
            dir: dir.path().into(),
        }),
        ..settings(&dir.path().join("admin.conf"))
    };
    assert_eq!(store(s.clone()).get("x").await.unwrap(), None);
    assert_eq!(
        api.seen()[0].user.as_deref(),
        Some("system:serviceaccount:services:sbps-marshal")
    );
    // A kubeconfig that exists wins, even a broken one: no silent switch.
    file(dir.path(), "admin.conf", "not: [a kubeconfig");
    let e = store(s).get("x").await.unwrap_err();
    assert!(
        matches!(e, KubeError::Setup(_)) && e.to_string().contains("admin.conf"),
        "{e}"
    );
}

/// A kubeconfig that exists but cannot be used is a setup error naming the file (never
/// a panic, never another source of credentials).
#[tokio::test]
async fn broken_kubeconfigs_are_named_errors() {
    let api = KubeApi::start(ClientAuth::Required).await;
    let dir = tempfile::tempdir().unwrap();
    let cert = api.client_cert("ncn-w001");
    let kc = dir.path().join("admin.conf");
    write_kubeconfig(&kc, &api.url(), Some(&api.pki.ca_pem()), User::Cert(&cert));
    let good = std::fs::read_to_string(&kc).unwrap();
    let key_line = good
        .lines()
        .find(|l| l.contains("client-key-data"))
        .unwrap();
    let ca_line = good
        .lines()
        .find(|l| l.contains("certificate-authority-data"))
        .unwrap();
    for text in [
        String::new(),
        "not: [yaml".into(),
        "current-context: x\n".into(),
        "current-context: x\ncontexts:\n- name: x\n  context: {cluster: c}\n".into(),
        good.replace(key_line, "    client-key-data: bm90IGEga2V5"),
        good.replace(key_line, ""),
        good.replace(ca_line, "    certificate-authority-data: %%%"),
        good.replace(&api.url(), "not a url"),
    ] {
        std::fs::write(&kc, &text).unwrap();
        let s = KubeSettings {
            in_cluster: Some(InCluster {
                host: "127.0.0.1".into(),
                port: api.addr.port().to_string(),
                dir: dir.path().into(),
            }),
            ..settings(&kc)
        };
        let e = store(s).get("x").await.unwrap_err();
        assert!(
            matches!(e, KubeError::Setup(_)) && e.to_string().contains("admin.conf"),
            "{text}\n=> {e}"
        );
    }
    assert!(api.seen().is_empty(), "no request with broken credentials");
}

/// TLS_VERIFY and CA_BUNDLE: a kubeconfig naming no CA is verified against the system
/// roots plus CA_BUNDLE; one naming a CA trusts it plus CA_BUNDLE; TLS_VERIFY=false
/// accepts anything and says so.
#[tokio::test]
async fn tls_verify_and_ca_bundle() {
    let cap = Capture::start();
    let api = KubeApi::start(ClientAuth::Required).await;
    let dir = tempfile::tempdir().unwrap();
    let cert = api.client_cert("ncn-w001");
    let bundle = file(dir.path(), "ca-bundle.pem", &api.pki.ca_pem());
    let kc = dir.path().join("no-ca.conf");
    write_kubeconfig(&kc, &api.url(), None, User::Cert(&cert));
    let with = |tls: TlsOptions| KubeSettings {
        tls,
        ..settings(&kc)
    };

    let e = store(with(TlsOptions::default()))
        .get("x")
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("UnknownIssuer") || e.to_string().contains("certificate"),
        "{e}"
    );
    let bundled = TlsOptions {
        ca_bundle: Some(bundle.clone()),
        insecure: false,
    };
    assert_eq!(store(with(bundled.clone())).get("x").await.unwrap(), None);
    assert!(!cap
        .text()
        .contains("verification is OFF for the Kubernetes API"));
    let off = TlsOptions {
        ca_bundle: None,
        insecure: true,
    };
    assert_eq!(store(with(off)).get("x").await.unwrap(), None);
    assert!(cap
        .text()
        .contains("TLS certificate verification is OFF for the Kubernetes API"));

    // The kubeconfig names another CA: refused, unless CA_BUNDLE adds the right one.
    let other = sbps_testkit::kube_api::Pki::new("another cluster");
    write_kubeconfig(&kc, &api.url(), Some(&other.ca_pem()), User::Cert(&cert));
    let e = store(with(TlsOptions::default()))
        .get("x")
        .await
        .unwrap_err();
    assert!(matches!(e, KubeError::Unavailable { .. }), "{e}");
    assert_eq!(store(with(bundled)).get("x").await.unwrap(), None);

    let garbage = file(dir.path(), "garbage.pem", "not a certificate");
    let e = store(with(TlsOptions {
        ca_bundle: Some(garbage),
        insecure: false,
    }))
    .get("x")
    .await
    .unwrap_err();
    assert!(
        matches!(e, KubeError::Setup(_)) && e.to_string().contains("garbage.pem"),
        "{e}"
    );
}

/// The API's limits: ConfigMap data over 1 MiB is refused by validation (422), a body
/// over 3 MiB by the server (413); both are TooLarge, with the API's words.
#[tokio::test]
async fn size_limits_are_too_large() {
    let api = KubeApi::start(ClientAuth::Required).await;
    let dir = tempfile::tempdir().unwrap();
    let s = store(settings(&admin_conf(&api, dir.path(), "ncn-w001")));
    let made = s.create(&ledger("l", "{}")).await.unwrap();
    let mut over = made.clone();
    over.data
        .insert("ledger.json".into(), "x".repeat(1024 * 1024 + 1));
    assert!(over.data_size() > sbps_marshal::k8s::error::CONFIGMAP_DATA_LIMIT);
    let e = s.replace(&over).await.unwrap_err();
    assert!(matches!(e, KubeError::TooLarge { .. }), "{e}");
    assert!(
        e.to_string().contains("may not be more than 1048576 bytes"),
        "{e}"
    );
    over.data
        .insert("ledger.json".into(), "x".repeat(4 * 1024 * 1024));
    let e = s.replace(&over).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("Request entity too large: limit is 3145728"),
        "{e}"
    );
    // The stored object is untouched.
    assert_eq!(s.get("l").await.unwrap(), Some(made));
}
