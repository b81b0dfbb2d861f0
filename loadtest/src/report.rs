//! The run report: a table for people, JSON for scripts. Latencies come from HDR histograms.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cost::{self, Prices, Usage};
use crate::run::Seen;

/// What a run observed.
#[derive(Debug)]
pub struct Observations {
    pub target: &'static str,
    pub rate: f64,
    pub sent: usize,
    pub send_time: Duration,
    pub accepted: HashSet<String>,
    pub seen: Seen,
    pub api_calls: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub target: String,
    pub rate_asked: f64,
    pub sent: usize,
    pub accepted: usize,
    pub persisted: usize,
    pub delivered: usize,
    pub throughput_per_s: BTreeMap<String, f64>,
    pub latency: BTreeMap<String, Latency>,
    pub losses: BTreeMap<String, usize>,
    pub duplicates: u64,
    pub unverified_deliveries: u64,
    pub storage: BTreeMap<String, f64>,
    pub cost: CostReport,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CostReport {
    /// Modelled from measured item sizes and the design's calls per submission (the local
    /// engine reports no consumed capacity): see loadtest/README.md.
    pub usage: Usage,
    pub dollars_per_million: f64,
    pub naive_dollars_per_million: f64,
    pub ratio_to_naive: f64,
}

fn latency(pairs: impl Iterator<Item = Duration>) -> Latency {
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
    for d in pairs {
        let _ = h.record((d.as_micros() as u64).max(1));
    }
    let ms = |v: u64| v as f64 / 1000.0;
    Latency {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.5)),
        p90_ms: ms(h.value_at_quantile(0.9)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

fn rate(times: &[Instant], n: usize) -> f64 {
    match (times.iter().min(), times.iter().max()) {
        (Some(a), Some(b)) if *b > *a => n as f64 / (*b - *a).as_secs_f64(),
        _ => 0.0,
    }
}

/// The pipeline's usage per the design, for `n` submissions with these stored item sizes and one
/// destination each: ingest SendMessageBatch (10 per call), persister receive and delete (10 per
/// call) and BatchWriteItem, the delivery record, its attempt and update (3 writes), a consistent
/// BatchGetItem of submission and record, one delivery-queue send, receive and delete, and the
/// aggregator's metric writes (about 4 per 100 submissions when batches coalesce).
pub fn modelled_usage(stored_sizes: &[u64]) -> Usage {
    let n = stored_sizes.len() as u64;
    let per10 = n.div_ceil(10);
    let mut u = Usage::default();
    u.count("sqs:SendMessageBatch (ingest)", per10);
    u.count("sqs:ReceiveMessage (persister)", per10);
    u.count("sqs:DeleteMessageBatch (persister)", per10);
    u.count("dynamodb:BatchWriteItem", n.div_ceil(25));
    u.count("dynamodb:PutItem (delivery)", 2 * n);
    u.count("dynamodb:PutItem (delivery update)", n);
    u.count("dynamodb:BatchGetItem (delivery)", n);
    u.count("sqs:SendMessageBatch (delivery)", per10);
    u.count("sqs:ReceiveMessage (delivery)", per10);
    u.count("sqs:DeleteMessage (delivery)", n);
    let metric_writes = (n * 4).div_ceil(100);
    u.count("dynamodb:TransactWriteItems (aggregator)", metric_writes.div_ceil(10).max(1));
    u.write_units = stored_sizes.iter().map(|b| cost::write_units(*b)).sum::<u64>() + 3 * n + 2 * metric_writes;
    u.read_units = stored_sizes.iter().map(|b| cost::read_units(*b, true) as u64 + 1).sum();
    u.sqs_requests = 5 * per10 + n;
    u
}

impl From<&Observations> for Report {
    fn from(o: &Observations) -> Report {
        let s = &o.seen;
        let persisted: Vec<&String> = o.accepted.iter().filter(|id| s.persisted.contains_key(*id)).collect();
        let delivered: Vec<&String> = persisted.iter().copied().filter(|id| s.delivered.contains_key(*id)).collect();
        let mut throughput = BTreeMap::new();
        throughput.insert("accepted".into(), o.accepted.len() as f64 / o.send_time.as_secs_f64().max(1e-9));
        let pt: Vec<Instant> = persisted.iter().map(|id| s.persisted[*id]).collect();
        let dt: Vec<Instant> = delivered.iter().map(|id| s.delivered[*id]).collect();
        throughput.insert("persisted".into(), rate(&pt, pt.len()));
        throughput.insert("delivered".into(), rate(&dt, dt.len()));
        let mut lat = BTreeMap::new();
        lat.insert(
            "ingest_to_persisted".into(),
            latency(persisted.iter().map(|id| s.persisted[*id].saturating_duration_since(s.sent[*id]))),
        );
        lat.insert(
            "ingest_to_delivered".into(),
            latency(delivered.iter().map(|id| s.delivered[*id].saturating_duration_since(s.sent[*id]))),
        );
        let mut losses = BTreeMap::new();
        losses.insert("accepted_not_persisted".into(), o.accepted.len() - persisted.len());
        losses.insert("persisted_not_delivered".into(), persisted.len() - delivered.len());
        let duplicates = s.webhook_ids.values().map(|c| c.saturating_sub(1)).sum();
        let mut storage = BTreeMap::new();
        storage.insert("raw_bytes".into(), s.raw_bytes as f64);
        storage.insert("stored_bytes".into(), s.stored_bytes as f64);
        storage.insert(
            "stored_pct_of_raw".into(),
            if s.raw_bytes > 0 { 100.0 * s.stored_bytes as f64 / s.raw_bytes as f64 } else { 0.0 },
        );
        let mut usage = modelled_usage(&s.stored_sizes);
        for (k, v) in &o.api_calls {
            usage.count(&format!("loadtest {k}"), *v);
        }
        let n = s.stored_sizes.len() as u64;
        let avg_raw = s.raw_bytes.checked_div(n).unwrap_or(0);
        let naive = cost::naive(&vec![avg_raw + 200; n as usize]);
        let p = Prices::default();
        let ours = cost::per_million(&usage, &p, n);
        let theirs = cost::per_million(&naive, &p, n);
        Report {
            target: o.target.into(),
            rate_asked: o.rate,
            sent: o.sent,
            accepted: o.accepted.len(),
            persisted: persisted.len(),
            delivered: delivered.len(),
            throughput_per_s: throughput,
            latency: lat,
            losses,
            duplicates,
            unverified_deliveries: s.unverified,
            storage,
            cost: CostReport {
                usage,
                dollars_per_million: ours,
                naive_dollars_per_million: theirs,
                ratio_to_naive: if theirs > 0.0 { ours / theirs } else { 0.0 },
            },
        }
    }
}

impl Report {
    /// The human table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let line = |t: &mut String, k: &str, v: String| t.push_str(&format!("  {k:<34} {v}\n"));
        t.push_str(&format!("Form-Bridge load run ({} target, {} /s asked)\n", self.target, self.rate_asked));
        line(&mut t, "sent / accepted", format!("{} / {}", self.sent, self.accepted));
        line(&mut t, "persisted / delivered", format!("{} / {}", self.persisted, self.delivered));
        for (k, v) in &self.throughput_per_s {
            line(&mut t, &format!("{k} per second"), format!("{v:.1}"));
        }
        for (k, l) in &self.latency {
            line(
                &mut t,
                &format!("{k} (ms)"),
                format!("p50 {:.0}  p90 {:.0}  p99 {:.0}  max {:.0}", l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms),
            );
        }
        for (k, v) in &self.losses {
            line(&mut t, &format!("lost: {k}"), v.to_string());
        }
        line(&mut t, "duplicate deliveries (same id)", self.duplicates.to_string());
        line(
            &mut t,
            "stored / raw bytes",
            format!(
                "{:.0} / {:.0} ({:.1}%)",
                self.storage["stored_bytes"], self.storage["raw_bytes"], self.storage["stored_pct_of_raw"]
            ),
        );
        line(
            &mut t,
            "$ per million submissions",
            format!(
                "{:.3} (naive design {:.3}; ratio {:.2})",
                self.cost.dollars_per_million, self.cost.naive_dollars_per_million, self.cost.ratio_to_naive
            ),
        );
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_counts_losses_duplicates_and_latency_from_observations() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut seen = Seen::default();
        for (id, sent, persisted, delivered) in
            [("a", 0, 100, Some(300)), ("b", 10, 210, Some(510)), ("c", 20, 120, None)]
        {
            seen.sent.insert(id.into(), ms(sent));
            seen.persisted.insert(id.into(), ms(persisted));
            if let Some(d) = delivered {
                seen.delivered.insert(id.into(), ms(d));
            }
            seen.stored_sizes.push(900);
        }
        seen.sent.insert("d".into(), ms(30));
        seen.webhook_ids.insert("fb_a_x".into(), 2);
        seen.webhook_ids.insert("fb_b_x".into(), 1);
        seen.raw_bytes = 3000;
        seen.stored_bytes = 900;
        let obs = Observations {
            target: "queue",
            rate: 10.0,
            sent: 4,
            send_time: Duration::from_secs(1),
            accepted: ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect(),
            seen,
            api_calls: BTreeMap::new(),
        };
        let r = Report::from(&obs);
        assert_eq!((r.accepted, r.persisted, r.delivered), (4, 3, 2));
        assert_eq!(r.losses["accepted_not_persisted"], 1);
        assert_eq!(r.losses["persisted_not_delivered"], 1);
        assert_eq!(r.duplicates, 1);
        assert!((r.storage["stored_pct_of_raw"] - 30.0).abs() < 1e-9);
        let d = &r.latency["ingest_to_delivered"];
        assert_eq!(d.count, 2);
        assert!((d.max_ms - 500.0).abs() < 1.0, "{d:?}");
        assert!((r.latency["ingest_to_persisted"].max_ms - 200.0).abs() < 1.0);
        assert!(r.table().contains("lost: accepted_not_persisted"));
    }
}
