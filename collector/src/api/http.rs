//! The HTTP API (axum): `/api/v1/...`, the OpenAPI document at
//! `/api/v1/openapi.json` and its interactive page at `/docs`.
//!
//! Routes are registered through `utoipa_axum`, which records each one in
//! the OpenAPI document as it is added: an endpoint cannot exist without
//! its documentation. Handlers only translate HTTP to `Service` calls.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Html;
use axum::{Form, Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{self, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::accounts::*;
use super::alerts::*;
use super::analytics::*;
use super::search::*;
use super::ApiError;
use super::Service;
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

/// Every operation, with its OpenAPI entry.
fn operations() -> OpenApiRouter<Arc<Service>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
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
}

/// The router and the OpenAPI document describing it.
/// `metrics_token`: what `/metrics` requires as a bearer token, if anything.
pub fn router(
    service: Arc<Service>,
    metrics: Arc<Metrics>,
    metrics_token: Option<String>,
) -> Router {
    let (api, doc) = operations().with_state(service).split_for_parts();
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

/// The caller, from the `Authorization` header. Extracted before any other
/// part of a request, so a request without a valid token gets 401 before
/// any complaint about its parameters or body.
struct Caller(Principal);

impl FromRequestParts<Arc<Service>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, svc: &Arc<Service>) -> Result<Self, ApiError> {
        let auth = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        svc.principal(auth).await.map(Caller)
    }
}

/// Query parameters; a malformed one is a 400 in the API's error body.
struct Params<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Params(q))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// A JSON body; a malformed one is a 400 in the API's error body.
struct Body<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(b)| Body(b))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// Every error answer of the API, from the error table: the one set each
/// endpoint's documentation lists after its own answers.
struct Errors;

impl IntoResponses for Errors {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        let mut codes: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
        for m in ApiError::TABLE {
            codes.entry(m.http.as_u16()).or_default().push(m.code);
        }
        codes
            .into_iter()
            .map(|(status, codes)| {
                let response = openapi::ResponseBuilder::new()
                    .description(format!("`error.code`: {}", codes.join(", ")))
                    .content(
                        "application/json",
                        openapi::ContentBuilder::new()
                            .schema(Some(openapi::Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build();
                (status.to_string(), response.into())
            })
            .collect()
    }
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
    responses((status = 200, body = LoginResponse), Errors))]
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
    responses((status = 200, body = Me), Errors))]
async fn me(State(svc): Svc, Caller(p): Caller) -> Result<Json<Me>, ApiError> {
    Ok(Json(svc.me(&p)))
}

/// API tokens (admin).
#[utoipa::path(get, path = "/api/v1/auth/tokens", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Vec<CredentialInfo>), Errors))]
async fn list_tokens(
    State(svc): Svc,
    Caller(p): Caller,
) -> Result<Json<Vec<CredentialInfo>>, ApiError> {
    Ok(Json(svc.list_credentials(&p, "api").await?))
}

/// Mint a long-lived API token (admin). The secret is in this response only.
#[utoipa::path(post, path = "/api/v1/auth/tokens", tag = "auth", security(("bearer" = [])), request_body = NewToken,
    responses((status = 201, body = CredentialInfo), Errors))]
async fn create_token(
    State(svc): Svc,
    Caller(p): Caller,
    Body(req): Body<NewToken>,
) -> Result<(StatusCode, Json<CredentialInfo>), ApiError> {
    Ok((StatusCode::CREATED, Json(svc.create_token(&p, req).await?)))
}

/// Revoke an API token (admin).
#[utoipa::path(delete, path = "/api/v1/auth/tokens/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = CredentialInfo), Errors))]
async fn revoke_token(
    State(svc): Svc,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<CredentialInfo>, ApiError> {
    Ok(Json(svc.revoke_credential(&p, "api", &id).await?))
}

/// Search logs, newest (or oldest) first, a page at a time.
#[utoipa::path(get, path = "/api/v1/logs/search", tag = "logs", security(("bearer" = [])),
    params(SearchParams),
    responses((status = 200, body = SearchPage), Errors))]
async fn search(
    State(svc): Svc,
    Caller(p): Caller,
    Params(q): Params<SearchParams>,
) -> Result<Json<SearchPage>, ApiError> {
    Ok(Json(svc.search(&p, &q).await?))
}

/// Pipeline health: ingest rate, agents and hosts with last-seen time and lag, ClickHouse reachability and storage, error rate. Default window: the last 15 minutes.
#[utoipa::path(get, path = "/api/v1/logs/health", tag = "analytics", security(("bearer" = [])),
    params(AnalyticsParams),
    responses((status = 200, body = HealthView), Errors))]
async fn health(
    State(svc): Svc,
    Caller(p): Caller,
    Params(q): Params<AnalyticsParams>,
) -> Result<Json<HealthView>, ApiError> {
    Ok(Json(svc.health(&p, &q).await?))
}

/// Errors: totals and rate per interval, top services, modules, functions and exception types, and error groups (by message pattern) with first and last seen, whether new in the window, spikes against the previous window, and the request ids, endpoints and hosts they share.
#[utoipa::path(get, path = "/api/v1/logs/errors", tag = "analytics", security(("bearer" = [])),
    params(AnalyticsParams),
    responses((status = 200, body = ErrorsView), Errors))]
async fn errors(
    State(svc): Svc,
    Caller(p): Caller,
    Params(q): Params<AnalyticsParams>,
) -> Result<Json<ErrorsView>, ApiError> {
    Ok(Json(svc.errors(&p, &q).await?))
}

/// Requests per endpoint (method and route, ids folded): count, error rate, p50/p95/p99/max latency; throughput per interval; slowest endpoints; status codes; slowest requests; database query timings.
#[utoipa::path(get, path = "/api/v1/logs/performance", tag = "analytics", security(("bearer" = [])),
    params(AnalyticsParams),
    responses((status = 200, body = PerformanceView), Errors))]
async fn performance(
    State(svc): Svc,
    Caller(p): Caller,
    Params(q): Params<AnalyticsParams>,
) -> Result<Json<PerformanceView>, ApiError> {
    Ok(Json(svc.performance(&p, &q).await?))
}

/// Failed authentication by address and user, brute-force candidates, suspicious addresses with a score and reasons, attack classes with samples, scanners and bots, 404 bursts and rate-limit violations.
#[utoipa::path(get, path = "/api/v1/logs/security", tag = "analytics", security(("bearer" = [])),
    params(AnalyticsParams),
    responses((status = 200, body = SecurityView), Errors))]
async fn security(
    State(svc): Svc,
    Caller(p): Caller,
    Params(q): Params<AnalyticsParams>,
) -> Result<Json<SecurityView>, ApiError> {
    Ok(Json(svc.security(&p, &q).await?))
}

/// Active users per window and day, sessions (ended by `session_gap` of inactivity) and their duration, requests and endpoints per user, new and returning users.
#[utoipa::path(get, path = "/api/v1/logs/users/activity", tag = "analytics", security(("bearer" = [])),
    params(AnalyticsParams),
    responses((status = 200, body = UsersView), Errors))]
async fn users_activity(
    State(svc): Svc,
    Caller(p): Caller,
    Params(q): Params<AnalyticsParams>,
) -> Result<Json<UsersView>, ApiError> {
    Ok(Json(svc.users(&p, &q).await?))
}

/// One UTC day (`day`, default yesterday) across errors, performance, security and users, compared with the day before.
#[utoipa::path(get, path = "/api/v1/logs/report/daily", tag = "analytics", security(("bearer" = [])),
    params(AnalyticsParams),
    responses((status = 200, body = DailyReport), Errors))]
async fn daily_report(
    State(svc): Svc,
    Caller(p): Caller,
    Params(q): Params<AnalyticsParams>,
) -> Result<Json<DailyReport>, ApiError> {
    Ok(Json(svc.daily_report(&p, &q).await?))
}

/// Alerts that are firing or pending, for the caller's tenants.
#[utoipa::path(get, path = "/api/v1/logs/alerts/active", tag = "analytics", security(("bearer" = [])),
    params(AnalyticsParams),
    responses((status = 200, body = AlertsView), Errors))]
async fn active_alerts(
    State(svc): Svc,
    Caller(p): Caller,
    Params(q): Params<AnalyticsParams>,
) -> Result<Json<AlertsView>, ApiError> {
    Ok(Json(svc.active_alerts(&p, &q).await?))
}

/// What alerts did and what was sent, newest first (up to 1000 events;
/// default window: the last 24 hours).
#[utoipa::path(get, path = "/api/v1/logs/alerts/history", tag = "alerts", security(("bearer" = [])),
    params(AnalyticsParams),
    responses((status = 200, body = HistoryView), Errors))]
async fn alert_history(
    State(svc): Svc,
    Caller(p): Caller,
    Params(q): Params<AnalyticsParams>,
) -> Result<Json<HistoryView>, ApiError> {
    Ok(Json(svc.alert_history(&p, &q).await?))
}

/// Alert rules of the caller's tenants and of every tenant, with their silences.
#[utoipa::path(get, path = "/api/v1/alerts/rules", tag = "alerts", security(("bearer" = [])),
    responses((status = 200, body = Vec<RuleInfo>), Errors))]
async fn list_rules(State(svc): Svc, Caller(p): Caller) -> Result<Json<Vec<RuleInfo>>, ApiError> {
    Ok(Json(svc.list_rules(&p).await?))
}

/// Create a rule (admin of its tenant). Every problem is reported at once.
#[utoipa::path(post, path = "/api/v1/alerts/rules", tag = "alerts", security(("bearer" = [])), request_body = RuleSpec,
    responses((status = 201, body = RuleInfo), Errors))]
async fn create_rule(
    State(svc): Svc,
    Caller(p): Caller,
    Body(req): Body<RuleSpec>,
) -> Result<(StatusCode, Json<RuleInfo>), ApiError> {
    Ok((StatusCode::CREATED, Json(svc.create_rule(&p, req).await?)))
}

/// One rule.
#[utoipa::path(get, path = "/api/v1/alerts/rules/{id}", tag = "alerts", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = RuleInfo), Errors))]
async fn get_rule(
    State(svc): Svc,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<RuleInfo>, ApiError> {
    Ok(Json(svc.get_rule(&p, &id).await?))
}

/// Replace a rule made through the API (admin of its tenant); rules of the config file give 409.
#[utoipa::path(put, path = "/api/v1/alerts/rules/{id}", tag = "alerts", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = RuleSpec,
    responses((status = 200, body = RuleInfo), Errors))]
async fn update_rule(
    State(svc): Svc,
    Caller(p): Caller,
    Path(id): Path<String>,
    Body(req): Body<RuleSpec>,
) -> Result<Json<RuleInfo>, ApiError> {
    Ok(Json(svc.update_rule(&p, &id, req).await?))
}

/// Delete a rule made through the API; its alerts end without a notification.
#[utoipa::path(delete, path = "/api/v1/alerts/rules/{id}", tag = "alerts", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), Errors))]
async fn delete_rule(
    State(svc): Svc,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    svc.delete_rule(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Silence a rule for a while (admin of the tenant): it is still evaluated
/// and its history kept, but nothing is sent.
#[utoipa::path(post, path = "/api/v1/alerts/rules/{id}/silence", tag = "alerts", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = SilenceRequest,
    responses((status = 200, body = RuleInfo), Errors))]
async fn silence_rule(
    State(svc): Svc,
    Caller(p): Caller,
    Path(id): Path<String>,
    Body(req): Body<SilenceRequest>,
) -> Result<Json<RuleInfo>, ApiError> {
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
    responses((status = 200, body = RuleInfo), Errors))]
async fn unsilence_rule(
    State(svc): Svc,
    Caller(p): Caller,
    Path(id): Path<String>,
    Query(q): Query<TenantParam>,
) -> Result<Json<RuleInfo>, ApiError> {
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
    responses((status = 200, description = "text/event-stream of `log` events, each an Entry", content_type = "text/event-stream"), Errors))]
async fn tail(
    State(svc): Svc,
    Caller(p): Caller,
    headers: HeaderMap,
    Params(mut params): Params<SearchParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
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
    responses((status = 200, body = Vec<FieldInfo>), Errors))]
async fn fields(
    State(svc): Svc,
    Caller(p): Caller,
    Params(q): Params<FieldsParams>,
) -> Result<Json<Vec<FieldInfo>>, ApiError> {
    Ok(Json(svc.fields(&p, &q).await?))
}

/// Users (global admin).
#[utoipa::path(get, path = "/api/v1/users", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<UserInfo>), Errors))]
async fn list_users(State(svc): Svc, Caller(p): Caller) -> Result<Json<Vec<UserInfo>>, ApiError> {
    Ok(Json(svc.list_users(&p).await?))
}

/// Create a user (global admin). Passwords need 12 characters or more.
#[utoipa::path(post, path = "/api/v1/users", tag = "admin", security(("bearer" = [])), request_body = NewUser,
    responses((status = 201, body = UserInfo), Errors))]
async fn create_user(
    State(svc): Svc,
    Caller(p): Caller,
    Body(req): Body<NewUser>,
) -> Result<(StatusCode, Json<UserInfo>), ApiError> {
    Ok((StatusCode::CREATED, Json(svc.create_user(&p, req).await?)))
}

/// Change a user's password, role or tenants (global admin).
#[utoipa::path(patch, path = "/api/v1/users/{username}", tag = "admin", security(("bearer" = [])),
    params(("username" = String, Path)), request_body = UserUpdate,
    responses((status = 200, body = UserInfo), Errors))]
async fn update_user(
    State(svc): Svc,
    Caller(p): Caller,
    Path(username): Path<String>,
    Body(req): Body<UserUpdate>,
) -> Result<Json<UserInfo>, ApiError> {
    Ok(Json(svc.update_user(&p, &username, req).await?))
}

/// Delete a user (global admin); their sessions stop working.
#[utoipa::path(delete, path = "/api/v1/users/{username}", tag = "admin", security(("bearer" = [])),
    params(("username" = String, Path)),
    responses((status = 204), Errors))]
async fn delete_user(
    State(svc): Svc,
    Caller(p): Caller,
    Path(username): Path<String>,
) -> Result<StatusCode, ApiError> {
    svc.delete_user(&p, &username).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Tenants the caller can see.
#[utoipa::path(get, path = "/api/v1/tenants", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<TenantInfo>), Errors))]
async fn list_tenants(
    State(svc): Svc,
    Caller(p): Caller,
) -> Result<Json<Vec<TenantInfo>>, ApiError> {
    Ok(Json(svc.list_tenants(&p).await?))
}

/// Create a tenant (global admin).
#[utoipa::path(post, path = "/api/v1/tenants", tag = "admin", security(("bearer" = [])), request_body = NewTenant,
    responses((status = 201, body = TenantInfo), Errors))]
async fn create_tenant(
    State(svc): Svc,
    Caller(p): Caller,
    Body(req): Body<NewTenant>,
) -> Result<(StatusCode, Json<TenantInfo>), ApiError> {
    Ok((StatusCode::CREATED, Json(svc.create_tenant(&p, req).await?)))
}

/// Delete a tenant (global admin). Its logs stay until retention drops them.
#[utoipa::path(delete, path = "/api/v1/tenants/{name}", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 204), Errors))]
async fn delete_tenant(
    State(svc): Svc,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    svc.delete_tenant(&p, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Agent credentials (global admin).
#[utoipa::path(get, path = "/api/v1/agents", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Vec<CredentialInfo>), Errors))]
async fn list_agents(
    State(svc): Svc,
    Caller(p): Caller,
) -> Result<Json<Vec<CredentialInfo>>, ApiError> {
    Ok(Json(svc.list_credentials(&p, "agent").await?))
}

/// Create an agent credential for a tenant (global admin). The secret is in
/// this response only; put it in the agent's `forward.token_file`.
#[utoipa::path(post, path = "/api/v1/agents", tag = "admin", security(("bearer" = [])), request_body = NewAgentCredential,
    responses((status = 201, body = CredentialInfo), Errors))]
async fn create_agent(
    State(svc): Svc,
    Caller(p): Caller,
    Body(req): Body<NewAgentCredential>,
) -> Result<(StatusCode, Json<CredentialInfo>), ApiError> {
    Ok((StatusCode::CREATED, Json(svc.create_agent(&p, req).await?)))
}

/// Revoke an agent credential (global admin): its batches are refused.
#[utoipa::path(delete, path = "/api/v1/agents/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = CredentialInfo), Errors))]
async fn revoke_agent(
    State(svc): Svc,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<Json<CredentialInfo>, ApiError> {
    Ok(Json(svc.revoke_credential(&p, "agent", &id).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_documents_its_answer_and_every_error_answer() {
        let (_, doc) = operations().split_for_parts();
        let statuses: BTreeMap<String, usize> =
            ApiError::TABLE.iter().fold(BTreeMap::new(), |mut m, row| {
                *m.entry(row.http.as_u16().to_string()).or_default() += 1;
                m
            });
        let mut operations = 0;
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                ("get", &item.get),
                ("post", &item.post),
                ("put", &item.put),
                ("patch", &item.patch),
                ("delete", &item.delete),
            ] {
                let Some(op) = op else { continue };
                operations += 1;
                let documented = &op.responses.responses;
                assert!(
                    documented.keys().any(|s| s.starts_with('2')),
                    "{method} {path} documents no success"
                );
                for status in statuses.keys() {
                    let Some(RefOr::T(r)) = documented.get(status) else {
                        panic!("{method} {path} does not document {status}");
                    };
                    assert!(
                        r.content.contains_key("application/json"),
                        "{method} {path} {status}: no error body"
                    );
                }
            }
        }
        assert!(operations >= 30, "only {operations} operations documented");
    }
}
