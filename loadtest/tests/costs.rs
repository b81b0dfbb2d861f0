//! Cost per tenant against the meter. A load run through the persister, aggregator and delivery
//! worker (in this process: the only test of its binary, so nothing else is metered here), with
//! the units every request bills attributed to tenants and flushed to their cost items. The
//! tenants' items plus the unattributed part must add up to what was metered, unit by unit,
//! within 5%; the system's own items must hold exactly that sum; and the tenants' shares must
//! follow their traffic.

use std::collections::BTreeMap;
use std::time::Duration;

use formbridge_loadtest::rate::RateSpec;
use formbridge_loadtest::run::RunArgs;
use formbridge_shared::costs::{self, Units};
use formbridge_shared::secrets::Keyring;
use formbridge_shared::store::DataStore;
use tokio_util::sync::CancellationToken;

fn metered(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<&'static str, f64> {
    let d = |k: &str| (after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0)) as f64;
    BTreeMap::from([
        ("write_units", d("write_units")),
        ("read_units", d("read_units_tenths") / 10.0),
        ("stream_reads", d("stream_reads")),
        ("sqs_requests", d("sqs_requests")),
        ("events", d("events")),
    ])
}

#[tokio::test]
async fn tenant_costs_add_up_to_the_metered_bill() {
    let (aws, mut names, _) = formbridge_shared::testing::fresh_stack().await;
    names.cost_flush_seconds = 1;
    let keys = Keyring::generate_spec("lt1");
    let keyring = Keyring::parse(&keys, "test").unwrap();
    let stop = CancellationToken::new();
    let started = time::OffsetDateTime::now_utc();
    // The window starts now: what setting up the stack counted is not in it.
    costs::discard_pending();
    let before = formbridge_shared::billing::snapshot();

    // The persister starts first, so the process's one flusher runs with its clients (as it
    // would in its own process), which the role check below sees.
    let persister = {
        let (aws, names, stop) = (aws.clone(), names.clone(), stop.clone());
        tokio::spawn(async move {
            formbridge_persister::run(formbridge_persister::Config::for_resources(names), aws, stop).await.unwrap();
        })
    };
    while !costs::flusher_started() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let aggregator = {
        let c = formbridge_aggregator::Config::for_resources(names.clone());
        let (aws, stop) = (aws.clone(), stop.clone());
        tokio::spawn(async move { formbridge_aggregator::run(c, aws, stop).await.unwrap() })
    };
    let delivery = {
        let mut c = formbridge_delivery::Config::for_resources(names.clone(), &keys);
        c.allow_loopback = true;
        let (aws, stop) = (aws.clone(), stop.clone());
        tokio::spawn(async move { formbridge_delivery::run(c, aws, stop).await.unwrap() })
    };

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("fb-cost-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut args = RunArgs::small(format!("127.0.0.1:{port}").parse().unwrap(), dir.join("report.json"));
    args.rate = RateSpec::Max;
    args.max_backlog = 100;
    args.count = 400;
    args.tenants = 5;
    args.skew = 1.5;
    args.settle_s = 120;
    args.ceiling_s = 0.0;
    let report = formbridge_loadtest::run::run(&args, &aws, &names, &keyring).await.unwrap();
    stop.cancel();
    persister.await.unwrap();
    aggregator.await.unwrap();
    delivery.await.unwrap();
    // Every process ran here: what they counted after the persister's last flush goes now.
    costs::flush(&aws.dynamodb, &names.table).await.unwrap();
    let after = formbridge_shared::billing::snapshot();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&args.report).unwrap()).unwrap();
    assert_eq!(v["delivered"], 400, "{}", report.table());

    // Read back: each tenant's hours, and the system's.
    let store = DataStore::new(aws.dynamodb.clone(), names.table.clone());
    let tenants = store.list_tenants().await.unwrap();
    assert_eq!(tenants.len(), 5);
    let from = started - time::Duration::hours(1);
    let to = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let mut per_tenant: Vec<(String, Units)> = Vec::new();
    let mut attributed = Units::default();
    for t in &tenants {
        let mut u = Units::default();
        for item in costs::hours(&aws.dynamodb, &names.table, Some(t), from, to).await.unwrap() {
            u.merge(&item.units);
        }
        attributed.merge(&u);
        per_tenant.push((t.to_string(), u));
    }
    let mut system = Units::default();
    let mut unattributed = Units::default();
    for item in costs::hours(&aws.dynamodb, &names.table, None, from, to).await.unwrap() {
        system.merge(&item.units);
        unattributed.merge(&item.unattributed);
    }
    let mut sum = attributed;
    sum.merge(&unattributed);
    assert_eq!(sum, system, "the system's items hold exactly the tenants' and the unattributed units");

    let metered = metered(&before, &after);
    let counted = sum.by_unit();
    let shares = attributed.by_unit();
    println!("unit: metered / attributed to tenants + unattributed");
    for (unit, m) in &metered {
        let c = counted.get(unit).copied().unwrap_or(0.0);
        println!(
            "{unit}: {m} / {} + {}",
            shares.get(unit).copied().unwrap_or(0.0),
            c - shares.get(unit).copied().unwrap_or(0.0)
        );
        assert!((c - m).abs() <= 0.05 * m.max(1.0), "{unit}: metered {m}, counted {c}");
    }
    // Most of the bill is some tenant's: every write but leases and checkpoints (the control
    // table), and the queue traffic that carried submissions.
    let share = |unit: &str| shares[unit] / metered[unit].max(1.0);
    println!(
        "attributed: writes {:.3}, sqs {:.3}, stream reads {:.3}",
        share("write_units"),
        share("sqs_requests"),
        share("stream_reads")
    );
    assert!(share("write_units") >= 0.8, "writes attributed: {:.3}", share("write_units"));
    assert!(share("sqs_requests") >= 0.5, "SQS requests attributed: {:.3}", share("sqs_requests"));

    // Shares follow traffic: the tenant with the most submissions costs the most.
    let mut by_subs: Vec<(String, f64)> =
        per_tenant.iter().map(|(t, u)| (t.clone(), u.get(costs::Line::WriteSubmission) as f64)).collect();
    by_subs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let prices = formbridge_shared::billing::Prices::default();
    let top = per_tenant.iter().max_by(|a, b| a.1.dollars(&prices).total_cmp(&b.1.dollars(&prices))).unwrap();
    assert_eq!(top.0, by_subs[0].0);
    for (_, u) in &per_tenant {
        assert!(u.get(costs::Line::WriteSubmission) > 0 && u.get(costs::Line::WriteDelivery) > 0);
        assert!(u.get(costs::Line::SqsPersister) > 0 && u.get(costs::Line::StreamReads) > 0);
    }

    formbridge_shared::testing::assert_role_allows("persister", "PersisterRole");
    formbridge_shared::testing::assert_role_allows("aggregator", "AggregatorRole");
    formbridge_shared::testing::assert_role_allows("delivery", "DeliveryRole");
}
