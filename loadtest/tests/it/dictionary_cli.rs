//! `formbridge-loadtest dictionary`: bad settings exit 2 naming the flag; training on the committed
//! sample writes a dictionary within its size.

use std::process::Command;

fn loadtest(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_formbridge-loadtest")).args(args).output().expect("the binary runs")
}

fn sample(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/sample").join(name).display().to_string()
}

#[test]
fn bad_dictionary_settings_exit_2_naming_the_flag() {
    let dir = std::env::temp_dir().join(format!("fb-dict-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("d.bin").display().to_string();
    let missing = dir.join("missing.jsonl").display().to_string();
    let broken = dir.join("broken.jsonl");
    std::fs::write(&broken, "{\"fields\":{}}\nnot json\n").unwrap();
    let broken = broken.display().to_string();
    let train = sample("train.jsonl");
    for (args, flag) in [
        (vec!["dictionary", "train", "--corpus", &train, "--d", "9", "--out", &out], "--d"),
        (vec!["dictionary", "train", "--corpus", &train, "--size", "1000", "--k", "2000", "--out", &out], "--k"),
        (vec!["dictionary", "train", "--corpus", &missing, "--out", &out], "--corpus"),
        (vec!["dictionary", "train", "--corpus", &broken, "--out", &out], "--corpus"),
        (vec!["dictionary", "sweep", "--train", &train, "--heldout", &missing], "--heldout"),
        (vec!["dictionary", "sweep", "--train", &train, "--heldout", &train, "--qualities", "12"], "--qualities"),
    ] {
        let o = loadtest(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&format!("invalid setting {flag}")), "{args:?}: {stderr}");
    }
    assert!(!std::path::Path::new(&out).exists(), "nothing is written on a bad setting");
}

#[test]
fn training_on_the_sample_writes_a_dictionary_within_its_size() {
    let out = std::env::temp_dir().join(format!("fb-dict-{}.bin", ulid::Ulid::new()));
    let o = loadtest(&[
        "dictionary",
        "train",
        "--corpus",
        &sample("train.jsonl"),
        "--size",
        "4096",
        "--k",
        "256",
        "--out",
        &out.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dict = std::fs::read(&out).unwrap();
    assert!(!dict.is_empty() && dict.len() <= 4096, "{} bytes", dict.len());
}
