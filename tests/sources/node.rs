//! The node-label source against a Kubernetes API double.

use std::time::Duration;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use sbps_marshal::inventory::node::{NodeConfig, NodeSource};
use serde_json::json;

use crate::support::{free_port, Served};

fn kubeconfig(dir: &std::path::Path, server: &str) -> std::path::PathBuf {
    let p = dir.join("admin.conf");
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: {server}\n  name: kubernetes\n\
             contexts:\n- context:\n    cluster: kubernetes\n    user: admin\n  name: admin@kubernetes\n\
             current-context: admin@kubernetes\nusers:\n- name: admin\n  user:\n    token: kube-token\n"
        ),
    )
    .unwrap();
    p
}

fn source(kubeconfig: std::path::PathBuf, node: &str) -> NodeSource {
    NodeSource::new(NodeConfig {
        kubeconfig,
        node_name: Some(node.into()),
        label: ("iscsi".into(), "sbps".into()),
        timeout: Duration::from_secs(2),
    })
}

async fn node(Path(name): Path<String>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    assert_eq!(headers["authorization"], "Bearer kube-token");
    let labels = match name.as_str() {
        "ncn-w001" => json!({"iscsi": "sbps", "kubernetes.io/hostname": "ncn-w001"}),
        "ncn-w002" => json!({"kubernetes.io/hostname": "ncn-w002"}),
        "ncn-w003" => json!({"iscsi": "other"}),
        "broken" => return (StatusCode::OK, "<html>proxy error</html>").into_response(),
        "flaky" => return (StatusCode::SERVICE_UNAVAILABLE, "etcd down").into_response(),
        _ => {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"kind": "Status", "reason": "NotFound", "code": 404})),
            )
                .into_response()
        }
    };
    axum::Json(json!({"kind": "Node", "apiVersion": "v1",
        "metadata": {"name": name, "labels": labels}}))
    .into_response()
}

#[tokio::test]
async fn label_states() {
    let srv = Served::start(Router::new().route("/api/v1/nodes/{name}", get(node))).await;
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), srv.url().as_str());
    assert!(source(kc.clone(), "ncn-w001").labelled().await.unwrap());
    assert!(!source(kc.clone(), "ncn-w002").labelled().await.unwrap());
    assert!(!source(kc.clone(), "ncn-w003").labelled().await.unwrap());
    assert!(
        !source(kc.clone(), "ncn-w999").labelled().await.unwrap(),
        "404 = not labelled"
    );
    let e = source(kc.clone(), "flaky").labelled().await.unwrap_err();
    assert!(e.to_string().contains("503"), "{e}");
    let e = source(kc.clone(), "broken").labelled().await.unwrap_err();
    assert!(e.to_string().contains("not a Node"), "{e}");
}

#[tokio::test]
async fn unreachable_and_missing_kubeconfig_are_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &format!("http://127.0.0.1:{}", free_port()));
    let s = source(kc, "ncn-w001");
    let e = s.labelled().await.unwrap_err();
    assert!(e.to_string().contains("127.0.0.1"), "{e}");
    assert_eq!(s.requests(), 1);
    let e = source(dir.path().join("nope.conf"), "ncn-w001")
        .labelled()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nope.conf"), "{e}");
}
