//! SPEC 5 "Reload": every trigger moves a command to a new upstream within
//! a bounded time; bad configs and certificates are refused while the old
//! ones keep serving; nothing in flight fails across a swap.

#[path = "support_old/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::*;

const CMD: &str = "Group.CallbackBeforeSendMsg";

fn config(target: &str, a: &Upstream, b: &Upstream) -> String {
    format!(
        "listeners:\n  - addr: \"127.0.0.1:0\"\nadmin:\n  addr: \"127.0.0.1:0\"\napps:\n  - sdkappid: {APP}\n{}routes:\n  - match: \"*\"\n    upstreams: [{target}]\n",
        upstreams_yaml(&[("a", a), ("b", b)])
    )
}

/// Two upstreams answering different codes, so an answer tells the route.
async fn pair() -> (Upstream, Upstream) {
    (
        Upstream::start(Reply::code(0)).await,
        Upstream::start(Reply::code(1)).await,
    )
}

/// Polls until the command is answered by code `want` (bounded).
async fn wait_for_code(gw: &Gateway, want: i64, within: Duration) {
    let started = Instant::now();
    loop {
        let code = gw.callback(CMD, GROUP_SEND).await.json()["ErrorCode"].as_i64();
        if code == Some(want) {
            return;
        }
        assert!(
            started.elapsed() < within,
            "still answered {code:?} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn generation(gw: &Gateway) -> u64 {
    let v: serde_json::Value = gw
        .http
        .get(format!("{}/config", gw.admin()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    v["generation"].as_u64().unwrap()
}

#[tokio::test]
async fn an_in_place_edit_is_picked_up() {
    let (a, b) = pair().await;
    let gw = Gateway::start(&config("a", &a, &b)).await;
    wait_for_code(&gw, 0, Duration::from_secs(1)).await;
    std::fs::write(gw.config_path(), config("b", &a, &b)).unwrap();
    wait_for_code(&gw, 1, Duration::from_secs(10)).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_rename_over_is_picked_up() {
    let (a, b) = pair().await;
    let gw = Gateway::start(&config("a", &a, &b)).await;
    for (i, target, code) in [(0, "b", 1), (1, "a", 0), (2, "b", 1)] {
        let tmp = gw.dir.path().join(format!(".routes.yaml.{i}.tmp"));
        std::fs::write(&tmp, config(target, &a, &b)).unwrap();
        std::fs::rename(&tmp, gw.config_path()).unwrap();
        wait_for_code(&gw, code, Duration::from_secs(10)).await;
    }
    gw.shutdown().await;
}

/// Exactly what the kubelet does with a ConfigMap volume: the file is a
/// symlink through `..data`, itself a symlink to a timestamped folder, and
/// an update swaps `..data` atomically (rename of a new symlink over it).
#[tokio::test]
async fn a_configmap_symlink_swap_is_picked_up_every_time() {
    let (a, b) = pair().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let write_version = |name: &str, target: &str| {
        let v = root.join(name);
        std::fs::create_dir(&v).unwrap();
        std::fs::write(v.join("routes.yaml"), config(target, &a, &b)).unwrap();
    };
    write_version("..2026_11_25_00_00_00.000000001", "a");
    std::os::unix::fs::symlink("..2026_11_25_00_00_00.000000001", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/routes.yaml", root.join("routes.yaml")).unwrap();
    let config_path = root.join("routes.yaml");
    let loaded = callgate::Config::load(&config_path).unwrap();
    let gw = Gateway {
        gw: Some(callgate::Gateway::start(loaded).await.unwrap()),
        dir,
        http: test_client(),
    };
    wait_for_code(&gw, 0, Duration::from_secs(1)).await;
    let root = gw.dir.path().to_path_buf();
    let mut previous = "..2026_11_25_00_00_00.000000001".to_string();
    for (i, (target, code)) in [("b", 1), ("a", 0), ("b", 1)].into_iter().enumerate() {
        let name = format!("..2026_11_25_00_00_0{}.000000001", i + 1);
        let v = root.join(&name);
        std::fs::create_dir(&v).unwrap();
        std::fs::write(v.join("routes.yaml"), config(target, &a, &b)).unwrap();
        std::os::unix::fs::symlink(&name, root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        std::fs::remove_dir_all(root.join(&previous)).unwrap();
        previous = name;
        wait_for_code(&gw, code, Duration::from_secs(10)).await;
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn admin_post_reload_always_reloads_and_reports_the_generation() {
    let (a, b) = pair().await;
    let gw = Gateway::start(&config("a", &a, &b)).await;
    let before = generation(&gw).await;
    let r = gw
        .http
        .post(format!("{}/reload", gw.admin()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(v["generation"].as_u64(), Some(before + 1));
    assert_eq!(generation(&gw).await, before + 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn invalid_configs_are_refused_and_the_old_routes_keep_answering() {
    let (a, b) = pair().await;
    let gw = Gateway::start(&config("a", &a, &b)).await;
    let good_generation = generation(&gw).await;
    let bad = [
        "listeners: [\n".to_string(),
        config("nope", &a, &b),
        config("b", &a, &b).replace("routes:", "routez:"),
        config("b", &a, &b).replace("upstreams: [b]", "upstreams: [b]\n    deadline: 5s"),
    ];
    for text in &bad {
        std::fs::write(gw.config_path(), text).unwrap();
        let r = gw
            .http
            .post(format!("{}/reload", gw.admin()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{text}");
        let v: serde_json::Value = r
            .text()
            .await
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap();
        assert!(!v["problems"].as_array().unwrap().is_empty());
        // The watcher sees the same file; give it time to try too.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            gw.callback(CMD, GROUP_SEND).await.json()["ErrorCode"],
            0,
            "old route lost after {text}"
        );
        assert_eq!(generation(&gw).await, good_generation);
    }
    let r = gw
        .http
        .get(format!("{}/readyz", gw.admin()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "a refused reload must not affect readiness"
    );
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"callgate_config_reloads_total{result="error"}"#),
        "{m}"
    );
    gw.shutdown().await;
}

/// An upstream whose settings did not change keeps its pooled connection.
#[tokio::test]
async fn unchanged_upstreams_keep_their_connections_across_reloads() {
    let (a, b) = pair().await;
    let gw = Gateway::start(&config("a", &a, &b)).await;
    // Each serving thread has its own pool and takes every n-th
    // connection: with a reload before every call, a dropped pool would
    // show as one upstream connection per call.
    let threads = callgate::server::cores::count();
    let calls = 2 * threads + 2;
    for _ in 0..calls {
        gw.callback(CMD, GROUP_SEND).await;
        gw.gw().reload("test").await.unwrap();
    }
    let peers: std::collections::HashSet<_> = a.received().iter().map(|r| r.peer).collect();
    assert_eq!(a.count(), calls);
    assert!(
        peers.len() <= threads,
        "a reload dropped the upstream's pool: {} connections for {calls} calls on {threads} threads",
        peers.len()
    );
    gw.shutdown().await;
}

/// Certificate rotation: new handshakes use the new files.
#[tokio::test]
async fn rotated_listener_certificates_serve_new_handshakes() {
    let (old, new) = (Pki::new(), Pki::new());
    let up = Upstream::start(Reply::ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("server.pem");
    let key = dir.path().join("server-key.pem");
    std::fs::write(&cert, &old.pki.server_cert_pem).unwrap();
    std::fs::write(&key, &old.pki.server_key_pem).unwrap();
    let yaml = format!(
        "listeners:\n  - addr: \"127.0.0.1:0\"\n    tls:\n      cert: server.pem\n      key: server-key.pem\n{}routes:\n  - match: \"*\"\n    upstreams: [a]\n",
        upstreams_yaml(&[("a", &up)])
    );
    let gw = Gateway::start_in(dir, &yaml).await;
    let url = format!(
        "https://localhost:{}/im?SdkAppid={APP}&CallbackCommand={CMD}",
        gw.addr().port()
    );
    let trusts_new = new.client(false, false);
    assert!(
        trusts_new.post(&url).body(GROUP_SEND).send().await.is_err(),
        "new CA trusted before rotation"
    );
    assert!(
        old.client(false, false)
            .post(&url)
            .body(GROUP_SEND)
            .send()
            .await
            .is_ok()
    );

    // Rotate by rename-over (key first, then cert, as tools do).
    let replace = |path: &Path, pem: &str| {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, pem).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    };
    replace(
        &gw.dir.path().join("server-key.pem"),
        &new.pki.server_key_pem,
    );
    replace(&gw.dir.path().join("server.pem"), &new.pki.server_cert_pem);
    let started = Instant::now();
    loop {
        // A fresh client per try: a pooled connection would reuse the old session.
        if new
            .client(false, false)
            .post(&url)
            .body(GROUP_SEND)
            .send()
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "new certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        old.client(false, false)
            .post(&url)
            .body(GROUP_SEND)
            .send()
            .await
            .is_err(),
        "old certificate still served"
    );

    // A broken certificate is refused and the new one keeps serving.
    replace(&gw.dir.path().join("server.pem"), "not a certificate");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        new.client(false, false)
            .post(&url)
            .body(GROUP_SEND)
            .send()
            .await
            .is_ok()
    );
    gw.shutdown().await;
}

/// Load while the config is swapped 50 times: every request is answered by
/// one of the two routes, none fails.
#[tokio::test]
async fn no_request_fails_while_the_config_is_swapped_50_times() {
    let (a, b) = pair().await;
    let gw = Arc::new(Gateway::start(&config("a", &a, &b)).await);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..6 {
        let (gw, stop, done) = (gw.clone(), stop.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            // Bounded: at most 2,000 requests per client.
            for _ in 0..2000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let answer = gw.callback(CMD, GROUP_SEND).await;
                assert_eq!(
                    (answer.status, answer.outcome.as_str()),
                    (200, "upstream"),
                    "{}",
                    answer.text()
                );
                let code = answer.json()["ErrorCode"].as_i64();
                assert!(matches!(code, Some(0 | 1)), "wrong answer {code:?}");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for i in 0..50 {
        let target = if i % 2 == 0 { "b" } else { "a" };
        let tmp = gw.dir.path().join("routes.yaml.tmp");
        std::fs::write(&tmp, config(target, &a, &b)).unwrap();
        std::fs::rename(&tmp, gw.config_path()).unwrap();
        gw.gw().reload("test").await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let done = done.load(Ordering::Relaxed);
    eprintln!("{done} requests answered across the swaps");
    assert!(done >= 500, "too little load: {done}");
    assert!(generation(&gw).await >= 51);
}
