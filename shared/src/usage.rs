//! What each component of the pipeline costs, in the units AWS bills: DynamoDB write units,
//! read units (in tenths, so eventually consistent reads stay integral) and SQS requests.
//!
//! moto reports every ConsumedCapacity as 1.0, so the units are computed from item sizes by
//! [`crate::capacity`] at the call that causes them. Each is counted twice: as the Prometheus
//! counter `formbridge_usage_total{component, unit}` (scraped by the load run from processes it
//! did not start) and in a process-wide tally readable through [`snapshot`] (for processes running
//! inside the load run or a test).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// A billed unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unit {
    WriteUnits,
    /// Read units times ten.
    ReadUnitsTenths,
    SqsRequests,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::WriteUnits => "write_units",
            Unit::ReadUnitsTenths => "read_units_tenths",
            Unit::SqsRequests => "sqs_requests",
        }
    }

    pub fn parse(s: &str) -> Option<Unit> {
        [Unit::WriteUnits, Unit::ReadUnitsTenths, Unit::SqsRequests].into_iter().find(|u| u.as_str() == s)
    }
}

static TALLY: Mutex<BTreeMap<(&'static str, Unit), u64>> = Mutex::new(BTreeMap::new());

/// Counts `amount` of `unit` against `component` (e.g. `"delivery"`).
pub fn record(component: &'static str, unit: Unit, amount: u64) {
    if amount == 0 {
        return;
    }
    metrics::counter!("formbridge_usage_total", "component" => component, "unit" => unit.as_str()).increment(amount);
    *TALLY.lock().unwrap_or_else(PoisonError::into_inner).entry((component, unit)).or_insert(0) += amount;
}

/// Write units of putting (or updating to) an item of `size` bytes.
pub fn write(component: &'static str, size: usize) {
    record(component, Unit::WriteUnits, crate::capacity::write_units(size));
}

/// Read units of reading `size` bytes (0 for a missing item: still billed as the minimum).
pub fn read(component: &'static str, size: usize, strongly_consistent: bool) {
    record(component, Unit::ReadUnitsTenths, crate::capacity::read_units_tenths(size, strongly_consistent));
}

/// Every count so far, by `(component, unit)`. Counts only grow: diff two snapshots.
pub fn snapshot() -> BTreeMap<(&'static str, Unit), u64> {
    TALLY.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_accumulate_per_component() {
        let before = snapshot();
        write("usage-test", 1025);
        read("usage-test", 100, false);
        record("usage-test", Unit::SqsRequests, 3);
        let after = snapshot();
        let d = |u| after.get(&("usage-test", u)).unwrap_or(&0) - before.get(&("usage-test", u)).unwrap_or(&0);
        assert_eq!(d(Unit::WriteUnits), 2);
        assert_eq!(d(Unit::ReadUnitsTenths), 5);
        assert_eq!(d(Unit::SqsRequests), 3);
        assert_eq!(Unit::parse("sqs_requests"), Some(Unit::SqsRequests));
    }
}
