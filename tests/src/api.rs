//! Clients for the collector's query API in tests: HTTP (reqwest) and gRPC
//! (the generated `QueryService` client), and test certificates.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// An HTTP client bound to one collector's base URL.
pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
}

/// A response: status and JSON body (`Value::Null` if not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Http {
    pub fn new(base: &str) -> Http {
        install_crypto();
        Http {
            base: base.to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    /// A client that trusts `ca_pem` (and nothing else).
    pub fn with_ca(base: &str, ca_pem: &[u8]) -> Http {
        install_crypto();
        let ca = reqwest::Certificate::from_pem(ca_pem).expect("ca pem");
        Http {
            base: base.to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .tls_built_in_root_certs(false)
                .add_root_certificate(ca)
                .build()
                .expect("http client"),
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// Logs in with JSON; panics unless it succeeds.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let r = self
            .post(
                "/api/v1/auth/login",
                None,
                &serde_json::json!({"username": username, "password": password}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "login {username}: {:?}", r.body);
        r.body["access_token"]
            .as_str()
            .expect("a token")
            .to_string()
    }

    /// GET /api/v1/logs/search with these query parameters.
    pub async fn search(&self, token: &str, params: &[(&str, &str)]) -> Reply {
        let query = params
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.get(&format!("/api/v1/logs/search?{query}"), Some(token))
            .await
    }
}

pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Waits until the collector's HTTP port answers and ClickHouse is ready.
pub async fn wait_ready(http: &Http) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http
            .client
            .get(format!("{}/api/v1/auth/me", http.base))
            .bearer_auth("lft_probe")
            .send()
            .await
        {
            // An unknown token is 401 once ClickHouse is connected, 503
            // before.
            if r.status() == StatusCode::UNAUTHORIZED {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "collector HTTP API never came up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client
/// certificate, as PEM files in a directory.
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Certs {
    pub fn generate(dir: &Path, name: &str) -> Certs {
        use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let ca_key = KeyPair::generate().expect("key");
        let ca = ca_params.self_signed(&ca_key).expect("ca");

        let mut server =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().expect("key");
        let server_cert = server
            .signed_by(&server_key, &ca, &ca_key)
            .expect("server cert");

        let mut client = CertificateParams::new(vec!["agent.test".to_string()]).expect("params");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().expect("key");
        let client_cert = client
            .signed_by(&client_key, &ca, &ca_key)
            .expect("client cert");

        let write = |file: &str, pem: String| {
            let path = dir.join(format!("{name}-{file}"));
            std::fs::write(&path, pem).expect("write pem");
            path
        };
        Certs {
            ca: write("ca.pem", ca.pem()),
            server_cert: write("server.pem", server_cert.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            client_cert: write("client.pem", client_cert.pem()),
            client_key: write("client.key", client_key.serialize_pem()),
        }
    }

    /// The `[tls]` table for a collector using these certificates.
    pub fn collector_tls(&self, client_ca: bool, required: bool) -> String {
        let mut s = format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"\n",
            self.server_cert.display(),
            self.server_key.display()
        );
        if client_ca {
            s.push_str(&format!(
                "client_ca_file = \"{}\"\nclient_cert_required = {required}\n",
                self.ca.display()
            ));
        }
        s
    }
}

/// Inserts rows (JSON objects keyed by the baseline's column names) into
/// `database.logs` through ClickHouse's HTTP interface, whichever layout
/// the table has (see `ClickHouse::seed_logs`).
pub async fn insert_rows(ch_url: &str, database: &str, rows: &[Value]) {
    let data: String = rows.iter().map(|r| format!("{r}\n")).collect();
    let columns: Vec<String> = rows
        .iter()
        .flat_map(|r| r.as_object().into_iter().flat_map(|o| o.keys().cloned()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let maps = post(ch_url, crate::maps_layout_query(database))
        .await
        .trim()
        == "1";
    if !maps {
        post(
            ch_url,
            format!("INSERT INTO {database}.logs FORMAT JSONEachRow\n{data}"),
        )
        .await;
        return;
    }
    // One staging table per call: callers may insert concurrently.
    let seed = format!("logs_seed_{}", rand::random::<u32>());
    let s = crate::seed_statements(database, &seed, &columns.join(", "));
    post(ch_url, s.create).await;
    post(
        ch_url,
        format!("INSERT INTO {database}.{seed} FORMAT JSONEachRow\n{data}"),
    )
    .await;
    post(ch_url, s.transfer).await;
    post(ch_url, s.drop).await;
}

/// Runs one statement (with any data after it) and returns the answer.
async fn post(ch_url: &str, body: String) -> String {
    install_crypto();
    let resp = reqwest::Client::new()
        .post(format!("{ch_url}/"))
        .body(body)
        .send()
        .await
        .expect("clickhouse answers");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert!(status.is_success(), "clickhouse refused: {text}");
    text
}

pub const ADMIN_PASSWORD: &str = "correct horse battery staple";
pub const USER_PASSWORD: &str = "analyst password 1234";

/// A private ClickHouse and a collector requiring credentials, with a
/// bootstrapped global admin, tenants `acme` and `globex`, and users:
/// `ana` (analyst of acme), `gus` (analyst of globex), `ada` (admin of
/// acme only).
pub struct Stack {
    pub dir: crate::TempDir,
    pub ch: crate::ClickHouse,
    pub collector: crate::Collector,
    pub http: Http,
    pub admin: String,
    pub database: String,
}

impl Stack {
    /// `api` holds more keys for the collector's `[api]` table.
    pub async fn start(database: &str, tls: Option<&Certs>, api: &str) -> Stack {
        // Alerts have their own test; here `alert_states` is written by hand.
        Stack::start_with(database, tls, api, "[alerts]\nenabled = false\n").await
    }

    /// The same, with `extra` appended to the collector's configuration
    /// (its own `[alerts]` table, say).
    pub async fn start_with(database: &str, tls: Option<&Certs>, api: &str, extra: &str) -> Stack {
        Stack::start_on(crate::ClickHouse::start(), database, tls, api, extra).await
    }

    /// The same on a server the caller started (and perhaps filled).
    pub async fn start_on(
        ch: crate::ClickHouse,
        database: &str,
        tls: Option<&Certs>,
        api: &str,
        extra: &str,
    ) -> Stack {
        let dir = crate::TempDir::new().expect("tempdir");
        let tls_section = tls.map_or("plaintext = true".to_string(), |c| {
            c.collector_tls(true, false)
        });
        let collector = crate::Collector::start(
            crate::free_port(),
            dir.path(),
            "collector",
            &ch,
            database,
            crate::Security {
                require_credentials: true,
                tls: &tls_section,
                api,
                ingest: "",
            },
            extra,
        );
        let http = match tls {
            Some(c) => Http::with_ca(&collector.http_url(), &std::fs::read(&c.ca).expect("ca")),
            None => Http::new(&collector.http_url()),
        };
        wait_ready(&http).await;
        let out = collector.bootstrap("root", ADMIN_PASSWORD, Some("acme"));
        assert!(
            out.status.success(),
            "bootstrap: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let admin = http.login("root", ADMIN_PASSWORD).await;
        let r = http
            .post(
                "/api/v1/tenants",
                Some(&admin),
                &serde_json::json!({"name": "globex"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        for (user, role, tenant) in [
            ("ana", "analyst", "acme"),
            ("gus", "analyst", "globex"),
            ("ada", "admin", "acme"),
        ] {
            let r = http
                .post(
                    "/api/v1/users",
                    Some(&admin),
                    &serde_json::json!({"username": user, "password": USER_PASSWORD, "role": role, "tenants": [tenant]}),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        }
        Stack {
            dir,
            ch,
            collector,
            http,
            admin,
            database: database.to_string(),
        }
    }

    /// A new agent credential for `tenant`, written to a file; its path.
    pub async fn agent_token_file(&self, tenant: &str) -> (String, PathBuf) {
        let r = self
            .http
            .post(
                "/api/v1/agents",
                Some(&self.admin),
                &serde_json::json!({"name": format!("agent-{tenant}"), "tenant": tenant}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let path = self.dir.path().join(format!("{tenant}.token"));
        std::fs::write(&path, r.body["secret"].as_str().expect("secret")).expect("token file");
        (r.body["id"].as_str().expect("id").to_string(), path)
    }
}

/// `[ROWS] [RUNS]` from a benchmark tool's command line (`_` allowed in
/// numbers), with 10,000,000 rows and `default_runs` runs by default.
pub fn bench_args(default_runs: usize) -> anyhow::Result<(u64, usize)> {
    let mut args = std::env::args().skip(1);
    let rows = args
        .next()
        .map(|a| a.replace('_', "").parse())
        .transpose()?
        .unwrap_or(10_000_000);
    let runs = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(default_runs);
    Ok((rows, runs))
}

/// The `p` quantile of sorted durations (nearest rank), in milliseconds.
pub fn quantile_ms(sorted: &[std::time::Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

const DAY_S: u64 = 86_400;

/// Fills `stack`'s database with `rows` rows over the last 24 hours, made
/// inside ClickHouse (`INSERT … SELECT FROM numbers`) with the columns
/// ingest stamps filled as it would: tenants acme (9 in 10) and globex, 200
/// error patterns (registered in `patterns`), 40 routes, one request in 20
/// failing, 5,000 users, failed logins, attack classes, scanners and bots.
/// The parts are merged at the end.
pub fn fill_bench_logs(stack: &Stack, rows: u64) -> anyhow::Result<()> {
    let db = &stack.database;
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let start = now_s - DAY_S;

    let step = DAY_S * 1_000_000_000 / rows;
    let columns = "tenant, timestamp, time_unix_nano, observed_unix_nano, severity_number, severity_text, \
         service, host, environment, body, request_id, http_method, http_path, http_route, http_status, duration_ms, \
         client_ip, user_agent, user_id, event_type, module, function, attr_keys, attr_values, agent_id, seq, \
         pattern_id, security_class, security_rules";
    let select = format!(
        "SELECT if(number % 10 = 9, 'globex', 'acme'), toDateTime(intDiv(t, 1000000000)), t, t + 2000000, \
           if(number % 20 = 0, 17, 9), if(number % 20 = 0, 'ERROR', 'INFO'), \
           ['api', 'checkout', 'search', 'auth', 'billing', 'catalog', 'cart', 'web'][intDiv(number, 3) % 8 + 1], \
           concat('host-', toString(number % 20)), if(number % 3 = 0, 'staging', 'prod'), \
           if(number % 20 = 0, concat('upstream timeout ', toString(number % 200), ' after ', toString(number % 3000), ' ms'), \
              concat('API call: GET /api/v1/r', toString(number % 40), '/', toString(number % 10000))), \
           concat('req-', toString(intDiv(number, 2))), \
           ['GET', 'POST', 'PUT', 'DELETE'][number % 4 + 1], \
           concat('/api/v1/r', toString(number % 40), '/', toString(number % 10000)), \
           if(number % 97 = 5, '/api/v1/auth/login', concat('/api/v1/r', toString(number % 40), '/{{id}}')), \
           if(number % 97 = 5, 401, if(number % 20 = 0, 500, if(number % 50 = 1, 404, if(number % 211 = 3, 429, 200)))), \
           (number % 2000) / 2, concat('10.0.', toString(number % 250), '.', toString(number % 200)), \
           if(number % 101 = 7, 'curl/8.5.0', 'Mozilla/5.0 (X11; Linux x86_64)'), \
           concat('user-', toString(number % 5000)), 'api_performance', 'handlers', 'dispatch', \
           if(number % 20 = 0, ['exception.type'], emptyArrayString()), if(number % 20 = 0, [['TimeoutError', 'ValueError'][number % 2 + 1]], emptyArrayString()), \
           concat('bench-agent-', toString(number % 4)), number, \
           if(number % 20 = 0, number % 200, 1000 + number % 40), \
           multiIf(number % 997 = 11, 'sqli', number % 991 = 13, 'xss', number % 983 = 17, 'scanner', number % 101 = 7, 'bot', 'benign'), \
           if(number % 997 = 11, ['sqli_tautology'], emptyArrayString()) \
         FROM (SELECT number, {start} * 1000000000 + number * {step} AS t FROM numbers({rows}))"
    );
    stack.ch.seed_logs(&stack.database, columns, &select);
    stack.ch.query(&format!(
        "INSERT INTO {db}.patterns SELECT tenant, number AS pattern_id, \
         concat('upstream timeout ', toString(number), ' after <*> ms'), toDateTime({start} - 3600), 'bench' \
         FROM numbers(200) ARRAY JOIN ['acme', 'globex'] AS tenant"
    ));
    stack.ch.query(&format!("OPTIMIZE TABLE {db}.logs FINAL"));
    Ok(())
}

/// A batch of `lines` (text) under `agent_id`, from sequence number `first`,
/// as an agent would send it.
pub fn export_batch(agent_id: &str, first: u64, lines: &[String]) -> logferry_proto::ExportRequest {
    use logferry_proto::{chunk, Chunk, Format, Origin, RawLines};
    use prost::Message;
    let data: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let chunk = Chunk {
        first_seq: first,
        origin: Some(Origin {
            source: "app".into(),
            file_path: "/var/log/app.log".into(),
            format: Format::Text as i32,
            service_name: "api".into(),
            attributes: vec![],
        }),
        observed_time_unix_nano: crate::now_ns(),
        body: Some(chunk::Body::Lines(RawLines {
            data: data.into_bytes().into(),
            ..Default::default()
        })),
    };
    logferry_proto::ExportRequest {
        agent_id: agent_id.into(),
        first_seq: first,
        last_seq: first + lines.len().max(1) as u64 - 1,
        resource: vec![],
        chunks: vec![chunk.encode_to_vec().into()],
        report: None,
    }
}

/// One `Export` call to a collector's ingest port, with the agent
/// credential `token` (none when empty).
pub async fn ship(
    endpoint: &str,
    token: &str,
    req: logferry_proto::ExportRequest,
) -> Result<logferry_proto::ExportResponse, tonic::Status> {
    let mut client =
        logferry_proto::ingest_service_client::IngestServiceClient::connect(endpoint.to_string())
            .await
            .expect("ingest connects")
            .max_encoding_message_size(64 << 20);
    let mut request = tonic::Request::new(req);
    if !token.is_empty() {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    client
        .export(request)
        .await
        .map(tonic::Response::into_inner)
}
