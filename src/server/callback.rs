//! One callback, from arrival to answer: the checks of SPEC 4.1 in order,
//! then routing, then a decision under its deadline or a queued
//! notification. Ends with one log line and the request metrics.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};
use tokio::time::Instant;

use crate::answer::{self, VerdictKind};
use crate::catalog::{self, Kind};
use crate::common::{FallbackReason, Forward};
use crate::decide::{self, Budget, Reply, UpstreamResult};
use crate::deliver::Notification;
use crate::respond::{self, Body, Outcome, Rejection};
use crate::snapshot::Snapshot;
use crate::state::Shared;
use crate::validate::{self, body::check_body};

/// What the connection knows about its client.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// `http` or `https`, for `x-forwarded-proto`.
    pub proto: &'static str,
    pub listener: Arc<str>,
}

/// Facts gathered along the way, for the log line and the metrics.
#[derive(Default)]
struct Trace {
    sdkappid: Option<u64>,
    /// The command's catalog entry, when it has one (the common case
    /// copies nothing) ...
    spec: Option<&'static catalog::Command>,
    /// ... else the command as received.
    uncatalogued: Option<String>,
    kind: Option<Kind>,
    route: Option<usize>,
    /// What a decision's answer says.
    verdict: Option<VerdictKind>,
    results: Vec<UpstreamResult>,
    detail: Option<String>,
}

impl Trace {
    fn command(&self) -> Option<&str> {
        self.spec.map(|c| c.name).or(self.uncatalogued.as_deref())
    }
}

/// One callback being handled: what it arrived with, and what is found
/// out along the way.
struct Callback<'a> {
    shared: &'a Arc<Shared>,
    /// The config generation this callback is handled on, start to end.
    snapshot: &'a Snapshot,
    peer: &'a Peer,
    arrival: Instant,
    /// Built once: the answer and every upstream request carry it.
    request_id: &'a http::HeaderValue,
    trace: Trace,
}

pub async fn handle(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let arrival = Instant::now();
    let id = RequestId::new();
    let request_id = id.as_str();
    let id_header = id.header();
    let snapshot = shared.load();
    let mut callback = Callback {
        shared: &shared,
        snapshot: &snapshot,
        peer: &peer,
        arrival,
        request_id: &id_header,
        trace: Trace::default(),
    };
    let (response, outcome) = match callback.process(request).await {
        Ok(done) => done,
        Err(rejection) => {
            callback.trace.detail = Some(rejection.to_string());
            (rejection.into_response(&id_header), Outcome::Rejected)
        }
    };
    let trace = callback.trace;
    let elapsed = arrival.elapsed();
    shared.metrics.request(
        trace.spec,
        trace.command().is_some(),
        outcome,
        trace.kind,
        elapsed.as_secs_f64(),
    );
    tracing::info!(
        target: "callgate::callback",
        request_id = %request_id,
        listener = %peer.listener,
        peer = %peer.addr,
        sdkappid = trace.sdkappid,
        command = trace.command().unwrap_or(""),
        kind = trace.kind.map(|k| match k { Kind::Decision => "decision", Kind::Notification => "notification" }),
        route = trace.route,
        outcome = outcome.as_str(),
        verdict = trace.verdict.map(VerdictKind::as_str),
        status = response.status().as_u16(),
        upstreams = %Results(&trace.results),
        detail = trace.detail.as_deref(),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        "callback"
    );
    Ok(response)
}

impl Callback<'_> {
    /// The checks of SPEC 4.1 in order, then routing, then the decision or
    /// the notification.
    async fn process(
        &mut self,
        request: Request<Incoming>,
    ) -> Result<(Response<Body>, Outcome), Rejection> {
        let (shared, snapshot, peer, request_id) =
            (self.shared, self.snapshot, self.peer, self.request_id);
        let arrival = self.arrival;
        let trace = &mut self.trace;
        let config = &snapshot.config;
        if request.method() != Method::POST {
            return Err(Rejection::Method);
        }
        let raw_query: Arc<str> = Arc::from(request.uri().query().unwrap_or(""));
        let query = validate::parse_query(&raw_query)?;
        trace.sdkappid = Some(query.sdkappid);
        let app = config
            .apps
            .get(&query.sdkappid)
            .ok_or(Rejection::UnknownApp(query.sdkappid))?;
        let command = query.command.as_deref().ok_or(Rejection::MissingCommand)?;
        let spec = catalog::lookup(command);
        trace.spec = spec;
        if spec.is_none() {
            trace.uncatalogued = Some(command.to_owned());
        }
        if let Some(token) = &app.token {
            validate::verify_sign(
                token.expose(),
                query.request_time.as_deref(),
                query.sign.as_deref(),
                config.limits.sign_window,
                SystemTime::now(),
            )?;
        }

        let body = read_body(
            request.into_body(),
            config.limits.max_body,
            arrival + config.limits.header_timeout,
        )
        .await?;
        check_body(&body, command, spec)?;
        if config.defaults.strict_commands && spec.is_none() {
            return Err(Rejection::UnknownCommand(command.to_owned()));
        }

        let routed = snapshot.routes.route(command, query.sdkappid);
        trace.kind = Some(routed.kind);
        let family = catalog::family_of(spec);
        let Some(route) = routed.route else {
            let response = match routed.kind {
                Kind::Decision => {
                    let verdict = decide::fallback_kind(routed.on_timeout);
                    shared.metrics.fallback(FallbackReason::NoRoute);
                    shared.metrics.decision(verdict, 0);
                    trace.verdict = Some(verdict);
                    let answer = answer::fallback_answer(family, routed.on_timeout, &body);
                    respond::fallback(answer, request_id)
                }
                Kind::Notification => respond::ok(Outcome::Unrouted, request_id),
            };
            return Ok((unrouted(response), Outcome::Unrouted));
        };
        trace.route = Some(route.index);
        let fwd = Forward {
            query: raw_query.clone(),
            body,
            request_id: request_id.clone(),
            peer: peer.addr.ip(),
            proto: peer.proto,
        };
        match routed.kind {
            Kind::Decision => {
                let budget = Budget {
                    deadline: arrival + routed.deadline,
                    max_answer: usize::try_from(config.limits.max_body).unwrap_or(usize::MAX),
                    family,
                    fallback: routed.on_timeout,
                };
                let fan_out =
                    decide::decide(snapshot, route, &fwd, budget, &shared.metrics, command).await;
                shared.metrics.decision(fan_out.verdict, fan_out.conflicts);
                trace.results = fan_out.results;
                match fan_out.reply {
                    Reply::Upstream { body, .. } => {
                        Ok((respond::upstream(body, request_id), Outcome::Upstream))
                    }
                    Reply::Merged(body) => Ok((respond::merged(body, request_id), Outcome::Merged)),
                    Reply::Fallback(reason) => {
                        shared.metrics.fallback(reason);
                        trace.detail = Some(format!("fallback: {}", reason.as_str()));
                        let answer = answer::fallback_answer(family, routed.on_timeout, &fwd.body);
                        Ok((respond::fallback(answer, request_id), Outcome::Fallback))
                    }
                }
            }
            Kind::Notification => {
                shared
                    .deliverer
                    .enqueue(
                        &shared.metrics,
                        Notification {
                            fwd: &fwd,
                            command,
                            upstreams: &route.upstreams,
                        },
                    )
                    .await?;
                Ok((respond::ok(Outcome::Queued, request_id), Outcome::Queued))
            }
        }
    }
}

/// No route: a decision gets the fallback (at once), a notification a
/// plain OK. Both are reported as `unrouted`.
fn unrouted(mut response: Response<Body>) -> Response<Body> {
    response.headers_mut().insert(
        respond::OUTCOME_HEADER,
        http::HeaderValue::from_static(Outcome::Unrouted.as_str()),
    );
    response
}

/// Reads the whole body, at most `max` bytes, by `deadline`. A declared
/// length over the limit is refused before a byte of it is kept.
async fn read_body(mut body: Incoming, max: u64, deadline: Instant) -> Result<Bytes, Rejection> {
    let declared = body.size_hint().lower();
    if declared > max {
        if declared - max <= LINGER_BYTES as u64 {
            linger(&mut body, deadline).await;
        }
        return Err(Rejection::TooLarge(max));
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let collected = tokio::time::timeout_at(deadline, Limited::new(&mut body, limit).collect())
        .await
        .map_err(|_| Rejection::BodyTimeout)?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            linger(&mut body, deadline).await;
            Err(Rejection::TooLarge(max))
        }
        Err(e) => Err(Rejection::BodyRead(e.to_string())),
    }
}

/// How much of a refused body is read and dropped, and for how long.
const LINGER_BYTES: usize = 256 * 1024;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads and drops the rest of a refused body, within bounds (the
/// "lingering close" of nginx): a connection closed with unread data is
/// reset by the kernel, and the client, still sending, may lose the 413
/// on the way. Past the bounds the connection is simply closed.
async fn linger(body: &mut Incoming, deadline: Instant) {
    let until = deadline.min(Instant::now() + LINGER_TIME);
    let mut left = LINGER_BYTES;
    let drain = async {
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, Bytes::len);
            if n >= left {
                return;
            }
            left -= n;
        }
    };
    let _ = tokio::time::timeout_at(until, drain).await;
}

/// A random 128-bit request id as 32 lowercase hex digits, on the stack.
struct RequestId([u8; 32]);

impl RequestId {
    fn new() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut n = fastrand::u128(..);
        let mut out = [0u8; 32];
        for digit in out.iter_mut().rev() {
            *digit = HEX[(n & 0xf) as usize];
            n >>= 4;
        }
        Self(out)
    }

    fn header(&self) -> http::HeaderValue {
        http::HeaderValue::from_bytes(&self.0).unwrap_or(http::HeaderValue::from_static("-"))
    }

    fn as_str(&self) -> &str {
        // Hex digits only: always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("00000000000000000000000000000000")
    }
}

/// Per-upstream results as `name=result[:code]/ms`, for the log line.
struct Results<'a>(&'a [UpstreamResult]);

impl fmt::Display for Results<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={}", r.upstream, r.result.as_str())?;
            if let Some(code) = r.code {
                write!(f, ":{code}")?;
            }
            write!(f, "/{}ms", r.elapsed.as_millis())?;
        }
        Ok(())
    }
}
