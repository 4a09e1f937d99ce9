//! `sbps-marshal fleet`: every worker's ledger, side by side, from the Kubernetes API.
//!
//! Exit status 1 when anything is flagged, so a health check (goss, a CronJob) can run
//! it; 2 when the API cannot be read.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::agent::wiring;
use crate::clock::unix_now;
use crate::config::Settings;
use crate::fleet::{survey, SurveyPolicy};
use crate::inventory::node::NodeSource;
use crate::k8s::configmaps::KubeConfigMaps;
use crate::k8s::KubeConnector;
use crate::ledger::kube::ConfigMapMirror;
use crate::ledger::remote::LedgerMirror;

/// Periods without a converged scan before an agent is flagged.
const PERIODS: u64 = 3;

pub(crate) async fn run(settings: &Settings, json: bool) -> Result<ExitCode> {
    let connector = Arc::new(KubeConnector::new(wiring::kube(settings)));
    let store = KubeConfigMaps::new(connector.clone(), &settings.ledger_namespace);
    let mirror = ConfigMapMirror::new(Arc::new(store), &settings.node_name);
    let docs = mirror.fleet().await.with_context(|| {
        format!(
            "cannot read the ledgers in namespace {}",
            settings.ledger_namespace
        )
    })?;
    // Which nodes must export every image: those carrying the label (when gated).
    let labelled = match &settings.node_label {
        Some(label) => {
            let nodes = NodeSource::with_connector(connector, None, label.clone());
            let names = nodes
                .labelled_nodes()
                .await
                .context("cannot list the labelled nodes")?;
            Some(names.into_iter().collect::<BTreeSet<String>>())
        }
        None => None,
    };
    let s = survey(
        &docs,
        &SurveyPolicy {
            labelled,
            grace_secs: settings.removal_grace.as_secs(),
            periods: PERIODS,
            now: unix_now(),
        },
    );
    if json {
        out!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        out_raw!("{}", s.to_text());
    }
    Ok(if s.flags.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
