//! The HTTP API (axum): `/api/v1/...`, the OpenAPI document at
//! `/api/v1/openapi.json` and its interactive page at `/docs`.
//!
//! Routes are registered through `utoipa_axum`, which records each one in
//! the OpenAPI document as it is added: an endpoint cannot exist without
//! its documentation. Handlers only translate HTTP to `Service` calls.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Html;
use axum::{Form, Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::alerts::*;
use super::analytics::*;
use super::service::*;
use super::ApiError;
use crate::alerts::rules::RuleSpec;
use crate::analytics::*;
use crate::auth::secrets::Secret;
use crate::auth::Principal;
use crate::error::ErrorBody;
use crate::metrics::Metrics;
use crate::query::SearchParams;

type Svc = State<Arc<Service>>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "logferry collector API",
        description = "Search and tail logs, manage users, tenants, API tokens and agent credentials. \
            Authenticate with `Authorization: Bearer <token>`: a session token from \
            `POST /api/v1/auth/login`, or an API token."
    ),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The router and the OpenAPI document describing it.
/// `metrics_token`: what `/metrics` requires as a bearer token, if anything.
pub fn router(
    service: Arc<Service>,
    metrics: Arc<Metrics>,
    metrics_token: Option<String>,
) -> Router {
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(login))
        .routes(routes!(me))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(search))
        .routes(routes!(tail))
        .routes(routes!(fields))
        .routes(routes!(health))
        .routes(routes!(errors))
        .routes(routes!(performance))
        .routes(routes!(security))
        .routes(routes!(users_activity))
        .routes(routes!(daily_report))
        .routes(routes!(active_alerts))
        .routes(routes!(alert_history))
        .routes(routes!(list_rules, create_rule))
        .routes(routes!(get_rule, update_rule, delete_rule))
        .routes(routes!(silence_rule, unsilence_rule))
        .routes(routes!(list_users, create_user))
        .routes(routes!(update_user, delete_user))
        .routes(routes!(list_tenants, create_tenant))
        .routes(routes!(delete_tenant))
        .routes(routes!(list_agents, create_agent))
        .routes(routes!(revoke_agent))
        .with_state(service)
        .split_for_parts();
    let doc = Arc::new(doc);
    api.route(
        "/api/v1/openapi.json",
        axum::routing::get(move || {
            let doc = Arc::clone(&doc);
            async move { Json((*doc).clone()) }
        }),
    )
    .route("/docs", axum::routing::get(|| async { Html(DOCS_PAGE) }))
    .route(
        "/metrics",
        axum::routing::get({
            let metrics = Arc::clone(&metrics);
            let token = metrics_token.map(Arc::<str>::from);
            move |headers: HeaderMap| async move {
                if let Some(token) = &token {
                    let given = headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .unwrap_or("");
                    if !crate::auth::secrets::constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
                        return Err(ApiError::Auth(crate::auth::AuthError::Unauthenticated(
                            "/metrics needs the token of api.metrics_token_file as `Authorization: Bearer`".into(),
                        )));
                    }
                }
                Ok((
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    metrics.render(),
                ))
            }
        }),
    )
    // Matched routes only: the label is the route template, never a raw
    // path a client made up.
    .route_layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let metrics = Arc::clone(&metrics);
            async move {
                let route = req
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map_or_else(String::new, |p| p.as_str().to_string());
                // A closed set: a client can make up methods, not series.
                let method: &'static str = match req.method().as_str() {
                    "GET" => "GET",
                    "POST" => "POST",
                    "PUT" => "PUT",
                    "PATCH" => "PATCH",
                    "DELETE" => "DELETE",
                    "HEAD" => "HEAD",
                    "OPTIONS" => "OPTIONS",
                    _ => "other",
                };
                let started = std::time::Instant::now();
                let response = next.run(req).await;
                metrics
                    .api_request_seconds
                    .with_label_values(&[
                        route.as_str(),
                        method,
                        response.status().as_str(),
                    ])
                    .observe(started.elapsed().as_secs_f64());
                response
            }
        },
    ))
    .fallback(|| async {
        ApiError::NotFound("no such endpoint; see /api/v1/openapi.json or /docs".into())
    })
}

/// The interactive documentation: a self-contained page (no external
/// scripts or styles) that reads the OpenAPI document and sends requests.
const DOCS_PAGE: &str = include_str!("docs.html");

async fn caller(svc: &Service, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    svc.principal(auth).await
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub username: String,
    #[schema(value_type = String)]
    pub password: Secret,
}

/// A login body, as JSON or as form fields (the old stack took both).
struct LoginBody(LoginRequest);

impl<S: Send + Sync> FromRequest<S> for LoginBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let bad =
            |e: String| ApiError::BadRequest(format!("login needs `username` and `password`: {e}"));
        if json {
            let Json(body) = Json::<LoginRequest>::from_request(req, state)
                .await
                .map_err(|e| bad(e.body_text()))?;
            Ok(LoginBody(body))
        } else {
            let Form(body) = Form::<LoginRequest>::from_request(req, state)
                .await
                .map_err(|e| bad(e.body_text()))?;
            Ok(LoginBody(body))
        }
    }
}

/// Log in: a signed session token that expires (`auth.session_ttl_s`).
///
/// Takes JSON or form fields. Attempts are rate-limited per address and
/// per user; repeated failures lock the user out for a while (429).
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body(content((LoginRequest = "application/json"), (LoginRequest = "application/x-www-form-urlencoded"))),
    responses((status = 200, body = LoginResponse), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn login(
    State(svc): Svc,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    LoginBody(body): LoginBody,
) -> Result<Json<LoginResponse>, ApiError> {
    let ip = peer.ip().to_string();
    Ok(Json(
        svc.login(&body.username, body.password.expose(), &ip)
            .await?,
    ))
}

/// Who the token belongs to.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
async fn me(State(svc): Svc, headers: HeaderMap) -> Result<Json<Me>, ApiError> {
    let p = caller(&svc, &headers).await?;
    Ok(Json(svc.me(&p)))
}

/// API tokens (admin).
#[utoipa::path(get, path = "/api/v1/auth/tokens", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Vec<CredentialInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_tokens(
    State(svc): Svc,
    headers: HeaderMap,
) -> Result<Json<Vec<CredentialInfo>>, ApiError> {
    let p = caller(&svc, &headers).await?;
    Ok(Json(svc.list_credentials(&p, "api").await?))
}

/// Mint a long-lived API token (admin). The secret is in this response only.
#[utoipa::path(post, path = "/api/v1/auth/tokens", tag = "auth", security(("bearer" = [])), request_body = NewToken,
    responses((status = 201, body = CredentialInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_token(
    State(svc): Svc,
    headers: HeaderMap,
    req: Result<Json<NewToken>, JsonRejection>,
) -> Result<(StatusCode, Json<CredentialInfo>), ApiError> {
    let p = caller(&svc, &headers).await?;
    let req = json_body(req)?;
    Ok((StatusCode::CREATED, Json(svc.create_token(&p, req).await?)))
}

/// Revoke an API token (admin).
#[utoipa::path(delete, path = "/api/v1/auth/tokens/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = CredentialInfo), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn revoke_token(
    State(svc): Svc,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<CredentialInfo>, ApiError> {
    let p = caller(&svc, &headers).await?;
    Ok(Json(svc.revoke_credential(&p, "api", &id).await?))
}

/// The JSON body, read after the caller is known: a request without a
/// valid token gets 401 before any complaint about its body.
fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

fn query_params<T: serde::de::DeserializeOwned + Default>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|Query(p)| p)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// Search logs, newest (or oldest) first, a page at a time.
#[utoipa::path(get, path = "/api/v1/logs/search", tag = "logs", security(("bearer" = [])),
    params(SearchParams),
    responses((status = 200, body = SearchPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn search(
    State(svc): Svc,
    headers: HeaderMap,
    q: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SearchPage>, ApiError> {
    let p = caller(&svc, &headers).await?;
    Ok(Json(svc.search(&p, &query_params(q)?).await?))
}

/// Pipeline health: ingest rate, agents and hosts with last-seen time and lag, ClickHouse reachability and storage, error rate. Default window: the last 15 minutes.
#[utoipa::path(get, path = "/api/v1/logs/health", tag = "analytics", security(("bearer" = [])),
    params(AnalyticsParams),
    responses((status = 200, body = HealthView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn health(
    State(svc): Svc,
    headers: HeaderMap,
    q: Result<Query<AnalyticsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HealthView>, ApiError> {
    let p = caller(&svc, &headers).await?;
    Ok(Json(svc.health(&p, &query_params(q)?).await?))
}

/// Errors: totals and rate per interval, top services, modules, functions and exception types, and error groups (by message pattern) with first and last seen, whether new in the window, spikes against the previous window, and the request ids, endpoints and hosts they share.
#[utoipa::path(get, path = "/api/v1/logs/errors", tag = "analytics", security(("bearer" = [])),
    params(AnalyticsParams),
    responses((status = 200, body = ErrorsView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn errors(
    State(svc): Svc,
    headers: HeaderMap,
    q: Result<Query<AnalyticsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ErrorsView>, ApiError> {
    let p = caller(&svc, &headers).await?;
    Ok(Json(svc.errors(&p, &query_params(q)?).await?))
}

/// Requests per endpoint (method and route, ids folded): count, error rate, p50/p95/p99/max latency; throughput per interval; slowest endpoints; status codes; slowest requests; database query timings.
#[utoipa::path(get, path = "/api/v1/logs/performance", tag = "analytics", security(("bearer" = [])),
    params(AnalyticsParams),
    responses((status = 200, body = PerformanceView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn performance(
    State(svc): Svc,
    headers: HeaderMap,
    q: Result<Query<AnalyticsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<PerformanceView>, ApiError> {
    let p = caller(&svc, &headers).await?;
    Ok(Json(svc.performance(&p, &query_params(q)?).await?))
}

/// Failed authentication by address and user, brute-force candidates, suspicious addresses with a score and reasons, attack classes with samples, scanners and bots, 404 bursts and rate-limit violations.
#[utoipa::path(get, path = "/api/v1/logs/security", tag = "analytics", security(("bearer" = [])),
    params(AnalyticsParams),
    responses((status = 200, body = SecurityView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn security(
    State(svc): Svc,
    headers: HeaderMap,
    q: Result<Query<AnalyticsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SecurityView>, ApiError> {
    let p = caller(&svc, &headers).await?;
    Ok(Json(svc.security(&p, &query_params(q)?).await?))
}

/// Active users per window and day, sessions (ended by `session_gap` of inactivity) and their duration, requests and endpoints per user, new and returning users.
#[utoipa::path(get, path = "/api/v1/logs/users/activity", tag = "analytics", security(("bearer" = [])),
    params(AnalyticsParams),
    responses((status = 200, body = UsersView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn users_activity(
    State(svc): Svc,
    headers: HeaderMap,
    q: Result<Query<AnalyticsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UsersView>, ApiError> {
    let p = caller(&svc, &headers).await?;
    Ok(Json(svc.users(&p, &query_params(q)?).await?))
}

/// One UTC day (`day`, default yesterday) across errors, performance, security and users, compared with the day before.
#[utoipa::path(get, path = "/api/v1/logs/report/daily", tag = "analytics", security(("bearer" = [])),
    params(AnalyticsParams),
    responses((status = 200, body = DailyReport), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn daily_report(
    State(svc): Svc,
    headers: HeaderMap,
    q: Result<Query<AnalyticsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DailyReport>, ApiError> {
    let p = caller(&svc, &headers).await?;
    Ok(Json(svc.daily_report(&p, &query_params(q)?).await?))
}

/// Alerts that are firing or pending, for the caller's tenants.
#[utoipa::path(get, path = "/api/v1/logs/alerts/active", tag = "analytics", security(("bearer" = [])),
    params(AnalyticsParams),
    responses((status = 200, body = AlertsView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn active_alerts(
    State(svc): Svc,
    headers: HeaderMap,
    q: Result<Query<AnalyticsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AlertsView>, ApiError> {
    let p = caller(&svc, &headers).await?;
    Ok(Json(svc.active_alerts(&p, &query_params(q)?).await?))
}

/// What alerts did and what was sent, newest first (up to 1000 events;
/// default window: the last 24 hours).
#[utoipa::path(get, path = "/api/v1/logs/alerts/history", tag = "alerts", security(("bearer" = [])),
    params(AnalyticsParams),
    responses((status = 200, body = HistoryView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn alert_history(
    State(svc): Svc,
    headers: HeaderMap,
    q: Result<Query<AnalyticsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HistoryView>, ApiError> {
    let p = caller(&svc, &headers).await?;
    Ok(Json(svc.alert_history(&p, &query_params(q)?).await?))
}

/// Alert rules of the caller's tenants and of every tenant, with their silences.
#[utoipa::path(get, path = "/api/v1/alerts/rules", tag = "alerts", security(("bearer" = [])),
    responses((status = 200, body = Vec<RuleInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_rules(State(svc): Svc, headers: HeaderMap) -> Result<Json<Vec<RuleInfo>>, ApiError> {
    let p = caller(&svc, &headers).await?;
    Ok(Json(svc.list_rules(&p).await?))
}

/// Create a rule (admin of its tenant). Every problem is reported at once.
#[utoipa::path(post, path = "/api/v1/alerts/rules", tag = "alerts", security(("bearer" = [])), request_body = RuleSpec,
    responses((status = 201, body = RuleInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_rule(
    State(svc): Svc,
    headers: HeaderMap,
    req: Result<Json<RuleSpec>, JsonRejection>,
) -> Result<(StatusCode, Json<RuleInfo>), ApiError> {
    let p = caller(&svc, &headers).await?;
    let req = json_body(req)?;
    Ok((StatusCode::CREATED, Json(svc.create_rule(&p, req).await?)))
}

/// One rule.
#[utoipa::path(get, path = "/api/v1/alerts/rules/{id}", tag = "alerts", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = RuleInfo), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_rule(
    State(svc): Svc,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RuleInfo>, ApiError> {
    let p = caller(&svc, &headers).await?;
    Ok(Json(svc.get_rule(&p, &id).await?))
}

/// Replace a rule made through the API (admin of its tenant); rules of the config file give 409.
#[utoipa::path(put, path = "/api/v1/alerts/rules/{id}", tag = "alerts", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = RuleSpec,
    responses((status = 200, body = RuleInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn update_rule(
    State(svc): Svc,
    headers: HeaderMap,
    Path(id): Path<String>,
    req: Result<Json<RuleSpec>, JsonRejection>,
) -> Result<Json<RuleInfo>, ApiError> {
    let p = caller(&svc, &headers).await?;
    let req = json_body(req)?;
    Ok(Json(svc.update_rule(&p, &id, req).await?))
}

/// Delete a rule made through the API; its alerts end without a notification.
#[utoipa::path(delete, path = "/api/v1/alerts/rules/{id}", tag = "alerts", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_rule(
    State(svc): Svc,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let p = caller(&svc, &headers).await?;
    svc.delete_rule(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Silence a rule for a while (admin of the tenant): it is still evaluated
/// and its history kept, but nothing is sent.
#[utoipa::path(post, path = "/api/v1/alerts/rules/{id}/silence", tag = "alerts", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = SilenceRequest,
    responses((status = 200, body = RuleInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn silence_rule(
    State(svc): Svc,
    headers: HeaderMap,
    Path(id): Path<String>,
    req: Result<Json<SilenceRequest>, JsonRejection>,
) -> Result<Json<RuleInfo>, ApiError> {
    let p = caller(&svc, &headers).await?;
    let req = json_body(req)?;
    if req.duration.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "`for`: a span like 30m, 2h or 1d".into(),
        ));
    }
    Ok(Json(svc.silence_rule(&p, &id, req).await?))
}

/// End a rule's silence (for `tenant`, as when silencing).
#[utoipa::path(delete, path = "/api/v1/alerts/rules/{id}/silence", tag = "alerts", security(("bearer" = [])),
    params(("id" = String, Path), ("tenant" = Option<String>, Query)),
    responses((status = 200, body = RuleInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn unsilence_rule(
    State(svc): Svc,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<TenantParam>,
) -> Result<Json<RuleInfo>, ApiError> {
    let p = caller(&svc, &headers).await?;
    let req = SilenceRequest {
        duration: String::new(),
        tenant: q.tenant,
        reason: "silence ended".into(),
    };
    Ok(Json(svc.silence_rule(&p, &id, req).await?))
}

#[derive(Debug, Default, Deserialize)]
struct TenantParam {
    tenant: Option<String>,
}

/// Live tail as server-sent events: one `log` event per record (its `id`
/// is the record's cursor), from now, or after `cursor` or `Last-Event-ID`.
/// Same filters as search; `from`, `to`, `last`, `order` and `limit` do not apply.
#[utoipa::path(get, path = "/api/v1/logs/tail", tag = "logs", security(("bearer" = [])),
    params(SearchParams),
    responses((status = 200, description = "text/event-stream of `log` events, each an Entry", content_type = "text/event-stream"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn tail(
    State(svc): Svc,
    headers: HeaderMap,
    q: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let p = caller(&svc, &headers).await?;
    let mut params = query_params(q)?;
    if params.cursor.is_none() {
        params.cursor = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
    }
    let batches = svc.tail(&p, &params)?;
    let events = batches.flat_map(|batch| {
        let events: Vec<Event> = match batch {
            Ok(entries) => entries
                .into_iter()
                .map(|e| {
                    Event::default()
                        .event("log")
                        .id(e.cursor.clone())
                        .json_data(&e)
                        .unwrap_or_else(|_| {
                            Event::default().event("error").data("unencodable record")
                        })
                })
                .collect(),
            Err(e) => vec![Event::default()
                .event("error")
                .json_data(e.body())
                .unwrap_or_else(|_| Event::default().event("error"))],
        };
        stream::iter(events.into_iter().map(Ok))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// Fields for autocomplete: first-class columns, and attribute keys seen
/// per service with their most frequent values (from the catalogue, not a
/// scan of the logs).
#[utoipa::path(get, path = "/api/v1/logs/fields", tag = "logs", security(("bearer" = [])),
    params(FieldsParams),
    responses((status = 200, body = Vec<FieldInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn fields(
    State(svc): Svc,
    headers: HeaderMap,
    q: Result<Query<FieldsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<FieldInfo>>, ApiError> {
    let p = caller(&svc, &headers).await?;
    Ok(Json(svc.fields(&p, &query_params(q)?).await?))
}

/// Users (global admin).
#[utoipa::path(get, path = "/api/v1/users", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<UserInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_users(State(svc): Svc, headers: HeaderMap) -> Result<Json<Vec<UserInfo>>, ApiError> {
    let p = caller(&svc, &headers).await?;
    Ok(Json(svc.list_users(&p).await?))
}

/// Create a user (global admin). Passwords need 12 characters or more.
#[utoipa::path(post, path = "/api/v1/users", tag = "admin", security(("bearer" = [])), request_body = NewUser,
    responses((status = 201, body = UserInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_user(
    State(svc): Svc,
    headers: HeaderMap,
    req: Result<Json<NewUser>, JsonRejection>,
) -> Result<(StatusCode, Json<UserInfo>), ApiError> {
    let p = caller(&svc, &headers).await?;
    let req = json_body(req)?;
    Ok((StatusCode::CREATED, Json(svc.create_user(&p, req).await?)))
}

/// Change a user's password, role or tenants (global admin).
#[utoipa::path(patch, path = "/api/v1/users/{username}", tag = "admin", security(("bearer" = [])),
    params(("username" = String, Path)), request_body = UserUpdate,
    responses((status = 200, body = UserInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update_user(
    State(svc): Svc,
    headers: HeaderMap,
    Path(username): Path<String>,
    req: Result<Json<UserUpdate>, JsonRejection>,
) -> Result<Json<UserInfo>, ApiError> {
    let p = caller(&svc, &headers).await?;
    let req = json_body(req)?;
    Ok(Json(svc.update_user(&p, &username, req).await?))
}

/// Delete a user (global admin); their sessions stop working.
#[utoipa::path(delete, path = "/api/v1/users/{username}", tag = "admin", security(("bearer" = [])),
    params(("username" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_user(
    State(svc): Svc,
    headers: HeaderMap,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    let p = caller(&svc, &headers).await?;
    svc.delete_user(&p, &username).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Tenants the caller can see.
#[utoipa::path(get, path = "/api/v1/tenants", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<TenantInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_tenants(
    State(svc): Svc,
    headers: HeaderMap,
) -> Result<Json<Vec<TenantInfo>>, ApiError> {
    let p = caller(&svc, &headers).await?;
    Ok(Json(svc.list_tenants(&p).await?))
}

/// Create a tenant (global admin).
#[utoipa::path(post, path = "/api/v1/tenants", tag = "admin", security(("bearer" = [])), request_body = NewTenant,
    responses((status = 201, body = TenantInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_tenant(
    State(svc): Svc,
    headers: HeaderMap,
    req: Result<Json<NewTenant>, JsonRejection>,
) -> Result<(StatusCode, Json<TenantInfo>), ApiError> {
    let p = caller(&svc, &headers).await?;
    let req = json_body(req)?;
    Ok((StatusCode::CREATED, Json(svc.create_tenant(&p, req).await?)))
}

/// Delete a tenant (global admin). Its logs stay until retention drops them.
#[utoipa::path(delete, path = "/api/v1/tenants/{name}", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_tenant(
    State(svc): Svc,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let p = caller(&svc, &headers).await?;
    svc.delete_tenant(&p, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Agent credentials (global admin).
#[utoipa::path(get, path = "/api/v1/agents", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<CredentialInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_agents(
    State(svc): Svc,
    headers: HeaderMap,
) -> Result<Json<Vec<CredentialInfo>>, ApiError> {
    let p = caller(&svc, &headers).await?;
    Ok(Json(svc.list_credentials(&p, "agent").await?))
}

/// Create an agent credential for a tenant (global admin). The secret is in
/// this response only; put it in the agent's `forward.token_file`.
#[utoipa::path(post, path = "/api/v1/agents", tag = "admin", security(("bearer" = [])), request_body = NewAgentCredential,
    responses((status = 201, body = CredentialInfo), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_agent(
    State(svc): Svc,
    headers: HeaderMap,
    req: Result<Json<NewAgentCredential>, JsonRejection>,
) -> Result<(StatusCode, Json<CredentialInfo>), ApiError> {
    let p = caller(&svc, &headers).await?;
    let req = json_body(req)?;
    Ok((StatusCode::CREATED, Json(svc.create_agent(&p, req).await?)))
}

/// Revoke an agent credential (global admin): its batches are refused.
#[utoipa::path(delete, path = "/api/v1/agents/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = CredentialInfo), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke_agent(
    State(svc): Svc,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<CredentialInfo>, ApiError> {
    let p = caller(&svc, &headers).await?;
    Ok(Json(svc.revoke_credential(&p, "agent", &id).await?))
}
