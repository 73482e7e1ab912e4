//! The real `callgate` binary, run on a config with fixed free ports.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A free port on 127.0.0.1 (bound then released: tests that need a fixed
/// address up front, such as the binary's config, use this).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A running `callgate run`, its config in a temporary folder.
pub struct Binary {
    pub child: tokio::process::Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Binary {
    /// Writes `listeners` and `admin` on free ports in front of `rest`,
    /// starts the binary with `args` before `run` (e.g. `--log-format json`),
    /// and waits (bounded) until `/readyz` says 200. Standard error is piped
    /// when `capture_stderr`.
    pub async fn start(rest: &str, args: &[&str], rust_log: &str, capture_stderr: bool) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let (listen, admin) = (free_addr(), free_addr());
        let config = dir.path().join("routes.yaml");
        std::fs::write(
            &config,
            format!("listeners:\n  - addr: \"{listen}\"\nadmin:\n  addr: \"{admin}\"\n{rest}"),
        )
        .unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_callgate"))
            .args(args)
            .args(["run", "-c"])
            .arg(&config)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(if capture_stderr {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let binary = Binary {
            child,
            listen,
            admin,
            dir,
        };
        binary.wait_ready().await;
        binary
    }

    pub async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        let started = Instant::now();
        while http
            .get(format!("http://{}/readyz", self.admin))
            .send()
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
        {
            // Generous: a gateway on a new NATS cluster waits for its
            // leader elections before it is ready.
            assert!(
                started.elapsed() < Duration::from_secs(45),
                "the gateway never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// Sends a signal by name, e.g. `"-TERM"`.
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Resident memory, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// The callback URL for `command` of the default app.
    pub fn url(&self, command: &str) -> String {
        format!(
            "http://{}/im?SdkAppid={}&CallbackCommand={command}",
            self.listen,
            super::APP
        )
    }
}
