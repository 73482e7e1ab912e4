//! The admin address (SPEC 6): health, readiness, metrics, the config in
//! force and reload. Plain HTTP, meant for localhost or a pod network.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::reload::Reloader;
use crate::metrics;

type Body = Full<Bytes>;

pub async fn serve(
    listener: TcpListener,
    reloader: Arc<Reloader>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let reloader = reloader.clone();
        let builder = builder.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let service = service_fn(move |req| {
                let reloader = reloader.clone();
                async move { Ok::<_, Infallible>(route(&reloader, req).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

async fn route(reloader: &Reloader, req: Request<Incoming>) -> Response<Body> {
    let shared = reloader.shared();
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
