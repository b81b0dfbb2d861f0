//! Folding stream records into per-bucket deltas. Pure: the same records always give the same
//! deltas, which is what lets a failed transaction be rebuilt and retried.
//!
//! Counted: a submission INSERT (never a MODIFY: a rewrite of the same submission is not a new
//! one), into the hour and day of its `received_at`, for the tenant and, inside the same item,
//! for its form (one item per tenant and bucket, whatever the number of forms: one write each). Delivery
//! outcomes: a delivery record whose status becomes `succeeded` or `failed`, and each new
//! delivery attempt (attempts, latency), into the hour and day the change happened. Everything
//! else (our own metric items, TTL expiries, removals, other entities) is ignored.

use std::collections::{BTreeMap, HashMap};

use formbridge_shared::attrs::metrics as mt;
pub use formbridge_shared::buckets::Granularity;
use formbridge_shared::capacity::{item_size, write_units};
use formbridge_shared::delivery::{RecordChange, Status};
use formbridge_shared::keys::{self, Entity, ItemKey};
use formbridge_shared::stream::record::padded_seq;
use formbridge_shared::stream::{Change, ChangeKind};
use formbridge_shared::submission::SubmissionFields;
use formbridge_shared::{FormId, TenantId};
use time::OffsetDateTime;

/// One metric item: a tenant's hour or day.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bucket {
    pub tenant: TenantId,
    pub granularity: Granularity,
    /// Start of the hour or day, epoch seconds (UTC).
    pub start: i64,
}

impl Bucket {
    pub fn key(&self) -> ItemKey {
        let at = OffsetDateTime::from_unix_timestamp(self.start).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        match self.granularity {
            Granularity::Hour => keys::hourly_metrics(&self.tenant, at),
            Granularity::Day => keys::daily_metrics(&self.tenant, at.date()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryDelta {
    pub succeeded: u64,
    pub failed: u64,
    pub attempts: u64,
    pub latency_ms: u64,
    /// Record changes with new attempts, by the latency bucket of the latest attempt.
    pub latency_histogram: [u64; mt::LATENCY_BUCKETS],
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormDelta {
    pub submissions: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub write_units: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    pub submissions: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub write_units: u64,
    /// Per form: submissions, raw bytes, stored bytes, write units.
    pub forms: BTreeMap<String, FormDelta>,
    /// Outcomes per destination.
    pub deliveries: BTreeMap<String, DeliveryDelta>,
    /// First and last folded sequence numbers (padded), for the replay guard.
    pub first_seq: String,
    pub last_seq: String,
}

impl Delta {
    fn touch(&mut self, seq: &str) {
        let p = padded_seq(seq);
        if self.first_seq.is_empty() {
            self.first_seq = p.clone();
        }
        self.last_seq = p;
    }
}

fn start_of(granularity: Granularity, t: OffsetDateTime) -> i64 {
    let s = t.unix_timestamp();
    match granularity {
        Granularity::Hour => s - s.rem_euclid(3600),
        Granularity::Day => s - s.rem_euclid(86_400),
    }
}

/// Folds records into deltas. `skip(bucket, padded_seq)` drops records a bucket already holds
/// (see the replay guard); pass `|_, _| false` to fold everything.
pub fn fold(records: &[Change], skip: impl Fn(&Bucket, &str) -> bool) -> BTreeMap<Bucket, Delta> {
    let mut out: BTreeMap<Bucket, Delta> = BTreeMap::new();
    for r in records {
        let seq = padded_seq(&r.seq);
        match (&r.entity, r.kind, &r.new) {
            (Entity::Submission { tenant, .. }, ChangeKind::Insert, Some(new)) => {
                // An item neither layout can read (a codec byte from a newer persister, say: upgrade
                // readers first) is skipped rather than stalling the shard, loudly, as an
                // unreadable delivery record is.
                let f = match SubmissionFields::read(new) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::error!(error = %e, "a submission in the stream is unreadable; not counted");
                        metrics::counter!("aggregator_unreadable_records_total").increment(1);
                        continue;
                    }
                };
                let Ok(at) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(f.received_ms) * 1_000_000) else {
                    continue;
                };
                let form = FormId::parse(f.form).ok();
                let stored = item_size(new) as u64;
                let raw = f.raw_size;
                let wcu = write_units(stored as usize);
                for g in [Granularity::Hour, Granularity::Day] {
                    let b = Bucket { tenant: tenant.clone(), granularity: g, start: start_of(g, at) };
                    if skip(&b, &seq) {
                        continue;
                    }
                    let d = out.entry(b).or_default();
                    d.touch(&r.seq);
                    d.submissions += 1;
                    d.raw_bytes += raw;
                    d.stored_bytes += stored;
                    d.write_units += wcu;
                    if let Some(f) = &form {
                        let fd = d.forms.entry(f.to_string()).or_default();
                        fd.submissions += 1;
                        fd.raw_bytes += raw;
                        fd.stored_bytes += stored;
                        fd.write_units += wcu;
                    }
                }
            }
            (Entity::Delivery { tenant, dest, .. }, ChangeKind::Insert | ChangeKind::Modify, Some(new)) => {
                // Outcomes and attempts both come from the record: a first attempt lives inside
                // it, and each later attempt advances its count.
                let change = match RecordChange::read(r.old.as_ref(), new) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "a delivery record in the stream is unreadable; not counted");
                        metrics::counter!("aggregator_unreadable_records_total").increment(1);
                        continue;
                    }
                };
                let attempts = u64::from(change.new_attempts());
                let dd = DeliveryDelta {
                    succeeded: u64::from(change.outcome() == Some(Status::Succeeded)),
                    failed: u64::from(change.outcome() == Some(Status::Failed)),
                    attempts,
                    latency_ms: if attempts > 0 { change.latency_ms } else { 0 },
                    latency_histogram: std::array::from_fn(|i| {
                        u64::from(attempts > 0 && i == mt::latency_bucket(change.latency_ms))
                    }),
                };
                if dd != DeliveryDelta::default() {
                    add_delivery(&mut out, &skip, tenant, r, &seq, &dest.to_string(), &dd);
                }
            }
            _ => {}
        }
    }
    out
}

/// Adds one delivery outcome to the tenant's hour and day of the change.
fn add_delivery(
    out: &mut BTreeMap<Bucket, Delta>,
    skip: &impl Fn(&Bucket, &str) -> bool,
    tenant: &TenantId,
    r: &Change,
    seq: &str,
    dest: &str,
    dd: &DeliveryDelta,
) {
    let at =
        r.created_s.and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok()).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    for g in [Granularity::Hour, Granularity::Day] {
        let b = Bucket { tenant: tenant.clone(), granularity: g, start: start_of(g, at) };
        if skip(&b, seq) {
            continue;
        }
        let d = out.entry(b).or_default();
        d.touch(&r.seq);
        let e = d.deliveries.entry(dest.to_owned()).or_default();
        e.succeeded += dd.succeeded;
        e.failed += dd.failed;
        e.attempts += dd.attempts;
        e.latency_ms += dd.latency_ms;
        for (a, b) in e.latency_histogram.iter_mut().zip(dd.latency_histogram) {
            *a += b;
        }
    }
}

/// Splits records into runs whose folds touch at most `max_buckets` buckets, which bounds the
/// memory and the writes in flight of one fold.
pub fn chunks(records: &[Change], max_buckets: usize) -> Vec<&[Change]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut seen: HashMap<Bucket, ()> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        let touched = fold(std::slice::from_ref(r), |_, _| false);
        let new = touched.keys().filter(|b| !seen.contains_key(*b)).count();
        if seen.len() + new > max_buckets && i > start {
            out.push(&records[start..i]);
            start = i;
            seen.clear();
        }
        for b in touched.into_keys() {
            seen.insert(b, ());
        }
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use formbridge_shared::stream::record::Item;
    use formbridge_shared::{DestinationId, SubmissionId};

    fn submission(seq: &str, tenant: &str, form: &str, received_at: &str, kind: ChangeKind) -> Change {
        let id = SubmissionId::new();
        let t = TenantId::parse(tenant).unwrap();
        let k = keys::submission(&t, 1, &id);
        let received = OffsetDateTime::parse(received_at, &time::format_description::well_known::Rfc3339).unwrap();
        let new: Item = SubmissionFields {
            site: "www.example.com",
            form,
            received_ms: formbridge_shared::submission::epoch_ms(received),
            raw_size: 2000,
            codec: formbridge_shared::codec::Codec::Identity,
            payload: &[0; 700],
            expires_at: 1_900_000_000,
        }
        .to_item(k.clone());
        Change {
            seq: seq.into(),
            kind,
            entity: Entity::classify(&k.pk, &k.sk),
            new: Some(new),
            old: None,
            created_s: Some(0),
        }
    }

    /// A record image: status, attempts made, and the last attempt's latency.
    fn record_image(sub: SubmissionId, dest: DestinationId, status: Status, attempts: u16) -> Item {
        let mut r = formbridge_shared::delivery::DeliveryRecord {
            tenant: TenantId::parse("acme").unwrap(),
            shard: 0,
            submission: sub,
            destination: dest,
            status,
            attempts,
            round_start: 0,
            next_attempt_ms: 0,
            form_id: "contact".into(),
            created_ms: 0,
            updated_ms: 0,
            last_status: None,
            last_error: None,
            last_latency_ms: Some(120),
            reason: None,
            claim: None,
            first_attempt: None,
            expires_at: 1_900_000_000,
        };
        if status == Status::Failed {
            r.reason = Some(formbridge_shared::delivery::FailureReason::Exhausted);
        }
        r.to_item()
    }

    fn delivery(seq: &str, dest: DestinationId, old: Option<(Status, u16)>, new: (Status, u16)) -> Change {
        let sub = SubmissionId::new();
        let k = keys::delivery(&TenantId::parse("acme").unwrap(), 0, &sub, &dest);
        Change {
            seq: seq.into(),
            kind: if old.is_some() { ChangeKind::Modify } else { ChangeKind::Insert },
            entity: Entity::classify(&k.pk, &k.sk),
            new: Some(record_image(sub, dest, new.0, new.1)),
            old: old.map(|(st, n)| record_image(sub, dest, st, n)),
            created_s: Some(1_795_593_600),
        }
    }

    #[test]
    fn submissions_fold_into_the_tenants_hour_and_day_with_each_form_inside() {
        let records = vec![
            submission("1", "acme", "contact", "2026-11-25T08:10:00Z", ChangeKind::Insert),
            submission("2", "acme", "contact", "2026-11-25T08:50:00Z", ChangeKind::Insert),
            submission("3", "acme", "quote", "2026-11-25T09:05:00Z", ChangeKind::Insert),
            // A rewrite, a TTL expiry and a removal are not new submissions.
            submission("4", "acme", "quote", "2026-11-25T09:05:00Z", ChangeKind::Modify),
            submission("5", "acme", "quote", "2026-11-25T09:05:00Z", ChangeKind::TtlExpiry),
            submission("6", "acme", "quote", "2026-11-25T09:05:00Z", ChangeKind::Remove),
        ];
        let deltas = fold(&records, |_, _| false);
        let day = deltas.iter().find(|(b, _)| b.granularity == Granularity::Day).unwrap().1;
        assert_eq!(day.submissions, 3);
        assert_eq!(day.raw_bytes, 6000);
        let counts: BTreeMap<&str, u64> = day.forms.iter().map(|(f, d)| (f.as_str(), d.submissions)).collect();
        assert_eq!(counts, BTreeMap::from([("contact", 2), ("quote", 1)]));
        assert_eq!((day.forms["contact"].raw_bytes, day.forms["contact"].write_units), (4000, 2));
        assert!(day.stored_bytes > 3 * 700 && day.write_units == 3);
        assert_eq!(
            (day.first_seq.as_str(), day.last_seq.as_str()),
            (padded_seq("1").as_str(), padded_seq("3").as_str())
        );
        let hours: Vec<u64> =
            deltas.iter().filter(|(b, _)| b.granularity == Granularity::Hour).map(|(_, d)| d.submissions).collect();
        assert_eq!(hours, vec![2, 1]);
        // 2 hours + 1 day, whatever the number of forms: one item (one write) each.
        assert_eq!(deltas.len(), 3);
    }

    #[test]
    fn delivery_outcomes_count_once_per_transition_and_attempts_by_difference() {
        use Status::*;
        let dest = DestinationId::new();
        let records = vec![
            // A first attempt that succeeded: its record appears, final, with one attempt.
            delivery("1", dest, None, (Succeeded, 1)),
            // A first attempt that failed transiently, then a retry that succeeded.
            delivery("2", dest, None, (Retrying, 1)),
            delivery("3", dest, Some((Retrying, 1)), (Succeeded, 2)),
            // A rewrite of a finished record is neither a second success nor an attempt.
            delivery("4", dest, Some((Succeeded, 2)), (Succeeded, 2)),
            // A replay marks a failed delivery pending: no attempt, no outcome.
            delivery("5", dest, Some((Failed, 2)), (Pending, 2)),
            // Failed without any send (destination deleted).
            delivery("6", DestinationId::new(), None, (Failed, 0)),
        ];
        let deltas = fold(&records, |_, _| false);
        let day = deltas.iter().find(|(b, _)| b.granularity == Granularity::Day).unwrap().1;
        let d = &day.deliveries[&dest.to_string()];
        assert_eq!((d.succeeded, d.failed, d.attempts, d.latency_ms), (2, 0, 3, 3 * 120));
        assert_eq!(day.deliveries.values().map(|d| d.failed).sum::<u64>(), 1);
        assert_eq!(day.submissions, 0);
    }

    #[test]
    fn an_unreadable_record_is_not_counted_as_zero_silently() {
        let mut c = delivery("1", DestinationId::new(), None, (Status::Succeeded, 1));
        if let Some(new) = c.new.as_mut() {
            new.remove(formbridge_shared::attrs::delivery::ATTEMPTS);
        }
        assert!(RecordChange::read(c.old.as_ref(), c.new.as_ref().unwrap()).is_err());
        assert!(fold(&[c], |_, _| false).is_empty());
    }

    #[test]
    fn the_replay_guard_drops_what_a_bucket_already_holds() {
        let records: Vec<_> = (1..=4)
            .map(|i| submission(&i.to_string(), "acme", "contact", "2026-11-25T08:10:00Z", ChangeKind::Insert))
            .collect();
        let hw = padded_seq("2");
        let deltas = fold(&records, |_, seq| seq <= hw.as_str());
        assert!(deltas.values().all(|d| d.submissions == 2 && d.first_seq == padded_seq("3")));
    }

    #[test]
    fn runs_stay_within_a_bounded_number_of_buckets() {
        let records: Vec<_> = (0..300)
            .map(|i| {
                let tenant = format!("t{i:03}");
                submission(&i.to_string(), &tenant, "contact", "2026-11-25T08:10:00Z", ChangeKind::Insert)
            })
            .collect();
        let runs = chunks(&records, 99);
        assert!(runs.len() > 1);
        assert_eq!(runs.iter().map(|r| r.len()).sum::<usize>(), 300);
        for r in runs {
            assert!(fold(r, |_, _| false).len() <= 99);
        }
    }
}
