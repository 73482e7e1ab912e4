//! The real `callgate` binary: short commands whose output is read, and
//! `callgate run` as a long-lived child process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use super::{Admin, Answer, Config, Im, Listener};

/// Bounds every wait for a short-lived command.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);
/// Bounds the wait for `run` to be ready: generous, since a gateway on a
/// new NATS cluster waits for its leader elections first.
const READY_LIMIT: Duration = Duration::from_secs(45);

/// A free port on 127.0.0.1 (bound then released: for configs that need a
/// fixed address up front, such as the binary's).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A path as a command-line argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The binary, with the environment variables it reads cleared so the
/// test runner's environment cannot change what a test sees.
pub fn callgate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_callgate"));
    c.env_remove("CALLGATE_CONFIG")
        .env_remove("CALLGATE_SEND_TOKEN")
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    c
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Both streams: where a message goes is not part of the contract.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub fn expect_code(&self, code: i32, what: &str) -> &Self {
        assert_eq!(self.code(), Some(code), "{what}: {self:#?}");
        self
    }

    /// Asserts exit code 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code(), Some(0), "{self:#?}");
        self
    }
}

/// `callgate ARGS...`, bounded in time.
pub async fn exec(args: &[&str]) -> Out {
    let mut c = callgate();
    c.args(args);
    exec_with(c, None).await
}

/// Runs `cmd` to its end (bounded in time), with `stdin` as its input.
pub async fn exec_with(mut cmd: Command, stdin: Option<&[u8]>) -> Out {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).await.unwrap();
        drop(pipe);
    }
    let out = tokio::time::timeout(COMMAND_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{cmd:?} did not exit in time"))
        .unwrap();
    Out {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// How a [`Binary`] is started.
pub struct Launch {
    config: Config,
    args: Vec<String>,
    rust_log: Option<String>,
    from_env: bool,
}

impl Launch {
    /// An argument before `run`, e.g. `--log-format`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// `--log-format json`.
    pub fn json_logs(self) -> Self {
        self.arg("--log-format").arg("json")
    }

    /// `RUST_LOG` (by default unset: the binary's own default, info).
    pub fn rust_log(mut self, filter: &str) -> Self {
        self.rust_log = Some(filter.to_owned());
        self
    }

    /// Names the config by `CALLGATE_CONFIG` instead of `-c`, and runs in
    /// another (empty) folder.
    pub fn config_from_env(mut self) -> Self {
        self.from_env = true;
        self
    }

    /// Picks free ports, writes the config, starts the binary and waits
    /// (bounded) until `/readyz` says 200.
    pub async fn start(self) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let (listen, admin) = (free_addr(), free_addr());
        let config = dir.path().join("routes.yaml");
        let mut binary = Binary {
            child: None,
            listen,
            im: Im::to(listen),
            admin: Admin::new(admin),
            config,
            dir,
            runs: 0,
            launch: self,
        };
        binary.rewrite(&binary.launch.config.clone());
        binary.run().await;
        binary
    }
}

/// A running `callgate run`, its config and log in a temporary folder.
pub struct Binary {
    child: Option<Child>,
    pub listen: SocketAddr,
    im: Im,
    admin: Admin,
    config: PathBuf,
    dir: tempfile::TempDir,
    runs: usize,
    launch: Launch,
}

impl Binary {
    /// `callgate run` on `config`, at the binary's default log level.
    pub async fn start(config: &Config) -> Binary {
        Self::launch(config).start().await
    }

    /// The same with `RUST_LOG=warn`: no line per callback under load.
    pub async fn start_quiet(config: &Config) -> Binary {
        Self::launch(config).rust_log("warn").start().await
    }

    /// For other arguments or environments; the config must leave its
    /// listeners and admin address to the launch.
    pub fn launch(config: &Config) -> Launch {
        assert!(!config.has_listeners(), "the launch picks the ports");
        Launch {
            config: config.clone(),
            args: Vec::new(),
            rust_log: None,
            from_env: false,
        }
    }

    async fn run(&mut self) {
        self.runs += 1;
        let log = self.log_path();
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = callgate();
        cmd.args(&self.launch.args).arg("run");
        if self.launch.from_env {
            let elsewhere = self.dir.path().join("cwd");
            std::fs::create_dir_all(&elsewhere).unwrap();
            cmd.env("CALLGATE_CONFIG", &self.config)
                .current_dir(elsewhere);
        } else {
            cmd.arg("-c").arg(&self.config);
        }
        if let Some(filter) = &self.launch.rust_log {
            cmd.env("RUST_LOG", filter);
        }
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        self.child = Some(cmd.spawn().unwrap());
        self.wait_ready().await;
    }

    /// Starts the binary again on the same config, ports and folder (after
    /// it exited or was killed); its log starts afresh.
    pub async fn restart(&mut self) {
        assert!(self.try_wait().is_some(), "still running");
        self.run().await;
    }

    /// Waits (bounded) until `/readyz` says 200; panics at once if the
    /// process exited.
    pub async fn wait_ready(&mut self) {
        super::assert_eventually!(
            {
                if let Some(status) = self.try_wait() {
                    panic!("callgate run exited early ({status}):\n{}", self.log());
                }
                self.admin.readyz().await == 200
            },
            READY_LIMIT,
            every Duration::from_millis(50),
            "/readyz never answered 200:\n{}",
            self.log()
        );
    }

    /// Rewrites the config on the same ports (a reload picks it up).
    pub fn rewrite(&self, config: &Config) {
        let config = config
            .clone()
            .listener(Listener::at(self.listen))
            .admin(self.admin.addr);
        config.write(&self.config);
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("callgate-{}.log", self.runs))
    }

    /// Everything the current run wrote (standard output and error).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn im(&self) -> &Im {
        &self.im
    }

    pub fn admin(&self) -> &Admin {
        &self.admin
    }

    /// See [`Im::callback`].
    pub async fn callback(&self, command: &str, body: &str) -> Answer {
        self.im.callback(command, body).await
    }

    /// See [`Im::decision`].
    pub async fn decision(&self) -> Answer {
        self.im.decision().await
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("started")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(Child::id).expect("running")
    }

    /// Sends a signal by name, e.g. `"-TERM"`.
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(ok.success(), "kill {sig} {pid}");
    }

    /// The exit status, if it exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child().try_wait().unwrap()
    }

    pub async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child().wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("callgate did not exit within {limit:?}:\n{}", self.log()),
        }
    }

    /// SIGTERM, and the exit status (within 15 s).
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal("-TERM");
        self.exit_within(Duration::from_secs(15)).await
    }

    /// SIGKILL, and waits for the end.
    pub async fn kill(&mut self) {
        self.child().kill().await.unwrap();
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
}
