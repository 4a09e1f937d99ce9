//! The IMS double: `GET /apis/ims/v3/images` and `GET /apis/ims/v3/images/{id}` as
//! the IMS behind the API gateway answers them.
//!
//! * a bearer token is required (401 without one, or with one other than the
//!   [`Source::token`] when that names one), as the gateway's policy does;
//! * the list answers whatever the [`Source`] holds now: the records (200), a raw body
//!   (a proxy's HTML page, broken JSON), or a status with a problem+json body;
//! * `/{id}` answers the record of that id, or 404 problem+json.
//!
//! [`Ims`] holds its answer in memory (tests and benchmarks change it while it is
//! served), can queue one-off answers for the next requests ([`Ims::then`]), echo the
//! caller's token as a careless gateway would ([`Ims::echo_token`]), and logs the
//! `Authorization` header of every list request ([`Ims::seen`]); the testbed reads its
//! answer from files the VM suites edit.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};

/// The path of the image list under the API gateway.
pub const IMAGES_PATH: &str = "/apis/ims/v3/images";

/// What the double answers to a list request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: &'static str,
    /// Kept serialized: a 5,000-record listing is not re-encoded per request.
    pub body: Bytes,
}

impl Answer {
    /// 200 with the records.
    pub fn records(records: &Value) -> Answer {
        Answer::json(StatusCode::OK, records)
    }

    /// `status` with a JSON body.
    pub fn json(status: StatusCode, body: &Value) -> Answer {
        Answer {
            status,
            content_type: "application/json",
            body: body.to_string().into(),
        }
    }

    /// `status` with an RFC 7807 body, as IMS reports its errors.
    pub fn problem(status: StatusCode, detail: &str) -> Answer {
        let body = json!({"detail": detail, "status": status.as_u16(),
            "title": status.canonical_reason().unwrap_or(""), "type": "about:blank"});
        Answer {
            content_type: "application/problem+json",
            ..Answer::json(status, &body)
        }
    }

    /// `status` with a plain-text body (a proxy's or a crashed server's).
    pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// 200 with `body` as it is.
    pub fn raw(content_type: &'static str, body: impl Into<Bytes>) -> Answer {
        Answer {
            status: StatusCode::OK,
            content_type,
            body: body.into(),
        }
    }

    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, self.content_type)],
            self.body,
        )
            .into_response()
    }
}

/// Where the double's answers come from.
pub trait Source: Send + Sync + 'static {
    /// What a list request gets now.
    fn answer(&self) -> Answer;
    /// The one bearer token accepted; `None`: any non-empty one.
    fn token(&self) -> Option<String> {
        None
    }
    /// How long each authenticated list request waits before its answer (a slow gateway).
    fn wait(&self) -> Duration {
        Duration::ZERO
    }
    /// Called for every list request with its `Authorization` header (a counter, a log).
    fn hit(&self, _authorization: Option<&str>) {}
    /// A one-off answer for this list request (which sent `authorization`), before any check.
    fn next(&self, _authorization: Option<&str>) -> Option<Answer> {
        None
    }
}

/// The answer in memory, changeable while served; counts and logs the requests, can
/// delay them, answer a queue of one-off answers first, or echo the caller's token.
#[derive(Debug)]
pub struct Ims {
    answer: RwLock<Answer>,
    token: Option<String>,
    delay: Mutex<Duration>,
    hits: AtomicU64,
    queued: Mutex<VecDeque<Answer>>,
    echo: Mutex<Option<StatusCode>>,
    seen: Mutex<Vec<Option<String>>>,
}

impl Default for Ims {
    fn default() -> Ims {
        Ims::new(&json!([]))
    }
}

impl Ims {
    /// Answers `records` (a JSON array, or anything a test wants the agent to parse).
    pub fn new(records: &Value) -> Ims {
        Ims {
            answer: RwLock::new(Answer::records(records)),
            token: None,
            delay: Mutex::new(Duration::ZERO),
            hits: AtomicU64::new(0),
            queued: Mutex::default(),
            echo: Mutex::default(),
            seen: Mutex::default(),
        }
    }

    /// Accepts only `Bearer <token>`.
    pub fn with_token(mut self, token: &str) -> Ims {
        self.token = Some(token.into());
        self
    }

    /// Answers `answer` from now on.
    pub fn set_answer(&self, answer: Answer) {
        *self.answer.write().unwrap_or_else(|e| e.into_inner()) = answer;
    }

    /// Answers 200 with `records` from now on.
    pub fn set(&self, records: &[Value]) {
        self.set_answer(Answer::raw(
            "application/json",
            serde_json::to_vec(records).unwrap_or_default(),
        ));
    }

    /// Answers `status` with the JSON `body` from now on.
    pub fn respond(&self, status: StatusCode, body: &Value) {
        self.set_answer(Answer::json(status, body));
    }

    /// Every request waits `d` before it is answered.
    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap_or_else(|e| e.into_inner()) = d;
    }

    /// The next list request (after those queued before) gets `answer`, whatever
    /// its token; later ones the steady answer again.
    pub fn then(&self, answer: Answer) {
        self.queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(answer);
    }

    /// From now on every list request gets `status` with a `detail` that echoes its
    /// `Authorization` header, as a careless gateway might (the agent must not log it).
    pub fn echo_token(&self, status: StatusCode) {
        *self.echo.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
    }

    /// The `Authorization` header of every list request so far, in order (the first
    /// 10,000: a benchmark's double answers many more, and needs no log).
    pub fn seen(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// List requests answered so far (authenticated or not).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// The routes, over this double.
    pub fn router(self: Arc<Self>) -> Router {
        router(self)
    }
}

impl Source for Ims {
    fn answer(&self) -> Answer {
        self.answer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    fn token(&self) -> Option<String> {
        self.token.clone()
    }
    fn wait(&self) -> Duration {
        *self.delay.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn hit(&self, authorization: Option<&str>) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() < 10_000 {
            seen.push(authorization.map(str::to_string));
        }
    }
    fn next(&self, authorization: Option<&str>) -> Option<Answer> {
        let echo = *self.echo.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(status) = echo {
            let auth = authorization.unwrap_or_default();
            return Some(Answer::json(
                status,
                &json!({"detail": format!("token rejected: {auth}")}),
            ));
        }
        self.queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }
}

/// The routes over any source.
pub fn router<S: Source>(source: Arc<S>) -> Router {
    Router::new()
        .route(IMAGES_PATH, get(list::<S>))
        .route(&format!("{IMAGES_PATH}/{{id}}"), get(one::<S>))
        .with_state(source)
}

/// 401 unless the request carries an accepted bearer token.
fn refused<S: Source>(s: &S, headers: &HeaderMap) -> Option<Response> {
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let detail = match (got, s.token()) {
        (None, _) => "missing bearer token",
        (Some(g), Some(want)) if g != want.trim() => "invalid token",
        _ => return None,
    };
    Some(Answer::problem(StatusCode::UNAUTHORIZED, detail).into_response())
}

async fn list<S: Source>(State(s): State<Arc<S>>, headers: HeaderMap) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    s.hit(authorization);
    if let Some(a) = s.next(authorization) {
        return a.into_response();
    }
    if let Some(r) = refused(&*s, &headers) {
        return r;
    }
    let wait = s.wait();
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    s.answer().into_response()
}

async fn one<S: Source>(
    State(s): State<Arc<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = refused(&*s, &headers) {
        return r;
    }
    let a = s.answer();
    if !a.status.is_success() {
        return a.into_response();
    }
    match serde_json::from_slice::<Value>(&a.body) {
        Ok(Value::Array(records)) => match records
            .into_iter()
            .find(|r| r.get("id").and_then(Value::as_str) == Some(id.as_str()))
        {
            Some(r) => Answer::records(&r).into_response(),
            None => Answer::problem(
                StatusCode::NOT_FOUND,
                &format!("Image record {id} not found"),
            )
            .into_response(),
        },
        _ => Answer::problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "records are not an array",
        )
        .into_response(),
    }
}
