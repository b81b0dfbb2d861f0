//! The events the delivery worker publishes on EventBridge (source `formbridge.delivery`) each
//! have a JSON Schema under `schemas/events/`. Their fixtures under
//! `schemas/fixtures/events/<event>/valid/` pass, and each schema stays closed and strict: an
//! unknown property, a missing one or a malformed timestamp is refused.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

const EVENTS: [&str; 4] = ["delivery-failed", "destination-paused", "destination-disabled", "destination-recovered"];

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn schema(event: &str) -> Value {
    read_json(&schemas_dir().join("events").join(format!("{event}.schema.json")))
}

fn valid_fixtures(event: &str) -> Vec<(String, Value)> {
    let dir = schemas_dir().join("fixtures/events").join(event).join("valid");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_string_lossy().into_owned(), read_json(&p))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The timestamp fields of a fixture: those whose names say so and hold a string.
fn date_time_fields(fixture: &Value) -> Vec<String> {
    let fields = fixture.as_object().expect("an event detail is an object");
    fields
        .iter()
        .filter(|(k, v)| (k.ends_with("_at") || k.ends_with("_until")) && v.is_string())
        .map(|(k, _)| k.clone())
        .collect()
}

#[test]
fn schemas_fixtures_validate() {
    for event in EVENTS {
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&schema(event))
            .unwrap_or_else(|e| panic!("{event}: schema does not compile: {e}"));
        let fixtures = valid_fixtures(event);
        assert!(!fixtures.is_empty(), "{event}: no valid fixture");
        for (name, fixture) in &fixtures {
            let errors: Vec<String> = validator.iter_errors(fixture).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{event}/{name} is refused: {errors:?}");

            let mut extra = fixture.clone();
            extra["unexpected"] = json!(true);
            assert!(!validator.is_valid(&extra), "{event}/{name}: an unknown property is accepted");

            // Every property is required, tenant_id first of all.
            for field in fixture.as_object().unwrap().keys() {
                let mut missing = fixture.clone();
                missing.as_object_mut().unwrap().remove(field);
                assert!(!validator.is_valid(&missing), "{event}/{name}: accepted without {field}");
            }
            let mut no_tenant = fixture.clone();
            assert!(no_tenant.as_object_mut().unwrap().remove("tenant_id").is_some(), "{event}/{name} has tenant_id");
            assert!(!validator.is_valid(&no_tenant), "{event}/{name}: accepted without tenant_id");
        }
    }
}

#[test]
fn ids_and_timestamps_are_checked_even_without_format_validation() {
    for event in EVENTS {
        // The validator the rest of the workspace uses treats `format` as an annotation only.
        let validator = jsonschema::validator_for(&schema(event)).unwrap();
        for (name, fixture) in valid_fixtures(event) {
            let fields = date_time_fields(&fixture);
            assert!(!fields.is_empty(), "{event}/{name} has a timestamp");
            for field in fields {
                let mut bad = fixture.clone();
                bad[&field] = json!("25/11/2026 08:00");
                assert!(!validator.is_valid(&bad), "{event}/{name}: accepted {field} that is not RFC 3339");
            }
            for (field, value) in [
                ("tenant_id", json!("Acme")),
                ("tenant_id", json!("-acme")),
                ("destination_id", json!("01jdq7r2c8m4v6x0b3n5p7q9sa")),
                ("destination_id", json!("01JDQ7R2C8M4V6X0B3N5P7Q9S")),
                ("destination_id", json!("01JDQ7R2C8M4V6X0B3N5P7Q9SI")),
            ] {
                let mut bad = fixture.clone();
                bad[field] = value.clone();
                assert!(!validator.is_valid(&bad), "{event}/{name}: accepted {field} {value}");
            }
        }
    }
}

#[test]
fn every_failure_reason_is_in_the_delivery_failed_schema() {
    let s = schema("delivery-failed");
    let listed: Vec<&str> =
        s["properties"]["reason"]["enum"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for r in formbridge_shared::delivery::FailureReason::ALL {
        assert!(listed.contains(&r.as_str()), "reason {r} is missing from delivery-failed.schema.json");
    }
    assert_eq!(
        listed.len(),
        formbridge_shared::delivery::FailureReason::ALL.len(),
        "the schema lists a reason the code never sends"
    );
}
