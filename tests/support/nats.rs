//! Real NATS servers (the `nats-server` binary, JetStream on) on
//! 127.0.0.1 ephemeral ports, each with its own store folder: one node, or
//! a cluster of three.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_addr;

pub struct NatsNode {
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

impl NatsNode {
    /// One JetStream server.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_addr().port();
        let args = base_args("n1", port, dir.path().to_path_buf());
        let mut node = NatsNode {
            child: None,
            port,
            args,
            _dir: Some(dir),
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let child = Command::new(binary())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs (Debian package nats-server; .ci/run installs it)");
        self.child = Some(child);
        wait_port(self.port);
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the server gets no chance to tidy up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three JetStream servers routed into one cluster.
pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cluster_ports: Vec<u16> = (0..3).map(|_| free_addr().port()).collect();
        let routes = cluster_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, cport) in cluster_ports.iter().enumerate() {
            let port = free_addr().port();
            let name = format!("n{}", i + 1);
            let mut args = base_args(&name, port, dir.path().join(&name));
            args.extend([
                "--cluster_name".into(),
                "callgate-test".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{cport}"),
                "--routes".into(),
                routes.clone(),
            ]);
            let mut node = NatsNode {
                child: None,
                port,
                args,
                _dir: None,
            };
            node.spawn();
            nodes.push(node);
        }
        NatsCluster { nodes, _dir: dir }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsNode::url).collect()
    }
}

fn binary() -> PathBuf {
    for candidate in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        let path = PathBuf::from(candidate);
        if path.exists() {
            return path;
        }
    }
    PathBuf::from("nats-server")
}

fn base_args(name: &str, port: u16, store: PathBuf) -> Vec<String> {
    vec![
        "-a".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-n".into(),
        name.into(),
        "-js".into(),
        "-sd".into(),
        store.display().to_string(),
    ]
}

fn wait_port(port: u16) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nats-server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl super::Config {
    /// The nats delivery backend on `servers`, with short timings for
    /// tests (`max_attempts` is left to the test).
    pub fn nats(self, servers: &[String], replicas: usize) -> Self {
        let list: Vec<String> = servers.iter().map(|s| format!("{s:?}")).collect();
        self.delivery("backend", "nats")
            .delivery("backoff", "50ms")
            .delivery("max_backoff", "200ms")
            .nats_setting("servers", Raw(format!("[{}]", list.join(", "))))
            .nats_setting("replicas", replicas)
            .nats_setting("ack_wait", "2s")
            .nats_setting("publish_timeout", "1500ms")
    }
}

/// A value written as it is (here a flow list).
struct Raw(String);

impl super::config::Scalar for Raw {
    fn render(&self) -> String {
        self.0.clone()
    }
}
