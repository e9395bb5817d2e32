//! A `callpipe serve` child process for tests.

use super::{models_dir, root};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The API token every test server requires (`CALLPIPE_API_TOKEN`).
pub const TOKEN: &str = "test-token-0123456789";

/// A running `callpipe serve`, killed on drop.
pub struct Server {
    child: Child,
    addr: String,
    /// Each server has its own data dir: an embedded knowledge store
    /// belongs to one process. (An Option only so `restart` can move it.)
    data: Option<tempfile::TempDir>,
    pipeline: PathBuf,
    env: Vec<(String, String)>,
    /// Where its stderr goes when a test reads its log (`start_logged`).
    log: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn start(env: &[(&str, &str)]) -> Server {
        Self::start_pipeline(env, &super::audio_pipeline())
    }

    pub fn start_pipeline(env: &[(&str, &str)], pipeline: &Path) -> Server {
        Self::spawn_new(env, pipeline, false)
    }

    /// Like `start_pipeline`, with the server's log kept for `log()`.
    pub fn start_pipeline_logged(env: &[(&str, &str)], pipeline: &Path) -> Server {
        Self::spawn_new(env, pipeline, true)
    }

    /// Like `start`, with the server's log kept for `log()`.
    pub fn start_logged(env: &[(&str, &str)]) -> Server {
        Self::spawn_new(env, &super::audio_pipeline(), true)
    }

    /// A server on a fresh data dir.
    fn spawn_new(env: &[(&str, &str)], pipeline: &Path, logged: bool) -> Server {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::spawn(
            env,
            pipeline,
            tempfile::tempdir().expect("data dir"),
            logged,
        )
    }

    /// Everything the server logged so far (`start_logged` only).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Stops the server as an init system would (SIGTERM) and waits for it
    /// to exit; whether it exited cleanly.
    pub fn terminate(mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().is_ok_and(|s| s.success())
    }

    /// Sends SIGTERM without waiting (see `wait`).
    pub fn sigterm(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits for the server to exit; whether it exited cleanly.
    pub fn wait(mut self) -> bool {
        self.child.wait().is_ok_and(|s| s.success())
    }

    /// Waits up to `limit` for the server to exit: whether it exited
    /// cleanly, or `None` when it was still running (killed when dropped).
    pub fn wait_within(&mut self, limit: std::time::Duration) -> Option<bool> {
        let until = std::time::Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status.success()),
                Ok(None) if std::time::Instant::now() < until => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                _ => return None,
            }
        }
    }

    /// The server's resident memory now, in KiB (Linux).
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// Stops the server cleanly (SIGTERM: what is queued is stored) and
    /// starts a new one on the same data dir, pipeline and environment.
    pub fn stop_and_restart(mut self) -> Server {
        self.sigterm();
        // The clean shutdown gets its time; a hung one is killed after it.
        for _ in 0..300 {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        self.restart()
    }

    /// Kills the server (SIGKILL: no clean shutdown) and starts a new one on
    /// the same data dir, pipeline and environment.
    pub fn restart(mut self) -> Server {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let data = self.data.take().expect("data dir");
        let logged = self.log.is_some();
        Self::spawn(
            std::mem::take(&mut self.env),
            &self.pipeline.clone(),
            data,
            logged,
        )
    }

    fn spawn(
        env: Vec<(String, String)>,
        pipeline: &Path,
        data: tempfile::TempDir,
        logged: bool,
    ) -> Server {
        let log = logged.then(|| data.path().join("server.log"));
        // `CALLPIPE_MAX_CALLS` in `env` sets the capacity (the flag wins over it).
        let max_calls = env
            .iter()
            .find(|(k, _)| k == "CALLPIPE_MAX_CALLS")
            .map_or_else(|| "40".to_string(), |(_, v)| v.clone());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_callpipe"));
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-calls",
            max_calls.as_str(),
            "--pipeline",
        ])
        .arg(pipeline)
        .current_dir(root())
        .env("CALLPIPE_DATA_DIR", data.path())
        .env("CALLPIPE_MODELS_DIR", models_dir())
        .env("CALLPIPE_LOG", "warn,callpipe=info")
        .env("CALLPIPE_API_TOKEN", TOKEN)
        .env_remove("TWILIO_ACCOUNT_SID")
        .env_remove("TWILIO_AUTH_TOKEN")
        .env_remove("TWILIO_PHONE_NUMBER")
        .env_remove("TWILIO_WEBSOCKET_URL")
        .env_remove("CALLPIPE_TWILIO_SIGNATURES")
        .env_remove("CALLPIPE_STREAM_SECRET")
        .stdout(Stdio::piped());
        match &log {
            Some(path) => cmd.stderr(std::fs::File::create(path).expect("log file")),
            None => cmd.stderr(Stdio::inherit()),
        };
        // A server without TWILIO_AUTH_TOKEN refuses Twilio's routes; tests
        // that do not sign open them explicitly, as an operator would.
        if !env.iter().any(|(k, _)| k == "TWILIO_AUTH_TOKEN") {
            cmd.env("CALLPIPE_TWILIO_SIGNATURES", "off");
        }
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("callpipe serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("listening line");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_string();
        Server {
            child,
            addr,
            data: Some(data),
            pipeline: pipeline.to_path_buf(),
            env,
            log,
        }
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET /metrics` as text (Prometheus's format).
    pub async fn metrics(&self) -> String {
        self.get_text("/metrics").await
    }

    /// One series' value on `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Polls `series` every 100 ms until it reads `value` or `seconds`
    /// pass; returns what it last read.
    pub async fn metric_settles(&self, series: &str, value: f64, seconds: u64) -> f64 {
        let mut last = self.metric(series).await;
        for _ in 0..seconds * 10 {
            if last == value {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            last = self.metric(series).await;
        }
        last
    }

    /// A client that presents the API token.
    pub fn client(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_static("Bearer test-token-0123456789"),
        );
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("http client")
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client()
            .get(self.http(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// GET `path`, as text.
    pub async fn get_text(&self, path: &str) -> String {
        self.get(path)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: no text: {e}"))
    }

    /// GET `path`, as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path)
            .await
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
    }

    /// The session `id` once its status is `status`, polling every 100 ms
    /// for up to `seconds`; asserts that it got there.
    pub async fn session_when(&self, id: &str, status: &str, seconds: u64) -> serde_json::Value {
        let path = format!("/api/sessions/{id}");
        let mut s = self.get_json(&path).await;
        for _ in 0..seconds * 10 {
            if s["status"] == status {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            s = self.get_json(&path).await;
        }
        assert_eq!(s["status"], status, "{s}");
        s
    }

    /// The server's data dir (its SQLite database is `callpipe.db` there).
    pub fn data_dir(&self) -> &Path {
        self.data.as_ref().expect("data dir").path()
    }

    pub fn ws(&self) -> String {
        format!("ws://{}/twilio/media-stream", self.addr)
    }
}
