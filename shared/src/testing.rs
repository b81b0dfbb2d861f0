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
