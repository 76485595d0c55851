//! `floe serve` as a child process, for the tests that kill it.

#![allow(clippy::expect_used, clippy::unwrap_used, dead_code)] // a test harness

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// A running `floe serve` on a random loopback port.
pub(crate) struct Floe {
    pub(crate) child: Child,
    pub(crate) url: String,
    /// What it wrote to stderr after it started listening.
    pub(crate) stderr: Arc<Mutex<Vec<String>>>,
}

impl Floe {
    /// Starts `floe serve` on `dir` with these extra `FLOE_*` (and other)
    /// variables, and waits until it listens.
    pub(crate) fn start(dir: &std::path::Path, env: &[(String, String)]) -> Floe {
        Self::start_with_args(dir, &["--listen", "127.0.0.1:0"], env)
    }

    /// Starts `floe serve <args>` on `dir`.
    pub(crate) fn start_with_args(
        dir: &std::path::Path,
        args: &[&str],
        env: &[(String, String)],
    ) -> Floe {
        let mut child = Command::new(env!("CARGO_BIN_EXE_floe"))
            .arg("serve")
            .args(args)
            .env("FLOE_DATA_DIR", dir)
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn floe");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("floe exited before listening")
                .expect("read stderr");
            if let Some(rest) = line.strip_prefix("floe listening on ") {
                break rest.split_whitespace().next().expect("address").to_string();
            }
        };
        // Keep draining stderr so the child never blocks on a full pipe.
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        Floe { child, url, stderr }
    }

    /// SIGKILL, and wait for it.
    pub(crate) fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait");
    }
}

impl Drop for Floe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(name, value)` pairs as owned strings.
pub(crate) fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
