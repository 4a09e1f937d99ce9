//! What a test scripts into the S3 double: faults for the next requests (or every
//! one), and the log of the requests it received, which tests assert on instead of
//! counting in a hand-rolled server.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use axum::http::StatusCode;

use super::S3Error;

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    /// ListObjectsV2.
    List,
    /// GetObject.
    Get,
    /// Any request.
    Any,
}

/// What the double does instead of (or before) answering.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answers this error document instead.
    Error(S3Error),
    /// Holds the request this long, then answers it as usual: longer than the
    /// client's timeout, a timeout; an hour, a stalled server.
    Delay(Duration),
}

impl Fault {
    /// 503 `SlowDown`, as S3 throttles.
    pub fn slow_down() -> Fault {
        Fault::Error(S3Error::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "Please reduce your request rate.",
        ))
    }

    /// 500 `InternalError`, as S3 fails.
    pub fn internal_error() -> Fault {
        Fault::Error(S3Error::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "We encountered an internal error. Please try again.",
        ))
    }

    /// A request that never answers (within any test).
    pub fn stall() -> Fault {
        Fault::Delay(Duration::from_secs(3600))
    }
}

/// One request as the double received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    /// The path as sent (percent-encoded).
    pub path: String,
    /// The query string as sent, if any.
    pub query: Option<String>,
}

impl Seen {
    /// Whether the query carries the parameter `name` (as sent, case-sensitive).
    pub fn has_param(&self, name: &str) -> bool {
        self.query.as_deref().is_some_and(|q| {
            q.split('&')
                .any(|p| p.split_once('=').map_or(p, |(k, _)| k) == name)
        })
    }
}

#[derive(Debug)]
struct Rule {
    on: On,
    fault: Fault,
    /// Requests it still applies to; `None`: every one.
    left: Option<usize>,
}

/// Requests the log keeps (the testbed's double serves for as long as a VM suite
/// runs; no test sends this many).
const LOG_CAP: usize = 10_000;

/// The faults to come and the requests seen; shared by the double and the test.
#[derive(Debug, Default)]
pub struct Script {
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
    requests: AtomicUsize,
}

impl Script {
    /// `fault` for the next request `on` matches (queued after earlier ones).
    pub fn once(&self, on: On, fault: Fault) {
        self.times(on, fault, 1);
    }

    /// `fault` for the next `n` requests `on` matches.
    pub fn times(&self, on: On, fault: Fault, n: usize) {
        self.push(Rule {
            on,
            fault,
            left: Some(n),
        });
    }

    /// `fault` for every request `on` matches, until [`Script::clear`].
    pub fn always(&self, on: On, fault: Fault) {
        self.push(Rule {
            on,
            fault,
            left: None,
        });
    }

    /// No more faults: every request answered as the store says.
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The requests received so far, in order (the first 10,000).
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many requests were received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn push(&self, rule: Rule) {
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(rule);
    }

    pub(super) fn record(&self, seen: Seen) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let mut log = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() < LOG_CAP {
            log.push(seen);
        }
    }

    /// The fault for this request, if any: the first rule that matches, used up.
    pub(super) fn take(&self, list: bool) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let i = rules.iter().position(|r| match r.on {
            On::Any => true,
            On::List => list,
            On::Get => !list,
        })?;
        let fault = rules[i].fault.clone();
        if let Some(left) = &mut rules[i].left {
            *left -= 1;
            if *left == 0 {
                rules.remove(i);
            }
        }
        Some(fault)
    }
}
