//! A real HTTP receiver on 127.0.0.1 that records every request, answers
//! with a status the test chooses (or a [`Reply`] computed per request:
//! status, `Retry-After`, a delay; or a [`RawReply`]: any headers and body),
//! and lets a test await what it expects.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use tokio::sync::watch;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    /// The query string (without `?`), `""` if none.
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the request arrived.
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }

    /// `peer.connect`, `interface.delete`... from a wg-portal body.
    pub fn kind(&self) -> String {
        let v = self.json();
        format!(
            "{}.{}",
            v["entity"].as_str().unwrap_or("?"),
            v["event"].as_str().unwrap_or("?")
        )
    }

    pub fn identifier(&self) -> String {
        self.json()["identifier"].as_str().unwrap_or("").to_string()
    }

    /// The `webhook-id` header (empty if missing).
    pub fn id(&self) -> String {
        self.header("webhook-id").unwrap_or("").to_string()
    }
}

/// How the receiver answers one request (see [`Receiver::respond_by`]).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Response headers (name, value).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Waits this long before answering (the request is recorded at once).
    pub delay: Option<Duration>,
}

impl Reply {
    /// `status`, no headers, empty body, at once.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: None,
        }
    }
}

/// Computes the answer from the request and how many requests with the same
/// `webhook-id` arrived before it.
type Responder = Arc<dyn Fn(&Recorded, usize) -> Reply + Send + Sync>;

#[derive(Clone)]
struct Shared {
    requests: Arc<Mutex<Vec<Recorded>>>,
    status: Arc<Mutex<u16>>,
    responder: Arc<Mutex<Option<Responder>>>,
    changed: watch::Sender<usize>,
}

/// The receiver; stops when dropped.
pub struct Receiver {
    pub url: String,
    shared: Shared,
    changed: watch::Receiver<usize>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Receiver {
    /// Starts a receiver answering 200 on every path.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Starts a receiver answering 200 on 127.0.0.1:`port` (0: any free port).
    pub async fn start_on(port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(0usize);
        let shared = Shared {
            requests: Arc::default(),
            status: Arc::new(Mutex::new(200)),
            responder: Arc::default(),
            changed: tx,
        };
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            url: format!("http://{addr}/hook"),
            shared,
            changed: rx,
            _stop: stop_tx,
        }
    }

    /// Answer every later request with `status`.
    pub fn respond_with(&self, status: u16) {
        *self.shared.status.lock().unwrap() = status;
    }

    /// Answer every later request with what `reply` computes from it and
    /// the number of earlier requests with the same `webhook-id`
    /// (replaces [`Receiver::respond_with`]).
    pub fn respond_by(&self, reply: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static) {
        *self.shared.responder.lock().unwrap() = Some(Arc::new(reply));
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the requests received, or panics after
    /// `timeout` showing what did arrive.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Recorded]) -> bool,
    ) -> Vec<Recorded> {
        let mut changed = self.changed.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let seen = self.requests();
            if done(&seen) {
                return seen;
            }
            let kinds: Vec<String> = seen.iter().map(|r| r.kind()).collect();
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                panic!("timed out after {timeout:?} waiting for {what}; received: {kinds:?}");
            }
        }
    }

    /// Like [`Receiver::wait_until`], but the panic message only counts what
    /// arrived (for tests that expect thousands of requests).
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Recorded]) -> bool,
    ) -> Vec<Recorded> {
        let mut changed = self.changed.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let seen = self.requests();
            if done(&seen) {
                return seen;
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; received {} requests",
                    seen.len()
                );
            }
        }
    }

    /// Waits for at least `n` requests.
    pub async fn wait_for_count(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        self.wait_until(timeout, &format!("{n} requests"), |r| r.len() >= n)
            .await
    }
}

async fn record(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let status = *shared.status.lock().unwrap();
    let responder = shared.responder.lock().unwrap().clone();
    let recorded = Recorded {
        method,
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        headers,
        body,
        at: Instant::now(),
    };
    let (n, reply) = {
        let mut requests = shared.requests.lock().unwrap();
        let reply = responder.map(|f| {
            let id = recorded.header("webhook-id");
            let before = requests
                .iter()
                .filter(|r| id.is_some() && r.header("webhook-id") == id)
                .count();
            f(&recorded, before)
        });
        requests.push(recorded);
        (
            requests.len(),
            reply.unwrap_or_else(|| Reply::status(status)),
        )
    };
    shared.changed.send_replace(n);
    if let Some(delay) = reply.delay {
        tokio::time::sleep(delay).await;
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &reply.headers {
        headers.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    (
        StatusCode::from_u16(reply.status).unwrap(),
        headers,
        reply.body,
    )
        .into_response()
}
