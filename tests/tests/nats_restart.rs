//! A nats-server restart between publishes loses no acknowledged record.
//! This test runs its own nats-server (the binary the local stack installed)
//! so it can kill it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use floe_core::log::{JetStreamConfig, JetStreamLogs, LogProvider};
use floe_tests::log_conformance::{id, plain, req};
use floe_tests::required_env;

struct Server {
    child: Child,
}

impl Server {
    /// Starts nats-server with JetStream on `port` (0: let it choose) and
    /// returns it with its client port.
    fn start(dir: &Path, port: u16) -> (Server, u16) {
        let bin = required_env("FLOE_TEST_NATS_BIN");
        let ports_dir = dir.join(format!("ports-{port}"));
        std::fs::create_dir_all(&ports_dir).unwrap();
        let port_arg = if port == 0 {
            "-1".to_string()
        } else {
            port.to_string()
        };
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"])
            .arg(dir.join("store"))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        let ports_file = ports_dir.join(format!("nats-server_{}.ports", child.id()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&ports_file)
                && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(url) = json["nats"][0].as_str()
            {
                break url.rsplit(':').next().unwrap().parse().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not write its ports file"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        (Server { child }, port)
    }

    /// SIGKILL: no chance to flush anything.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_between_publishes_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let (server, port) = Server::start(dir.path(), 0);
    let config = JetStreamConfig {
        url: format!("nats://127.0.0.1:{port}"),
        timeout_ms: 1_000,
        ..Default::default()
    };
    let logs = JetStreamLogs::connect(config).await.unwrap();
    let log = logs.create(id("restart")).await.unwrap();

    let mut acked = Vec::new();
    for i in 0..50 {
        let p = Bytes::from(format!("before-{i}"));
        acked.push((
            log.append(p.clone(), req(&format!("id-{i}"), &p))
                .await
                .unwrap()
                .lsn,
            p,
        ));
    }
    server.kill();
    // While NATS is down a write fails fast (within the configured
    // timeout, not the client's defaults) and as retryable.
    let started = Instant::now();
    let err = log.append(Bytes::from("lost"), plain()).await.unwrap_err();
    assert_eq!(err.kind(), floe_core::ErrorKind::Unavailable, "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "a write with NATS down took {:?} to fail",
        started.elapsed()
    );
    let (_server, _) = Server::start(dir.path(), port);

    // Publishing resumes once the client has reconnected; attempts during the
    // outage fail and are not acknowledged (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    while acked.len() < 100 {
        let p = Bytes::from(format!("after-{i}"));
        match log.append(p.clone(), req(&format!("after-{i}"), &p)).await {
            Ok(ack) => {
                assert!(!ack.duplicate);
                acked.push((ack.lsn, p));
                i += 1;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "no reconnect within 30 s: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // A retry of a pre-restart request is still recognised.
    let retry = log
        .append(Bytes::from("before-3"), req("id-3", b"before-3"))
        .await
        .unwrap();
    assert_eq!((retry.lsn, retry.duplicate), (acked[3].0, true));

    let records = log
        .read_range(1, log.last_lsn().await.unwrap())
        .await
        .unwrap();
    for (lsn, payload) in &acked {
        let found = records.iter().find(|e| e.lsn == *lsn);
        assert_eq!(
            found.map(|e| &e.payload),
            Some(payload),
            "acknowledged lsn {lsn} lost"
        );
    }
    assert_eq!(records.len(), 100, "nothing was written twice");
}
