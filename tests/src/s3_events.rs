//! S3 object-created notifications on the local stack. In AWS the bucket
//! invokes the indexer directly; moto can only deliver notifications to SQS,
//! so locally the same event goes bucket → SQS queue → [`SqsQueue::receive`]
//! → the indexer function. The event document is the one S3 itself writes
//! (URL-encoded keys and all); only the last hop differs.
//!
//! moto checks no signatures but picks the service from the credential
//! scope of the `Authorization` header, so requests carry an unsigned one.

use std::time::Duration;

use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

fn scope(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=floe-test/20260101/{REGION}/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    )
}

/// An SQS queue in the S3 API server (moto serves both APIs on one port).
pub struct SqsQueue {
    endpoint: String,
    pub url: String,
    pub arn: String,
    http: reqwest::Client,
}

impl SqsQueue {
    pub async fn create(endpoint: &str, name: &str) -> Result<SqsQueue, String> {
        let http = reqwest::Client::new();
        let created = call(&http, endpoint, "CreateQueue", json!({ "QueueName": name })).await?;
        let url = created["QueueUrl"]
            .as_str()
            .ok_or_else(|| format!("CreateQueue answered {created}"))?
            .to_string();
        Ok(SqsQueue {
            endpoint: endpoint.to_string(),
            url,
            arn: format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"),
            http,
        })
    }

    /// Waits up to `wait` for messages; returns their bodies, deleted from
    /// the queue.
    pub async fn receive(&self, wait: Duration) -> Result<Vec<Value>, String> {
        let got = call(
            &self.http,
            &self.endpoint,
            "ReceiveMessage",
            json!({
                "QueueUrl": self.url,
                "MaxNumberOfMessages": 10,
                "WaitTimeSeconds": wait.as_secs().max(1),
            }),
        )
        .await?;
        let mut bodies = Vec::new();
        for message in got["Messages"].as_array().into_iter().flatten() {
            let body = message["Body"].as_str().unwrap_or_default();
            bodies
                .push(serde_json::from_str(body).map_err(|e| format!("message body {body}: {e}"))?);
            call(
                &self.http,
                &self.endpoint,
                "DeleteMessage",
                json!({ "QueueUrl": self.url, "ReceiptHandle": message["ReceiptHandle"] }),
            )
            .await?;
        }
        Ok(bodies)
    }
}

async fn call(
    http: &reqwest::Client,
    endpoint: &str,
    action: &str,
    body: Value,
) -> Result<Value, String> {
    let response = http
        .post(endpoint)
        .header("authorization", scope("sqs"))
        .header("x-amz-target", format!("AmazonSQS.{action}"))
        .header("content-type", "application/x-amz-json-1.0")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("SQS {action}: {e}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| format!("SQS {action}: {e}"))?;
    if !status.is_success() {
        return Err(format!("SQS {action}: {status}: {text}"));
    }
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| format!("SQS {action}: {e}: {text}"))
}

/// Creates `bucket` and has it notify `queue` of every object created under
/// `prefix` whose key ends in one of `suffixes`: the filters the SAM
/// template gives the indexer's S3 events.
pub async fn notify_bucket(
    endpoint: &str,
    bucket: &str,
    prefix: &str,
    suffixes: &[&str],
    queue: &SqsQueue,
) -> Result<(), String> {
    let http = reqwest::Client::new();
    let created = http
        .put(format!("{endpoint}/{bucket}"))
        .header("authorization", scope("s3"))
        .send()
        .await
        .map_err(|e| format!("CreateBucket: {e}"))?;
    if !created.status().is_success() {
        return Err(format!("CreateBucket {bucket}: {}", created.status()));
    }
    let rules: String = suffixes
        .iter()
        .enumerate()
        .map(|(i, suffix)| {
            format!(
                "<QueueConfiguration>\
                   <Id>floe-indexer-{i}</Id><Queue>{}</Queue><Event>s3:ObjectCreated:*</Event>\
                   <Filter><S3Key>\
                     <FilterRule><Name>prefix</Name><Value>{prefix}</Value></FilterRule>\
                     <FilterRule><Name>suffix</Name><Value>{suffix}</Value></FilterRule>\
                   </S3Key></Filter>\
                 </QueueConfiguration>",
                queue.arn
            )
        })
        .collect();
    let config = format!("<NotificationConfiguration>{rules}</NotificationConfiguration>");
    let put = http
        .put(format!("{endpoint}/{bucket}?notification"))
        .header("authorization", scope("s3"))
        .body(config)
        .send()
        .await
        .map_err(|e| format!("PutBucketNotificationConfiguration: {e}"))?;
    let status = put.status();
    if !status.is_success() {
        let text = put.text().await.unwrap_or_default();
        return Err(format!(
            "PutBucketNotificationConfiguration: {status}: {text}"
        ));
    }
    Ok(())
}

/// The S3 event documents among queue messages (S3 also sends an
/// `s3:TestEvent` when notifications are configured; Lambda never sees it).
pub fn object_created_events(messages: Vec<Value>) -> Vec<Value> {
    messages
        .into_iter()
        .filter(|m| m.get("Records").is_some())
        .collect()
}

/// The object keys an S3 event names, as sent (URL-encoded).
pub fn event_keys(event: &Value) -> Vec<String> {
    event["Records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["s3"]["object"]["key"].as_str().map(str::to_string))
        .collect()
}
