//! Training a shared compression dictionary from sample payloads, and measuring one.
//!
//! The trainer is COVER (Liao, Petri, Moffat and Wirth, "Effective construction of relative
//! Lempel-Ziv dictionaries", 2016; the algorithm behind `zstd --train-cover`), written here
//! because brotli takes any bytes as a dictionary and no maintained Rust crate trains one without
//! wrapping it in zstd's own format:
//!
//! - a *d-mer* is any `d` consecutive bytes; its frequency is the number of samples it occurs in;
//! - the training data is split into `size / k` epochs; from each, the `k`-byte segment whose
//!   distinct d-mers have the largest total frequency is taken, and those d-mers' frequencies are
//!   zeroed so no later segment is rewarded for the same content;
//! - the best segments go to the end of the dictionary, nearest the payload, where brotli's
//!   distances to them are shortest.
//!
//! Training is deterministic: the same samples and parameters give the same bytes.

use std::collections::HashMap;

/// Training parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoverParams {
    /// Dictionary size in bytes.
    pub size: usize,
    /// Segment length.
    pub k: usize,
    /// d-mer length, 4 to 8.
    pub d: usize,
}

/// The d bytes at `pos`, packed into an integer (exact: no hash, no collisions).
fn dmer(data: &[u8], pos: usize, d: usize) -> u64 {
    data[pos..pos + d].iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// Trains a dictionary of at most `p.size` bytes from `samples`.
pub fn train_cover(samples: &[Vec<u8>], p: CoverParams) -> Vec<u8> {
    assert!((4..=8).contains(&p.d) && p.k >= p.d && p.size >= p.k, "bad COVER parameters {p:?}");
    // Concatenate, remembering where each sample ends so no d-mer spans two samples.
    let mut data = Vec::with_capacity(samples.iter().map(Vec::len).sum());
    let mut ends = Vec::with_capacity(samples.len());
    for s in samples {
        data.extend_from_slice(s);
        ends.push(data.len());
    }
    // valid[pos]: a d-mer starts at pos and stays inside its sample.
    let mut valid = vec![false; data.len()];
    // Frequency: in how many samples a d-mer occurs.
    let mut freq: HashMap<u64, u32> = HashMap::new();
    let mut start = 0;
    for &end in &ends {
        let mut seen = std::collections::HashSet::new();
        let last = end.saturating_sub(p.d - 1).max(start);
        for (pos, v) in valid.iter_mut().enumerate().take(last).skip(start) {
            *v = true;
            let m = dmer(&data, pos, p.d);
            if seen.insert(m) {
                *freq.entry(m).or_insert(0) += 1;
            }
        }
        start = end;
    }
    // A d-mer that occurs in one sample only teaches nothing shared.
    freq.retain(|_, f| *f > 1);

    let epochs = (p.size / p.k).max(1);
    let epoch_len = (data.len() / epochs).max(p.k);
    let mut segments: Vec<(u64, usize, usize)> = Vec::new(); // (score, start, end)
    let mut active: HashMap<u64, u32> = HashMap::new();
    let mut total = 0;
    for e in 0..epochs {
        if total >= p.size {
            break;
        }
        let (lo, hi) = (e * epoch_len, ((e + 1) * epoch_len).min(data.len()));
        if hi <= lo + p.d {
            continue;
        }
        // Slide a window of k bytes (k - d + 1 d-mers) over the epoch; score = total frequency of
        // the distinct d-mers inside it.
        active.clear();
        let mut score = 0u64;
        let mut best = (0u64, lo, lo);
        let window = p.k - p.d + 1;
        for pos in lo..hi - p.d + 1 {
            if valid[pos] {
                let m = dmer(&data, pos, p.d);
                let c = active.entry(m).or_insert(0);
                if *c == 0 {
                    score += u64::from(freq.get(&m).copied().unwrap_or(0));
                }
                *c += 1;
            }
            if pos >= lo + window {
                let out = pos - window;
                if valid[out] {
                    let m = dmer(&data, out, p.d);
                    if let Some(c) = active.get_mut(&m) {
                        *c -= 1;
                        if *c == 0 {
                            score -= u64::from(freq.get(&m).copied().unwrap_or(0));
                        }
                    }
                }
            }
            if score > best.0 {
                let s = (pos + 1).saturating_sub(window).max(lo);
                best = (score, s, (s + p.k).min(data.len()));
            }
        }
        if best.0 == 0 {
            continue;
        }
        // Trim d-mers worth nothing from both ends, then zero what the segment now covers.
        let (mut s, mut t) = (best.1, best.2);
        let worth = |pos: usize| valid[pos] && freq.get(&dmer(&data, pos, p.d)).copied().unwrap_or(0) > 0;
        while s + p.d <= t && !worth(s) {
            s += 1;
        }
        while t >= s + p.d && !worth(t - p.d) {
            t -= 1;
        }
        if t < s + p.d {
            continue;
        }
        for (pos, _) in valid.iter().enumerate().take(t - p.d + 1).skip(s).filter(|(_, v)| **v) {
            freq.remove(&dmer(&data, pos, p.d));
        }
        let len = (t - s).min(p.size - total);
        segments.push((best.0, s, s + len));
        total += len;
    }
    // Best segments last (nearest the payload), ties in corpus order.
    segments.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut dict = Vec::with_capacity(total);
    for (_, s, t) in segments {
        dict.extend_from_slice(&data[s..t]);
    }
    dict
}

/// Reads a JSON Lines file of payload objects.
pub fn read_values(path: &std::path::Path) -> std::io::Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}:{}: {e}", path.display(), i + 1))
            })
        })
        .collect()
}

/// Reads a JSON Lines file of payload objects into their canonical bytes (keys sorted, no
/// whitespace), as the persister stores them.
pub fn read_payloads(path: &std::path::Path) -> std::io::Result<Vec<Vec<u8>>> {
    Ok(read_values(path)?.iter().map(|v| serde_json::to_vec(v).expect("a parsed value serialises")).collect())
}

/// Payload size bands of the storage figures, by raw payload bytes.
pub const BANDS: [(&str, usize, usize); 5] = [
    ("< 1 KiB", 0, 1024),
    ("1-2 KiB", 1024, 2048),
    ("2-4 KiB", 2048, 4096),
    ("4-16 KiB", 4096, 16 * 1024),
    ("1-4 KiB", 1024, 4096),
];

/// Raw and compressed bytes of the payloads in one band.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct BandFigure {
    pub payloads: usize,
    pub raw_bytes: usize,
    pub compressed_bytes: usize,
}

impl BandFigure {
    pub fn saved_pct(&self) -> f64 {
        if self.raw_bytes == 0 {
            return 0.0;
        }
        100.0 * (1.0 - self.compressed_bytes as f64 / self.raw_bytes as f64)
    }
}

/// Compresses every payload with `compress` and sums raw and compressed bytes per band.
pub fn by_band(payloads: &[Vec<u8>], mut compress: impl FnMut(&[u8]) -> usize) -> Vec<(&'static str, BandFigure)> {
    let mut out: Vec<(&'static str, BandFigure)> = BANDS.iter().map(|b| (b.0, BandFigure::default())).collect();
    for p in payloads {
        let c = compress(p);
        for (i, (_, lo, hi)) in BANDS.iter().enumerate() {
            if (*lo..*hi).contains(&p.len()) {
                let f = &mut out[i].1;
                f.payloads += 1;
                f.raw_bytes += p.len();
                f.compressed_bytes += c;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_content_is_chosen_and_unique_noise_is_not() {
        let shared = b"Thank you for your message, we will get back to you shortly. ";
        let samples: Vec<Vec<u8>> = (0..50u32)
            .map(|i| {
                let mut s =
                    format!("{i:08x}{:08x}{:08x} ", i.wrapping_mul(2_654_435_761), i ^ 0xdead_beef).into_bytes();
                s.extend_from_slice(shared);
                s
            })
            .collect();
        let dict = train_cover(&samples, CoverParams { size: 256, k: 64, d: 8 });
        assert!(dict.len() <= 256);
        let text = String::from_utf8_lossy(&dict);
        assert!(text.contains("we will get back to you shortly"), "{text:?}");
        assert_eq!(dict, train_cover(&samples, CoverParams { size: 256, k: 64, d: 8 }), "deterministic");
    }

    fn sample(name: &str) -> Vec<Vec<u8>> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/sample").join(name);
        read_payloads(&path).expect("the committed sample reads")
    }

    /// On held-out real text (the committed sample: never trained on), in the 1-4 KiB band.
    #[test]
    fn dictionary_v2_saves_more_than_v1_and_plain_brotli_on_held_out_real_text() {
        use formbridge_shared::codec::{Codec, PayloadCodec};
        let held = sample("heldout.jsonl");
        let saved = |codec: Codec| {
            let c = PayloadCodec { threshold: 0, codec, ..PayloadCodec::default() };
            by_band(&held, |raw| c.encode(raw).bytes.len())[4].1
        };
        let (v2, v1, plain) = (saved(Codec::BrotliDictV2), saved(Codec::BrotliDictV1), saved(Codec::Brotli));
        assert!(v2.payloads >= 20, "the sample has {} payloads of 1-4 KiB", v2.payloads);
        assert!(
            v2.saved_pct() > v1.saved_pct() + 5.0 && v2.saved_pct() > plain.saved_pct() + 10.0,
            "v2 {:.1}%, v1 {:.1}%, plain {:.1}%",
            v2.saved_pct(),
            v1.saved_pct(),
            plain.saved_pct()
        );
    }

    /// The storage goal: a form of about 2 KiB of real text is stored in one write unit, keys and
    /// attributes included.
    #[test]
    fn real_forms_of_about_2_kib_cost_one_write_unit() {
        use formbridge_shared::capacity::{item_size, write_units};
        use formbridge_shared::codec::PayloadCodec;
        use formbridge_shared::submission::Submission;
        let forms: Vec<Vec<u8>> =
            sample("heldout.jsonl").into_iter().filter(|p| (1792..2304).contains(&p.len())).collect();
        assert!(forms.len() >= 5, "the sample has {} forms of about 2 KiB", forms.len());
        for (i, raw) in forms.into_iter().enumerate() {
            let sub = Submission {
                id: formbridge_shared::SubmissionId::from_ulid(ulid::Ulid::from_parts(1_795_593_600_000, i as u128)),
                tenant: "agency-client-042".parse().unwrap(),
                site: "www.riverbendvet.com".parse().unwrap(),
                form: "contact-form-1".parse().unwrap(),
                received_at: time::OffsetDateTime::from_unix_timestamp(1_795_593_600).unwrap(),
                shard: 7,
                expires_at: 1_827_129_600,
                raw_payload: raw,
            };
            let size = item_size(&sub.to_item(&PayloadCodec::default()));
            assert_eq!(write_units(size), 1, "a {}-byte form became a {size}-byte item", sub.raw_payload.len());
        }
    }

    #[test]
    fn the_dictionary_never_exceeds_its_size() {
        let samples: Vec<Vec<u8>> = (0..200)
            .map(|i| format!("field {} value {} and some shared words here", i % 7, i % 13).into_bytes())
            .collect();
        for size in [64, 100, 1000] {
            assert!(train_cover(&samples, CoverParams { size, k: 32, d: 6 }).len() <= size);
        }
    }
}
