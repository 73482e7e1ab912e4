//! SPEC 5 "Reload": every trigger moves a command to a new upstream within
//! a bounded time; bad configs and certificates are refused while the old
//! ones keep serving; nothing in flight fails across a swap.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::*;

const CMD: &str = "Group.CallbackBeforeSendMsg";

/// Upstreams `a` and `b`, and every command routed to `target`.
fn config(target: &str, a: &Upstream, b: &Upstream) -> Config {
    Config::new()
        .upstream("a", a)
        .upstream("b", b)
        .route(Route::all(&[target]))
}

/// Two upstreams answering different codes, so an answer tells the route.
async fn pair() -> (Upstream, Upstream) {
    (
        Upstream::start(Reply::code(0)).await,
        Upstream::start(Reply::code(1)).await,
    )
}

async fn code(gw: &Gateway) -> Option<i64> {
    gw.callback(CMD, GROUP_SEND).await.json()["ErrorCode"].as_i64()
}

/// Polls until the command is answered by code `want` (bounded).
async fn wait_for_code(gw: &Gateway, want: i64, within: Duration) {
    assert_eventually!(
        code(gw).await == Some(want),
        within,
        "still answered {:?} after {within:?}",
        code(gw).await
    );
}

async fn generation(gw: &Gateway) -> u64 {
    gw.admin().generation().await
}

#[tokio::test]
async fn an_in_place_edit_is_picked_up() {
    let (a, b) = pair().await;
    let gw = Gateway::start(&config("a", &a, &b)).await;
    wait_for_code(&gw, 0, Duration::from_secs(1)).await;
    gw.rewrite(&config("b", &a, &b));
    wait_for_code(&gw, 1, Duration::from_secs(10)).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_rename_over_is_picked_up() {
    let (a, b) = pair().await;
    let gw = Gateway::start(&config("a", &a, &b)).await;
    for (i, target, code) in [(0, "b", 1), (1, "a", 0), (2, "b", 1)] {
        let tmp = gw.dir.path().join(format!(".routes.yaml.{i}.tmp"));
        config(target, &a, &b).write(&tmp);
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
        config(target, &a, &b).write(&v.join("routes.yaml"));
    };
    write_version("..2026_11_25_00_00_00.000000001", "a");
    std::os::unix::fs::symlink("..2026_11_25_00_00_00.000000001", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/routes.yaml", root.join("routes.yaml")).unwrap();
    let config_path = root.join("routes.yaml");
    let gw = Gateway::start_at(dir, config_path).await;
    wait_for_code(&gw, 0, Duration::from_secs(1)).await;
    let root = gw.dir.path().to_path_buf();
    let mut previous = "..2026_11_25_00_00_00.000000001".to_string();
    for (i, (target, code)) in [("b", 1), ("a", 0), ("b", 1)].into_iter().enumerate() {
        let name = format!("..2026_11_25_00_00_0{}.000000001", i + 1);
        let v = root.join(&name);
        std::fs::create_dir(&v).unwrap();
        config(target, &a, &b).write(&v.join("routes.yaml"));
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
    let r = gw.admin().reload().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["generation"].as_u64(), Some(before + 1));
    assert_eq!(generation(&gw).await, before + 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn invalid_configs_are_refused_and_the_old_routes_keep_answering() {
    let (a, b) = pair().await;
    let gw = Gateway::start(&config("a", &a, &b)).await;
    let good_generation = generation(&gw).await;
    let too_long = Config::new()
        .upstream("a", &a)
        .upstream("b", &b)
        .route(Route::all(&["b"]).deadline("5s"));
    let bad = [
        "listeners: [\n".to_string(),
        config("nope", &a, &b).yaml(),
        config("b", &a, &b).yaml().replace("routes:", "routez:"),
        too_long.yaml(),
    ];
    for text in &bad {
        std::fs::write(gw.config_path(), text).unwrap();
        let r = gw.admin().reload().await;
        assert_eq!(r.status, 400, "{text}");
        assert!(!r.json()["problems"].as_array().unwrap().is_empty());
        // The watcher sees the same file; give it time to try too.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            gw.callback(CMD, GROUP_SEND).await.json()["ErrorCode"],
            0,
            "old route lost after {text}"
        );
        assert_eq!(generation(&gw).await, good_generation);
    }
    assert_eq!(
        gw.admin().readyz().await,
        200,
        "a refused reload must not affect readiness"
    );
    metric("callgate_config_reloads_total")
        .label("result", "error")
        .assert_in(&gw.metrics().await);
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
    let threads = serving_threads();
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
    let listener = Listener::new().tls("server.pem", "server-key.pem");
    let gw = Gateway::start_in(dir, &Config::catch_all(&up).listener(listener)).await;
    let root = format!("https://localhost:{}", gw.addr().port());
    // A fresh client per call: a pooled connection would reuse the old session.
    let served = |trust: &Pki| {
        let im = Im::with(trust.client(None, Proto::Alpn), &root);
        async move { im.try_callback(CMD, GROUP_SEND).await.is_ok() }
    };
    assert!(!served(&new).await, "new CA trusted before rotation");
    assert!(served(&old).await);

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
    assert_eventually!(
        served(&new).await,
        Duration::from_secs(10),
        "new certificate never served"
    );
    assert!(!served(&old).await, "old certificate still served");

    // A broken certificate is refused and the new one keeps serving.
    replace(&gw.dir.path().join("server.pem"), "not a certificate");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(served(&new).await);
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
        config(target, &a, &b).write(&tmp);
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
