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
/// SQS batch calls need the single call's action; a transaction needs the actions of its items
/// (taken as put, update and condition check: deletes inside a transaction are not seen here).
pub fn iam_actions(operation: &str) -> Vec<String> {
    let (service, op) = operation.split_once(':').unwrap_or(("", operation));
    match (service, op) {
        ("dynamodb", "TransactWriteItems") => {
            ["PutItem", "UpdateItem", "ConditionCheckItem"].iter().map(|a| format!("dynamodb:{a}")).collect()
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
}
