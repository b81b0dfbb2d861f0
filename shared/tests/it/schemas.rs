//! Every queue-message fixture is judged the same way by the JSON Schema and by the Rust
//! validator the persister uses.

use std::path::{Path, PathBuf};

use formbridge_shared::submission::Submission;

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas")
}

fn fixtures(kind: &str) -> Vec<(String, String)> {
    let dir = schemas_dir().join("fixtures/queue-submission").join(kind);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn schema_and_rust_validator_agree_on_every_fixture() {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schemas_dir().join("queue-submission.schema.json")).unwrap())
            .unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let valid = fixtures("valid");
    let invalid = fixtures("invalid");
    assert!(valid.len() >= 3 && invalid.len() >= 10, "fixtures are missing");
    for (name, body) in &valid {
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(validator.is_valid(&json), "schema rejects valid fixture {name}");
        Submission::from_message_body(body).unwrap_or_else(|e| panic!("Rust rejects valid fixture {name}: {e}"));
    }
    for (name, body) in &invalid {
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(!validator.is_valid(&json), "schema accepts invalid fixture {name}");
        assert!(Submission::from_message_body(body).is_err(), "Rust accepts invalid fixture {name}");
    }
}

#[test]
fn messages_the_code_writes_match_the_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schemas_dir().join("queue-submission.schema.json")).unwrap())
            .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let profile = formbridge_shared::tenant::TenantProfile {
        tenant_id: "acme".parse().unwrap(),
        name: "Acme".into(),
        created_at: "2026-11-25T08:00:00Z".into(),
        retention_days: 30,
        form_retention: Default::default(),
        shards: formbridge_shared::sharding::ShardHistory::new(8, 0).unwrap(),
    };
    for seed in 0..20 {
        let serde_json::Value::Object(payload) = formbridge_shared::sample::text_heavy_payload(1500, seed) else {
            panic!()
        };
        let m = formbridge_shared::submission::QueueMessage::new(
            &profile,
            "www.example.com".parse().unwrap(),
            "contact".parse().unwrap(),
            formbridge_shared::SubmissionId::new(),
            time::OffsetDateTime::now_utc(),
            payload,
        );
        let json = serde_json::to_value(&m).unwrap();
        let errors: Vec<String> = validator.iter_errors(&json).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
}
