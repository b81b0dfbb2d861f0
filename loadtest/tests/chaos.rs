//! The short chaos run: about 500 signed submissions through two instances of every process on
//! an engine of its own, with about 10 faults of every kind (SIGKILL and restart, the engine
//! stopped and unreachable, destinations misbehaving). Asserts counts, never times.

use std::path::PathBuf;

use formbridge_loadtest::chaos::{chaos, ChaosArgs, FaultKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_or_counted_twice_under_faults() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // The process binaries cargo built beside this test (target/<profile>/).
    let bin_dir = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf();
    let workdir = root.join("target/chaos-test");
    let args = ChaosArgs {
        count: 500,
        rate: 20.0,
        faults: 10,
        seed: 7,
        outage_s: 5,
        kinds: vec![FaultKind::Kill, FaultKind::EngineStop, FaultKind::EngineDown, FaultKind::Destination],
        tenants: 4,
        bin_dir: Some(bin_dir),
        moto_server: root.join(".venv/bin/moto_server"),
        workdir: workdir.clone(),
        settle_s: 600,
        report: workdir.join("report.json"),
        env: vec![],
    };
    let r = chaos(&args).await.unwrap();
    println!("{}", r.table());
    // A destination fault finds no well-behaved destination only when every one misbehaves.
    assert!(r.faults.len() >= 9, "the faults were injected: {:?}", r.faults);
    for kind in ["kill", "engine-stop", "engine-down", "destination"] {
        assert!(r.faults_by_kind.get(kind).copied().unwrap_or(0) >= 1, "no {kind} fault: {:?}", r.faults_by_kind);
    }
    assert!(r.restarts.values().sum::<u32>() >= 1);
    assert_eq!(r.given_up_by_senders, 0, "every sender got its submission accepted in the end");
    assert_eq!(r.accepted, 500);
    assert_eq!(r.lost, 0, "a 2xx was answered for a submission that was not stored");
    assert_eq!(r.stored, r.accepted + r.stored_without_2xx);
    assert_eq!(r.undelivered, 0);
    assert!(r.metrics_exact, "metric totals must equal the stored items: {:?}", r.metrics_vs_stored);
    assert_eq!(r.submissions_with_two_ids, 0, "a duplicate delivery must carry the same webhook-id");
    assert_eq!(r.unverified_deliveries, 0);
    // During outages senders were told to come back: a 5xx always says when.
    for (answer, n) in &r.answers {
        let status: u16 = answer.split('+').next().unwrap().parse().unwrap_or(0);
        if status >= 500 {
            assert!(answer.ends_with("+retry-after"), "{n} answers {answer} without Retry-After: {:?}", r.answers);
        }
    }
    assert!(!r.answers.contains_key("timeout"), "ingest always answered within 15 s: {:?}", r.answers);
    assert!(r.convergence_s.is_some(), "the pipeline converged after the last fault");
    assert!(r.ok);
}
