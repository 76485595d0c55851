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

/// A variable the test needs from `./test.sh` (or `localstack/with-stack.sh`).
pub(crate) fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with ./test.sh, or under localstack/with-stack.sh")
    })
}

/// `FLOE_*` variables for cloud mode against the local stack's S3 server
/// and nats-server, under a prefix and stream names of their own.
pub(crate) fn cloud_env(tag: &str) -> Vec<(String, String)> {
    let id = format!("{:016x}", rand::random::<u64>());
    vars(&[
        (
            "FLOE_STORE_URL",
            &format!("s3://{}/{tag}-{id}", required_env("FLOE_TEST_S3_BUCKET")),
        ),
        ("FLOE_S3_ENDPOINT", &required_env("FLOE_TEST_S3_ENDPOINT")),
        ("FLOE_S3_REGION", "us-east-1"),
        ("FLOE_S3_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "floe-test"),
        ("AWS_SECRET_ACCESS_KEY", "floe-test"),
        ("FLOE_NATS_URL", &required_env("FLOE_TEST_NATS_URL")),
        (
            "FLOE_NATS_STREAM_PREFIX",
            &format!("{}{id}", tag.to_uppercase()),
        ),
        ("FLOE_NATS_SUBJECT_PREFIX", &format!("{tag}{id}")),
    ])
}
