//! Synthetic, text-heavy form submissions for demos, benchmarks and load: realistic keys, a
//! free-text message, a checkbox list, a nested address and the usual request metadata.
//! Deterministic for a given seed, so benchmark inputs are the same on every run.

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const WORDS: &[&str] = &[
    "hello",
    "we",
    "are",
    "interested",
    "in",
    "your",
    "services",
    "for",
    "our",
    "new",
    "website",
    "project",
    "could",
    "you",
    "please",
    "send",
    "a",
    "quote",
    "including",
    "hosting",
    "and",
    "maintenance",
    "the",
    "budget",
    "is",
    "flexible",
    "timeline",
    "next",
    "quarter",
    "thanks",
    "regards",
    "team",
    "design",
    "support",
    "plugin",
    "update",
    "contact",
    "form",
    "order",
    "delivery",
    "question",
    "about",
    "pricing",
    "invoice",
    "account",
    "booking",
    "appointment",
    "tuesday",
    "morning",
    "afternoon",
    "available",
    "call",
    "me",
    "back",
    "when",
    "convenient",
];
const FIRST: &[&str] = &["Anna", "Ben", "Chloé", "Dmitri", "Eva", "Farid", "Grace", "Hiro"];
const LAST: &[&str] = &["Smith", "Müller", "García", "Okafor", "Nguyen", "Rossi", "Kowalski"];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
];

fn pick<'a>(rng: &mut impl Rng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

fn sentence(rng: &mut impl Rng, words: usize) -> String {
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(pick(rng, WORDS));
    }
    s.push('.');
    s
}

/// Text brotli cannot shrink much (letters and digits from a xorshift generator): for limits
/// that hold after compression, such as DynamoDB's item size.
pub fn incompressible_text(len: usize, seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[(x % 62) as usize])
        })
        .collect()
}

/// A submission payload (`{"fields", "meta", "submitted_at"}`) of about `target_bytes` bytes of
/// JSON. The free-text message grows to fill the target.
pub fn text_heavy_payload(target_bytes: usize, seed: u64) -> Value {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let first = pick(&mut rng, FIRST);
    let last = pick(&mut rng, LAST);
    let mut payload = json!({
        "fields": {
            "name": format!("{first} {last}"),
            "email": format!("{}.{}@example.com", first.to_lowercase(), last.to_lowercase()),
            "phone": format!("+44 20 7946 {:04}", rng.random_range(0..10_000)),
            "company": format!("{last} & Partners"),
            "subject": sentence(&mut rng, 6),
            "services": ["web-design", "hosting", "seo"],
            "newsletter": rng.random_bool(0.5),
            "address": {"street": "12 High Street", "city": "London", "postcode": "EC1A 1BB", "country": "GB"},
            "message": "",
        },
        "meta": {
            "page_url": format!("https://www.example.com/contact/?utm_source=newsletter&id={}", rng.random_range(0..1000)),
            "referrer": "https://www.google.com/",
            "user_agent": pick(&mut rng, AGENTS),
            "ip": format!("203.0.113.{}", rng.random_range(1..255)),
            "plugin": "form-bridge-wp",
            "plugin_version": "1.4.2",
        },
        "submitted_at": "2026-11-25T08:00:00Z",
    });
    let base = payload.to_string().len();
    let mut message = String::new();
    while base + message.len() < target_bytes {
        if !message.is_empty() {
            message.push(' ');
        }
        let n = rng.random_range(6..18);
        message.push_str(&sentence(&mut rng, n));
    }
    payload["fields"]["message"] = Value::String(message);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_hit_their_target_size_and_are_deterministic() {
        for target in [1024, 2048, 4096, 12 * 1024] {
            let p = text_heavy_payload(target, 1);
            let len = p.to_string().len();
            assert!(len >= target && len < target + 200, "{target} -> {len}");
            assert_eq!(p, text_heavy_payload(target, 1));
        }
        assert_ne!(text_heavy_payload(2048, 1), text_heavy_payload(2048, 2));
    }
}
