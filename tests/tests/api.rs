//! End-to-end tests over HTTP, each run against both modes: embedded (local
//! directory + file log) and cloud (S3 API server + nats-server). Results
//! are checked against a brute-force oracle kept in the test.

use std::collections::BTreeMap;

use floe_tests::server::{Client, TestServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const C: &str = "/v1/collections";

/// What the collection should contain: id → (vector, attributes).
#[derive(Default, Clone)]
struct Oracle {
    rows: BTreeMap<u64, (Vec<f32>, Value)>,
}

impl Oracle {
    fn upsert(&mut self, rows: &[Value]) {
        for r in rows {
            let v: Vec<f32> = r["vector"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            let attrs = r.get("attributes").cloned().unwrap_or(json!({}));
            self.rows.insert(r["id"].as_u64().unwrap(), (v, attrs));
        }
    }

    fn delete(&mut self, ids: &[u64]) {
        for id in ids {
            self.rows.remove(id);
        }
    }

    fn search(
        &self,
        metric: &str,
        q: &[f32],
        k: usize,
        pred: &dyn Fn(u64, &Value) -> bool,
    ) -> Vec<(u64, f64)> {
        let mut all: Vec<(u64, f64)> = self
            .rows
            .iter()
            .filter(|(id, (_, a))| pred(**id, a))
            .map(|(id, (v, _))| (*id, floe_tests::oracle_distance(metric, q, v)))
            .collect();
        all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }
}

fn random_rows(rng: &mut StdRng, ids: std::ops::Range<u64>, dim: usize) -> Vec<Value> {
    let genres = ["sf", "fantasy", "crime", "poetry"];
    ids.map(|id| {
        let vector: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let mut attrs = json!({
            "year": 1990 + (id % 35) as i64,
            "score": (id as f64 * 0.37) % 10.0,
            "genre": genres[(id % 4) as usize],
            "title": format!("{} book {id}", if id % 3 == 0 { "intro" } else { "advanced" }),
            "tags": [format!("t{}", id % 5), "all"],
            "published": id % 2 == 0,
        });
        if id % 10 == 0 {
            attrs["year"] = Value::Null;
            attrs["tags"] = Value::Null;
        }
        json!({"id": id, "vector": vector, "attributes": attrs})
    })
    .collect()
}

async fn create(client: &Client, name: &str, dim: usize, metric: &str) {
    let (status, body) = client
        .put(
            &format!("{C}/{name}"),
            &json!({
                "dimension": dim, "metric": metric, "id_type": "u64",
                "attributes": [
                    {"name": "year", "type": "i64"}, {"name": "score", "type": "f64"},
                    {"name": "genre", "type": "string"}, {"name": "title", "type": "string"},
                    {"name": "tags", "type": "string_list"}, {"name": "published", "type": "bool"}
                ]
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

async fn upsert(client: &Client, name: &str, rows: &[Value]) -> u64 {
    let ack = client
        .ok(&format!("{C}/{name}/upsert"), &json!({ "rows": rows }))
        .await;
    ack["lsn"].as_u64().unwrap()
}

async fn flush(client: &Client, name: &str) -> Value {
    client.ok(&format!("{C}/{name}/flush"), &json!({})).await
}

fn ids(response: &Value) -> Vec<u64> {
    response["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect()
}

async fn stats(client: &Client, name: &str) -> Value {
    let (status, body) = client.get(&format!("{C}/{name}")).await;
    assert_eq!(status, 200, "{body}");
    body["stats"].clone()
}

// ---- scenarios -------------------------------------------------------------

async fn strong_sees_writes_at_once_and_eventual_after_flush(s: TestServer) {
    let c = &s.client;
    create(c, "a", 4, "l2").await;
    let mut rng = StdRng::seed_from_u64(1);
    let rows = random_rows(&mut rng, 0..50, 4);
    let lsn = upsert(c, "a", &rows).await;
    assert_eq!(lsn, 1);
    let q = json!({"vector": [0, 0, 0, 0], "top_k": 100});
    let strong = c.ok(&format!("{C}/a/query"), &q).await;
    assert_eq!(ids(&strong).len(), 50, "{}", s.mode);
    assert_eq!(strong["lsn"], 1);
    let mut eventual = q.clone();
    eventual["consistency"] = json!("eventual");
    assert_eq!(
        ids(&c.ok(&format!("{C}/a/query"), &eventual).await).len(),
        0,
        "nothing flushed yet"
    );
    let report = flush(c, "a").await;
    assert_eq!(
        (
            report["checkpoint_lsn"].as_u64(),
            report["rows_flushed"].as_u64()
        ),
        (Some(1), Some(50))
    );
    assert_eq!(
        ids(&c.ok(&format!("{C}/a/query"), &eventual).await).len(),
        50
    );
    let st = stats(c, "a").await;
    assert_eq!(
        (
            st["rows"].as_u64(),
            st["segments"].as_u64(),
            st["unflushed_records"].as_u64()
        ),
        (Some(50), Some(1), Some(0))
    );
    // A flush with nothing to do changes nothing.
    assert_eq!(flush(c, "a").await["segments_written"], 0);
}

async fn write_tokens_give_read_your_writes(s: TestServer) {
    let c = &s.client;
    create(c, "t", 2, "l2").await;
    let lsn = upsert(c, "t", &[json!({"id": 7, "vector": [1, 1]})]).await;
    let q = json!({"vector": [1, 1], "top_k": 1, "consistency": {"at_least_lsn": lsn}});
    assert_eq!(ids(&c.ok(&format!("{C}/t/query"), &q).await), vec![7]);
    let (_, row) = c.get(&format!("{C}/t/rows/7?at_least_lsn={lsn}")).await;
    assert_eq!(row["id"], 7);
    let (status, body) = c
        .post(
            &format!("{C}/t/query"),
            &json!({"vector": [1, 1], "consistency": {"at_least_lsn": lsn + 100}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "consistency.at_least_lsn");
}

async fn upserts_replace_and_deletes_hide(s: TestServer) {
    let c = &s.client;
    create(c, "r", 2, "l2").await;
    let row = |v: f32, year: i64| json!({"id": 1, "vector": [v, v], "attributes": {"year": year}});
    upsert(c, "r", &[row(1.0, 2001)]).await;
    upsert(
        c,
        "r",
        &[row(2.0, 2002), json!({"id": 2, "vector": [9, 9]})],
    )
    .await;
    let get = |c: Client| async move { c.get(&format!("{C}/r/rows/1")).await };
    assert_eq!(get(c.clone()).await.1["attributes"]["year"], 2002);
    flush(c, "r").await;
    upsert(c, "r", &[row(3.0, 2003)]).await; // newer version in the tail
    let all = c
        .ok(
            &format!("{C}/r/query"),
            &json!({"vector": [0, 0], "top_k": 10}),
        )
        .await;
    assert_eq!(ids(&all), vec![1, 2], "one version per id");
    assert_eq!(all["results"][0]["attributes"]["year"], 2003);
    // Eventual only sees the flushed version.
    let ev = c
        .ok(
            &format!("{C}/r/query"),
            &json!({"vector": [0, 0], "top_k": 10, "consistency": "eventual"}),
        )
        .await;
    assert_eq!(ev["results"][0]["attributes"]["year"], 2002);

    c.ok(&format!("{C}/r/delete"), &json!({"ids": [1]})).await;
    assert_eq!(get(c.clone()).await.0, 404);
    assert_eq!(
        ids(&c
            .ok(&format!("{C}/r/query"), &json!({"vector": [0, 0]}))
            .await),
        vec![2]
    );
    flush(c, "r").await;
    assert_eq!(
        ids(&c
            .ok(
                &format!("{C}/r/query"),
                &json!({"vector": [0, 0], "consistency": "eventual"})
            )
            .await),
        vec![2]
    );
    assert_eq!(stats(c, "r").await["rows"], 1);
    upsert(c, "r", &[row(4.0, 2004)]).await;
    assert_eq!(
        get(c.clone()).await.1["attributes"]["year"],
        2004,
        "a re-upsert after a delete is visible"
    );
    flush(c, "r").await;
    assert_eq!(stats(c, "r").await["rows"], 2);
}

async fn delete_by_filter_removes_exactly_the_matches(s: TestServer) {
    let c = &s.client;
    create(c, "df", 3, "cosine").await;
    let mut rng = StdRng::seed_from_u64(2);
    let rows = random_rows(&mut rng, 0..120, 3);
    upsert(c, "df", &rows[..80]).await;
    flush(c, "df").await;
    upsert(c, "df", &rows[80..]).await;
    let ack = c
        .ok(
            &format!("{C}/df/delete"),
            &json!({"filter": "genre == 'sf' or year < 1995"}),
        )
        .await;
    let mut oracle = Oracle::default();
    oracle.upsert(&rows);
    let doomed: Vec<u64> = oracle
        .rows
        .iter()
        .filter(|(_, (_, a))| a["genre"] == "sf" || a["year"].as_i64().is_some_and(|y| y < 1995))
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(ack["rows"].as_u64(), Some(doomed.len() as u64));
    oracle.delete(&doomed);
    let left = c
        .ok(
            &format!("{C}/df/query"),
            &json!({"filter": "id >= 0", "top_k": 1000}),
        )
        .await;
    assert_eq!(ids(&left), oracle.rows.keys().copied().collect::<Vec<_>>());
    // Nothing matches any more: no write, the token is the current LSN.
    let again = c
        .ok(
            &format!("{C}/df/delete"),
            &json!({"filter": "genre == 'sf'"}),
        )
        .await;
    assert_eq!(
        (again["rows"].as_u64(), again["lsn"].as_u64()),
        (Some(0), ack["lsn"].as_u64())
    );
}

async fn exact_search_equals_the_oracle_for_every_metric(s: TestServer) {
    let c = &s.client;
    let dim = 8;
    for metric in ["l2", "cosine", "ip"] {
        let name = format!("m-{metric}");
        create(c, &name, dim, metric).await;
        let mut rng = StdRng::seed_from_u64(3);
        let rows = random_rows(&mut rng, 0..300, dim);
        let mut oracle = Oracle::default();
        // Two flushed segments, overwrites and deletes across them, and a tail.
        for chunk in [&rows[..100], &rows[100..200]] {
            upsert(c, &name, chunk).await;
            oracle.upsert(chunk);
            flush(c, &name).await;
        }
        let rewrites = random_rows(&mut rng, 50..70, dim);
        upsert(c, &name, &rewrites).await;
        oracle.upsert(&rewrites);
        c.ok(
            &format!("{C}/{name}/delete"),
            &json!({"ids": [3, 4, 150, 299]}),
        )
        .await;
        oracle.delete(&[3, 4, 150, 299]);
        upsert(c, &name, &rows[200..]).await;
        oracle.upsert(&rows[200..]);
        for _ in 0..5 {
            let q: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let want = oracle.search(metric, &q, 10, &|_, _| true);
            let got = c
                .ok(
                    &format!("{C}/{name}/query"),
                    &json!({"vector": q, "top_k": 10}),
                )
                .await;
            assert_eq!(
                ids(&got),
                want.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
                "{} {metric}",
                s.mode
            );
            for (r, (_, d)) in got["results"].as_array().unwrap().iter().zip(&want) {
                let got_d = r["distance"].as_f64().unwrap();
                assert!(
                    (got_d - d).abs() < 1e-4 * (1.0 + d.abs()),
                    "{metric}: {got_d} vs {d}"
                );
            }
        }
    }
}

/// Every filter operator, against the oracle's predicate.
async fn filters_match_the_oracle(s: TestServer) {
    let c = &s.client;
    create(c, "f", 4, "l2").await;
    let mut rng = StdRng::seed_from_u64(4);
    let rows = random_rows(&mut rng, 0..200, 4);
    upsert(c, "f", &rows[..120]).await;
    flush(c, "f").await;
    upsert(c, "f", &rows[120..]).await;
    let mut oracle = Oracle::default();
    oracle.upsert(&rows);

    type Pred = Box<dyn Fn(u64, &Value) -> bool>;
    let year = |a: &Value| a["year"].as_i64();
    let cases: Vec<(&str, Pred)> = vec![
        ("year == 2000", Box::new(move |_, a| year(a) == Some(2000))),
        (
            "year != 2000",
            Box::new(move |_, a| year(a).is_some_and(|y| y != 2000)),
        ),
        (
            "year < 1995",
            Box::new(move |_, a| year(a).is_some_and(|y| y < 1995)),
        ),
        (
            "year <= 1995",
            Box::new(move |_, a| year(a).is_some_and(|y| y <= 1995)),
        ),
        (
            "year > 2020",
            Box::new(move |_, a| year(a).is_some_and(|y| y > 2020)),
        ),
        (
            "year >= 2020",
            Box::new(move |_, a| year(a).is_some_and(|y| y >= 2020)),
        ),
        (
            "score > 4.5",
            Box::new(|_, a| a["score"].as_f64().unwrap() > 4.5),
        ),
        (
            "genre in ['sf', 'poetry']",
            Box::new(|_, a| a["genre"] == "sf" || a["genre"] == "poetry"),
        ),
        (
            "genre not in ['sf', 'poetry']",
            Box::new(|_, a| a["genre"] != "sf" && a["genre"] != "poetry"),
        ),
        (
            "title like 'intro%'",
            Box::new(|_, a| a["title"].as_str().unwrap().starts_with("intro")),
        ),
        (
            "title like '%book 1_'",
            Box::new(|_, a| {
                let t = a["title"].as_str().unwrap();
                t.contains("book 1") && t.len() == t.find("book 1").unwrap() + 7
            }),
        ),
        (
            "array_contains(tags, 't3')",
            Box::new(|_, a| {
                a["tags"]
                    .as_array()
                    .is_some_and(|t| t.contains(&json!("t3")))
            }),
        ),
        ("published", Box::new(|_, a| a["published"] == true)),
        ("not published", Box::new(|_, a| a["published"] == false)),
        (
            "published == false and year > 2000",
            Box::new(move |_, a| a["published"] == false && year(a).is_some_and(|y| y > 2000)),
        ),
        (
            "(genre == 'sf' or genre == 'crime') && !(year < 2000)",
            Box::new(move |_, a| {
                // `!(year < 2000)` holds for a null year: the comparison is false.
                (a["genre"] == "sf" || a["genre"] == "crime") && year(a).is_none_or(|y| y >= 2000)
            }),
        ),
        (
            "not (year == 2000)",
            Box::new(move |_, a| year(a) != Some(2000)),
        ),
        (
            "id in [1, 5, 150] or id > 195",
            Box::new(|id, _| [1, 5, 150].contains(&id) || id > 195),
        ),
        (
            "id <= 10 and id != 4",
            Box::new(|id, _| id <= 10 && id != 4),
        ),
    ];
    for (filter, pred) in &cases {
        // Filter-only, paginated in pages of 7.
        let mut got = Vec::new();
        let mut cursor = Value::Null;
        for _ in 0..100 {
            let mut q = json!({"filter": filter, "top_k": 7, "include_attributes": false});
            if !cursor.is_null() {
                q["cursor"] = cursor.clone();
            }
            let page = c.ok(&format!("{C}/f/query"), &q).await;
            got.extend(ids(&page));
            cursor = page.get("next_cursor").cloned().unwrap_or(Value::Null);
            if cursor.is_null() {
                break;
            }
        }
        let want: Vec<u64> = oracle
            .rows
            .iter()
            .filter(|(id, (_, a))| pred(**id, a))
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(got, want, "{} filter {filter}", s.mode);
        // With a vector: the filtered top-k.
        let q = [0.3f32, -0.2, 0.1, 0.5];
        let want: Vec<u64> = oracle
            .search("l2", &q, 5, &|id, a| pred(id, a))
            .iter()
            .map(|(id, _)| *id)
            .collect();
        let got = c
            .ok(
                &format!("{C}/f/query"),
                &json!({"vector": q, "top_k": 5, "filter": filter}),
            )
            .await;
        assert_eq!(ids(&got), want, "{} vector + filter {filter}", s.mode);
    }
    // Selected attributes and vectors in responses.
    let one = c
        .ok(
            &format!("{C}/f/query"),
            &json!({"filter": "id == 3", "include_attributes": ["genre"], "include_vector": true}),
        )
        .await;
    assert_eq!(one["results"][0]["attributes"], json!({"genre": "poetry"}));
    assert_eq!(one["results"][0]["vector"].as_array().unwrap().len(), 4);
}

async fn bad_input_gets_a_clear_4xx_and_writes_nothing(s: TestServer) {
    let c = &s.client;
    create(c, "b", 3, "l2").await;
    upsert(
        c,
        "b",
        &[json!({"id": 1, "vector": [1, 2, 3], "attributes": {"year": 2000}})],
    )
    .await;
    let before = stats(c, "b").await;
    let up = format!("{C}/b/upsert");
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "wrong dimension",
            json!({"rows": [{"id": 2, "vector": [1, 2]}]}),
            400,
            "rows[0].vector",
        ),
        (
            "infinite component",
            json!({"rows": [{"id": 2, "vector": [1, 1e39, 3]}]}),
            400,
            "rows[0].vector[1]",
        ),
        ("empty batch", json!({"rows": []}), 400, "rows"),
        (
            "duplicate ids",
            json!({"rows": [{"id": 2, "vector": [1, 2, 3]}, {"id": 2, "vector": [1, 2, 3]}]}),
            400,
            "rows[1].id",
        ),
        (
            "unknown attribute",
            json!({"rows": [{"id": 2, "vector": [1, 2, 3], "attributes": {"colour": "red"}}]}),
            400,
            "rows[0].attributes.colour",
        ),
        (
            "wrong attribute type",
            json!({"rows": [{"id": 2, "vector": [1, 2, 3], "attributes": {"year": "1999"}}]}),
            400,
            "rows[0].attributes.year",
        ),
        (
            "id of the wrong type",
            json!({"rows": [{"id": "two", "vector": [1, 2, 3]}]}),
            400,
            "rows[0].id",
        ),
        (
            "negative id",
            json!({"rows": [{"id": -2, "vector": [1, 2, 3]}]}),
            400,
            "rows[0].id",
        ),
        (
            "vector not numbers",
            json!({"rows": [{"id": 2, "vector": [1, "x", 3]}]}),
            400,
            "rows[0].vector[1]",
        ),
        (
            "unknown row field",
            json!({"rows": [{"id": 2, "vector": [1, 2, 3], "colour": 1}]}),
            400,
            "rows[0]",
        ),
        (
            "rows and columns",
            json!({"rows": [{"id": 2, "vector": [1, 2, 3]}], "columns": {"ids": [3], "vectors": [[1, 2, 3]]}}),
            400,
            "rows",
        ),
        ("neither rows nor columns", json!({}), 400, "rows"),
        (
            "columns length mismatch",
            json!({"columns": {"ids": [2, 3], "vectors": [[1, 2, 3]]}}),
            400,
            "columns.vectors",
        ),
        (
            "vector neither numbers nor base64",
            json!({"rows": [{"id": 2, "vector": "not base64!"}]}),
            400,
            "rows[0].vector",
        ),
        (
            "base64 vector of the wrong dimension",
            json!({"rows": [{"id": 2, "vector": b64(&[1.0, 2.0])}]}),
            400,
            "rows[0].vector",
        ),
        (
            "base64 vector with a NaN",
            json!({"rows": [{"id": 2, "vector": b64(&[1.0, f32::NAN, 3.0])}]}),
            400,
            "rows[0].vector[1]",
        ),
        (
            "packed vectors one row short",
            json!({"columns": {"ids": [2, 3], "vectors": b64(&[1.0, 2.0, 3.0])}}),
            400,
            "columns.vectors",
        ),
        (
            "packed vectors with an infinity in the second row",
            json!({"columns": {"ids": [2, 3], "vectors": b64(&[1.0, 2.0, 3.0, 4.0, f32::INFINITY, 6.0])}}),
            400,
            "columns.vectors[1][1]",
        ),
        (
            "bad request id",
            json!({"rows": [{"id": 2, "vector": [1, 2, 3]}], "request_id": "has space"}),
            400,
            "request_id",
        ),
    ];
    for (what, body, status, field) in cases {
        let (got, resp) = c.post(&up, &body).await;
        assert_eq!(got, status, "{} {what}: {resp}", s.mode);
        assert!(
            resp["error"]["field"]
                .as_str()
                .is_some_and(|f| f.starts_with(field)),
            "{what}: {resp}"
        );
        assert!(!resp["error"]["message"].as_str().unwrap().is_empty());
    }
    let (status, resp) = c.post_raw(&up, b"{\"rows\": [".to_vec()).await;
    assert_eq!(status, 400, "malformed JSON: {resp}");
    let (status, resp) = c.post_raw(&up, b"[NaN]".to_vec()).await;
    assert_eq!(status, 400, "NaN is not JSON: {resp}");
    let big = vec![b' '; s.floe.settings().limits.max_request_bytes + 10];
    let (status, resp) = c.post_raw(&up, big).await;
    assert_eq!(
        (status, resp["error"]["kind"].as_str()),
        (413, Some("too_large")),
        "oversized request"
    );

    let q = format!("{C}/b/query");
    for (what, body, field) in [
        ("top_k 0", json!({"vector": [1, 2, 3], "top_k": 0}), "top_k"),
        (
            "top_k too large",
            json!({"vector": [1, 2, 3], "top_k": 100_000}),
            "top_k",
        ),
        ("query dimension", json!({"vector": [1, 2]}), "vector"),
        ("filter syntax", json!({"filter": "year = 1"}), "filter"),
        (
            "filter unknown attribute",
            json!({"filter": "colour == 'red'"}),
            "filter",
        ),
        (
            "consistency",
            json!({"vector": [1, 2, 3], "consistency": "sometimes"}),
            "consistency",
        ),
        (
            "include_attributes",
            json!({"filter": "id == 1", "include_attributes": ["colour"]}),
            "include_attributes[0]",
        ),
    ] {
        let (status, resp) = c.post(&q, &body).await;
        assert_eq!(status, 400, "{what}: {resp}");
        assert_eq!(resp["error"]["field"], field, "{what}: {resp}");
    }
    let (status, resp) = c.post(&q, &json!({"filter": "year == 1 and"})).await;
    assert!(
        status == 400
            && resp["error"]["message"]
                .as_str()
                .unwrap()
                .contains("at position 13"),
        "{resp}"
    );
    let (status, _) = c.post(&format!("{C}/b/delete"), &json!({"ids": []})).await;
    assert_eq!(status, 400);
    let (status, _) = c
        .post(&format!("{C}/b/delete"), &json!({"ids": ["x"]}))
        .await;
    assert_eq!(status, 400);

    // Collections: unknown → 404, conflicting schema → 409, bad names → 400.
    let (status, _) = c
        .post(
            &format!("{C}/nope/upsert"),
            &json!({"rows": [{"id": 1, "vector": [1]}]}),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = c.get(&format!("{C}/nope")).await;
    assert_eq!(status, 404);
    let (status, resp) = c
        .put(&format!("{C}/b"), &json!({"dimension": 4, "metric": "l2"}))
        .await;
    assert_eq!(status, 409, "{resp}");
    for bad in ["Bad", "a.b", "-x", &"x".repeat(65)] {
        let (status, resp) = c
            .put(
                &format!("{C}/{bad}"),
                &json!({"dimension": 4, "metric": "l2"}),
            )
            .await;
        assert_eq!(
            (status, resp["error"]["field"].as_str()),
            (400, Some("name")),
            "{bad}: {resp}"
        );
    }
    for (body, field) in [
        (json!({"dimension": 0, "metric": "l2"}), "dimension"),
        (json!({"dimension": 4, "metric": "hamming"}), "metric"),
        (
            json!({"dimension": 4, "metric": "l2", "attributes": [{"name": "id", "type": "i64"}]}),
            "attributes[0].name",
        ),
        (
            json!({"dimension": 4, "metric": "l2", "attributes": [{"name": "x", "type": "date"}]}),
            "attributes[0].type",
        ),
        (
            json!({"dimension": 4, "metric": "l2", "index": {"codes": "pq"}}),
            "index.codes",
        ),
    ] {
        let (status, resp) = c.put(&format!("{C}/newc"), &body).await;
        assert_eq!(status, 400, "{body}: {resp}");
        assert!(
            resp["error"]["field"].as_str().unwrap().contains(field),
            "{body}: {resp}"
        );
    }
    let (status, _) = c.get("/v1/nothing-here").await;
    assert_eq!(status, 404);

    let after = stats(c, "b").await;
    assert_eq!(
        after["log_lsn"], before["log_lsn"],
        "a rejected request wrote nothing"
    );
    assert_eq!(after["rows"], before["rows"]);
    let (_, list) = c.get(C).await;
    assert_eq!(
        list["collections"],
        json!(["b"]),
        "no collection was half-created"
    );
}

async fn request_ids_make_writes_idempotent(s: TestServer) {
    let c = &s.client;
    create(c, "i", 2, "l2").await;
    let body = json!({"rows": [{"id": 1, "vector": [1, 1]}], "request_id": "req-1"});
    let first = c.ok(&format!("{C}/i/upsert"), &body).await;
    let retry = c.ok(&format!("{C}/i/upsert"), &body).await;
    assert_eq!(retry["lsn"], first["lsn"]);
    assert_eq!(
        (first["duplicate"].as_bool(), retry["duplicate"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(stats(c, "i").await["log_lsn"], first["lsn"]);
}

async fn string_ids_and_columnar_upserts(s: TestServer) {
    let c = &s.client;
    let (status, _) = c
        .put(
            &format!("{C}/s"),
            &json!({"dimension": 2, "metric": "ip", "id_type": "string",
        "attributes": [{"name": "n", "type": "i64"}]}),
        )
        .await;
    assert_eq!(status, 201);
    c.ok(
        &format!("{C}/s/upsert"),
        &json!({"columns": {"ids": ["a", "b/c", "ü"], "vectors": [[1, 0], [0, 1], [1, 1]],
        "attributes": {"n": [1, 2, null]}}}),
    )
    .await;
    flush(c, "s").await;
    let (status, row) = c.get(&format!("{C}/s/rows/b%2Fc")).await;
    assert_eq!(
        (status, row["attributes"]["n"].as_i64()),
        (200, Some(2)),
        "{row}"
    );
    c.ok(&format!("{C}/s/delete"), &json!({"ids": ["a"]})).await;
    let top = c
        .ok(
            &format!("{C}/s/query"),
            &json!({"vector": [1, 0], "top_k": 3}),
        )
        .await;
    let got: Vec<&str> = top["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec!["ü", "b/c"]);
    let (status, _) = c
        .post(
            &format!("{C}/s/upsert"),
            &json!({"rows": [{"id": 5, "vector": [1, 0]}]}),
        )
        .await;
    assert_eq!(status, 400, "u64 id in a string collection");
}

/// Conditional upserts (`if_version`, 0 = absent) and patches, on rows in
/// the log tail and in flushed segments; retries with a request id are
/// answered as the first time even though the condition no longer holds.
async fn conditional_upserts_and_patches(s: TestServer) {
    let c = &s.client;
    create(c, "cu", 2, "l2").await;
    let up = format!("{C}/cu/upsert");
    let patch = format!("{C}/cu/patch");
    // Only if absent: the first lands, the second is refused with 409.
    let first = c
        .ok(
            &up,
            &json!({"rows": [{"id": 1, "vector": [1, 1], "if_version": 0,
                                    "attributes": {"year": 2000, "title": "a"}}]}),
        )
        .await;
    let v1 = first["lsn"].as_u64().unwrap();
    let (status, resp) = c
        .post(
            &up,
            &json!({"rows": [{"id": 1, "vector": [2, 2], "if_version": 0}]}),
        )
        .await;
    assert_eq!(
        (
            status,
            resp["error"]["kind"].as_str(),
            resp["error"]["field"].as_str()
        ),
        (409, Some("condition_failed"), Some("rows[0].if_version")),
        "{resp}"
    );
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("version {v1}")),
        "{resp}"
    );
    // Rows report their version; a read-modify-write with it succeeds once.
    let (_, row) = c.get(&format!("{C}/cu/rows/1")).await;
    assert_eq!(row["version"].as_u64(), Some(v1), "{row}");
    assert_eq!(
        stats(c, "cu").await["log_lsn"].as_u64(),
        Some(v1),
        "the refused write wrote nothing"
    );
    let body = json!({"rows": [{"id": 1, "vector": [3, 3], "if_version": v1,
                                "attributes": {"year": 2000, "title": "a"}}],
                      "request_id": "rmw-1"});
    let second = c.ok(&up, &body).await;
    let v2 = second["lsn"].as_u64().unwrap();
    // The retry no longer matches version v1, yet it is the same write.
    let retry = c.ok(&up, &body).await;
    assert_eq!(
        (retry["lsn"].as_u64(), retry["duplicate"].as_bool()),
        (Some(v2), Some(true))
    );
    let (status, _) = c
        .post(
            &up,
            &json!({"rows": [{"id": 1, "vector": [4, 4], "if_version": v1}]}),
        )
        .await;
    assert_eq!(status, 409, "a stale version is refused");
    // All or nothing: one failed condition writes no row of the request.
    let (status, resp) = c
        .post(
            &up,
            &json!({"columns": {"ids": [2, 1], "vectors": [[5, 5], [6, 6]],
                                      "if_versions": [0, 0]}}),
        )
        .await;
    assert_eq!(
        (status, resp["error"]["field"].as_str()),
        (409, Some("columns.if_versions[1]"))
    );
    let (status, _) = c.get(&format!("{C}/cu/rows/2")).await;
    assert_eq!(
        status, 404,
        "nothing of a refused conditional write is visible"
    );
    let (status, resp) = c
        .post(
            &up,
            &json!({"columns": {"ids": [2], "vectors": [[5, 5]], "if_versions": [0, 0]}}),
        )
        .await;
    assert_eq!(
        (status, resp["error"]["field"].as_str()),
        (400, Some("columns.if_versions"))
    );

    // Patch: new attribute values, the vector and other attributes kept,
    // in the tail and after a flush.
    for round in 0..2 {
        if round == 1 {
            flush(c, "cu").await;
        }
        let title = format!("t{round}");
        let ack = c
            .ok(
                &patch,
                &json!({"rows": [{"id": 1, "attributes": {"title": title, "score": null}}]}),
            )
            .await;
        assert_eq!(ack["rows"], 1);
        let (_, row) = c.get(&format!("{C}/cu/rows/1")).await;
        assert_eq!(row["vector"], json!([3.0, 3.0]), "{row}");
        assert_eq!(row["attributes"]["year"], 2000, "{row}");
        assert_eq!(row["attributes"]["title"], json!(title), "{row}");
        assert_eq!(row["attributes"]["score"], Value::Null, "{row}");
        assert_eq!(row["version"], ack["lsn"]);
        let found = c
            .ok(
                &format!("{C}/cu/query"),
                &json!({"filter": format!("title == '{title}'")}),
            )
            .await;
        assert_eq!(ids(&found), vec![1], "the filter sees the patched value");
    }
    let (_, row) = c.get(&format!("{C}/cu/rows/1")).await;
    let version = row["version"].as_u64().unwrap();
    let stale = json!({"rows": [{"id": 1, "attributes": {"year": 1}, "if_version": version - 1}]});
    let (status, resp) = c.post(&patch, &stale).await;
    assert_eq!(
        (status, resp["error"]["kind"].as_str()),
        (409, Some("condition_failed"))
    );
    let (status, resp) = c
        .post(&patch, &json!({"rows": [{"id": 1, "attributes": {"year": 1}}, {"id": 99, "attributes": {"year": 1}}]}))
        .await;
    assert_eq!(
        (
            status,
            resp["error"]["kind"].as_str(),
            resp["error"]["field"].as_str()
        ),
        (404, Some("not_found"), Some("rows[1].id")),
        "{resp}"
    );
    for (body, field) in [
        (
            json!({"rows": [{"id": 1, "attributes": {"colour": 1}}]}),
            "rows[0].attributes.colour",
        ),
        (
            json!({"rows": [{"id": 1, "attributes": {"year": "x"}}]}),
            "rows[0].attributes.year",
        ),
        (
            json!({"rows": [{"id": 1, "attributes": {}}]}),
            "rows[0].attributes",
        ),
        (
            json!({"rows": [{"id": 1, "attributes": {"year": 1}, "vector": [1, 1]}]}),
            "rows[0]",
        ),
        (json!({"rows": []}), "rows"),
        (
            json!({"rows": [{"id": 1, "attributes": {"year": 1}}, {"id": 1, "attributes": {"year": 2}}]}),
            "rows[1].id",
        ),
    ] {
        let (status, resp) = c.post(&patch, &body).await;
        assert_eq!(status, 400, "{body}: {resp}");
        assert!(
            resp["error"]["field"]
                .as_str()
                .is_some_and(|f| f.starts_with(field)),
            "{body}: {resp}"
        );
    }
    let (_, row) = c.get(&format!("{C}/cu/rows/1")).await;
    assert_eq!(
        row["version"].as_u64(),
        Some(version),
        "refused patches wrote nothing"
    );
    let body = json!({"rows": [{"id": 1, "attributes": {"year": 2024}, "if_version": version}], "request_id": "patch-1"});
    let first = c.ok(&patch, &body).await;
    let retry = c.ok(&patch, &body).await;
    assert_eq!(
        (retry["lsn"].clone(), retry["duplicate"].as_bool()),
        (first["lsn"].clone(), Some(true))
    );
    let (_, row) = c.get(&format!("{C}/cu/rows/1")).await;
    assert_eq!(row["attributes"]["year"], 2024);
    assert_eq!(
        stats(c, "cu").await["log_lsn"],
        first["lsn"],
        "the retry wrote nothing"
    );
}

/// An export writes exactly the rows visible at its LSN (segments and log
/// tail, overwrites and deletes applied) as Parquet files under its prefix.
async fn exports_write_one_snapshot_as_parquet(s: TestServer) {
    use futures::TryStreamExt;
    let c = &s.client;
    create(c, "ex", 3, "l2").await;
    let mut oracle = Oracle::default();
    let mut rng = StdRng::seed_from_u64(11);
    let first = random_rows(&mut rng, 0..40, 3);
    upsert(c, "ex", &first).await;
    oracle.upsert(&first);
    flush(c, "ex").await;
    let again = random_rows(&mut rng, 30..50, 3);
    upsert(c, "ex", &again).await;
    oracle.upsert(&again);
    c.ok(&format!("{C}/ex/delete"), &json!({"ids": [1, 2, 45]}))
        .await;
    oracle.delete(&[1, 2, 45]);
    let report = c
        .ok(
            &format!("{C}/ex/export"),
            &json!({"prefix": "ex/first", "rows_per_file": 20}),
        )
        .await;
    assert_eq!(
        report["rows"].as_u64(),
        Some(oracle.rows.len() as u64),
        "{report}"
    );
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), oracle.rows.len().div_ceil(20), "{report}");
    assert!(
        report["location"]
            .as_str()
            .unwrap()
            .ends_with("/exports/ex/first"),
        "{report}"
    );
    // Read the files back from the store: the same rows, ids ascending.
    let store = s.floe.object_store();
    let mut got = BTreeMap::new();
    let mut last_id = None;
    for f in files {
        let path = object_store::path::Path::from(f["path"].as_str().unwrap());
        let bytes = floe_core::storage::get_bytes(store.as_ref(), &path)
            .await
            .unwrap();
        assert_eq!(bytes.len() as u64, f["bytes"].as_u64().unwrap());
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(bytes, 1024).unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            use arrow::array::AsArray;
            let ids = batch
                .column(0)
                .as_primitive::<arrow::datatypes::UInt64Type>();
            let vectors = batch.column(1).as_fixed_size_list();
            for r in 0..batch.num_rows() {
                let id = ids.value(r);
                assert!(last_id < Some(id), "ids ascend across files");
                last_id = Some(id);
                let v = vectors.value(r);
                let v: Vec<f32> = v
                    .as_primitive::<arrow::datatypes::Float32Type>()
                    .values()
                    .to_vec();
                let year = floe_core::api::rows::value_at(
                    batch.column_by_name("year").unwrap().as_ref(),
                    r,
                );
                got.insert(id, (v, year));
            }
        }
    }
    let want: BTreeMap<u64, (Vec<f32>, Value)> = oracle
        .rows
        .iter()
        .map(|(id, (v, attrs))| {
            (
                *id,
                (v.clone(), attrs.get("year").cloned().unwrap_or(Value::Null)),
            )
        })
        .collect();
    assert_eq!(got, want);
    // A prefix is written once; bad prefixes and sizes name the field.
    let (status, resp) = c
        .post(&format!("{C}/ex/export"), &json!({"prefix": "ex/first"}))
        .await;
    assert_eq!(status, 409, "{resp}");
    for (body, field) in [
        (json!({"prefix": "../escape"}), "prefix"),
        (json!({"prefix": ""}), "prefix"),
        (json!({"prefix": "a//b"}), "prefix"),
        (json!({"prefix": "a b"}), "prefix"),
        (json!({"prefix": "ok", "rows_per_file": 0}), "rows_per_file"),
        (
            json!({"prefix": "ok", "consistency": "sometimes"}),
            "consistency",
        ),
    ] {
        let (status, resp) = c.post(&format!("{C}/ex/export"), &body).await;
        assert_eq!(
            (status, resp["error"]["field"].as_str()),
            (400, Some(field)),
            "{body}: {resp}"
        );
    }
    // An empty collection exports one file with the schema and no rows.
    create(c, "ex-empty", 3, "l2").await;
    let empty = c
        .ok(&format!("{C}/ex-empty/export"), &json!({"prefix": "empty"}))
        .await;
    assert_eq!(
        (
            empty["rows"].as_u64(),
            empty["files"].as_array().map(Vec::len)
        ),
        (Some(0), Some(1))
    );
    let listed: Vec<_> = store
        .list(Some(&object_store::path::Path::from("exports/empty")))
        .try_collect()
        .await
        .unwrap();
    let mut names: Vec<String> = listed.iter().map(|m| m.location.to_string()).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "exports/empty/_claim.json",
            "exports/empty/export.json",
            "exports/empty/part-00000.parquet"
        ],
        "the report is written beside the parts"
    );
}

/// Base64 of little-endian f32s: the compact wire form of a vector.
fn b64(v: &[f32]) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn vectors_travel_as_base64(s: TestServer) {
    let c = &s.client;
    create(c, "v", 3, "l2").await;
    // Values a decimal rendering could round: the bits must survive.
    let a = [0.1f32, -1.0e-30, 12_345.679];
    let b = [1.0f32 / 3.0, 2.0, -0.0];
    let d = [5.0f32, 6.0, 7.0];
    let packed: Vec<f32> = a.iter().chain(&b).copied().collect();
    c.ok(
        &format!("{C}/v/upsert"),
        &json!({"columns": {"ids": [1, 2], "vectors": b64(&packed)}}),
    )
    .await;
    c.ok(
        &format!("{C}/v/upsert"),
        &json!({"rows": [{"id": 3, "vector": b64(&d)}]}),
    )
    .await;
    for (id, want) in [(1, &a), (2, &b), (3, &d)] {
        let (status, row) = c
            .get(&format!("{C}/v/rows/{id}?vector_encoding=base64"))
            .await;
        assert_eq!((status, row["vector"].as_str()), (200, Some(&*b64(want))));
        let top = c
            .ok(
                &format!("{C}/v/query"),
                &json!({"vector": b64(want), "top_k": 1, "include_vector": true,
                        "vector_encoding": "base64"}),
            )
            .await;
        assert_eq!(top["results"][0]["id"], json!(id), "{top}");
        assert_eq!(top["results"][0]["distance"], json!(0.0), "{top}");
        assert_eq!(top["results"][0]["vector"], json!(b64(want)), "{top}");
    }
    let (_, row) = c.get(&format!("{C}/v/rows/3")).await;
    assert_eq!(
        row["vector"],
        json!([5.0, 6.0, 7.0]),
        "JSON stays the default"
    );
    let (status, resp) = c.get(&format!("{C}/v/rows/3?vector_encoding=hex")).await;
    assert_eq!(status, 400, "{resp}");
    let (status, resp) = c
        .post(
            &format!("{C}/v/query"),
            &json!({"vector": b64(&a), "vector_encoding": "hex"}),
        )
        .await;
    assert_eq!(
        (status, resp["error"]["field"].as_str()),
        (400, Some("vector_encoding")),
        "{resp}"
    );
}

async fn collections_are_listed_described_and_dropped(s: TestServer) {
    let c = &s.client;
    create(c, "x1", 2, "l2").await;
    create(c, "x2", 2, "l2").await;
    let (status, again) = c
        .put(
            &format!("{C}/x1"),
            &json!({"dimension": 2, "metric": "l2", "id_type": "u64",
        "attributes": [
            {"name": "year", "type": "i64"}, {"name": "score", "type": "f64"},
            {"name": "genre", "type": "string"}, {"name": "title", "type": "string"},
            {"name": "tags", "type": "string_list"}, {"name": "published", "type": "bool"}]}),
        )
        .await;
    assert_eq!(
        status, 200,
        "an identical create is a successful retry: {again}"
    );
    upsert(c, "x1", &[json!({"id": 1, "vector": [1, 1]})]).await;
    flush(c, "x1").await;
    let (_, list) = c.get(C).await;
    assert_eq!(list["collections"], json!(["x1", "x2"]));
    let (status, _) = c.delete(&format!("{C}/x1")).await;
    assert_eq!(status, 200);
    let (status, _) = c.get(&format!("{C}/x1")).await;
    assert_eq!(status, 404);
    let (status, _) = c.delete(&format!("{C}/x1")).await;
    assert_eq!(status, 404);
    // The name is free again, with a new schema and no old data.
    let (status, _) = c
        .put(
            &format!("{C}/x1"),
            &json!({"dimension": 3, "metric": "cosine"}),
        )
        .await;
    assert_eq!(status, 201);
    let st = stats(c, "x1").await;
    assert_eq!(
        (
            st["rows"].as_u64(),
            st["log_lsn"].as_u64(),
            st["segments"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
    let (_, health) = c.get("/healthz").await;
    assert_eq!(health["status"], "ok");
    let (status, spec) = c.get("/openapi.json").await;
    assert_eq!(
        (
            status,
            spec["openapi"].as_str().map(|v| v.starts_with("3."))
        ),
        (200, Some(true))
    );
}

/// A bulk import from Parquet files in the store lands as one write: its
/// rows supersede older versions, later writes supersede it, reads see it
/// whole once the job is done; bad rows fail a job unless skipped; job ids
/// make it idempotent; a resumed job does not append its marker again.
async fn bulk_imports_land_as_one_write(s: TestServer) {
    use object_store::ObjectStoreExt;
    let c = &s.client;
    // Parquet files to import: an export of another collection.
    create(c, "imsrc", 3, "l2").await;
    let mut rng = StdRng::seed_from_u64(5);
    let source = random_rows(&mut rng, 0..500, 3);
    upsert(c, "imsrc", &source).await;
    c.ok(
        &format!("{C}/imsrc/export"),
        &json!({"prefix": "imp/src", "rows_per_file": 200}),
    )
    .await;

    // Sealed parts of 150 rows or more, so the import's segments are indexed.
    let (status, body) = c
        .put(
            &format!("{C}/imp"),
            &json!({"dimension": 3, "metric": "l2", "attributes": [
                {"name": "year", "type": "i64"}, {"name": "score", "type": "f64"},
                {"name": "genre", "type": "string"}, {"name": "title", "type": "string"},
                {"name": "tags", "type": "string_list"}, {"name": "published", "type": "bool"}
            ], "index": {"seal_rows": 150, "row_group_rows": 64}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let mut oracle = Oracle::default();
    let older = random_rows(&mut rng, 0..20, 3);
    upsert(c, "imp", &older).await;
    flush(c, "imp").await;
    let tail = random_rows(&mut rng, 490..520, 3);
    upsert(c, "imp", &tail).await; // in the log tail when the import commits
    oracle.upsert(&older);
    oracle.upsert(&tail);
    oracle.upsert(&source);

    let (status, queued) = c
        .post(
            &format!("{C}/imp/imports"),
            &json!({"source": "exports/imp/src/*.parquet", "job_id": "first"}),
        )
        .await;
    assert_eq!(status, 202, "{queued}");
    assert_eq!(queued["state"], "queued", "{queued}");
    assert_eq!(
        c.get(&format!("{C}/imp/imports/first")).await.1["state"],
        "queued"
    );
    let done = s.floe.run_import("imp", "first").await.unwrap();
    assert_eq!(
        done.state,
        floe_core::import::job::ImportState::Done,
        "{done:?}"
    );
    assert_eq!(
        (done.rows_imported, done.rows_rejected, done.files),
        (500, 0, 3)
    );
    let lsn = done.lsn.expect("a committed import has an LSN");
    let (_, status) = c.get(&format!("{C}/imp/imports/first")).await;
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["lsn"].as_u64(), Some(lsn));

    // A write after the import supersedes it.
    let later = random_rows(&mut rng, 3..4, 3);
    let after = upsert(c, "imp", &later).await;
    assert_eq!(after, lsn + 1, "the import is one record in the log");
    oracle.upsert(&later);
    let (_, row) = c.get(&format!("{C}/imp/rows/0")).await;
    assert_eq!(row["version"].as_u64(), Some(lsn), "{row}");
    assert_eq!(row["attributes"], oracle.rows[&0].1, "{row}");
    let (_, row) = c.get(&format!("{C}/imp/rows/3")).await;
    assert_eq!(row["version"].as_u64(), Some(after), "{row}");
    for consistency in [json!("strong"), json!("eventual")] {
        if consistency == "eventual" {
            flush(c, "imp").await;
        }
        for q in random_rows(&mut rng, 0..5, 3) {
            // Every cluster probed and every candidate reranked: exact.
            let body = json!({"vector": q["vector"], "top_k": 10, "nprobe": 65536, "rerank": 10000, "consistency": consistency});
            let got = c.ok(&format!("{C}/imp/query"), &body).await;
            let v: Vec<f32> = q["vector"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            let want: Vec<u64> = oracle
                .search("l2", &v, 10, &|_, _| true)
                .iter()
                .map(|r| r.0)
                .collect();
            assert_eq!(ids(&got), want, "{consistency}");
        }
    }
    assert_eq!(
        stats(c, "imp").await["rows"].as_u64(),
        Some(520),
        "every id once"
    );
    // Its sealed parts were indexed.
    let manifest = c.get(&format!("{C}/imp")).await.1;
    assert!(
        manifest["stats"]["indexed_segments"].as_u64().unwrap_or(0) >= 1,
        "{manifest}"
    );

    // The same job id and request: the job as it is, not a second import.
    let (status, again) = c
        .post(
            &format!("{C}/imp/imports"),
            &json!({"source": "exports/imp/src/*.parquet", "job_id": "first"}),
        )
        .await;
    assert_eq!(
        (status, again["state"].as_str()),
        (202, Some("done")),
        "{again}"
    );
    let (status, body) = c
        .post(
            &format!("{C}/imp/imports"),
            &json!({"source": "exports/imp/src/*.parquet", "job_id": "first", "skip_bad_rows": true}),
        )
        .await;
    assert_eq!(status, 409, "{body}");

    // A job resumed after its status was lost finds its marker committed.
    let paths = floe_core::storage::CollectionPaths::new("imp", &incarnation(&s, "imp").await);
    let mut stale = done.clone();
    stale.state = floe_core::import::job::ImportState::Committing;
    stale.lsn = None;
    stale.updated_at_ms = 0;
    let store = s.floe.object_store();
    store
        .put(
            &paths.import_file("first", "status.json"),
            serde_json::to_vec(&stale).unwrap().into(),
        )
        .await
        .unwrap();
    store
        .delete(&paths.import_file("first", "ended"))
        .await
        .unwrap();
    let resumed = s.floe.resume_imports("imp").await.unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].lsn, Some(lsn), "{resumed:?}");
    assert_eq!(
        upsert(c, "imp", &later).await,
        after + 1,
        "no second marker"
    );

    // Bad rows: reported by file, row and field; nothing imported...
    let lines = [
        json!({"id": 900, "vector": [0.5, 0.5, 0.5]}),
        json!({"id": 901, "vector": [0.5, 0.5]}),
        json!({"id": 900, "vector": [0.1, 0.1, 0.1]}),
        json!({"id": 902, "vector": [1, 2, 3], "attributes": {"year": "old"}}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    store
        .put(&"uploads/bad.jsonl".into(), text.into_bytes().into())
        .await
        .unwrap();
    let before = stats(c, "imp").await["rows"].as_u64();
    let (status, job) = c
        .post(
            &format!("{C}/imp/imports"),
            &json!({"source": "uploads/bad.jsonl"}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["job_id"].as_str().unwrap();
    let failed = s.floe.run_import("imp", job_id).await.unwrap();
    assert_eq!(
        failed.state,
        floe_core::import::job::ImportState::Failed,
        "{failed:?}"
    );
    assert_eq!(failed.rows_rejected, 3, "{failed:?}");
    let fields: Vec<(u64, &str)> = failed
        .errors
        .iter()
        .map(|e| (e.row, e.field.as_str()))
        .collect();
    assert_eq!(
        fields,
        vec![(1, "vector"), (2, "id"), (3, "attributes.year")],
        "{failed:?}"
    );
    assert!(failed.errors.iter().all(|e| e.file == "uploads/bad.jsonl"));
    assert_eq!(stats(c, "imp").await["rows"].as_u64(), before);
    // ...unless bad rows are skipped.
    let (_, job) = c
        .post(
            &format!("{C}/imp/imports"),
            &json!({"source": "uploads/bad.jsonl", "skip_bad_rows": true}),
        )
        .await;
    let skipped = s
        .floe
        .run_import("imp", job["job_id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (skipped.rows_imported, skipped.rows_rejected),
        (1, 3),
        "{skipped:?}"
    );
    let (status, row) = c.get(&format!("{C}/imp/rows/900")).await;
    assert_eq!(
        (status, row["vector"].clone()),
        (200, json!([0.5, 0.5, 0.5]))
    );

    // Sources outside the store, unsafe keys, nothing to read: a 400
    // naming the field; an unknown job: 404.
    for (body, field) in [
        (json!({"source": "s3://elsewhere/x.parquet"}), "source"),
        (json!({"source": "../x.parquet"}), "source"),
        (json!({"source": "collections/imsrc/*.parquet"}), "source"),
        (json!({"source": "a.npy", "ids": "catalog/imp.json"}), "ids"),
        (json!({"source": "uploads/none-*.parquet"}), "source"),
        (
            json!({"source": "uploads/bad.jsonl", "format": "csv"}),
            "format",
        ),
        (
            json!({"source": "uploads/bad.jsonl", "job_id": "a b"}),
            "job_id",
        ),
        (json!({"source": "uploads/bad.jsonl", "bogus": 1}), "bogus"),
    ] {
        let (status, err) = c.post(&format!("{C}/imp/imports"), &body).await;
        assert_eq!(
            (status, err["error"]["field"].as_str()),
            (400, Some(field)),
            "{body}: {err}"
        );
    }
    assert_eq!(c.get(&format!("{C}/imp/imports/nope")).await.0, 404);
}

/// The incarnation the catalog names for `name`.
async fn incarnation(s: &TestServer, name: &str) -> String {
    s.floe.describe(name).await.unwrap().incarnation
}

/// Attributes added to a collection: old rows have none (null), new rows
/// and patches set them, filters and answers see them through the tail,
/// segments, compaction and index builds; bad additions are 400s.
async fn attributes_can_be_added(s: TestServer) {
    let c = &s.client;
    let (status, body) = c
        .put(
            &format!("{C}/ev"),
            &json!({"dimension": 2, "metric": "l2",
                    "attributes": [{"name": "year", "type": "i64"}],
                    "index": {"seal_rows": 1000, "index_min_rows": 20, "row_group_rows": 16}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let row = |id: u64, extra: Value| {
        let mut attrs = json!({"year": 2000 + id});
        if let (Some(a), Some(e)) = (attrs.as_object_mut(), extra.as_object()) {
            a.extend(e.clone());
        }
        json!({"id": id, "vector": [id as f32, 1.0], "attributes": attrs})
    };
    let old: Vec<Value> = (0..40).map(|i| row(i, json!({}))).collect();
    upsert(c, "ev", &old).await;
    flush(c, "ev").await;
    s.floe.compact("ev").await.unwrap();
    assert!(stats(c, "ev").await["indexed_segments"].as_u64() >= Some(1));

    let added = c
        .ok(
            &format!("{C}/ev/attributes"),
            &json!({"attributes": [{"name": "color", "type": "string"}, {"name": "rank", "type": "f64"}]}),
        )
        .await;
    let names: Vec<&str> = added["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["year", "color", "rank"], "{added}");
    // Again: nothing changes.
    let again = c
        .ok(
            &format!("{C}/ev/attributes"),
            &json!({"attributes": [{"name": "color", "type": "string"}]}),
        )
        .await;
    assert_eq!(again, added);
    // Null, not left out, though its (indexed) segment has no column for
    // it: in a query's results (before any filter loads the segment's
    // columns) and in a row read.
    let nulls = json!({"year": 2000, "color": null, "rank": null});
    let q0 = json!({"vector": [0.0, 1.0], "top_k": 1, "consistency": "eventual"});
    let hit = c.ok(&format!("{C}/ev/query"), &q0).await;
    assert_eq!(hit["results"][0]["attributes"], nulls, "{hit}");
    let (_, r0) = c.get(&format!("{C}/ev/rows/0")).await;
    assert_eq!(r0["attributes"], nulls, "{r0}");
    let new: Vec<Value> = (40..50)
        .map(|i| {
            row(
                i,
                json!({"color": if i % 2 == 0 { "red" } else { "blue" }, "rank": i as f64}),
            )
        })
        .collect();
    upsert(c, "ev", &new).await;
    c.ok(
        &format!("{C}/ev/patch"),
        &json!({"rows": [{"id": 3, "attributes": {"color": "red"}}]}),
    )
    .await;
    let reds = |c: Client| async move {
        let body = json!({"filter": "color == 'red'", "top_k": 100});
        let mut got = ids(&c.ok(&format!("{C}/ev/query"), &body).await);
        got.sort_unstable();
        got
    };
    let want = vec![3, 40, 42, 44, 46, 48];
    assert_eq!(reds(c.clone()).await, want, "tail and segments");
    let (_, r3) = c.get(&format!("{C}/ev/rows/3")).await;
    assert_eq!(
        (
            r3["attributes"]["color"].as_str(),
            r3["attributes"]["year"].as_i64()
        ),
        (Some("red"), Some(2003)),
        "{r3}"
    );
    // Through a flush and a compaction (which rewrites the old rows with
    // the new columns) and an index build.
    flush(c, "ev").await;
    assert_eq!(reds(c.clone()).await, want, "after the flush");
    s.floe.compact("ev").await.unwrap();
    assert_eq!(reds(c.clone()).await, want, "after compaction");
    let q = json!({"vector": [45.0, 1.0], "top_k": 1, "include_attributes": ["color", "rank"]});
    let hit = c.ok(&format!("{C}/ev/query"), &q).await;
    assert_eq!(
        hit["results"][0]["attributes"],
        json!({"color": "blue", "rank": 45.0}),
        "{hit}"
    );
    assert_eq!(stats(c, "ev").await["rows"].as_u64(), Some(50));

    for (body, field) in [
        (
            json!({"attributes": [{"name": "year", "type": "string"}]}),
            "attributes[0].type",
        ),
        (
            json!({"attributes": [{"name": "no way", "type": "string"}]}),
            "attributes[0].name",
        ),
        (
            json!({"attributes": [{"name": "_lsn", "type": "i64"}]}),
            "attributes[0].name",
        ),
        (
            json!({"attributes": [{"name": "x", "type": "i64"}, {"name": "x", "type": "i64"}]}),
            "attributes[1].name",
        ),
        (json!({"attributes": []}), "attributes"),
        (
            json!({"attributes": [{"name": "z", "type": "date"}]}),
            "attributes[0].type",
        ),
    ] {
        let (status, err) = c.post(&format!("{C}/ev/attributes"), &body).await;
        assert_eq!(
            (status, err["error"]["field"].as_str()),
            (400, Some(field)),
            "{body}: {err}"
        );
    }
    assert_eq!(
        c.post(
            &format!("{C}/nope/attributes"),
            &json!({"attributes": [{"name": "a", "type": "i64"}]})
        )
        .await
        .0,
        404
    );
}

/// A process that opened the collection before an attribute was added
/// (another server on the same storage and log) learns it: from a request
/// naming it, and from rows holding it — so its flushes keep the values.
#[tokio::test]
async fn a_stale_process_learns_added_attributes() {
    let a = TestServer::cloud().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = floe_core::Settings {
        data_dir: dir.path().to_path_buf(),
        ..a.floe.settings().clone()
    };
    let b = TestServer::start("cloud", settings.clone(), dir).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = floe_core::Settings {
        data_dir: dir.path().to_path_buf(),
        ..settings
    };
    let flusher = TestServer::start("cloud", settings, dir).await;
    let name = floe_tests::unique("stale");
    let (status, body) = a
        .client
        .put(
            &format!("{C}/{name}"),
            &json!({"dimension": 2, "metric": "l2", "attributes": [{"name": "n", "type": "i64"}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    upsert(&a.client, &name, &[json!({"id": 1, "vector": [1, 1]})]).await;
    // Both others open it, with no attributes.
    for s in [&b, &flusher] {
        assert_eq!(stats(&s.client, &name).await["rows"].as_u64(), Some(1));
    }
    a.client
        .ok(
            &format!("{C}/{name}/attributes"),
            &json!({"attributes": [{"name": "tag", "type": "string"}]}),
        )
        .await;
    // b takes a row with the new attribute at once.
    let lsn = upsert(
        &b.client,
        &name,
        &[json!({"id": 2, "vector": [2, 2], "attributes": {"tag": "new"}})],
    )
    .await;
    // The flusher meets a record with a column it does not know: it
    // learns the attribute rather than drop the value.
    let report = flusher.floe.flush(&name).await.unwrap();
    assert!(report.checkpoint_lsn >= lsn, "{report:?}");
    let body = json!({"filter": "tag == 'new'", "top_k": 10, "consistency": "eventual"});
    for s in [&a, &b, &flusher] {
        let got = s.client.ok(&format!("{C}/{name}/query"), &body).await;
        assert_eq!(ids(&got), vec![2], "{}: {got}", s.url);
    }
    // A process that starts now knows only the catalog's attributes until
    // it reads the manifest: its patch of an original attribute keeps the
    // added one, and a retried upsert (same request id) is the same request.
    let fresh = |s: &TestServer| {
        let dir = tempfile::tempdir().unwrap();
        let settings = floe_core::Settings {
            data_dir: dir.path().to_path_buf(),
            ..s.floe.settings().clone()
        };
        (settings, dir)
    };
    let (settings, dir) = fresh(&a);
    let d = TestServer::start("cloud", settings, dir).await;
    d.client
        .ok(
            &format!("{C}/{name}/patch"),
            &json!({"rows": [{"id": 2, "attributes": {"n": 5}}]}),
        )
        .await;
    let (_, row) = a.client.get(&format!("{C}/{name}/rows/2")).await;
    assert_eq!(row["attributes"], json!({"n": 5, "tag": "new"}), "{row}");
    let retried =
        json!({"rows": [{"id": 3, "vector": [3, 3], "attributes": {"n": 3}}], "request_id": "r-1"});
    a.client.ok(&format!("{C}/{name}/upsert"), &retried).await;
    let (settings, dir) = fresh(&a);
    let e = TestServer::start("cloud", settings, dir).await;
    let again = e.client.ok(&format!("{C}/{name}/upsert"), &retried).await;
    assert_eq!(again["duplicate"], true, "{again}");
}

floe_tests::both_modes!(
    strong_sees_writes_at_once_and_eventual_after_flush,
    write_tokens_give_read_your_writes,
    upserts_replace_and_deletes_hide,
    delete_by_filter_removes_exactly_the_matches,
    exact_search_equals_the_oracle_for_every_metric,
    filters_match_the_oracle,
    bad_input_gets_a_clear_4xx_and_writes_nothing,
    request_ids_make_writes_idempotent,
    string_ids_and_columnar_upserts,
    vectors_travel_as_base64,
    conditional_upserts_and_patches,
    exports_write_one_snapshot_as_parquet,
    bulk_imports_land_as_one_write,
    attributes_can_be_added,
    collections_are_listed_described_and_dropped,
);
