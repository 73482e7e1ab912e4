//! Resource bounds of the real binary: 1,000 stalled connections and a
//! flood of large bodies keep its memory bounded, and it keeps serving.

#[path = "support_old/mod.rs"]
mod support;

use std::time::Duration;

use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn stalled_connections_and_large_bodies_keep_memory_bounded() {
    let up = Upstream::start(Reply::ok()).await;
    let rest = format!(
        "apps:\n  - sdkappid: {APP}\nlimits:\n  header_timeout: 30s\n  max_body: 1MiB\n{}routes:\n  - match: \"*\"\n    upstreams: [a]\n",
        upstreams_yaml(&[("a", &up)])
    );
    let mut gw = Binary::start(&rest, &[], "warn", false).await;
    let listen = gw.listen;
    // No pooling: after a 413 the gateway closes that connection, and a
    // pooled client could race that close on its next request.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let callback = |http: reqwest::Client| async move {
        let url = format!(
            "http://{listen}/im?SdkAppid={APP}&CallbackCommand=Group.CallbackBeforeSendMsg"
        );
        Answer::read(http.post(url).body(GROUP_SEND).send().await.unwrap()).await
    };
    assert_eq!(callback(http.clone()).await.outcome, "upstream");
    let idle = gw.rss_kib();

    // 1,000 connections that send half a request and stall.
    let mut stalled = Vec::new();
    for _ in 0..1000 {
        let mut s = TcpStream::connect(listen).await.unwrap();
        s.write_all(
            format!("POST /im?SdkAppid={APP}&CallbackCommand=X HTTP/1.1\r\nhost: x\r\n").as_bytes(),
        )
        .await
        .unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_stalled = gw.rss_kib();
    // Others are still served.
    assert_eq!(callback(http.clone()).await.outcome, "upstream");

    // A flood of bodies just over max_body, 32 at a time, 4 rounds.
    let big = bytes::Bytes::from(vec![b' '; 1024 * 1024 + 1]);
    for _ in 0..4 {
        let mut flood = Vec::new();
        for _ in 0..32 {
            let (http, big) = (http.clone(), big.clone());
            flood.push(tokio::spawn(async move {
                let url = format!(
                    "http://{listen}/im?SdkAppid={APP}&CallbackCommand=Group.CallbackBeforeSendMsg"
                );
                http.post(url)
                    .body(big)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }));
        }
        for f in flood {
            if let Ok(status) = f.await.unwrap() {
                assert_eq!(status, 413);
            }
        }
    }
    let after_flood = gw.rss_kib();
    assert_eq!(callback(http.clone()).await.outcome, "upstream");
    eprintln!(
        "RSS: idle {} MiB, 1,000 stalled connections {} MiB, after 128 x 1 MiB bodies {} MiB",
        idle / 1024,
        with_stalled / 1024,
        after_flood / 1024
    );
    assert!(
        with_stalled < 150 * 1024,
        "{with_stalled} KiB with 1,000 stalled connections"
    );
    assert!(
        after_flood < 250 * 1024,
        "{after_flood} KiB after the flood"
    );
    drop(stalled);
    gw.child.kill().await.unwrap();
}
