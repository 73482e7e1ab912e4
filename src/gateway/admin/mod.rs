//! The admin address (SPEC 6): health, readiness, metrics, the config in
//! force and reload. Plain HTTP/1.1, meant for localhost or a pod network,
//! with its own connection limits (`guard`), no request from a web page
//! (`Origin`), and `admin.token` on the methods that change state.

mod guard;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::{constant_time, digest};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, ORIGIN, WWW_AUTHENTICATE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::reload::Reloader;
use crate::config::Secret;
use crate::metrics;
use crate::server::activity::{Activity, Tracked};
use guard::{Registry, Slot};

type Body = Full<Bytes>;

pub async fn serve(
    listener: TcpListener,
    reloader: Arc<Reloader>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let mut builder = http1::Builder::new();
    // hyper's timer runs from the moment it waits for a request's head,
    // so between requests it is the idle bound; the first request's
    // headers are held to `HEADER_TIMEOUT` by `guard::drive`.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(guard::IDLE_TIMEOUT)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let registry = Registry::new(guard::MAX_CONNECTIONS);
    loop {
        // At the limit with every connection busy: stop accepting, so
        // new clients wait in the backlog instead of costing descriptors.
        if !registry.room(&stop).await {
            break;
        }
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead
                // of spinning on the runtime that also accepts callbacks.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = registry.admit(&stop).await else {
            break;
        };
        tasks.spawn(connection(
            stream,
            slot,
            builder.clone(),
            reloader.clone(),
            stop.clone(),
        ));
    }
}

/// Serves one admin connection to its end.
async fn connection(
    stream: TcpStream,
    slot: Slot,
    builder: Arc<http1::Builder>,
    reloader: Arc<Reloader>,
    stop: CancellationToken,
) {
    let activity = Activity::new();
    let requests = slot.requests();
    let service = service_fn(move |req| {
        let reloader = reloader.clone();
        let in_flight = requests.start();
        async move {
            let answer = route(&reloader, req).await;
            drop(in_flight);
            Ok::<_, Infallible>(answer)
        }
    });
    let conn = builder.serve_connection(
        TokioIo::new(Tracked::new(stream, activity.clone())),
        service,
    );
    tokio::pin!(conn);
    let shutdown = |c: std::pin::Pin<&mut _>| http1::Connection::graceful_shutdown(c);
    if let Some(cut) = guard::drive(conn, shutdown, &slot, &activity, &stop).await {
        tracing::debug!(?cut, "admin connection closed");
    }
}

async fn route(reloader: &Reloader, req: Request<Incoming>) -> Response<Body> {
    let shared = reloader.shared();
    // Browsers send `Origin` on every cross-site request that could
    // change state, and on any fetch a script makes: none is served.
    if req.headers().contains_key(ORIGIN) {
        return text(
            StatusCode::FORBIDDEN,
            "requests from web pages (with an Origin header) are refused\n",
        );
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD)
        && let Some(token) = &shared.load().config.admin.token
        && !authorized(req.headers(), token)
    {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "Authorization: Bearer <admin.token> required\n",
        );
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") if shared.is_ready() => text(StatusCode::OK, "ready\n"),
        (&Method::GET, "/readyz") => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(Full::new(Bytes::from(shared.metrics.encode())));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            r
        }
        (&Method::GET, "/config") => {
            let snap = shared.load();
            json(
                StatusCode::OK,
                &serde_json::json!({ "generation": snap.generation, "config": &*snap.config }),
            )
        }
        (&Method::POST, "/reload") => match reloader.reload("admin").await {
            Ok(generation) => json(
                StatusCode::OK,
                &serde_json::json!({ "result": "ok", "generation": generation }),
            ),
            Err(problems) => json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "result": "error", "problems": problems }),
            ),
        },
        (_, path @ ("/healthz" | "/readyz" | "/metrics" | "/config" | "/reload")) => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            let allow = if path == "/reload" { "POST" } else { "GET" };
            r.headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static(allow));
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Whether `Authorization` is `Bearer <token>` (the scheme in any case).
/// Both sides are hashed first, so the comparison takes the same time
/// whatever the length or content of the guess.
fn authorized(headers: &HeaderMap, token: &Secret) -> bool {
    let Some(given) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, credentials)| credentials.trim_start_matches(' '))
    else {
        return false;
    };
    let given = digest::digest(&digest::SHA256, given.as_bytes());
    let expected = digest::digest(&digest::SHA256, token.expose().as_bytes());
    constant_time::verify_slices_are_equal(given.as_ref(), expected.as_ref()).is_ok()
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests;
