//! The submission envelope sites post (schema: `schemas/submission-envelope.schema.json`), parsed
//! strictly and validated against documented limits. Pure: no I/O, no clock.
//!
//! Parsing happens before authentication (the signing site is named inside the body), so it is
//! bounded: the body limit caps the input, serde_json caps nesting at 128, and this parser rejects
//! duplicate keys, which would otherwise let two readers of one signed body disagree on its meaning.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use formbridge_shared::FormId;

/// Documented limits of an envelope.
pub const MAX_FIELDS: usize = 200;
pub const MAX_KEY_CHARS: usize = 128;
pub const MAX_STRING_CHARS: usize = 65_536;
pub const MAX_ARRAY_ITEMS: usize = 100;
pub const MAX_NESTED_FIELDS: usize = 50;
pub const MAX_META_CHARS: usize = 2_048;
pub const META_KEYS: [&str; 6] = ["page_url", "referrer", "user_agent", "ip", "plugin", "plugin_version"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// 400: not JSON we can read at all.
    #[error("{0}")]
    Malformed(String),
    /// 422: JSON, but not a valid envelope.
    #[error("{0}")]
    Invalid(String),
}

/// A validated envelope. `body` keeps the parsed JSON for the queue message.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub site: String,
    pub form_id: FormId,
    pub submitted_at: Option<OffsetDateTime>,
    pub fields: Map<String, Value>,
    pub meta: Option<Map<String, Value>>,
}

/// Parses JSON, rejecting duplicate object keys anywhere.
pub fn parse_strict(body: &[u8]) -> Result<Value, EnvelopeError> {
    let text = std::str::from_utf8(body).map_err(|_| EnvelopeError::Malformed("body is not valid UTF-8".into()))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value =
        StrictValue.deserialize(&mut de).map_err(|e| EnvelopeError::Malformed(format!("malformed JSON: {e}")))?;
    de.end().map_err(|e| EnvelopeError::Malformed(format!("malformed JSON: {e}")))?;
    Ok(value)
}

struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(StrictValue)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let shown: String = key.chars().take(40).collect();
                return Err(serde::de::Error::custom(format!("duplicate key {shown:?}")));
            }
            let v = map.next_value_seed(StrictValue)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

fn invalid(msg: impl Into<String>) -> EnvelopeError {
    EnvelopeError::Invalid(msg.into())
}

/// The `site` named in a parsed body, if any: needed before authentication.
pub fn site_of(value: &Value) -> Option<&str> {
    value.get("site").and_then(Value::as_str)
}

/// A value is what the visitor typed or pasted, and is never refused for its characters: control
/// characters (a backspace or vertical tab pasted from a word processor, even NUL) are kept
/// exactly. Every way out escapes them (JSON in the queue, the webhooks and the API; CSV quoting;
/// the dashboard sets text, never markup). Field names, `form_id` and `site` stay strict.
fn check_string(path: &str, s: &str, max: usize) -> Result<(), EnvelopeError> {
    if s.chars().count() > max {
        return Err(invalid(format!("{path} is longer than {max} characters")));
    }
    Ok(())
}

fn check_key(path: &str, k: &str) -> Result<(), EnvelopeError> {
    if k.is_empty() || k.chars().count() > MAX_KEY_CHARS || k.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{path}: field names are 1 to {MAX_KEY_CHARS} characters without control characters"
        )));
    }
    Ok(())
}

fn check_scalar(path: &str, v: &Value) -> Result<(), EnvelopeError> {
    match v {
        Value::String(s) => check_string(path, s, MAX_STRING_CHARS),
        Value::Number(_) | Value::Bool(_) | Value::Null => Ok(()),
        _ => Err(invalid(format!("{path} must be a string, number, boolean or null"))),
    }
}

fn check_leaf(path: &str, v: &Value) -> Result<(), EnvelopeError> {
    match v {
        Value::Array(items) => {
            if items.len() > MAX_ARRAY_ITEMS {
                return Err(invalid(format!("{path} has more than {MAX_ARRAY_ITEMS} items")));
            }
            items.iter().enumerate().try_for_each(|(i, x)| check_scalar(&format!("{path}[{i}]"), x))
        }
        other => check_scalar(path, other),
    }
}

/// Validates a parsed body as an envelope.
pub fn validate(value: Value) -> Result<Envelope, EnvelopeError> {
    let Value::Object(mut obj) = value else {
        return Err(invalid("the body must be a JSON object"));
    };
    if let Some(k) = obj.keys().find(|k| !["site", "form_id", "fields", "submitted_at", "meta"].contains(&k.as_str())) {
        let shown: String = k.chars().take(40).collect();
        return Err(invalid(format!("unknown top-level field {shown:?}")));
    }
    let site = match obj.remove("site") {
        Some(Value::String(s)) => s,
        _ => return Err(invalid("site is required and must be a string")),
    };
    let form_id = match obj.remove("form_id") {
        Some(Value::String(s)) => FormId::parse(&s).map_err(|e| invalid(format!("form_id: {}", e.rule)))?,
        // Some plugins number their forms: a non-negative integer is taken as its decimal string.
        Some(Value::Number(n)) if n.is_u64() => {
            FormId::parse(&n.to_string()).map_err(|e| invalid(format!("form_id: {}", e.rule)))?
        }
        _ => return Err(invalid("form_id is required and must be a string")),
    };
    let fields = match obj.remove("fields") {
        Some(Value::Object(m)) => m,
        _ => return Err(invalid("fields is required and must be an object")),
    };
    if fields.len() > MAX_FIELDS {
        return Err(invalid(format!("fields has more than {MAX_FIELDS} entries")));
    }
    for (k, v) in &fields {
        let path = format!("fields.{}", k.chars().take(40).collect::<String>());
        check_key(&path, k)?;
        match v {
            Value::Object(nested) => {
                if nested.len() > MAX_NESTED_FIELDS {
                    return Err(invalid(format!("{path} has more than {MAX_NESTED_FIELDS} entries")));
                }
                for (nk, nv) in nested {
                    let npath = format!("{path}.{}", nk.chars().take(40).collect::<String>());
                    check_key(&npath, nk)?;
                    if nv.is_object() {
                        return Err(invalid(format!("{npath}: objects nest at most one level")));
                    }
                    check_leaf(&npath, nv)?;
                }
            }
            other => check_leaf(&path, other)?,
        }
    }
    let submitted_at = match obj.remove("submitted_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            OffsetDateTime::parse(&s, &Rfc3339).map_err(|_| invalid("submitted_at must be an RFC 3339 timestamp"))?,
        ),
        Some(_) => return Err(invalid("submitted_at must be an RFC 3339 timestamp")),
    };
    let meta = match obj.remove("meta") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => {
            for (k, v) in &m {
                if !META_KEYS.contains(&k.as_str()) {
                    let shown: String = k.chars().take(40).collect();
                    return Err(invalid(format!("meta.{shown} is not one of {META_KEYS:?}")));
                }
                match v {
                    Value::String(s) => check_string(&format!("meta.{k}"), s, MAX_META_CHARS)?,
                    Value::Null => {}
                    _ => return Err(invalid(format!("meta.{k} must be a string"))),
                }
            }
            Some(m)
        }
        Some(_) => return Err(invalid("meta must be an object")),
    };
    Ok(Envelope { site, form_id, submitted_at, fields, meta })
}

impl Envelope {
    /// The queue payload: `{"fields", "meta"?, "submitted_at"?}`.
    pub fn payload(&self) -> Map<String, Value> {
        let mut p = Map::new();
        p.insert("fields".into(), Value::Object(self.fields.clone()));
        if let Some(m) = &self.meta {
            p.insert("meta".into(), Value::Object(m.clone()));
        }
        if let Some(t) = self.submitted_at {
            p.insert("submitted_at".into(), Value::String(t.format(&Rfc3339).unwrap_or_default()));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_rejected_at_any_depth() {
        assert!(parse_strict(br#"{"a":1,"a":2}"#).is_err());
        assert!(parse_strict(br#"{"fields":{"x":{"y":1,"y":2}}}"#).is_err());
        assert!(parse_strict(br#"{"a":[{"b":1},{"b":2}]}"#).is_ok());
    }

    #[test]
    fn utf8_and_trailing_garbage_are_checked() {
        assert!(matches!(parse_strict(b"{\"a\":\"\xff\"}"), Err(EnvelopeError::Malformed(m)) if m.contains("UTF-8")));
        assert!(parse_strict(br#"{"a":1} x"#).is_err());
        assert!(parse_strict(&[b'['; 200]).is_err());
    }

    #[test]
    fn a_typical_envelope_validates() {
        let v = parse_strict(
            br#"{"site":"example.com","form_id":"contact","fields":{"name":"A","tags":["x","y"],"address":{"city":"L"},"n":3,"ok":true,"none":null},"submitted_at":"2026-11-25T08:00:00Z","meta":{"ip":"203.0.113.1"}}"#,
        )
        .unwrap();
        let e = validate(v).unwrap();
        assert_eq!(e.form_id.as_str(), "contact");
        assert_eq!(e.payload()["fields"]["address"]["city"], "L");
    }

    #[test]
    fn control_characters_are_kept_in_values_and_refused_in_names() {
        let body = br#"{"site":"example.com","form_id":"contact","fields":{"message":"a\bb\u000bc\u0000d\u001b[0m","list":["x\u0007"],"nested":{"v":"\u007f"}},"meta":{"user_agent":"UA\u0008"}}"#;
        let e = validate(parse_strict(body).unwrap()).unwrap();
        assert_eq!(e.fields["message"], "a\u{8}b\u{b}c\u{0}d\u{1b}[0m", "kept exactly");
        assert_eq!(e.fields["list"][0], "x\u{7}");
        assert_eq!(e.fields["nested"]["v"], "\u{7f}");
        assert_eq!(e.meta.as_ref().unwrap()["user_agent"], "UA\u{8}");
        // Escaped again on the way out.
        let out = serde_json::to_string(&e.payload()).unwrap();
        assert!(out.contains(r"a\bb\u000bc\u0000d\u001b[0m"), "{out}");
        let key = br#"{"site":"example.com","form_id":"contact","fields":{"na\u0008me":"x"}}"#;
        assert!(
            matches!(validate(parse_strict(key).unwrap()), Err(EnvelopeError::Invalid(m)) if m.contains("control"))
        );
    }
}
