//! What can go wrong talking to the Kubernetes API, in the terms a caller acts on.
//!
//! kube-rs reports every failure as one `kube::Error`; callers here need to tell
//! apart "the object is not there" (a fact) from "the API could not say" (unknown),
//! an optimistic-concurrency conflict (re-read and retry) from a missing RBAC grant
//! (an operator must act). `classify` draws those lines once, from the API's
//! `Status` object and the transport error, so no caller parses messages itself.

use std::fmt;

use kube::core::Status;
use thiserror::Error;

/// The largest ConfigMap payload the API accepts: the sum of the `data` values and
/// the decoded `binaryData` values (the API server's `ConfigMap` validation).
pub const CONFIGMAP_DATA_LIMIT: usize = 1024 * 1024;

/// One request, as an operator would name it in an RBAC rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The RBAC verb: `get`, `list`, `create`, `update`.
    pub(crate) verb: &'static str,
    /// The resource: `nodes`, `configmaps`.
    pub(crate) resource: &'static str,
    /// `None` for cluster-scoped resources (nodes).
    pub(crate) namespace: Option<String>,
    /// The object's name, when the request names one.
    pub(crate) name: Option<String>,
}

impl Op {
    pub(crate) fn new(verb: &'static str, resource: &'static str) -> Op {
        Op {
            verb,
            resource,
            namespace: None,
            name: None,
        }
    }

    pub(crate) fn in_namespace(mut self, ns: &str) -> Op {
        self.namespace = Some(ns.to_string());
        self
    }

    pub(crate) fn named(mut self, name: &str) -> Op {
        self.name = Some(name.to_string());
        self
    }

    /// Where the request acts, for messages: `in namespace "x"` or `at cluster scope`.
    fn scope(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("in namespace {ns:?}"),
            None => "at cluster scope".to_string(),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if let Some(n) = &self.name {
            write!(f, " {n:?}")?;
        }
        write!(f, " {}", self.scope())
    }
}

/// A failed Kubernetes API request (or a client that could not be set up).
///
/// Only [`KubeError::NotFound`] says something about the world; every other
/// variant means the answer is unknown, and callers must treat it so.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KubeError {
    /// The client could not be built: kubeconfig, service account, CA bundle, client
    /// certificate.
    #[error("Kubernetes client: {0}")]
    Setup(String),
    /// The API answered a `Status` with reason `NotFound`: the object (or its
    /// namespace: the API's message says which) does not exist.
    #[error("Kubernetes API {op}: {message}")]
    NotFound { op: Op, message: String },
    /// The object changed since it was read (stale `resourceVersion`): re-read, retry.
    #[error("Kubernetes API {op}: conflict, the object changed since it was read: {message}")]
    Conflict { op: Op, message: String },
    /// Create of a name that exists.
    #[error("Kubernetes API {op}: already exists: {message}")]
    AlreadyExists { op: Op, message: String },
    /// RBAC refused the request.
    #[error(
        "Kubernetes API refused to {verb} {resource} {scope} (403 Forbidden): {message}; grant the \
         agent's identity the {verb:?} verb on {resource:?} {scope} (README, \"Kubernetes access\")",
        verb = op.verb, resource = op.resource, scope = op.scope()
    )]
    Forbidden { op: Op, message: String },
    /// The credentials were not accepted (expired certificate or token).
    #[error("Kubernetes API {op}: 401 Unauthorized, the credentials were not accepted: {message}")]
    Unauthorized { op: Op, message: String },
    /// The object is over the API's size limits (1 MiB of ConfigMap data, 3 MiB a
    /// request, etcd's 1.5 MiB a value).
    #[error("Kubernetes API {op}: object too large: {message}")]
    TooLarge { op: Op, message: String },
    /// No answer: connection refused or reset, TLS failure, timeout, 5xx, 429.
    #[error("Kubernetes API {op}: unavailable: {detail}")]
    Unavailable { op: Op, detail: String },
    /// The API rejected the object as invalid (422) for a reason other than its size.
    #[error("Kubernetes API {op}: invalid: {message}")]
    Invalid { op: Op, message: String },
    /// An answer that is not what the API sends: a non-`Status` error body (a proxy's
    /// page), an undecodable object, an unexpected status code.
    #[error("Kubernetes API {op}: unexpected answer: {detail}")]
    Unexpected { op: Op, detail: String },
}

impl KubeError {
    /// Whether this is the API's "no such object" (and not any other failure).
    pub fn is_not_found(&self) -> bool {
        matches!(self, KubeError::NotFound { .. })
    }

    /// A timeout of the whole request.
    pub(crate) fn timed_out(op: Op, after: std::time::Duration) -> KubeError {
        KubeError::Unavailable {
            op,
            detail: format!("no answer within {} s (timed out)", after.as_secs_f64()),
        }
    }
}

/// Sorts a kube-rs error into a [`KubeError`].
pub(crate) fn classify(op: Op, e: kube::Error) -> KubeError {
    match e {
        kube::Error::Api(status) => from_status(op, &status),
        kube::Error::SerdeError(e) => KubeError::Unexpected {
            op,
            detail: format!("not the expected object: {e}"),
        },
        kube::Error::FromUtf8(e) => KubeError::Unexpected {
            op,
            detail: format!("error body is not UTF-8: {e}"),
        },
        kube::Error::Auth(e) => KubeError::Setup(format!(
            "credentials for {op}: {}",
            crate::http::error_chain(&e)
        )),
        kube::Error::BuildRequest(e) => KubeError::Setup(format!("request {op}: {e}")),
        // The credentials layer (token file, exec plugin) fails inside the service stack.
        kube::Error::Service(e) if is_auth_error(e.as_ref()) => KubeError::Setup(format!(
            "credentials for {op}: {}",
            crate::http::error_chain(e.as_ref())
        )),
        other => {
            let detail = crate::http::error_chain(&other);
            if detail.contains("length limit exceeded") {
                KubeError::Unexpected {
                    op,
                    detail: format!("answer larger than the agent accepts: {detail}"),
                }
            } else {
                KubeError::Unavailable { op, detail }
            }
        }
    }
}

fn is_auth_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<kube::client::AuthError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Sorts an API `Status` (kube-rs makes one, with reason "Failed to parse error
/// data", for an error body that is not a `Status`; that one is never NotFound).
pub(crate) fn from_status(op: Op, s: &Status) -> KubeError {
    let message = if s.message.is_empty() {
        format!("HTTP {} {}", s.code, s.reason)
    } else {
        s.message.chars().take(500).collect()
    };
    let too_long = s.details.as_ref().is_some_and(|d| {
        d.causes
            .iter()
            .any(|c| c.reason == "FieldValueTooLong" || c.message.starts_with("Too long"))
    });
    match (s.code, s.reason.as_str()) {
        (404, "NotFound") => KubeError::NotFound { op, message },
        (409, "AlreadyExists") => KubeError::AlreadyExists { op, message },
        (409, "Conflict") => KubeError::Conflict { op, message },
        (403, "Forbidden") => KubeError::Forbidden { op, message },
        (401, _) => KubeError::Unauthorized { op, message },
        (413, _) => KubeError::TooLarge { op, message },
        (422, _) if too_long => KubeError::TooLarge { op, message },
        (422, _) => KubeError::Invalid { op, message },
        // etcd refuses a value over its request limit; the API server passes it on as a 500.
        (500, _) if s.message.contains("request is too large") => {
            KubeError::TooLarge { op, message }
        }
        (429, _) | (500..=599, _) => KubeError::Unavailable {
            op,
            detail: format!("HTTP {}: {message}", s.code),
        },
        (code, reason) => KubeError::Unexpected {
            op,
            detail: format!("HTTP {code} {reason}: {message}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::response::{StatusCause, StatusDetails};
    use proptest::prelude::*;

    proptest! {
        /// Whatever the API (or something posing as it) answers, only a 404 `Status`
        /// with reason NotFound says "absent".
        #[test]
        fn absent_only_on_a_not_found_status(
            code in prop_oneof![Just(404u16), Just(403), Just(409), Just(500), 0u16..1000],
            reason in prop_oneof![
                Just("NotFound".to_string()),
                Just("Failed to parse error data".to_string()),
                Just(String::new()),
                "[A-Za-z ]{0,20}",
            ],
            message in any::<String>(),
        ) {
            let e = from_status(op(), &status(code, &reason, &message));
            prop_assert_eq!(e.is_not_found(), code == 404 && reason == "NotFound");
            prop_assert!(e.to_string().len() < 2000 + op().to_string().len());
        }
    }

    fn status(code: u16, reason: &str, message: &str) -> Status {
        let mut s = Status::failure(message, reason);
        s.code = code;
        s
    }

    fn op() -> Op {
        Op::new("update", "configmaps")
            .in_namespace("services")
            .named("sbps-ledger-ncn-w001")
    }

    #[test]
    fn only_a_status_not_found_is_not_found() {
        assert!(from_status(op(), &status(404, "NotFound", "x not found")).is_not_found());
        // What kube-rs makes of a proxy's plain "404 page not found".
        let proxy = status(404, "Failed to parse error data", "404 page not found");
        assert!(matches!(
            from_status(op(), &proxy),
            KubeError::Unexpected { .. }
        ));
        // A NotFound reason with another code is not the API's NotFound either.
        assert!(!from_status(op(), &status(503, "NotFound", "?")).is_not_found());
    }

    #[test]
    fn conflicts_and_exists_are_told_apart() {
        let c = from_status(
            op(),
            &status(409, "Conflict", "the object has been modified"),
        );
        assert!(matches!(c, KubeError::Conflict { .. }), "{c}");
        let a = from_status(op(), &status(409, "AlreadyExists", "already exists"));
        assert!(matches!(a, KubeError::AlreadyExists { .. }), "{a}");
    }

    #[test]
    fn forbidden_names_verb_resource_and_namespace() {
        let e = from_status(op(), &status(403, "Forbidden", "User \"x\" cannot update"));
        let text = e.to_string();
        for part in [
            "update",
            "configmaps",
            "namespace \"services\"",
            "403",
            "User \"x\" cannot update",
        ] {
            assert!(text.contains(part), "{part} missing: {text}");
        }
        let nodes = Op::new("list", "nodes");
        let e = from_status(nodes, &status(403, "Forbidden", "cannot list"));
        assert!(e.to_string().contains("list nodes at cluster scope"), "{e}");
    }

    #[test]
    fn size_limits_are_too_large() {
        let mut invalid = status(422, "Invalid", "ConfigMap \"x\" is invalid: []: Too long");
        invalid.details = Some(StatusDetails {
            name: "x".into(),
            group: String::new(),
            kind: "ConfigMap".into(),
            uid: String::new(),
            causes: vec![StatusCause {
                reason: "FieldValueTooLong".into(),
                message: "Too long: may not be more than 1048576 bytes".into(),
                field: "[]".into(),
            }],
            retry_after_seconds: 0,
        });
        assert!(matches!(
            from_status(op(), &invalid),
            KubeError::TooLarge { .. }
        ));
        let body = status(413, "RequestEntityTooLarge", "limit is 3145728");
        assert!(matches!(
            from_status(op(), &body),
            KubeError::TooLarge { .. }
        ));
        let etcd = status(500, "InternalError", "etcdserver: request is too large");
        assert!(matches!(
            from_status(op(), &etcd),
            KubeError::TooLarge { .. }
        ));
        let other = status(422, "Invalid", "metadata.name: Invalid value");
        assert!(matches!(
            from_status(op(), &other),
            KubeError::Invalid { .. }
        ));
    }

    #[test]
    fn server_trouble_is_unavailable() {
        for (code, reason) in [(500, "InternalError"), (503, ""), (429, "TooManyRequests")] {
            let e = from_status(op(), &status(code, reason, "busy"));
            assert!(matches!(e, KubeError::Unavailable { .. }), "{code}: {e}");
        }
        let e = from_status(op(), &status(401, "Unauthorized", "Unauthorized"));
        assert!(matches!(e, KubeError::Unauthorized { .. }));
    }
}
