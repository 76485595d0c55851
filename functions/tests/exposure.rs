//! `floe serve` refuses to serve an open API where others can reach it,
//! and with an admin key serves one that needs keys (the real binary).

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test

mod common;

use std::process::{Command, Stdio};

use common::{Floe, vars};

#[test]
fn an_open_api_off_loopback_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env("FLOE_DATA_DIR", dir.path())
        .env_remove("FLOE_ADMIN_KEY")
        .env_remove("FLOE_ALLOW_UNAUTHENTICATED")
        .stdout(Stdio::null())
        .output()
        .expect("run floe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("FLOE_ADMIN_KEY"), "{stderr}");
    // Nothing was opened: no data directory contents.
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "{stderr}"
    );
}

#[tokio::test]
async fn with_an_admin_key_any_address_is_served_and_keys_are_required() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::start_with_args(
        dir.path(),
        &["--listen", "0.0.0.0:0"],
        &vars(&[("FLOE_ADMIN_KEY", "binary-test-admin-key-01")]),
    );
    // 0.0.0.0 is every local address: reach it on loopback.
    let url = floe.url.replace("0.0.0.0", "127.0.0.1");
    let http = reqwest::Client::new();
    let anonymous = http
        .get(format!("{url}/v1/collections"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let admin = http
        .get(format!("{url}/metrics"))
        .bearer_auth("binary-test-admin-key-01")
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 200);
    let text = admin.text().await.unwrap();
    assert!(text.contains("floe_http_requests_total"), "{text}");
}

#[test]
fn allow_unauthenticated_says_so_explicitly() {
    let dir = tempfile::tempdir().unwrap();
    let floe = Floe::start_with_args(
        dir.path(),
        &["--listen", "0.0.0.0:0", "--allow-unauthenticated"],
        &[],
    );
    assert!(floe.url.starts_with("http://0.0.0.0:"), "{}", floe.url);
}
