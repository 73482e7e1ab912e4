//! A small closed-loop load generator for callgate (HTTP/1.1 keep-alive,
//! one connection per sender): N senders post callbacks back to back for a
//! fixed time and the latencies are summarised.
//!
//!     cargo run --release --example load -- URL [CONCURRENCY] [SECONDS] [RATE] [BODY_FILE]
//!
//! RATE (requests per second over all senders, 0 = as fast as possible)
//! paces each sender; latency is then measured from each request's
//! scheduled start, so a stalled server is not hidden (no coordinated
//! omission).
//!
//! URL carries the query, e.g.
//! `http://127.0.0.1:8080/im?SdkAppid=1400000001&CallbackCommand=State.StateChange`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url: hyper::Uri = args.next().expect("URL").parse().expect("a URL");
    let concurrency: usize = args.next().map_or(64, |c| c.parse().expect("CONCURRENCY"));
    let seconds: u64 = args.next().map_or(10, |s| s.parse().expect("SECONDS"));
    let rate: f64 = args.next().map_or(0.0, |r| r.parse().expect("RATE"));
    let body = match args.next() {
        Some(path) => Bytes::from(std::fs::read(path).expect("BODY_FILE")),
        None => Bytes::from_static(br#"{"CallbackCommand":"State.StateChange","EventTime":1700000000000,"Info":{"Action":"Login","To_Account":"bench","Reason":"Register"}}"#),
    };
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    let period = (rate > 0.0).then(|| Duration::from_secs_f64(concurrency as f64 / rate));
    for i in 0..concurrency {
        let (url, body) = (url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            // Spread the senders' schedules over one period.
            let mut next = Instant::now()
                + period.map_or(Duration::ZERO, |p| p.mul_f64(i as f64 / concurrency as f64));
            let mut http = HttpConnector::new();
            http.set_nodelay(true);
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1)
                .build(http);
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            while Instant::now() < until {
                let started = match period {
                    Some(p) => {
                        tokio::time::sleep_until(next.into()).await;
                        let at = next;
                        next += p;
                        at
                    }
                    None => Instant::now(),
                };
                let req = hyper::Request::post(url.clone())
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .expect("request");
                match client.request(req).await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.into_body().collect().await;
                        latencies.push(started.elapsed().as_micros() as u32);
                    }
                    Ok(r) => {
                        let _ = r.into_body().collect().await;
                        failures += 1;
                    }
                    Err(_) => failures += 1,
                }
            }
            (latencies, failures)
        }));
    }
    let mut all = Vec::new();
    let mut failures = 0;
    for t in tasks {
        let (l, f) = t.await.expect("sender");
        all.extend(l);
        failures += f;
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "{} ok, {} failed in {seconds}s with {concurrency} senders (rate {rate}): {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        all.len(),
        failures,
        all.len() as f64 / seconds as f64,
        pct(0.50),
        pct(0.99),
        pct(0.999),
        all.last().copied().unwrap_or(0) as f64 / 1000.0
    );
}
