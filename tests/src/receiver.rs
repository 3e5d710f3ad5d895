//! A local HTTP endpoint that plays a notification receiver or Sentry: it
//! records every request and answers 200, or 500 to the first few when
//! asked to fail.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    /// Path → requests still to refuse with 500.
    failures: HashMap<String, usize>,
}

#[derive(Clone)]
pub struct Receiver {
    pub port: u16,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    /// Listens on a free port (needs a Tokio runtime).
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .fallback(record)
            .with_state(Arc::clone(&inner));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { port, inner }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The first `n` requests to `path` get 500.
    pub fn fail_first(&self, path: &str, n: usize) {
        self.lock().failures.insert(path.to_string(), n);
    }

    /// Requests to `path` answered 200, in arrival order.
    pub fn at(&self, path: &str) -> Vec<Received> {
        self.lock()
            .received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn record(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
    let path = uri.path().to_string();
    if let Some(n) = inner.failures.get_mut(&path).filter(|n| **n > 0) {
        *n -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    inner.received.push(Received {
        path,
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        body: body.to_vec(),
    });
    StatusCode::OK
}
