//! The cost model: what a run's AWS usage costs at on-demand prices, per million submissions,
//! next to the same figure for a naive design. Prices are the documented us-east-1 on-demand
//! prices (check them before quoting); write and read units come from item sizes, because the
//! local engine does not report consumed capacity.

use std::collections::BTreeMap;

use serde::Serialize;

pub use formbridge_shared::billing::Prices;

/// What a run used. Request counts are kept per API for the report; the billed quantities are
/// the unit and chunk totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Calls per API, e.g. `dynamodb:BatchWriteItem`, `sqs:SendMessageBatch`.
    pub requests: BTreeMap<String, u64>,
    pub write_units: u64,
    pub read_units: u64,
    pub stream_reads: u64,
    /// Billed SQS requests (64 KiB chunks).
    pub sqs_requests: u64,
    /// Billed EventBridge events (64 KiB chunks).
    pub events: u64,
}

impl Usage {
    pub fn count(&mut self, api: &str, n: u64) {
        *self.requests.entry(api.to_owned()).or_default() += n;
    }
}

/// Dollars, split by service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Cost {
    pub dynamodb_writes: f64,
    pub dynamodb_reads: f64,
    pub streams: f64,
    pub sqs: f64,
    pub eventbridge: f64,
}

impl Cost {
    pub fn total(&self) -> f64 {
        self.dynamodb_writes + self.dynamodb_reads + self.streams + self.sqs + self.eventbridge
    }
}

pub fn cost(u: &Usage, p: &Prices) -> Cost {
    let m = |n: u64, price: f64| n as f64 * price / 1e6;
    Cost {
        dynamodb_writes: m(u.write_units, p.per_million_write_units),
        dynamodb_reads: m(u.read_units, p.per_million_read_units),
        streams: m(u.stream_reads, p.per_million_stream_reads),
        sqs: m(u.sqs_requests, p.per_million_sqs_requests),
        eventbridge: m(u.events, p.per_million_events),
    }
}

/// Dollars per million submissions for a run that handled `submissions`.
pub fn per_million(u: &Usage, p: &Prices, submissions: u64) -> f64 {
    if submissions == 0 {
        return 0.0;
    }
    cost(u, p).total() * 1e6 / submissions as f64
}

/// Billed 64 KiB chunks of an SQS request or EventBridge event of `bytes`.
pub fn chunks_64k(bytes: u64) -> u64 {
    bytes.div_ceil(64 * 1024).max(1)
}

/// Write units of one write of an item of `bytes`: the shared capacity calculator's.
pub fn write_units(bytes: u64) -> u64 {
    formbridge_shared::capacity::write_units(bytes as usize)
}

/// Read units of one read of `bytes`: the shared capacity calculator's (kept in tenths there).
pub fn read_units(bytes: u64, consistent: bool) -> f64 {
    formbridge_shared::capacity::read_units_tenths(bytes as usize, consistent) as f64 / 10.0
}

/// The naive design the report compares against, for submissions of the given raw sizes (item
/// bytes uncompressed): one PutItem per submission, two UpdateItems for metrics, one SQS send,
/// receive and delete each, and one EventBridge event each.
pub fn naive(raw_item_sizes: &[u64]) -> Usage {
    let mut u = Usage::default();
    let n = raw_item_sizes.len() as u64;
    u.count("dynamodb:PutItem", n);
    u.count("dynamodb:UpdateItem", 2 * n);
    u.count("sqs:SendMessage", n);
    u.count("sqs:ReceiveMessage", n);
    u.count("sqs:DeleteMessage", n);
    u.count("events:PutEvents", n);
    u.write_units = raw_item_sizes.iter().map(|b| write_units(*b)).sum::<u64>() + 2 * n;
    u.sqs_requests = raw_item_sizes.iter().map(|b| 2 + chunks_64k(*b)).sum();
    u.events = n;
    u
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn units_and_chunks_round_up() {
        assert_eq!(write_units(0), 1);
        assert_eq!(write_units(1024), 1);
        assert_eq!(write_units(1025), 2);
        assert_eq!(read_units(4096, true), 1.0);
        assert_eq!(read_units(4097, true), 2.0);
        assert_eq!(read_units(4097, false), 1.0);
        assert_eq!(chunks_64k(1), 1);
        assert_eq!(chunks_64k(65_536), 1);
        assert_eq!(chunks_64k(65_537), 2);
    }

    /// By hand: 1,000,000 submissions of a 3,000-byte item, naive design.
    /// Writes: 3 WCU (PutItem) + 2 WCU (metrics) = 5,000,000 WCU × $0.625/M = $3.125.
    /// SQS: send + receive + delete = 3,000,000 requests × $0.40/M = $1.20.
    /// EventBridge: 1,000,000 events × $1/M = $1.00. Total $5.325 per million.
    #[test]
    fn the_naive_design_costs_what_the_hand_computation_says() {
        let u = naive(&vec![3_000; 1_000_000]);
        assert_eq!(u.write_units, 5_000_000);
        assert_eq!(u.sqs_requests, 3_000_000);
        assert_eq!(u.events, 1_000_000);
        assert_eq!(u.requests["dynamodb:UpdateItem"], 2_000_000);
        let c = cost(&u, &Prices::default());
        assert!((c.dynamodb_writes - 3.125).abs() < 1e-9);
        assert!((c.sqs - 1.20).abs() < 1e-9);
        assert!((c.eventbridge - 1.00).abs() < 1e-9);
        assert!((per_million(&u, &Prices::default(), 1_000_000) - 5.325).abs() < 1e-9);
    }

    /// By hand: 200 submissions; 8 BatchWriteItem calls writing 200 items of 900 bytes (1 WCU
    /// each) = 200 WCU; 20 SendMessageBatch + 20 ReceiveMessage + 20 DeleteMessageBatch = 60 SQS
    /// requests; 10 GetRecords = 10 stream reads; 40 read units.
    /// $ = 200×0.625/M + 40×0.125/M + 10×0.20/M + 60×0.40/M = 0.000125 + 0.000005 + 0.000002
    /// + 0.000024 = $0.000156 for 200, i.e. $0.78 per million.
    #[test]
    fn a_batched_run_costs_what_the_hand_computation_says() {
        let mut u = Usage { write_units: 200, read_units: 40, stream_reads: 10, sqs_requests: 60, ..Usage::default() };
        u.count("dynamodb:BatchWriteItem", 8);
        let c = cost(&u, &Prices::default());
        assert!((c.total() - 0.000156).abs() < 1e-12, "{c:?}");
        assert!((per_million(&u, &Prices::default(), 200) - 0.78).abs() < 1e-9);
        assert_eq!(per_million(&u, &Prices::default(), 0), 0.0);
    }

    proptest! {
        #[test]
        fn cost_is_linear_in_usage(w in 0u64..10_000_000, s in 0u64..10_000_000, k in 1u64..5) {
            let u = Usage { write_units: w, sqs_requests: s, ..Usage::default() };
            let uk = Usage { write_units: w * k, sqs_requests: s * k, ..Usage::default() };
            let p = Prices::default();
            prop_assert!((cost(&uk, &p).total() - k as f64 * cost(&u, &p).total()).abs() < 1e-6);
        }
    }
}
