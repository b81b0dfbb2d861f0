//! Test support (feature `testing`): connects to the local engine the test command started and
//! gives every test its own resource names, so tests run in parallel on one engine.

use crate::aws::{AwsClients, ResourceNames};
use crate::bootstrap::{bootstrap, BootstrapReport};

/// Clients for the local engine. Panics, failing the test, when the engine is not configured:
/// integration tests must never pass by not running.
pub async fn local_engine() -> AwsClients {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1:") || endpoint.starts_with("http://localhost:"),
        "integration tests need the local engine on 127.0.0.1: run ./deploy/local/test.sh, which starts it \
         and sets AWS_ENDPOINT_URL (got {endpoint:?})"
    );
    AwsClients::from_env().await
}

/// Resource names no other test uses.
pub fn unique_names() -> ResourceNames {
    let suffix = ulid::Ulid::new().to_string().to_lowercase();
    ResourceNames::with_suffix(&suffix[16..])
}

/// A freshly bootstrapped stack of its own.
pub async fn fresh_stack() -> (AwsClients, ResourceNames, BootstrapReport) {
    let aws = local_engine().await;
    let names = unique_names();
    let report = bootstrap(&aws, &names).await.expect("bootstrap against the local engine");
    (aws, names, report)
}

/// The IAM action(s) an AWS operation needs. DynamoDB Streams' actions are `dynamodb:` ones;
/// SQS batch calls need the single call's action; a transaction needs no action of its own, only
/// those of its items, which the metering records as `dynamodb:TransactWriteItems+<ItemAction>`.
pub fn iam_actions(operation: &str) -> Vec<String> {
    let (service, op) = operation.split_once(':').unwrap_or(("", operation));
    match (service, op) {
        ("dynamodb", "TransactWriteItems") => Vec::new(),
        ("dynamodb", _) if op.starts_with("TransactWriteItems+") => {
            vec![format!("dynamodb:{}", &op["TransactWriteItems+".len()..])]
        }
        ("dynamodb" | "dynamodbstreams", _) => vec![format!("dynamodb:{op}")],
        ("sqs", _) => vec![format!("sqs:{}", op.strip_suffix("Batch").unwrap_or(op))],
        ("eventbridge", _) => vec![format!("events:{op}")],
        _ => vec![operation.to_owned()],
    }
}

/// The actions a role of `deploy/aws/formbridge.yaml` allows (every statement of its inline
/// policies).
pub fn role_actions(role: &str) -> std::collections::BTreeSet<String> {
    use yaml_rust2::{Yaml, YamlLoader};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/aws/formbridge.yaml");
    let text = std::fs::read_to_string(&path).expect("the CloudFormation template");
    let docs = YamlLoader::load_from_str(&text).expect("the template is YAML");
    let r = &docs[0]["Resources"][role];
    assert!(!r.is_badvalue(), "the template has no resource {role}");
    let mut out = std::collections::BTreeSet::new();
    for policy in r["Properties"]["Policies"].as_vec().into_iter().flatten() {
        for st in policy["PolicyDocument"]["Statement"].as_vec().into_iter().flatten() {
            match &st["Action"] {
                Yaml::String(a) => {
                    out.insert(a.clone());
                }
                Yaml::Array(list) => out.extend(list.iter().filter_map(|a| a.as_str().map(str::to_owned))),
                _ => {}
            }
        }
    }
    out
}

/// Fails the test when `component` called an operation its role in the template does not allow
/// (a new call without a permission), naming each. Call it at the end of a test that ran the
/// process through its paths.
pub fn assert_role_allows(component: &str, role: &str) {
    let allowed = role_actions(role);
    let missing: Vec<String> = crate::aws::component_operations(component)
        .iter()
        .flat_map(|op| iam_actions(op).into_iter().map(move |a| (op.clone(), a)))
        .filter(|(_, a)| !allowed.contains(a))
        .map(|(op, a)| format!("{a} (for {op})"))
        .collect();
    assert!(
        missing.is_empty(),
        "{role} in deploy/aws/formbridge.yaml does not allow what {component} calls: {missing:?}"
    );
    record_usage(component, role);
}

/// Where each test binary leaves the IAM actions each component used, for the check of
/// permissions nothing uses (`deploy/aws/iam_unused.py`, run by `./deploy/local/test.sh` after
/// the whole suite: no single test binary sees every path).
pub fn usage_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/iam-usage")
}

fn record_usage(component: &str, role: &str) {
    let actions: std::collections::BTreeSet<String> =
        crate::aws::component_operations(component).iter().flat_map(|op| iam_actions(op)).collect();
    let dir = usage_dir();
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(format!("{component}-{}-{}.json", std::process::id(), ulid::Ulid::new()));
    let body = serde_json::json!({ "component": component, "role": role, "actions": actions });
    let _ = std::fs::write(file, body.to_string());
}

/// The SQS event Lambda's event source mapping would hand a function for these messages, as
/// ReceiveMessage returned them (ask for every system and message attribute), in Lambda's own
/// JSON shape, parsed as the function parses it.
pub fn sqs_event(messages: &[aws_sdk_sqs::types::Message], queue_arn: &str) -> crate::lambda::SqsEvent {
    let records: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, serde_json::Value> = m
                .attributes()
                .map(|a| a.iter().map(|(k, v)| (k.as_str().to_owned(), v.clone().into())).collect())
                .unwrap_or_default();
            let message_attributes: serde_json::Map<String, serde_json::Value> = m
                .message_attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| {
                            let value = serde_json::json!({
                                "stringValue": v.string_value(),
                                "dataType": v.data_type(),
                                "stringListValues": [],
                                "binaryListValues": [],
                            });
                            (k.clone(), value)
                        })
                        .collect()
                })
                .unwrap_or_default();
            serde_json::json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "md5OfBody": m.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).expect("Lambda's SQS event shape")
}

/// The DynamoDB Streams event Lambda's event source mapping would hand a function for these
/// records, as GetRecords returned them, in Lambda's own JSON shape, parsed as the function
/// parses it.
pub fn stream_event(
    records: &[aws_sdk_dynamodbstreams::types::Record],
    stream_arn: &str,
) -> crate::lambda::StreamEvent {
    use aws_sdk_dynamodbstreams::types::AttributeValue as Sv;
    use base64::Engine as _;
    fn value(v: &Sv) -> serde_json::Value {
        let b64 = |b: &aws_smithy_types::Blob| base64::engine::general_purpose::STANDARD.encode(b.as_ref());
        match v {
            Sv::S(s) => serde_json::json!({ "S": s }),
            Sv::N(n) => serde_json::json!({ "N": n }),
            Sv::B(b) => serde_json::json!({ "B": b64(b) }),
            Sv::Bool(b) => serde_json::json!({ "BOOL": b }),
            Sv::Null(n) => serde_json::json!({ "NULL": n }),
            Sv::L(l) => serde_json::json!({ "L": l.iter().map(value).collect::<Vec<_>>() }),
            Sv::M(m) => serde_json::json!({ "M": map(m) }),
            Sv::Ss(s) => serde_json::json!({ "SS": s }),
            Sv::Ns(s) => serde_json::json!({ "NS": s }),
            Sv::Bs(s) => serde_json::json!({ "BS": s.iter().map(b64).collect::<Vec<_>>() }),
            other => panic!("an attribute value this helper does not know: {other:?}"),
        }
    }
    fn map(m: &std::collections::HashMap<String, Sv>) -> serde_json::Value {
        m.iter().map(|(k, v)| (k.clone(), value(v))).collect::<serde_json::Map<_, _>>().into()
    }
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            let d = r.dynamodb().expect("a stream record has its change");
            let mut change = serde_json::json!({
                "SequenceNumber": d.sequence_number(),
                "SizeBytes": d.size_bytes(),
                "StreamViewType": d.stream_view_type().map(|v| v.as_str()),
                "Keys": map(d.keys().expect("a stream record has its keys")),
            });
            if let Some(t) = d.approximate_creation_date_time() {
                change["ApproximateCreationDateTime"] = serde_json::json!(t.as_secs_f64());
            }
            if let Some(m) = d.new_image() {
                change["NewImage"] = map(m);
            }
            if let Some(m) = d.old_image() {
                change["OldImage"] = map(m);
            }
            let mut record = serde_json::json!({
                "eventID": r.event_id(),
                "eventName": r.event_name().map(|n| n.as_str()),
                "eventVersion": r.event_version(),
                "eventSource": "aws:dynamodb",
                "awsRegion": r.aws_region(),
                "eventSourceARN": stream_arn,
                "dynamodb": change,
            });
            if let Some(u) = r.user_identity() {
                record["userIdentity"] = serde_json::json!({ "type": u.r#type(), "principalId": u.principal_id() });
            }
            record
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).expect("Lambda's DynamoDB Streams event shape")
}

/// Every record the table's stream holds now, in order, with the stream's ARN: what a stream
/// event source mapping would hand a function, read with the real GetRecords.
pub async fn stream_records(aws: &AwsClients, table: &str) -> (String, Vec<aws_sdk_dynamodbstreams::types::Record>) {
    use aws_sdk_dynamodbstreams::types::ShardIteratorType;
    let arn = aws
        .dynamodb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .expect("describe the table")
        .table
        .and_then(|t| t.latest_stream_arn)
        .expect("the table has a stream");
    let shards = aws
        .streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .expect("describe the stream")
        .stream_description
        .and_then(|d| d.shards)
        .unwrap_or_default();
    let mut out = Vec::new();
    for shard in shards {
        let mut iterator = aws
            .streams
            .get_shard_iterator()
            .stream_arn(&arn)
            .shard_id(shard.shard_id().unwrap_or_default())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("a shard iterator")
            .shard_iterator;
        while let Some(it) = iterator {
            let page = aws.streams.get_records().shard_iterator(it).send().await.expect("read the stream");
            let records = page.records.unwrap_or_default();
            if records.is_empty() {
                break;
            }
            out.extend(records);
            iterator = page.next_shard_iterator;
        }
    }
    (arn, out)
}

/// The `dynamodb:LeadingKeys` patterns (`ForAllValues:StringLike`) of a role's policies in the
/// template, with `${aws:PrincipalTag/tenant}` replaced by `tenant`.
pub fn leading_key_patterns(role: &str, tenant: &str) -> Vec<String> {
    use yaml_rust2::YamlLoader;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/aws/formbridge.yaml");
    let text = std::fs::read_to_string(&path).expect("the CloudFormation template");
    let docs = YamlLoader::load_from_str(&text).expect("the template is YAML");
    let r = &docs[0]["Resources"][role];
    assert!(!r.is_badvalue(), "the template has no resource {role}");
    let mut out = Vec::new();
    for policy in r["Properties"]["Policies"].as_vec().into_iter().flatten() {
        for st in policy["PolicyDocument"]["Statement"].as_vec().into_iter().flatten() {
            let keys = &st["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"];
            for p in keys.as_vec().into_iter().flatten().filter_map(|p| p.as_str()) {
                out.push(p.replace("${aws:PrincipalTag/tenant}", tenant));
            }
        }
    }
    out
}

/// IAM's `StringLike`: `*` matches any run of characters, `?` exactly one.
pub fn string_like(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    // match[i][j]: p[..i] matches v[..j].
    let mut m = vec![vec![false; v.len() + 1]; p.len() + 1];
    m[0][0] = true;
    for i in 1..=p.len() {
        m[i][0] = m[i - 1][0] && p[i - 1] == '*';
        for j in 1..=v.len() {
            m[i][j] = match p[i - 1] {
                '*' => m[i - 1][j] || m[i][j - 1],
                '?' => m[i - 1][j - 1],
                c => m[i - 1][j - 1] && c == v[j - 1],
            };
        }
    }
    m[p.len()][v.len()]
}

/// A stand-in for the Lambda Runtime API on 127.0.0.1, so a test can run a real
/// `formbridge-*-lambda` binary as Lambda runs it: the binary long-polls for the next event and
/// posts its answer, and the test hands it events built from the local engine's own output and
/// reads the answers (what `cargo lambda watch` does, without the tool).
#[derive(Debug)]
pub struct FakeLambdaRuntime {
    pub addr: std::net::SocketAddr,
    events: tokio::sync::mpsc::UnboundedSender<(String, serde_json::Value)>,
    answers: tokio::sync::mpsc::UnboundedReceiver<(String, Result<serde_json::Value, serde_json::Value>)>,
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for FakeLambdaRuntime {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FakeLambdaRuntime {
    pub async fn start() -> Self {
        use axum::extract::{Path, State};
        use axum::http::HeaderMap;
        use axum::routing::{get, post};
        use std::sync::Arc;
        type Answers = tokio::sync::mpsc::UnboundedSender<(String, Result<serde_json::Value, serde_json::Value>)>;
        #[derive(Clone)]
        struct S {
            events: Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<(String, serde_json::Value)>>>,
            answers: Answers,
        }
        let (etx, erx) = tokio::sync::mpsc::unbounded_channel();
        let (atx, arx) = tokio::sync::mpsc::unbounded_channel();
        let state = S { events: Arc::new(tokio::sync::Mutex::new(erx)), answers: atx };
        let parse = |body: &axum::body::Bytes| {
            serde_json::from_slice(body).unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned().into())
        };
        let app = axum::Router::new()
            .route(
                "/2018-06-01/runtime/invocation/next",
                get(|State(s): State<S>| async move {
                    let Some((id, event)) = s.events.lock().await.recv().await else {
                        return (axum::http::StatusCode::GONE, HeaderMap::new(), String::new());
                    };
                    let mut h = HeaderMap::new();
                    let deadline = crate::clock::now_ms() + 60_000;
                    h.insert("lambda-runtime-aws-request-id", id.parse().expect("an id"));
                    h.insert("lambda-runtime-deadline-ms", deadline.to_string().parse().expect("a number"));
                    let arn = "arn:aws:lambda:us-east-1:123456789012:function:test";
                    h.insert("lambda-runtime-invoked-function-arn", arn.parse().expect("an arn"));
                    h.insert("content-type", "application/json".parse().expect("a type"));
                    (axum::http::StatusCode::OK, h, event.to_string())
                }),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(move |State(s): State<S>, Path(id): Path<String>, body: axum::body::Bytes| async move {
                    let _ = s.answers.send((id, Ok(parse(&body))));
                    axum::http::StatusCode::ACCEPTED
                }),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(move |State(s): State<S>, Path(id): Path<String>, body: axum::body::Bytes| async move {
                    let _ = s.answers.send((id, Err(parse(&body))));
                    axum::http::StatusCode::ACCEPTED
                }),
            )
            .route(
                "/2018-06-01/runtime/init/error",
                post(move |State(s): State<S>, body: axum::body::Bytes| async move {
                    let _ = s.answers.send(("init".into(), Err(parse(&body))));
                    axum::http::StatusCode::ACCEPTED
                }),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port for the fake runtime");
        let addr = listener.local_addr().expect("its address");
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(async move { s.cancelled().await }).await;
        });
        FakeLambdaRuntime { addr, events: etx, answers: arx, stop }
    }

    /// The environment Lambda gives a function, pointing it at this runtime.
    pub fn env(&self, function: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_LAMBDA_RUNTIME_API", self.addr.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", function.to_owned()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{function}")),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "test".into()),
        ]
    }

    /// Invokes the function with `event`; returns its answer (`Err` for an error report), or
    /// panics when none comes within `limit`.
    pub async fn invoke(
        &mut self,
        event: serde_json::Value,
        limit: std::time::Duration,
    ) -> Result<serde_json::Value, serde_json::Value> {
        let id = ulid::Ulid::new().to_string();
        self.events.send((id.clone(), event)).expect("the runtime is up");
        loop {
            match tokio::time::timeout(limit, self.answers.recv()).await {
                Ok(Some((got, answer))) if got == id || got == "init" => return answer,
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => panic!("the function did not answer invocation {id} within {limit:?}"),
            }
        }
    }
}

/// The resource-name variables every process reads, for these names.
pub fn resource_env(names: &ResourceNames) -> Vec<(&'static str, String)> {
    vec![
        ("FORMBRIDGE_TABLE", names.table.clone()),
        ("FORMBRIDGE_CONTROL_TABLE", names.control_table.clone()),
        ("FORMBRIDGE_INGEST_QUEUE", names.ingest_queue.clone()),
        ("FORMBRIDGE_INGEST_DLQ", names.ingest_dlq.clone()),
        ("FORMBRIDGE_DELIVERY_QUEUE", names.delivery_queue.clone()),
        ("FORMBRIDGE_DELIVERY_DLQ", names.delivery_dlq.clone()),
        ("FORMBRIDGE_EVENT_BUS", names.event_bus.clone()),
    ]
}

/// A `formbridge-*-lambda` binary running against a [`FakeLambdaRuntime`] and the local engine
/// (whose settings it inherits); killed when dropped.
#[derive(Debug)]
pub struct LambdaProcess(pub std::process::Child);

impl LambdaProcess {
    pub fn spawn(
        binary: &str,
        runtime: &FakeLambdaRuntime,
        function: &str,
        names: &ResourceNames,
        extra: &[(&str, String)],
    ) -> Self {
        let mut cmd = std::process::Command::new(binary);
        cmd.envs(runtime.env(function)).envs(resource_env(names)).env("RUST_LOG", "warn");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        LambdaProcess(cmd.spawn().unwrap_or_else(|e| panic!("start {binary}: {e}")))
    }
}

impl Drop for LambdaProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A queue that receives the bus's events of `source` (through a rule named `rule`): what tests
/// read published events from. Returns the queue's URL.
pub async fn events_queue(aws: &AwsClients, names: &ResourceNames, rule: &str, source: &str) -> String {
    let name = format!("{}-{rule}", names.delivery_queue);
    let url = aws.sqs.create_queue().queue_name(&name).send().await.expect("create queue").queue_url.expect("url");
    let attrs = aws
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes");
    let arn = attrs.attributes().expect("attributes")[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
    aws.eventbridge
        .put_rule()
        .name(rule)
        .event_bus_name(&names.event_bus)
        .event_pattern(format!(r#"{{"source":["{source}"]}}"#))
        .send()
        .await
        .expect("put rule");
    aws.eventbridge
        .put_targets()
        .rule(rule)
        .event_bus_name(&names.event_bus)
        .targets(aws_sdk_eventbridge::types::Target::builder().id("q").arn(arn).build().expect("target"))
        .send()
        .await
        .expect("put targets");
    url
}

/// Every event waiting in an [`events_queue`], as (detail type, detail), deleting them.
pub async fn drain_events(aws: &AwsClients, url: &str) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    loop {
        let r = aws
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        let msgs = r.messages.unwrap_or_default();
        if msgs.is_empty() {
            return out;
        }
        for m in msgs {
            let v: serde_json::Value = serde_json::from_str(m.body().unwrap_or_default()).expect("an event");
            out.push((v["detail-type"].as_str().unwrap_or_default().to_owned(), v["detail"].clone()));
            aws.sqs
                .delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
    }
}
