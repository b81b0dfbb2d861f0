//! A short load run inside the test suite: a few hundred submissions straight onto the ingest
//! queue, through the persister and the delivery worker (in this process), to the built-in
//! receiver. Nothing may be lost, everything must be delivered, and the report file must parse.

use formbridge_loadtest::rate::RateSpec;
use formbridge_loadtest::run::RunArgs;
use formbridge_shared::secrets::Keyring;
use tokio_util::sync::CancellationToken;

/// Enough submissions that what the pipeline pays per second (lease renewals, checkpoints,
/// metric writes per tenant and bucket) is spread as it is in a sustained run.
const N: usize = 900;

#[tokio::test]
async fn a_short_run_loses_nothing_and_delivers_everything() {
    let (aws, names, _) = formbridge_shared::testing::fresh_stack().await;
    let keys = Keyring::generate_spec("lt1");
    let keyring = Keyring::parse(&keys, "test").unwrap();
    let stop = CancellationToken::new();

    let persister = {
        let (aws, names, stop) = (aws.clone(), names.clone(), stop.clone());
        tokio::spawn(async move {
            formbridge_persister::run(formbridge_persister::Config::for_resources(names), aws, stop).await.unwrap();
        })
    };
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
    let dir = std::env::temp_dir().join(format!("fb-lt-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut args = RunArgs::small(format!("127.0.0.1:{port}").parse().unwrap(), dir.join("report.json"));
    // Closed loop at the pipeline's own sustained maximum (never more than 150 waiting), where the
    // goals on counts per submission apply.
    args.rate = RateSpec::Max;
    args.max_backlog = 150;
    args.count = N;
    args.duration_s = 120;
    args.tenants = 8;
    args.settle_s = 120;
    args.ceiling_s = 1.0;
    args.seed = 3;
    // Real, human-written text (the committed held-out sample, never trained on).
    args.corpus = Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/sample/heldout.jsonl"));
    let report = formbridge_loadtest::run::run(&args, &aws, &names, &keyring).await.unwrap();
    println!("{}", report.table());
    stop.cancel();
    persister.await.unwrap();
    aggregator.await.unwrap();
    delivery.await.unwrap();

    // Every AWS operation each process sent is allowed by its role in the template.
    formbridge_shared::testing::assert_role_allows("persister", "PersisterRole");
    formbridge_shared::testing::assert_role_allows("aggregator", "AggregatorRole");
    formbridge_shared::testing::assert_role_allows("delivery", "DeliveryRole");

    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&args.report).unwrap()).unwrap();
    assert_eq!(v["sent"], N);
    assert_eq!(v["accepted"], N);
    assert_eq!(v["persisted"], N, "{v:#}");
    assert_eq!(v["delivered"], N, "{v:#}");
    assert_eq!(v["losses"]["accepted_not_persisted"], 0);
    assert_eq!(v["losses"]["persisted_not_delivered"], 0);
    assert_eq!(v["unverified_deliveries"], 0);
    assert!(v["latency"]["ingest_to_delivered"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert!(v["storage"]["stored_pct_of_raw"].as_f64().unwrap() < 100.0);
    assert!(v["cost"]["dollars_per_million"].as_f64().unwrap() > 0.0);
    // Requests were metered in this process: the persister's writes and the delivery worker's
    // queue sends at least.
    let metered = &v["cost"]["metered_requests_per_submission"];
    assert!(metered["dynamodb:BatchWriteItem"].as_f64().unwrap() > 0.0, "{metered:#}");
    assert!(metered["sqs:ReceiveMessage"].as_f64().unwrap() > 0.0, "{metered:#}");
    // Handled delivery messages are deleted in batches, never one request each.
    assert!(metered["sqs:DeleteMessageBatch"].as_f64().unwrap() > 0.0, "{metered:#}");
    assert!(metered.get("sqs:DeleteMessage").is_none(), "{metered:#}");
    // The delivery budget, in counted units (not times): at most 1 write unit, 0.5 read units
    // and 0.35 SQS requests per delivery (each submission here has one destination and succeeds
    // at its first attempt). Before this design: 3, 2 and about 1.2.
    let per = &v["delivery_cost"]["per_delivery"];
    let unit = |k: &str| per[k].as_f64().unwrap();
    // A duplicate message (at least once) that reaches the receiver costs at most two more
    // writes (its refused create, and the record's conditional update on the attempt path).
    let dups = v["duplicates"].as_f64().unwrap();
    assert!(unit("write_units") > 0.0 && unit("write_units") <= 1.0 + 2.0 * dups / N as f64, "{per:#}");
    assert!(unit("read_units") > 0.0 && unit("read_units") <= 0.5, "{per:#}");
    assert!(unit("sqs_requests") > 0.0 && unit("sqs_requests") <= 0.35, "{per:#}");
    // The fan-out packs a stream batch's first attempts into shared queue messages (up to 50
    // deliveries each), so the delivery queue's send, receive and delete come to a few hundredths
    // of a request per delivery; one message per delivery would be at least 0.3.
    assert!(unit("sqs_requests") <= 0.1, "deliveries are not sharing queue messages: {per:#}");
    // Every stage's requests and billed units are metered end to end: the persister's batch
    // writes, the aggregator's metric updates, the delivery records, the stream reads.
    let ps = &v["per_submission"];
    let f = |k: &str| ps[k].as_f64().unwrap();
    assert!(metered["dynamodb:UpdateItem"].as_f64().unwrap() > 0.0, "the aggregator wrote metrics: {metered:#}");
    assert!(metered["dynamodb:PutItem"].as_f64().unwrap() >= 1.0, "one delivery record each: {metered:#}");
    let requests: f64 = metered.as_object().unwrap().values().map(|x| x.as_f64().unwrap()).sum();
    assert!((f("requests") - requests).abs() < 1e-9, "{ps:#}");
    // At least a submission item and a delivery record each.
    assert!(f("write_units") >= 2.0, "{ps:#}");
    // Against the goals (at the pipeline's sustained maximum, which this closed loop is): AWS
    // requests per submission at most 2.0, and write units at most 2.1, that is one for the
    // submission item, one for its delivery record, the metrics and checkpoints amortised.
    // What the pipeline's batching decides is asserted with 10% of room, because lingers and
    // batch sizes move with timing (runs here measure 1.90-1.98 requests): a change that
    // unbatches a stage fails it. The submission item's own units are the codec's and the item
    // layout's, and follow the mix of form sizes (a 12 KiB application is 4 units whatever the
    // pipeline does), so the total is reported, not asserted; the pipeline's share is, and the
    // storage bands below check the item's.
    let requests_goal = formbridge_loadtest::report::goals::REQUESTS_PER_SUBMISSION;
    assert!(f("requests") <= requests_goal * 1.1, "{} requests per submission: {metered:#}", f("requests"));
    let pipeline_units = f("write_units") - f("submission_write_units");
    let pipeline_goal = formbridge_loadtest::report::goals::PIPELINE_WRITE_UNITS_PER_SUBMISSION;
    assert!(pipeline_units <= pipeline_goal * 1.1, "{pipeline_units} write units beyond the submission item: {ps:#}");
    assert!(f("stream_reads") > 0.0 && f("sqs_requests") > 0.0, "{ps:#}");
    // Storage by band, from the items on the stream: the codec beats plain brotli at the same
    // quality on the same real payloads, and a form of 1-2 KiB is one write unit.
    let bands = v["storage_by_band"].as_array().unwrap();
    let band = |name: &str| bands.iter().find(|b| b["band"] == name).unwrap_or_else(|| panic!("no {name} band: {v:#}"));
    let mid = band("1-4 KiB");
    assert!(mid["items"].as_u64().unwrap() > 0);
    assert!(
        mid["payload_saved_pct"].as_f64().unwrap() > mid["plain_brotli_saved_pct"].as_f64().unwrap() + 5.0,
        "{mid:#}"
    );
    assert_eq!(band("1-2 KiB")["write_units_per_item"].as_f64().unwrap(), 1.0, "{bands:#?}");
    // The dollars are the metered units at the price table, nothing else.
    let (u, p) = (&v["cost"]["usage"], &v["cost"]["prices"]);
    let g = |o: &serde_json::Value, k: &str| o[k].as_f64().unwrap();
    let dollars = g(u, "write_units") * g(p, "per_million_write_units")
        + g(u, "read_units") * g(p, "per_million_read_units")
        + g(u, "stream_reads") * g(p, "per_million_stream_reads")
        + g(u, "sqs_requests") * g(p, "per_million_sqs_requests")
        + g(u, "events") * g(p, "per_million_events");
    let per_million = v["cost"]["dollars_per_million"].as_f64().unwrap();
    assert!((per_million - dollars / N as f64).abs() < 1e-9, "{per_million} vs {}", dollars / N as f64);
    // CPU was read from /proc for the process the stages ran in.
    assert!(v["cpu_ms_per_1000"].as_object().unwrap().values().all(|x| x.as_f64().unwrap() > 0.0), "{v:#}");
    // The ceiling was measured on the same engine, and every goal has a verdict.
    assert!(v["ceiling"]["batch_write_items_per_s"].as_f64().unwrap() > 0.0, "{v:#}");
    assert!(v["ceiling"]["send_message_batch_msgs_per_s"].as_f64().unwrap() > 0.0, "{v:#}");
    assert!(v["share_of_ceiling"]["persisted_vs_batch_write"].as_f64().unwrap() > 0.0);
    let goals = v["goals"].as_array().unwrap();
    assert_eq!(goals.len(), 7);
    // No tenant grows in a short run: the shard balance goal says so instead of a verdict.
    let (hot, goals): (Vec<_>, Vec<_>) = goals.iter().partition(|g| g["name"] == "hot_tenant_shard_max_over_mean");
    assert_eq!(hot.len(), 1);
    assert!(hot[0]["met"].is_null() && hot[0]["verdict"].as_str().unwrap().starts_with("not measured"), "{:#}", hot[0]);
    assert_eq!(v["shard_growths"].as_array().map(Vec::len), Some(0));
    // At --rate max every goal on counts is judged; latency (the backlog over the rate in a
    // closed loop) is shown, not judged.
    for g in goals {
        let timed = g["name"].as_str().unwrap().starts_with("p99_");
        assert_eq!(g["met"].is_boolean(), !timed, "{g:#}");
        assert!(g["measured"].is_number(), "{g:#}");
    }
}
