//! The indexer function's event adapter: which collections an event asks to
//! be flushed. S3 object-created events name objects under
//! `collections/<name>/...`; a scheduled (EventBridge) event means "every
//! collection whose log tail is due".

use std::collections::BTreeSet;
use std::sync::Arc;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::s3::S3Event;
use floe_core::Floe;
use serde_json::{Value, json};

/// What the event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Flush these collections now.
    Collections(BTreeSet<String>),
    /// Flush every collection that is due.
    AllDue,
}

/// Reads an S3 notification or a scheduled event.
pub fn work_for(event: &Value) -> anyhow::Result<Work> {
    if event.get("Records").is_some() {
        let s3: S3Event = serde_json::from_value(event.clone())?;
        let mut names = BTreeSet::new();
        for record in s3.records {
            let Some(key) = record.s3.object.key else {
                continue;
            };
            // Keys in S3 notifications are URL-encoded.
            let key = percent_decode(&key.replace('+', " "));
            if let Some(name) = key.split('/').skip_while(|p| *p != "collections").nth(1)
                && floe_core::catalog::validate_collection_name(name).is_ok()
            {
                names.insert(name.to_string());
            }
        }
        return Ok(Work::Collections(names));
    }
    if event.get("detail-type").is_some() {
        let _: EventBridgeEvent<Value> = serde_json::from_value(event.clone())?;
        return Ok(Work::AllDue);
    }
    anyhow::bail!(
        "unsupported event: expected an S3 notification or an EventBridge scheduled event"
    )
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Carries out an event and reports what was flushed.
pub async fn handle(floe: &Arc<Floe>, event: Value) -> anyhow::Result<Value> {
    let mut flushed = Vec::new();
    match work_for(&event)? {
        Work::Collections(names) => {
            for name in names {
                match floe.flush(&name).await {
                    Ok(r) => flushed.push(json!({"collection": name, "checkpoint_lsn": r.checkpoint_lsn, "rows": r.rows_flushed})),
                    Err(floe_core::Error::CollectionNotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Work::AllDue => {
            for name in floe.list_collections().await? {
                if let Some(r) = floe.flush_if_due(&name).await? {
                    flushed.push(json!({"collection": name, "checkpoint_lsn": r.checkpoint_lsn, "rows": r.rows_flushed}));
                }
            }
        }
    }
    Ok(json!({ "flushed": flushed }))
}
