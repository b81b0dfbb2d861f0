//! The envelope's JSON Schema and the Rust validator agree on every fixture.

use std::path::Path;

fn fixtures(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/fixtures/submission-envelope").join(kind);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn schema_and_validator_agree_on_every_envelope_fixture() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/submission-envelope.schema.json");
    let schema: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let (valid, invalid) = (fixtures("valid"), fixtures("invalid"));
    assert!(valid.len() >= 3 && invalid.len() >= 15);
    for (name, bytes) in valid {
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(
            validator.is_valid(&json),
            "schema rejects {name}: {:?}",
            validator.iter_errors(&json).map(|e| e.to_string()).collect::<Vec<_>>()
        );
        let parsed = formbridge_ingest::envelope::parse_strict(&bytes).unwrap();
        formbridge_ingest::envelope::validate(parsed).unwrap_or_else(|e| panic!("Rust rejects {name}: {e}"));
    }
    for (name, bytes) in invalid {
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(!validator.is_valid(&json), "schema accepts {name}");
        let rust = formbridge_ingest::envelope::parse_strict(&bytes).and_then(formbridge_ingest::envelope::validate);
        assert!(rust.is_err(), "Rust accepts {name}");
    }
}
