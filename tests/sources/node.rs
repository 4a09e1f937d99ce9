//! The node-label source against the Kubernetes API double, over mTLS with an
//! admin.conf-style kubeconfig (client certificate and key data, the cluster CA).
//!
//! The rule pinned here: a Node is ours when its `kubernetes.io/hostname` label is the
//! node name (else when it is named so); only the API's `Status` NotFound (or an empty
//! selection) means "not labelled"; everything else is unknown.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sbps_marshal::inventory::node::{NodeSettings, NodeSource};
use sbps_marshal::k8s::KubeSettings;

use sbps_testkit::kube_api::{write_kubeconfig, ClientAuth, Fault, KubeApi, User};

const HOSTNAME: &str = "kubernetes.io/hostname";

/// An admin.conf for `api` in `dir`, as kubeadm writes it.
fn admin_conf(api: &KubeApi, dir: &Path) -> PathBuf {
    let p = dir.join("admin.conf");
    let cert = api.client_cert("kubernetes-admin");
    write_kubeconfig(&p, &api.url(), Some(&api.pki.ca_pem()), User::Cert(&cert));
    p
}

fn source(kubeconfig: &Path, node: &str) -> NodeSource {
    NodeSource::new(NodeSettings {
        api: KubeSettings {
            timeout: Duration::from_secs(2),
            ..KubeSettings::new(kubeconfig)
        },
        node_name: Some(node.into()),
        label: ("iscsi".into(), "sbps".into()),
    })
}

async fn labelled(kc: &Path, node: &str) -> Result<bool, String> {
    source(kc, node).labelled().await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn label_states() {
    let api = KubeApi::start(ClientAuth::Required).await;
    api.add_node("ncn-w001", &[("iscsi", "sbps"), (HOSTNAME, "ncn-w001")]);
    api.add_node("ncn-w002", &[(HOSTNAME, "ncn-w002")]);
    api.add_node("ncn-w003", &[("iscsi", "other"), (HOSTNAME, "ncn-w003")]);
    let dir = tempfile::tempdir().unwrap();
    let kc = admin_conf(&api, dir.path());
    assert_eq!(labelled(&kc, "ncn-w001").await, Ok(true));
    assert_eq!(labelled(&kc, "ncn-w002").await, Ok(false));
    assert_eq!(labelled(&kc, "ncn-w003").await, Ok(false));
    assert_eq!(
        labelled(&kc, "ncn-w999").await,
        Ok(false),
        "no such Node (empty selection, then the API's NotFound) = not labelled"
    );
    // Every request was authenticated by the client certificate.
    let seen = api.seen();
    assert!(seen
        .iter()
        .all(|s| s.user.as_deref() == Some("kubernetes-admin")));
    assert!(
        seen.iter().any(|s| s
            .uri
            .contains("labelSelector=kubernetes.io%2Fhostname%3Dncn-w001")),
        "{seen:?}"
    );
}

/// Issue #12 defect 5: the Node object is named by its FQDN, its hostname label is the
/// short name the agent knows. The original (selecting by the label) served it.
#[tokio::test]
async fn node_named_otherwise_is_found_by_its_hostname_label() {
    let api = KubeApi::start(ClientAuth::Required).await;
    api.add_node(
        "ncn-w001.local",
        &[("iscsi", "sbps"), (HOSTNAME, "ncn-w001")],
    );
    let dir = tempfile::tempdir().unwrap();
    let kc = admin_conf(&api, dir.path());
    assert_eq!(labelled(&kc, "ncn-w001").await, Ok(true));
}

/// NODE_NAME set to the object's name, whose hostname label differs: found by name.
#[tokio::test]
async fn node_name_that_is_the_object_name_is_found_by_name() {
    let api = KubeApi::start(ClientAuth::Required).await;
    api.add_node(
        "ncn-w005.hmn.example",
        &[("iscsi", "sbps"), (HOSTNAME, "ncn-w005")],
    );
    // A name no label value can hold: no selector is sent, the name is looked up.
    let long = format!("ncn-w006.{}", "x".repeat(60));
    api.add_node(&long, &[("iscsi", "sbps")]);
    let dir = tempfile::tempdir().unwrap();
    let kc = admin_conf(&api, dir.path());
    assert_eq!(labelled(&kc, "ncn-w005.hmn.example").await, Ok(true));
    assert_eq!(labelled(&kc, &long).await, Ok(true));
}

/// Only the API's `Status` NotFound is "absent": a proxy's plain 404, 403, 500, a
/// garbage page, a slow or a stopped server are all unknown.
#[tokio::test]
async fn anything_but_a_status_not_found_is_unknown() {
    let api = KubeApi::start(ClientAuth::Required).await;
    api.add_node("ncn-w001", &[("iscsi", "sbps"), (HOSTNAME, "ncn-w001")]);
    let dir = tempfile::tempdir().unwrap();
    let kc = admin_conf(&api, dir.path());

    api.fault(Some(Fault::ProxyNotFound));
    let e = labelled(&kc, "ncn-w999").await.unwrap_err();
    assert!(e.contains("404 page not found"), "{e}");
    api.fault(Some(Fault::InternalError));
    let e = labelled(&kc, "ncn-w001").await.unwrap_err();
    assert!(e.contains("unavailable") && e.contains("500"), "{e}");
    api.fault(Some(Fault::Garbage));
    let e = labelled(&kc, "ncn-w001").await.unwrap_err();
    assert!(e.contains("unexpected answer"), "{e}");
    api.fault(None);

    api.deny("list", "nodes");
    let e = labelled(&kc, "ncn-w001").await.unwrap_err();
    assert!(e.contains("refused to list nodes at cluster scope"), "{e}");
    assert!(e.contains("User \"kubernetes-admin\" cannot list"), "{e}");

    let api2 = KubeApi::start(ClientAuth::Required).await;
    api2.add_node("ncn-w001", &[(HOSTNAME, "ncn-w001")]);
    let dir2 = tempfile::tempdir().unwrap();
    let kc2 = admin_conf(&api2, dir2.path());
    api2.slow(Some(Duration::from_secs(5)));
    let t = Instant::now();
    let e = labelled(&kc2, "ncn-w001").await.unwrap_err();
    assert!(e.contains("timed out"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    api2.slow(None);
    api2.down();
    let e = labelled(&kc2, "ncn-w001").await.unwrap_err();
    assert!(e.contains("unavailable"), "{e}");
    assert!(e.contains(&api2.addr.to_string()), "names the server: {e}");
}

#[tokio::test]
async fn missing_kubeconfig_is_unknown_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let s = source(&dir.path().join("nope.conf"), "ncn-w001");
    let e = s.labelled().await.unwrap_err().to_string();
    assert!(
        e.contains("nope.conf") && e.contains("does not exist"),
        "{e}"
    );
    assert_eq!(s.requests(), 0);
}
