//! A demo upstream for trying callgate out: listens on 127.0.0.1:9000 (or
//! the address given as the first argument), prints every callback it
//! receives and allows it.
//!
//!     cargo run --example upstream [ADDR]

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

const ALLOW: &str = r#"{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("demo upstream listening on http://{addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let service = service_fn(|req: Request<Incoming>| async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                let id = parts
                    .headers
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                println!(
                    "{} {} (x-request-id {id})\n{}\n",
                    parts.method,
                    parts.uri,
                    String::from_utf8_lossy(&body)
                );
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                    ALLOW.as_bytes(),
                ))))
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
