//! The Python client's pytest suite (`clients/python/tests`) against a real
//! `floe serve` with API keys, in both modes. `./test.sh` builds the
//! client's venv (`clients/python/venv.sh`) and passes its interpreter in
//! `FLOE_TEST_CLIENT_PYTHON`.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test harness: failing loudly is the point

use std::process::Command;

mod common;
use common::Floe;

fn run_pytest(mode: &str, env: Vec<(String, String)>) {
    let python = common::required_env("FLOE_TEST_CLIENT_PYTHON");
    let dir = tempfile::tempdir().unwrap();
    let admin_key = format!("floe-test-admin-{:032x}", rand::random::<u128>());
    let mut env = env;
    env.push(("FLOE_ADMIN_KEY".into(), admin_key.clone()));
    let floe = Floe::start(dir.path(), &env);
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "clients/python/tests",
        ])
        .current_dir(root)
        .env("FLOE_URL", &floe.url)
        .env("FLOE_API_KEY", &admin_key)
        .output()
        .unwrap_or_else(|e| panic!("running {python} -m pytest: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "{mode}: the Python client's tests failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        out.status,
        floe.stderr.lock().unwrap().join("\n")
    );
    assert!(
        stdout.contains(" passed") && !stdout.contains("skipped"),
        "{mode}: {stdout}"
    );
}

#[test]
fn python_client_against_embedded_floe() {
    run_pytest("embedded", Vec::new());
}

#[test]
fn python_client_against_cloud_floe() {
    run_pytest("cloud", common::cloud_env("pyclient"));
}
