//! The gRPC `QueryService`: the same operations as the HTTP API, through
//! the same `Service`; generated types stop here.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use logferry_proto::query_service_server::QueryService;
use logferry_proto::{
    AnalyticsRequest, AnalyticsResponse, FieldsRequest, FieldsResponse, LogEntry, SearchRequest,
    SearchResponse, TailRequest, TailResponse,
};
use tonic::{Request, Response, Status};

use super::analytics::AnalyticsParams;
use super::search::{Entry, FieldsParams};
use super::Service;
use crate::auth::Principal;
use crate::query::SearchParams;

#[derive(Debug)]
pub struct Query {
    service: Arc<Service>,
}

impl Query {
    pub fn new(service: Arc<Service>) -> Query {
        Query { service }
    }

    async fn caller<T>(&self, req: &Request<T>) -> Result<Principal, Status> {
        let auth = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        Ok(self.service.principal(auth).await?)
    }
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn params(r: SearchRequest) -> SearchParams {
    SearchParams {
        q: opt(r.query),
        from: opt(r.from),
        to: opt(r.to),
        last: opt(r.last),
        level: opt(r.severity),
        service: opt(r.service),
        host: opt(r.host),
        environment: opt(r.environment),
        text: opt(r.text),
        request_id: opt(r.request_id),
        trace_id: opt(r.trace_id),
        tenant: opt(r.tenant),
        order: opt(r.order),
        limit: (r.limit != 0).then_some(r.limit),
        cursor: opt(r.cursor),
    }
}

fn log_entry(e: Entry) -> LogEntry {
    LogEntry {
        tenant: e.tenant,
        time_unix_nano: e.time_unix_nano,
        severity: e.severity,
        severity_number: u32::from(e.severity_number),
        service: e.service,
        host: e.host,
        environment: e.environment,
        source: e.source,
        file_path: e.file_path,
        body: e.body,
        trace_id: e.trace_id,
        span_id: e.span_id,
        request_id: e.request_id,
        http_method: e.http_method,
        http_path: e.http_path,
        http_status: u32::from(e.http_status),
        duration_ms: e.duration_ms,
        client_ip: e.client_ip,
        user_agent: e.user_agent,
        user_id: e.user_id,
        event_type: e.event_type,
        logger: e.logger,
        module: e.module,
        function: e.function,
        line: e.line,
        attributes: e.attributes.into_iter().collect(),
        resource: e.resource.into_iter().collect(),
        agent_id: e.agent_id,
        seq: e.seq,
        cursor: e.cursor,
    }
}

type TailStream = Pin<Box<dyn Stream<Item = Result<TailResponse, Status>> + Send>>;

#[tonic::async_trait]
impl QueryService for Query {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let p = self.caller(&request).await?;
        let page = self
            .service
            .search(&p, &params(request.into_inner()))
            .await?;
        Ok(Response::new(SearchResponse {
            records: page.records.into_iter().map(log_entry).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
            from_unix_ms: page.from_unix_ms,
            to_unix_ms: page.to_unix_ms,
        }))
    }

    async fn analytics(
        &self,
        request: Request<AnalyticsRequest>,
    ) -> Result<Response<AnalyticsResponse>, Status> {
        let p = self.caller(&request).await?;
        let r = request.into_inner();
        let params = AnalyticsParams {
            from: opt(r.from),
            to: opt(r.to),
            last: opt(r.last),
            service: opt(r.service),
            host: opt(r.host),
            environment: opt(r.environment),
            tenant: opt(r.tenant),
            session_gap: opt(r.session_gap),
            day: opt(r.day),
        };
        let json = self.service.analytics_json(&p, &r.view, &params).await?;
        Ok(Response::new(AnalyticsResponse { view: r.view, json }))
    }

    type TailStream = TailStream;

    async fn tail(
        &self,
        request: Request<TailRequest>,
    ) -> Result<Response<Self::TailStream>, Status> {
        let p = self.caller(&request).await?;
        let filter = request.into_inner().filter.unwrap_or_default();
        let batches = self.service.tail(&p, &params(filter))?;
        let stream = batches.map(|batch| {
            batch
                .map(|records| TailResponse {
                    records: records.into_iter().map(log_entry).collect(),
                })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn fields(
        &self,
        request: Request<FieldsRequest>,
    ) -> Result<Response<FieldsResponse>, Status> {
        let p = self.caller(&request).await?;
        let r = request.into_inner();
        let fields = self
            .service
            .fields(
                &p,
                &FieldsParams {
                    service: opt(r.service),
                    tenant: opt(r.tenant),
                    last: opt(r.last),
                },
            )
            .await?;
        Ok(Response::new(FieldsResponse {
            fields: fields
                .into_iter()
                .map(|f| logferry_proto::Field {
                    name: f.name,
                    kind: f.kind.into(),
                    top_values: f
                        .top_values
                        .into_iter()
                        .map(|v| logferry_proto::FieldValue {
                            value: v.value,
                            count: v.count,
                        })
                        .collect(),
                })
                .collect(),
        }))
    }
}
