//! One ext_proc stream = one HTTP request. A synchronous state machine: each message from Envoy
//! goes in, the messages to send back come out. The async loop around it only moves messages.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use envoy_types::pb::envoy::service::ext_proc::v3::{
    CommonResponse, HttpBody, HttpHeaders, ProcessingRequest, ProcessingResponse,
    processing_request::Request as Msg,
};
use rand::RngExt;

use super::director::Director;
use super::error::{Code, InferenceError};
use super::openai;
use super::protocol::*;
use super::response::{ModelNameRewriter, SseUsageScanner, usage_from_json};
use crate::flowcontrol::{
    Admission, FlowControl, NewItem, Outcome, PoolSignal, Refusal, Ticket, legacy_admit,
};
use crate::runtime::Runtime;
use crate::scheduling::{DEFAULT_FAIRNESS_ID, DecisionError, Request, SchedulerRng, Usage};
use crate::telemetry::{ErrorLabels, ModelLabels, RequestLabels, RunningLabels};

/// The most a declared `content-length` reserves before any body byte arrived.
const MAX_BODY_PREALLOCATION: usize = 1 << 20;

/// What a message produced: responses to send, whether the stream is finished, and a queued
/// request's ticket to await before [`StreamState::admitted`] continues it.
#[derive(Debug, Default)]
pub struct Output {
    pub responses: Vec<ProcessingResponse>,
    pub close: bool,
    pub wait: Option<Ticket>,
}

/// A parsed request between admission and scheduling.
struct Prepared {
    request: Request,
    labels: ModelLabels,
    incoming: String,
    target: String,
    body: Bytes,
    model_span: Option<std::ops::Range<usize>>,
}

/// What routing a request body led to.
enum Routing {
    Now(Vec<ProcessingResponse>),
    Wait(Ticket),
}

type RouteError = (InferenceError, Option<ModelLabels>);

/// A request that was routed and whose response is not complete yet.
struct Routed {
    request: Request,
    endpoint_name: String,
    labels: ModelLabels,
}

#[derive(Default)]
struct ResponseState {
    streaming: bool,
    buffer: Vec<u8>,
    sse: SseUsageScanner,
    rewriter: Option<ModelNameRewriter>,
    bytes: usize,
    /// Set when a non-streaming body grew past the buffering limit and is passed through.
    passthrough: bool,
}

pub struct StreamState {
    d: Arc<Director>,
    /// The runtime this request is admitted and scheduled with, and completes on.
    rt: Arc<Runtime>,
    rng: SchedulerRng,
    received_at: Instant,
    headers: Vec<(String, String)>,
    request_id: String,
    body: BytesMut,
    body_done: bool,
    request_stream_flag: bool,
    subset: Option<Vec<std::net::IpAddr>>,
    served: Option<Result<Option<String>, &'static str>>,
    routed: Option<Routed>,
    running_model: Option<String>,
    response: ResponseState,
    buffered_usage: Option<Usage>,
    /// A request waiting in flow control.
    pending: Option<Prepared>,
    /// The flow controller it waits in.
    queued_in: Option<Arc<FlowControl>>,
    /// A request flow control dispatched, until its response ends.
    admission: Option<Admission>,
}

impl StreamState {
    pub fn new(d: Arc<Director>, rng: SchedulerRng) -> Self {
        Self {
            rt: d.runtime(),
            d,
            rng,
            received_at: Instant::now(),
            headers: Vec::new(),
            request_id: String::new(),
            body: BytesMut::new(),
            body_done: false,
            request_stream_flag: false,
            subset: None,
            served: None,
            routed: None,
            running_model: None,
            response: ResponseState::default(),
            buffered_usage: None,
            pending: None,
            queued_in: None,
            admission: None,
        }
    }

    pub fn handle(&mut self, req: ProcessingRequest) -> Output {
        let response_phase = matches!(
            req.request,
            Some(Msg::ResponseHeaders(_) | Msg::ResponseBody(_) | Msg::ResponseTrailers(_))
        );
        if let Some(md) = &req.metadata_context {
            if response_phase {
                self.served = Some(served_endpoint(md));
            } else if let Some(s) = subset_hint(md) {
                self.subset = Some(s);
            } else if md.filter_metadata.contains_key(SUBSET_NAMESPACE) {
                self.subset = None;
            }
        }
        let mut out = Output::default();
        match req.request {
            Some(Msg::RequestHeaders(h)) => self.on_request_headers(h, &mut out),
            Some(Msg::RequestBody(b)) => self.on_request_body(b, &mut out),
            Some(Msg::RequestTrailers(_)) => {
                // HTTP/2 requests with trailers end with them, not with an end-of-stream body.
                if !self.body_done {
                    self.finish_request_body(&mut out);
                }
                if !out.close {
                    out.responses.push(trailers_response(true));
                }
            }
            Some(Msg::ResponseHeaders(h)) => self.on_response_headers(h, &mut out),
            Some(Msg::ResponseBody(b)) => self.on_response_body(b, &mut out),
            Some(Msg::ResponseTrailers(_)) => {
                self.flush_buffered(false, &mut out);
                self.complete();
                out.responses.push(trailers_response(false));
            }
            None => {}
        }
        out
    }

    /// Releases everything held for a request whose stream ended before its response did
    /// (client disconnect, gateway error, upstream reset).
    pub fn abort(&mut self) {
        if self.routed.is_some() {
            self.complete_with(None);
        }
        self.pending = None;
        if let Some(mut a) = self.admission.take() {
            a.complete();
        }
        self.release_running();
    }

    /// Continues a request that waited in flow control.
    pub fn admitted(&mut self, outcome: Outcome) -> Output {
        let mut out = Output::default();
        let Some(p) = self.pending.take() else {
            return out;
        };
        let labels = p.labels.clone();
        match self.after_admission(p, outcome) {
            Ok(responses) => out.responses = responses,
            Err((e, l)) => self.reject(e, l.or(Some(labels)), &mut out),
        }
        out
    }

    // === request side ===

    fn on_request_headers(&mut self, h: HttpHeaders, out: &mut Output) {
        self.received_at = Instant::now();
        self.headers = read_headers(h.headers.as_ref());
        match first(&self.headers, &["x-request-id"]) {
            Some(id) => self.request_id = id.to_string(),
            None => {
                self.request_id = uuid::Uuid::new_v4().to_string();
                self.headers
                    .push(("x-request-id".to_string(), self.request_id.clone()));
            }
        }
        if h.end_of_stream {
            self.route_header_only(out);
            return;
        }
        if let Some(len) =
            first(&self.headers, &["content-length"]).and_then(|v| v.trim().parse::<usize>().ok())
        {
            if len > self.rt.extproc.max_request_body_bytes {
                self.reject(self.too_large(), None, out);
                return;
            }
            // A client declares the length: reserve at most this much up front and grow with
            // the bytes that really arrive.
            self.body.reserve(len.min(MAX_BODY_PREALLOCATION));
        }
    }

    /// A request without a body (GET): GIE picks a uniformly random endpoint, no scheduling.
    fn route_header_only(&mut self, out: &mut Output) {
        let snap = self.d.pool.snapshot();
        if snap.is_empty() {
            let e = InferenceError::new(Code::Internal, "no pods available in datastore");
            self.reject(e, None, out);
            return;
        }
        let i = self.rng.random_range(0..snap.len());
        let dest = snap.get(i).endpoint.host_port().to_string();
        let mut set = vec![set_header(DESTINATION_ENDPOINT, &dest)];
        self.echo_request_headers(&mut set);
        out.responses.push(headers_response(
            CommonResponse {
                header_mutation: header_mutation(set),
                clear_route_cache: true,
                ..Default::default()
            },
            true,
        ));
        // Envoy still sends dynamic metadata consumers the same pick.
        if let Some(last) = out.responses.last_mut() {
            last.dynamic_metadata = Some(destination_metadata(&dest));
        }
        self.body_done = true;
    }

    fn on_request_body(&mut self, b: HttpBody, out: &mut Output) {
        if self.body_done {
            return;
        }
        if self.body.len() + b.body.len() > self.rt.extproc.max_request_body_bytes {
            self.body = BytesMut::new();
            self.reject(self.too_large(), None, out);
            return;
        }
        self.body.extend_from_slice(&b.body);
        if b.end_of_stream {
            self.finish_request_body(out);
        }
    }

    fn too_large(&self) -> InferenceError {
        InferenceError::new(
            Code::PayloadTooLarge,
            format!(
                "request body is larger than the limit of {} bytes (--max-request-body-bytes)",
                self.rt.extproc.max_request_body_bytes
            ),
        )
    }

    fn finish_request_body(&mut self, out: &mut Output) {
        self.body_done = true;
        let body = std::mem::take(&mut self.body).freeze();
        match self.route(body) {
            Ok(Routing::Now(responses)) => out.responses.extend(responses),
            Ok(Routing::Wait(ticket)) => out.wait = Some(ticket),
            Err((e, labels)) => self.reject(e, labels, out),
        }
    }

    /// Parse, rewrite, admit, schedule; the responses that route the request, a ticket to wait
    /// on, or why not.
    fn route(&mut self, body: Bytes) -> Result<Routing, RouteError> {
        let d = self.d.clone();
        let rt = self.rt.clone();
        let path = first(
            &self.headers,
            &[":path", "x-original-path", "x-forwarded-path"],
        )
        .unwrap_or("/v1/completions")
        .to_string();
        let parsed = if rt.extproc.passthrough {
            None
        } else {
            Some(openai::parse(&body, &path).map_err(|e| (e, None))?)
        };
        let (incoming, prompt, cache_salt) = match &parsed {
            Some(p) => (p.model.clone(), p.prompt.clone(), p.cache_salt.clone()),
            None => (String::new(), body.clone(), None),
        };
        self.request_stream_flag = parsed.as_ref().is_some_and(|p| p.stream);

        let mut target = match first(&self.headers, &REWRITE_HEADERS) {
            Some(t) if !t.is_empty() && parsed.is_some() => t.to_string(),
            _ => incoming.clone(),
        };
        let mut rewrite_name = None;
        if parsed.is_some()
            && let Some(dec) = d.datastore.rewrite(&incoming, &mut self.rng)
        {
            rewrite_name = Some(dec.rewrite_name);
            target = dec.target;
        }
        // Label values a client chose are bounded; models the rewrites name always pass.
        let labels = d
            .metrics
            .bounds
            .model_labels(&incoming, &target, |m| d.datastore.knows_model(m));
        if let Some(name) = rewrite_name {
            d.metrics
                .model_rewrite_decisions_total
                .get_or_create(&crate::telemetry::RewriteLabels {
                    model_rewrite_name: name,
                    model_name: labels.model_name.clone(),
                    target_model: labels.target_model_name.clone(),
                })
                .inc();
        }
        let priority = d
            .datastore
            .priority(first(&self.headers, &OBJECTIVE_HEADERS));
        let fairness_id = first(&self.headers, &FAIRNESS_HEADERS)
            .filter(|f| !f.is_empty())
            .unwrap_or(DEFAULT_FAIRNESS_ID)
            .to_string();
        let request = Request {
            request_id: self.request_id.clone(),
            incoming_model: incoming.clone(),
            target_model: target.clone(),
            prompt,
            cache_salt,
            body_size: body.len(),
            headers: self.headers.clone(),
            fairness_id,
            priority,
            subset: if rt.extproc.disable_subset_filter {
                None
            } else {
                self.subset.clone()
            },
        };
        d.metrics
            .request_total
            .get_or_create(&RequestLabels {
                model_name: labels.model_name.clone(),
                target_model_name: labels.target_model_name.clone(),
                priority: priority.to_string(),
            })
            .inc();
        d.metrics
            .request_sizes
            .get_or_create(&labels)
            .observe(body.len() as f64);

        let prepared = Prepared {
            request,
            labels,
            incoming,
            target,
            body,
            model_span: parsed.map(|p| p.model_span),
        };
        let Some(fc) = &rt.flow_control else {
            // GIE's legacy admission: only sheddable requests, only when saturated.
            if prepared.request.is_sheddable()
                && let Some(det) = &rt.saturation
            {
                let snapshot = d.pool.snapshot();
                let candidates = snapshot.candidates(prepared.request.subset.as_deref());
                let pool = PoolSignal {
                    snapshot: &snapshot,
                    detector: det.as_ref(),
                    now: d.clock.now(),
                };
                if let Err(r) = legacy_admit(prepared.request.priority, &candidates, &pool) {
                    return Err((refusal(&r), Some(prepared.labels)));
                }
            }
            return self.schedule(prepared).map(Routing::Now);
        };
        let item = NewItem {
            fairness_id: prepared.request.fairness_id.clone(),
            priority: prepared.request.priority,
            bytes: prepared.body.len() as u64,
            input_tokens: estimate_input_tokens(&prepared.request),
            ttl: None,
        };
        self.queued_in = Some(fc.clone());
        match fc.enqueue(item, &prepared.labels) {
            Err(r) => Err((refusal(&r), Some(prepared.labels))),
            Ok(mut ticket) => match ticket.try_outcome() {
                Some(outcome) => self.after_admission(prepared, outcome).map(Routing::Now),
                None => {
                    self.pending = Some(prepared);
                    Ok(Routing::Wait(ticket))
                }
            },
        }
    }

    fn after_admission(
        &mut self,
        p: Prepared,
        outcome: Outcome,
    ) -> Result<Vec<ProcessingResponse>, RouteError> {
        match outcome {
            Outcome::Dispatched(r) => {
                // It may have waited across a configuration reload: schedule it with the
                // runtime in force now, and complete it on that one.
                self.rt = self.d.runtime();
                let fc = self
                    .queued_in
                    .take()
                    .expect("only flow control dispatches requests");
                self.admission = Some(Admission::new(fc, &r));
                self.schedule(p)
            }
            Outcome::Refused(r) => Err((refusal(&r), Some(p.labels))),
        }
    }

    /// Candidates, scheduling and the responses that route the request.
    fn schedule(&mut self, p: Prepared) -> Result<Vec<ProcessingResponse>, RouteError> {
        let d = self.d.clone();
        let Prepared {
            request,
            labels,
            incoming,
            target,
            body,
            model_span,
        } = p;
        let snapshot = d.pool.snapshot();
        let now = d.clock.now();
        let started = Instant::now();
        let rt = self.rt.clone();
        let decision = rt.scheduler.decide(&request, &snapshot, now, &mut self.rng);
        d.metrics
            .scheduler_e2e_duration_seconds
            .observe(started.elapsed().as_secs_f64());
        let decision = match decision {
            Ok(d) => d,
            Err(e @ DecisionError::NoCandidates) => {
                return Err((
                    InferenceError::new(Code::ServiceUnavailable, e.to_string()),
                    Some(labels),
                ));
            }
            Err(e @ DecisionError::Scheduling(_)) => {
                d.metrics
                    .scheduler_attempts_total
                    .get_or_create(&crate::telemetry::AttemptLabels {
                        status: "failure".into(),
                        target_model_name: labels.target_model_name.clone(),
                        pod_name: String::new(),
                        namespace: String::new(),
                        port: String::new(),
                    })
                    .inc();
                return Err((
                    InferenceError::new(Code::ResourceExhausted, e.to_string()),
                    Some(labels),
                ));
            }
        };
        let (result, state) = (&decision.result, &decision.state);
        let targets = result.targets();
        if let Some(a) = &mut self.admission {
            a.picked(state.prefix_hit_ratio(targets[0].index));
        }
        let primary = &snapshot.get(targets[0].index).endpoint;
        d.metrics
            .scheduler_attempts_total
            .get_or_create(&crate::telemetry::AttemptLabels {
                status: "success".into(),
                target_model_name: labels.target_model_name.clone(),
                pod_name: primary.name.clone(),
                namespace: rt.extproc.pool_namespace.clone(),
                port: primary.port.to_string(),
            })
            .inc();
        let dest = targets
            .iter()
            .map(|t| snapshot.get(t.index).endpoint.host_port())
            .collect::<Vec<_>>()
            .join(",");

        let out_body = match &model_span {
            Some(span) if target != incoming => openai::rewrite_model(&body, span, &target),
            _ => body,
        };
        let mut set = vec![set_header(DESTINATION_ENDPOINT, &dest)];
        let scores = &result.primary_result().scores;
        if rt.extproc.emit_endpoint_scores {
            set.push(set_header(
                ENDPOINT_SCORES,
                &endpoint_scores_header(&snapshot, scores),
            ));
        }
        if !out_body.is_empty() {
            set.push(set_header("Content-Length", &out_body.len().to_string()));
        }
        self.echo_request_headers(&mut set);
        let mut responses = vec![headers_response(
            CommonResponse {
                header_mutation: header_mutation(set),
                clear_route_cache: true,
                ..Default::default()
            },
            true,
        )];
        let mut metadata = destination_metadata(&dest);
        if rt.extproc.emit_endpoint_scores {
            add_endpoint_scores(&mut metadata, &snapshot, scores);
        }
        responses[0].dynamic_metadata = Some(metadata);
        body_responses(&out_body, true, true, &mut responses);

        if !incoming.is_empty() {
            let model = d
                .metrics
                .bounds
                .model(&incoming, |m| d.datastore.knows_model(m));
            d.metrics
                .running_requests
                .get_or_create(&RunningLabels {
                    model_name: model.clone(),
                })
                .inc();
            self.running_model = Some(model);
        }
        self.routed = Some(Routed {
            endpoint_name: primary.name.clone(),
            request,
            labels,
        });
        Ok(responses)
    }

    fn echo_request_headers(
        &self,
        set: &mut Vec<envoy_types::pb::envoy::config::core::v3::HeaderValueOption>,
    ) {
        for (k, v) in &self.headers {
            if echoable(k) {
                set.push(set_header(k, v));
            }
        }
    }

    fn reject(&mut self, e: InferenceError, labels: Option<ModelLabels>, out: &mut Output) {
        let labels = labels.unwrap_or(ModelLabels {
            model_name: String::new(),
            target_model_name: String::new(),
        });
        self.d
            .metrics
            .request_error_total
            .get_or_create(&ErrorLabels {
                model_name: labels.model_name,
                target_model_name: labels.target_model_name,
                error_code: e.code.as_str().to_string(),
            })
            .inc();
        tracing::debug!(request_id = %self.request_id, error = %e, "request rejected");
        out.responses.push(immediate(&e));
        out.close = true;
    }

    // === response side ===

    fn on_response_headers(&mut self, h: HttpHeaders, out: &mut Output) {
        let headers = read_headers(h.headers.as_ref());
        let status = first(&headers, &[":status", "status"]).unwrap_or("200");
        if !status.starts_with('2')
            && let Some(r) = &self.routed
        {
            self.d
                .metrics
                .request_error_total
                .get_or_create(&ErrorLabels {
                    model_name: r.labels.model_name.clone(),
                    target_model_name: r.labels.target_model_name.clone(),
                    error_code: "ModelServerError".into(),
                })
                .inc();
        }
        self.response.streaming = self.request_stream_flag
            || first(&headers, &["content-type"]).is_some_and(|c| c.contains("text/event-stream"));
        if let Some(r) = &self.routed {
            self.response.rewriter =
                ModelNameRewriter::new(&r.request.target_model, &r.request.incoming_model);
        }
        let mut set = vec![set_header("x-went-into-resp-headers", "true")];
        if self.rt.extproc.served_verifier {
            let v = match &self.served {
                Some(Ok(Some(ep))) => ep.clone(),
                Some(Err(msg)) => msg.to_string(),
                _ => "fail: missing envoy lb metadata".to_string(),
            };
            set.push(set_header("x-conformance-test-served-endpoint", &v));
        }
        for (k, v) in &headers {
            if echoable(k) {
                set.push(set_header(k, v));
            }
        }
        out.responses.push(headers_response(
            CommonResponse {
                header_mutation: header_mutation(set),
                ..Default::default()
            },
            false,
        ));
        if h.end_of_stream {
            self.complete();
        }
    }

    fn on_response_body(&mut self, b: HttpBody, out: &mut Output) {
        let eos = b.end_of_stream;
        if !b.body.is_empty()
            && let Some(a) = &mut self.admission
        {
            a.responding();
        }
        self.response.bytes += b.body.len();
        if self.response.streaming || self.response.passthrough {
            if self.response.streaming {
                self.response.sse.feed(&b.body);
                // Streamed usage (cumulative) charges the tenant as tokens arrive.
                if let Some(a) = &mut self.admission
                    && let Some(u) = self.response.sse.usage()
                {
                    a.usage(u);
                }
            }
            let chunk = match &mut self.response.rewriter {
                Some(r) => r.feed(&b.body, eos),
                None => b.body,
            };
            body_responses(&chunk, eos, false, &mut out.responses);
        } else {
            self.response.buffer.extend_from_slice(&b.body);
            if eos {
                self.flush_buffered(true, out);
            } else if self.response.buffer.len() > self.rt.extproc.max_request_body_bytes {
                // Too large to hold: pass the rest through as it comes, without usage.
                self.response.passthrough = true;
                self.flush_buffered(false, out);
            }
        }
        if eos {
            self.complete();
        }
    }

    /// Emits a buffered (non-streaming) response body: usage read once, model name rewritten.
    fn flush_buffered(&mut self, eos: bool, out: &mut Output) {
        if self.response.streaming {
            return;
        }
        let buf = std::mem::take(&mut self.response.buffer);
        if eos && !self.response.passthrough {
            self.buffered_usage = usage_from_json(&buf);
        }
        let chunk = match &mut self.response.rewriter {
            Some(r) => r.feed(&buf, eos),
            None => buf,
        };
        body_responses(&chunk, eos, false, &mut out.responses);
    }

    fn complete(&mut self) {
        self.response.sse.finish();
        let usage = self.buffered_usage.take().or(self.response.sse.usage());
        self.complete_with(usage);
        self.release_running();
    }

    fn complete_with(&mut self, usage: Option<Usage>) {
        if let Some(mut a) = self.admission.take() {
            if let Some(u) = usage {
                a.usage(u);
            }
            a.complete();
        }
        let Some(r) = self.routed.take() else { return };
        let m = &self.d.metrics;
        let elapsed = self.received_at.elapsed().as_secs_f64();
        if usage.is_some() || self.response.bytes > 0 {
            m.request_duration_seconds
                .get_or_create(&r.labels)
                .observe(elapsed);
            m.response_sizes
                .get_or_create(&r.labels)
                .observe(self.response.bytes as f64);
        }
        if let Some(u) = usage {
            if u.prompt_tokens > 0 {
                m.input_tokens
                    .get_or_create(&r.labels)
                    .observe(u.prompt_tokens as f64);
            }
            if u.completion_tokens > 0 {
                m.output_tokens
                    .get_or_create(&r.labels)
                    .observe(u.completion_tokens as f64);
                m.normalized_time_per_output_token_seconds
                    .get_or_create(&r.labels)
                    .observe(elapsed / u.completion_tokens as f64);
            }
            if u.cached_tokens > 0 {
                m.prompt_cached_tokens
                    .get_or_create(&r.labels)
                    .observe(u.cached_tokens as f64);
            }
        }
        self.rt
            .scheduler
            .response_complete(&r.request, &r.endpoint_name, usage);
    }

    fn release_running(&mut self) {
        if let Some(model) = self.running_model.take() {
            self.d
                .metrics
                .running_requests
                .get_or_create(&RunningLabels { model_name: model })
                .dec();
        }
    }
}

/// The gateway's answer to an admission refusal: 429 when the pool is overloaded, 503 when the
/// request could not be served in time.
pub(crate) fn refusal(r: &Refusal) -> InferenceError {
    let code = if r.status() == 429 {
        Code::ResourceExhausted
    } else {
        Code::ServiceUnavailable
    };
    InferenceError::new(code, r.message())
}

/// Input tokens flow control charges at dispatch, before the engine reports the real count:
/// the prompt at 4 characters per token, as the prefix hashing assumes.
pub(crate) fn estimate_input_tokens(request: &Request) -> u64 {
    (request.prompt.len() as u64).div_ceil(4).max(1)
}

#[cfg(test)]
mod tests;
