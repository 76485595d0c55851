//! Safe to expose: API keys with roles and collection limits, key
//! revocation across processes, JSON-only bodies, body and header
//! deadlines, CORS, TLS and the Prometheus `/metrics` endpoint, against the
//! real server (and, for keys, in both modes).

use std::time::{Duration, Instant};

use floe_core::Settings;
use floe_tests::server::{Client, TestServer};
use floe_tests::{PromSample, parse_prometheus};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN: &str = "test-admin-key-0123456789";

fn with_keys(s: &mut Settings) {
    s.auth.admin_key = Some(ADMIN.to_string().into());
    s.auth.key_cache_secs = 1;
}

async fn create(client: &Client, name: &str) {
    let (status, body) = client
        .put(
            &format!("/v1/collections/{name}"),
            &json!({"dimension": 4, "metric": "l2"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

fn one_row(id: u64) -> Value {
    json!({"rows": [{"id": id, "vector": [0.1, 0.2, 0.3, 0.4]}]})
}

fn kind(body: &Value) -> &str {
    body["error"]["kind"].as_str().unwrap_or("")
}

/// The log position of `name`: how many records were ever appended.
async fn log_lsn(admin: &Client, name: &str) -> u64 {
    let (status, body) = admin.get(&format!("/v1/collections/{name}")).await;
    assert_eq!(status, 200, "{body}");
    body["stats"]["log_lsn"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_keys_allow_what_their_role_and_collections_say() {
    keys_allow_what_their_role_and_collections_say("embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_keys_allow_what_their_role_and_collections_say() {
    keys_allow_what_their_role_and_collections_say("cloud").await;
}

async fn keys_allow_what_their_role_and_collections_say(mode: &'static str) {
    let s = TestServer::with(mode, with_keys).await;
    let anonymous = s.client.clone();
    let admin = s.client.with_key(ADMIN);

    // Health checks and the API description stay open (load balancers).
    assert_eq!(anonymous.get("/healthz").await.0, 200);
    assert_eq!(anonymous.get("/openapi.json").await.0, 200);

    // No key, a malformed key, a wrong key: 401, and nothing is created.
    let (status, body) = anonymous.get("/v1/collections").await;
    assert_eq!((status, kind(&body)), (401, "unauthorized"), "{body}");
    for bad in ["floe_0123456789abcdef_nope", "not-the-admin-key-at-all"] {
        let (status, body) = anonymous
            .with_key(bad)
            .put("/v1/collections/alpha", &json!({"dimension": 4}))
            .await;
        assert_eq!(
            (status, kind(&body)),
            (401, "unauthorized"),
            "{bad}: {body}"
        );
    }
    assert_eq!(admin.get("/v1/collections/alpha").await.0, 404);

    create(&admin, "alpha").await;
    create(&admin, "beta").await;

    // Minting: the secret is shown once.
    let (status, reader) = admin
        .post("/v1/keys", &json!({"name": "reader", "role": "read"}))
        .await;
    assert_eq!(status, 201, "{reader}");
    let (status, writer) = admin
        .post(
            "/v1/keys",
            &json!({"name": "alpha writer", "role": "write", "collections": ["alpha"]}),
        )
        .await;
    assert_eq!(status, 201, "{writer}");
    let reader_key = reader["key"].as_str().unwrap();
    let writer_key = writer["key"].as_str().unwrap();
    assert!(reader_key.starts_with("floe_"), "{reader}");
    let read = anonymous.with_key(reader_key);
    let write = anonymous.with_key(writer_key);

    // A read key reads everywhere and writes nowhere.
    let query = json!({"vector": [0.0, 0.0, 0.0, 0.0], "top_k": 1});
    let (status, body) = read.post("/v1/collections/beta/query", &query).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = read.post("/v1/collections/alpha/upsert", &one_row(1)).await;
    assert_eq!((status, kind(&body)), (403, "forbidden"), "{body}");
    assert_eq!(log_lsn(&admin, "alpha").await, 0, "a refused write wrote");

    // A write key limited to alpha: writes alpha, cannot see beta, lists
    // only alpha, cannot drop (admin) or manage keys.
    let (status, body) = write
        .post("/v1/collections/alpha/upsert", &one_row(1))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = write.post("/v1/collections/beta/upsert", &one_row(2)).await;
    assert_eq!((status, kind(&body)), (403, "forbidden"), "{body}");
    assert_eq!(log_lsn(&admin, "beta").await, 0, "a refused write wrote");
    assert_eq!(write.get("/v1/collections/beta").await.0, 403);
    let (status, body) = write.get("/v1/collections").await;
    assert_eq!(
        (status, &body["collections"]),
        (200, &json!(["alpha"])),
        "{body}"
    );
    assert_eq!(write.delete("/v1/collections/alpha").await.0, 403);
    assert_eq!(admin.get("/v1/collections/alpha").await.0, 200);
    let (status, _) = write
        .post("/v1/keys", &json!({"name": "escalate", "role": "admin"}))
        .await;
    assert_eq!(status, 403);
    assert_eq!(read.get("/v1/keys").await.0, 403);

    // Metrics name every collection: an unrestricted key is needed.
    assert_eq!(anonymous.get("/metrics").await.0, 401);
    assert_eq!(write.get("/metrics").await.0, 403);
    assert_eq!(read.get("/metrics").await.0, 200);

    // Bad key requests name the field.
    for (request, field) in [
        (json!({"name": "x", "role": "root"}), "role"),
        (
            json!({"name": "x", "role": "read", "collections": ["Bad"]}),
            "collections[0]",
        ),
        (
            json!({"name": "x", "role": "read", "collections": []}),
            "collections",
        ),
        (json!({"name": "", "role": "read"}), "name"),
    ] {
        let (status, body) = admin.post("/v1/keys", &request).await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (400, Some(field)),
            "{request}: {body}"
        );
    }

    // Listing shows the keys, never a secret or its hash.
    let (status, listed) = admin.get("/v1/keys").await;
    assert_eq!(status, 200, "{listed}");
    let listed = listed["keys"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2, "{listed:?}");
    for key in &listed {
        assert!(
            key.get("key").is_none() && key.get("secret_sha256").is_none(),
            "{key}"
        );
    }

    // Another process on the same store caches the writer's record; after a
    // revocation here it refuses the key within its cache time (1 s).
    let other = TestServer::start(
        mode,
        s.floe.settings().clone(),
        tempfile::tempdir().unwrap(),
    )
    .await;
    let other_write = other.client.with_key(writer_key);
    assert_eq!(other_write.get("/v1/collections").await.0, 200);
    let id = writer["id"].as_str().unwrap();
    let (status, body) = admin.delete(&format!("/v1/keys/{id}")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["revoked_at_ms"].as_u64().is_some(), "{body}");
    let (status, body) = write
        .post("/v1/collections/alpha/upsert", &one_row(3))
        .await;
    assert_eq!((status, kind(&body)), (401, "unauthorized"), "{body}");
    let revoked = Instant::now();
    loop {
        let (status, _) = other_write.get("/v1/collections").await;
        if status == 401 {
            break;
        }
        assert_eq!(status, 200);
        assert!(
            revoked.elapsed() < Duration::from_secs(10),
            "the other process still accepts a key revoked {:?} ago",
            revoked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{mode}: revoked key refused by another process after {:?}",
        revoked.elapsed()
    );
    assert_eq!(admin.delete("/v1/keys/0123456789abcdef").await.0, 404);
    // The reader still works; the admin key too.
    assert_eq!(read.get("/v1/collections/alpha").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_json_bodies_are_accepted() {
    // Keys off, as on a laptop: a web page must not be able to write.
    let s = TestServer::embedded().await;
    create(&s.client, "c").await;
    let body = serde_json::to_vec(&json!({"filter": "id >= 0"})).unwrap();
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (status, response) = s
            .client
            .post_typed("/v1/collections/c/delete", content_type, body.clone())
            .await;
        assert_eq!(
            (status, kind(&response), response["error"]["field"].as_str()),
            (415, "unsupported_media_type", Some("content-type")),
            "{content_type}: {response}"
        );
    }
    assert_eq!(
        log_lsn(&s.client, "c").await,
        0,
        "a refused body was written"
    );
    let row = serde_json::to_vec(&one_row(1)).unwrap();
    let (status, response) = s
        .client
        .post_typed(
            "/v1/collections/c/upsert",
            "application/json; charset=utf-8",
            row,
        )
        .await;
    assert_eq!(status, 200, "{response}");
    // A body-less POST needs no content type.
    let http = reqwest::Client::new();
    let flushed = http
        .post(format!("{}/v1/collections/c/flush", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(flushed.status(), 200);
}

/// Reads from `tcp` until it closes or `limit` passes.
async fn read_all(tcp: &mut tokio::net::TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_cut_off_with_408() {
    let s = TestServer::with("embedded", |s| s.http.body_timeout_secs = 1).await;
    create(&s.client, "c").await;
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(
        b"POST /v1/collections/c/upsert HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = tcp.into_split();
    // One byte every 200 ms: never idle for long, never done.
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut out))
        .await
        .expect("no answer within 10 s")
        .unwrap();
    let took = started.elapsed();
    let response = String::from_utf8_lossy(&out[..n]).into_owned();
    trickle.abort();
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("\"kind\":\"timeout\""), "{response}");
    assert!(took < Duration::from_secs(5), "cut off after {took:?}");
    assert_eq!(log_lsn(&s.client, "c").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_close_the_connection() {
    let s = TestServer::with("embedded", |s| s.http.header_timeout_secs = 1).await;
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = tcp.into_split();
    let trickle = tokio::spawn(async move {
        for i in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer
                .write_all(format!("X-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut out)).await;
    let took = started.elapsed();
    trickle.abort();
    assert!(read.is_ok(), "still open after 10 s");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    let answer = String::from_utf8_lossy(&out);
    assert!(!answer.contains("200 OK"), "{answer}");
    // An idle connection that never starts a request is closed too.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    read_all(&mut idle, Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "idle for {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_unless_origins_are_listed() {
    let preflight = |url: String, origin: &'static str| async move {
        reqwest::Client::new()
            .request(
                reqwest::Method::OPTIONS,
                format!("{url}/v1/collections/c/upsert"),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,authorization",
            )
            .send()
            .await
            .unwrap()
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let closed = TestServer::embedded().await;
    assert_eq!(
        preflight(closed.url.clone(), "https://app.example.com").await,
        None
    );
    let open = TestServer::with("embedded", |s| {
        s.http.cors_origins = vec!["https://app.example.com".into()];
    })
    .await;
    assert_eq!(
        preflight(open.url.clone(), "https://app.example.com")
            .await
            .as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        preflight(open.url.clone(), "https://evil.example.com").await,
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_https_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let s = TestServer::with("embedded", |s| {
        s.http.tls_cert = Some(cert.clone());
        s.http.tls_key = Some(key.clone());
    })
    .await;
    assert!(s.url.starts_with("https://"), "{}", s.url);
    let port = s.url.rsplit(':').next().unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
        )
        .resolve("localhost", format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    let client = Client::new(&format!("https://localhost:{port}")).with_http(http);
    let (status, body) = client.get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    create(&client, "c").await;
    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
}

/// The sum of the samples `name` whose labels include `labels`.
fn sample(scrape: &[PromSample], name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

async fn scrape(client: &Client) -> Vec<PromSample> {
    let (status, body) = client.get("/metrics").await;
    assert_eq!(status, 200, "{body}");
    parse_prometheus(body.as_str().expect("text"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_and_move_with_traffic() {
    let s = TestServer::cloud().await;
    let c = &s.client;
    create(c, "m").await;
    for id in 0..3 {
        let (status, body) = c.post("/v1/collections/m/upsert", &one_row(id)).await;
        assert_eq!(status, 200, "{body}");
    }
    let query = json!({"vector": [0.0, 0.0, 0.0, 0.0], "top_k": 1, "consistency": "strong"});
    let queries = [
        ("route", "/v1/collections/{name}/query"),
        ("method", "POST"),
        ("status", "200"),
    ];
    let before = scrape(c).await;
    for _ in 0..5 {
        assert_eq!(c.post("/v1/collections/m/query", &query).await.0, 200);
    }
    let (status, body) = c.post("/v1/collections/m/flush", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let after = scrape(c).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    // Other tests of this binary share the process's metrics: at least.
    assert!(moved("floe_http_requests_total", &queries) >= 5.0);
    assert!(
        moved(
            "floe_http_request_duration_seconds_count",
            &[("route", "/v1/collections/{name}/query")]
        ) >= 5.0
    );
    assert!(sample(&after, "floe_log_append_duration_seconds_count", &[]) >= 3.0);
    assert!(moved("floe_maintenance_total", &[("kind", "flush")]) >= 1.0);
    assert!(moved("floe_object_store_requests_total", &[("op", "put")]) >= 1.0);
    assert!(moved("floe_object_store_bytes_total", &[("direction", "written")]) > 0.0);
    assert!(sample(&after, "floe_object_store_requests_total", &[("op", "get")]) >= 1.0);
    // Refusals are counted by status.
    let (status, _) = c
        .post("/v1/collections/m/query", &json!({"top_k": 1}))
        .await;
    assert_eq!(status, 400);
    let last = scrape(c).await;
    assert!(
        sample(
            &last,
            "floe_http_requests_total",
            &[("route", "/v1/collections/{name}/query"), ("status", "400")]
        ) >= 1.0
    );
}

/// The status line of `GET /v1/collections` sent with this `Host` header.
async fn status_for_host(url: &str, host: &str, key: Option<&str>) -> String {
    let addr = url.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let request =
        format!("GET /v1/collections HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let answer = read_all(&mut tcp, Duration::from_secs(10)).await;
    answer.lines().next().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_only_requests_addressed_to_loopback_are_answered() {
    // DNS rebinding: a page whose own name now points at 127.0.0.1 sends
    // requests naming that page's host.
    let open = TestServer::embedded().await;
    let port = open.url.rsplit(':').next().unwrap().to_string();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        let status = status_for_host(&open.url, &host, None).await;
        assert!(status.contains(" 200 "), "{host}: {status}");
    }
    for host in [
        format!("evil.example.com:{port}"),
        "127.0.0.1.evil.example.com".to_string(),
    ] {
        let status = status_for_host(&open.url, &host, None).await;
        assert!(status.contains(" 403 "), "{host}: {status}");
    }
    // With keys, the key is the check: any name may be served.
    let keyed = TestServer::with("embedded", with_keys).await;
    let status = status_for_host(&keyed.url, "floe.example.com", Some(ADMIN)).await;
    assert!(status.contains(" 200 "), "{status}");
}
