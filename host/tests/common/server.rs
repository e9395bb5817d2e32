//! A `callpipe serve` child process for tests.

use super::{models_dir, root};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `callpipe serve`, killed on drop.
pub struct Server {
    child: Child,
    addr: String,
    /// Each server has its own data dir: an embedded knowledge store
    /// belongs to one process.
    _data: tempfile::TempDir,
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
        let data = tempfile::tempdir().expect("data dir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_callpipe"));
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-calls",
            "40",
            "--pipeline",
        ])
        .arg(pipeline)
        .current_dir(root())
        .env("CALLPIPE_DATA_DIR", data.path())
        .env("CALLPIPE_MODELS_DIR", models_dir())
        .env("CALLPIPE_LOG", "warn,callpipe_host=info")
        .env_remove("TWILIO_ACCOUNT_SID")
        .env_remove("TWILIO_AUTH_TOKEN")
        .env_remove("TWILIO_PHONE_NUMBER")
        .env_remove("TWILIO_WEBSOCKET_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in env {
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
            _data: data,
        }
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The server's data dir (its SQLite database is `callpipe.db` there).
    pub fn data_dir(&self) -> &Path {
        self._data.path()
    }

    pub fn ws(&self) -> String {
        format!("ws://{}/twilio/media-stream", self.addr)
    }
}
