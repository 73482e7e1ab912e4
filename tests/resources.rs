//! Resource bounds of the real binary: 1,000 stalled connections and a
//! flood of large bodies keep its memory bounded, and it keeps serving.

mod support;

use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn stalled_connections_and_large_bodies_keep_memory_bounded() {
    let up = Upstream::start(Reply::ok()).await;
    let config = Config::catch_all(&up)
        .limits("header_timeout", "30s")
        .limits("max_body", "1MiB");
    let mut gw = Binary::start_quiet(&config).await;
    let listen = gw.listen;
    // The IM client has no pooling: after a 413 the gateway closes that
    // connection, and a pooled client could race that close on its next
    // request.
    let im = gw.im().clone();
    let cmd = "Group.CallbackBeforeSendMsg";
    assert_eq!(im.callback(cmd, GROUP_SEND).await.outcome, "upstream");
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
    tokio::time::sleep(ms(500)).await;
    let with_stalled = gw.rss_kib();
    // Others are still served.
    assert_eq!(im.callback(cmd, GROUP_SEND).await.outcome, "upstream");

    // A flood of bodies just over max_body, 32 at a time, 4 rounds.
    let big = bytes::Bytes::from(vec![b' '; 1024 * 1024 + 1]);
    let url = format!("{}?SdkAppid={APP}&CallbackCommand={cmd}", im.base());
    for _ in 0..4 {
        let mut flood = Vec::new();
        for _ in 0..32 {
            let (http, url, big) = (im.http.clone(), url.clone(), big.clone());
            flood.push(tokio::spawn(async move {
                // The status only: the gateway may close before the body.
                let sent = http.post(url).body(big).send().await;
                sent.map(|r| r.status().as_u16())
            }));
        }
        for f in flood {
            if let Ok(status) = f.await.unwrap() {
                assert_eq!(status, 413);
            }
        }
    }
    let after_flood = gw.rss_kib();
    assert_eq!(im.callback(cmd, GROUP_SEND).await.outcome, "upstream");
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
    gw.kill().await;
}
