//! Reporting a program's own panics and errors to Sentry: the `sentry`
//! crate builds the events (panics with backtraces, `error!` logs as
//! events, other logs as breadcrumbs); envelopes travel over a transport
//! of ours, one background thread with the workspace's HTTP client and
//! rustls, so a program does not carry a second TLS stack.

use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use sentry::types::Dsn;
use sentry::Envelope;

use crate::SentryConfig;

/// Where a DSN's envelopes go, and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct SentryTarget {
    pub url: String,
    pub auth: String,
}

impl SentryTarget {
    pub fn parse(dsn: &str) -> Option<SentryTarget> {
        let dsn: Dsn = dsn.parse().ok()?;
        Some(SentryTarget {
            url: dsn.envelope_api_url().to_string(),
            auth: dsn
                .to_auth(Some(concat!("logferry/", env!("CARGO_PKG_VERSION"))))
                .to_string(),
        })
    }

    /// A POST of `envelope`, ready to send.
    pub fn request(
        &self,
        client: &reqwest::Client,
        envelope: &Envelope,
    ) -> reqwest::RequestBuilder {
        let mut body = Vec::new();
        envelope
            .to_writer(&mut body)
            .expect("writing to memory does not fail");
        client
            .post(&self.url)
            .header("X-Sentry-Auth", &self.auth)
            .header("Content-Type", "application/x-sentry-envelope")
            .body(body)
    }
}

/// Envelopes queued and not yet answered, for `flush`.
#[derive(Default)]
struct Pending {
    count: Mutex<usize>,
    done: Condvar,
}

struct Transport {
    tx: Mutex<mpsc::Sender<Envelope>>,
    pending: Arc<Pending>,
}

impl sentry::Transport for Transport {
    fn send_envelope(&self, envelope: Envelope) {
        *self.pending.count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        let sent = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(envelope);
        if sent.is_err() {
            self.pending.finish();
        }
    }

    fn flush(&self, timeout: Duration) -> bool {
        let count = self.pending.count.lock().unwrap_or_else(|e| e.into_inner());
        let (count, _) = self
            .pending
            .done
            .wait_timeout_while(count, timeout, |n| *n > 0)
            .unwrap_or_else(|e| e.into_inner());
        *count == 0
    }
}

impl Pending {
    fn finish(&self) {
        let mut n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        self.done.notify_all();
    }
}

/// Starts the transport's thread; `None` if the thread or its runtime
/// cannot start (reporting is then off, and the program says so).
fn transport(target: SentryTarget) -> Option<Transport> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .ok()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let (tx, rx) = mpsc::channel::<Envelope>();
    let pending = Arc::new(Pending::default());
    let done = Arc::clone(&pending);
    std::thread::Builder::new()
        .name("sentry".into())
        .spawn(move || {
            for envelope in rx {
                let request = target.request(&client, &envelope);
                let result = runtime.block_on(async { request.send().await?.error_for_status() });
                if let Err(e) = result {
                    // Not through `tracing`: that would report the failure
                    // to the Sentry that failed.
                    eprintln!("sentry: an event was not delivered: {e}");
                }
                done.finish();
            }
        })
        .ok()?;
    Some(Transport {
        tx: Mutex::new(tx),
        pending,
    })
}

/// Starts reporting when a DSN is configured. Events carry the release,
/// the environment and a `host` tag. Keep the guard until exit: dropping
/// it flushes what is queued.
pub fn init(
    program: &str,
    version: &str,
    config: &SentryConfig,
) -> Option<sentry::ClientInitGuard> {
    let target = SentryTarget::parse(&config.dsn)?;
    let transport = Arc::new(transport(target)?);
    let factory = move |_: &sentry::ClientOptions| -> Arc<dyn sentry::Transport> {
        Arc::clone(&transport) as Arc<dyn sentry::Transport>
    };
    let mut options = sentry::ClientOptions::default();
    options.dsn = config.dsn.parse().ok();
    options.release = Some(format!("{program}@{version}").into());
    options.environment =
        (!config.environment.is_empty()).then(|| config.environment.clone().into());
    options.transport = Some(Arc::new(factory));
    options.shutdown_timeout = Duration::from_secs(5);
    let guard = sentry::init(options);
    let host = hostname();
    sentry::configure_scope(|scope| {
        scope.set_tag("host", host);
        scope.set_tag("program", program);
    });
    Some(guard)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_come_from_dsns() {
        let t = SentryTarget::parse("http://abc123@127.0.0.1:9000/42").expect("a DSN");
        assert_eq!(t.url, "http://127.0.0.1:9000/api/42/envelope/");
        assert!(
            t.auth
                .starts_with("Sentry sentry_key=abc123, sentry_version=7"),
            "{}",
            t.auth
        );
        assert!(SentryTarget::parse("not a dsn").is_none());
        assert!(SentryTarget::parse("").is_none());
    }
}
