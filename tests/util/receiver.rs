//! A real HTTP receiver on 127.0.0.1 that records every request, answers
//! with a status the test chooses, and lets a test await what it expects.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use tokio::sync::watch;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
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
}

#[derive(Clone)]
struct Shared {
    requests: Arc<Mutex<Vec<Recorded>>>,
    status: Arc<Mutex<u16>>,
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(0usize);
        let shared = Shared {
            requests: Arc::default(),
            status: Arc::new(Mutex::new(200)),
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
) -> StatusCode {
    let status = *shared.status.lock().unwrap();
    let n = {
        let mut requests = shared.requests.lock().unwrap();
        requests.push(Recorded {
            method,
            path: uri.path().to_string(),
            headers,
            body,
        });
        requests.len()
    };
    shared.changed.send_replace(n);
    StatusCode::from_u16(status).unwrap()
}
