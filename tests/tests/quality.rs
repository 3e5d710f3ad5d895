//! Quality of what ingest derives, measured on real data through the
//! collector's offline tools (`patterns`, `classify`), which run the ingest
//! code: grouping accuracy on the loghub-2k systems beside the published
//! Drain and Brain figures, and precision and recall per class on the
//! labelled request set. Both print their tables (`--nocapture`) and
//! assert the targets of issue 4.
//!
//! The data is `LOGFERRY_DATA` (which must then hold it), or the workplace's
//! `shared/data` beside the repository. The data is not part of the
//! repository (its licences restrict redistribution): where it cannot be
//! found the tests say so and measure nothing, except with `CI` set (as
//! `.ci/run` sets it), where that is a failure.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use logferry_e2e::bin;

fn data() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("LOGFERRY_DATA").map(PathBuf::from) {
        assert!(
            dir.join("loghub").is_dir() && dir.join("security").is_dir(),
            "LOGFERRY_DATA={} has no loghub/ and security/",
            dir.display()
        );
        return Some(dir);
    }
    let beside = logferry_e2e::package_dir().join("../../shared/data");
    if beside.join("loghub").is_dir() {
        return Some(beside);
    }
    // In CI missing data is a failure, not a pass.
    assert!(
        std::env::var_os("CI").is_none(),
        "quality data not found: LOGFERRY_DATA is unset and {} has no loghub/",
        beside.display()
    );
    eprintln!(
        "quality data not found (set LOGFERRY_DATA to the shared data directory, looked in {}): not measured",
        beside.display()
    );
    None
}

/// Runs `logferry-collector <tool>` with `input` on standard input.
fn tool(name: &str, input: &str) -> Vec<String> {
    let mut child = Command::new(bin("logferry-collector"))
        .arg(name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the collector's offline tool");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("tool output");
    writer.join().expect("writer").expect("write input");
    assert!(out.status.success(), "{name} failed");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(str::to_string)
        .collect()
}

/// RFC 4180 rows (quoted fields may hold commas, quotes and newlines).
fn csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, '\r') => {}
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// Grouping accuracy: the share of lines whose predicted group holds
/// exactly the lines of their true group.
fn grouping_accuracy(predicted: &[String], truth: &[String]) -> f64 {
    let mut by_pred: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_truth: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, (p, t)) in predicted.iter().zip(truth).enumerate() {
        by_pred.entry(p).or_default().push(i);
        by_truth.entry(t).or_default().push(i);
    }
    let correct = (0..truth.len())
        .filter(|&i| by_pred[predicted[i].as_str()] == by_truth[truth[i].as_str()])
        .count();
    correct as f64 / truth.len() as f64
}

#[test]
fn pattern_grouping_beats_drain_on_every_loghub_system() {
    // (system, Drain reproduced on the corrected ground truth, Brain), from
    // loghub/BASELINES.md.
    let baselines = [
        ("Android", 0.8305, 0.9605),
        ("Apache", 1.0, 1.0),
        ("BGL", 0.9625, 0.986),
        ("HDFS", 0.9975, 0.9975),
        ("HealthApp", 0.78, 1.0),
        ("OpenSSH", 0.789, 1.0),
        ("Proxifier", 0.5265, 1.0),
        ("Spark", 0.92, 0.9975),
    ];
    let Some(data) = data() else { return };
    let dir = data.join("loghub");
    println!("| system | logferry | Drain | Brain |\n|---|---:|---:|---:|");
    let mut sum = 0.0;
    let mut below = Vec::new();
    for (system, drain, brain) in baselines {
        let path = dir
            .join(system)
            .join(format!("{system}_2k.log_structured_corrected.csv"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let rows = csv(&text);
        let header = &rows[0];
        let col = |name: &str| header.iter().position(|h| h == name).expect("column");
        let (content, template) = (col("Content"), col("EventTemplate"));
        let rows = &rows[1..];
        let messages: String = rows.iter().map(|r| format!("{}\n", r[content])).collect();
        let truth: Vec<String> = rows.iter().map(|r| r[template].clone()).collect();
        let predicted: Vec<String> = tool("patterns", &messages)
            .into_iter()
            .map(|l| l.split('\t').next().expect("id").to_string())
            .collect();
        assert_eq!(
            predicted.len(),
            truth.len(),
            "{system}: one output line per input line"
        );
        let ga = grouping_accuracy(&predicted, &truth);
        println!("| {system} | {ga:.4} | {drain:.4} | {brain:.4} |");
        sum += ga;
        // Drain is perfect on Apache; nothing can be above it there.
        if ga < drain || (ga == drain && drain < 1.0) {
            below.push(system);
        }
    }
    let average = sum / baselines.len() as f64;
    println!("| average | {average:.4} | 0.8508 | 0.9927 |");
    assert!(below.is_empty(), "not above Drain on {below:?}");
    assert!(
        average >= 0.95,
        "average grouping accuracy {average:.4} < 0.95"
    );
}

#[derive(serde::Deserialize)]
struct Labelled {
    label: String,
    subtype: Option<String>,
}

#[test]
fn attack_classification_meets_its_targets() {
    let Some(data) = data() else { return };
    let text =
        std::fs::read_to_string(data.join("security/requests.jsonl")).expect("requests.jsonl");
    let labels: Vec<Labelled> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("labelled request"))
        .collect();
    let predicted: Vec<String> = tool("classify", &text)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("verdict");
            v["class"].as_str().expect("class").to_string()
        })
        .collect();
    assert_eq!(predicted.len(), labels.len());

    println!("| class | recall | precision | target recall |\n|---|---:|---:|---:|");
    let mut failures = Vec::new();
    for (class, target) in [
        ("sqli", 0.95),
        ("xss", 0.95),
        ("path_traversal", 0.95),
        ("cmd_injection", 0.9),
        ("scanner", 0.9),
        ("bot", 0.9),
    ] {
        let tp = labels
            .iter()
            .zip(&predicted)
            .filter(|(l, p)| l.label == class && *p == class)
            .count();
        let actual = labels.iter().filter(|l| l.label == class).count();
        let flagged = predicted.iter().filter(|p| *p == class).count();
        let recall = tp as f64 / actual as f64;
        let precision = tp as f64 / flagged.max(1) as f64;
        println!("| {class} | {recall:.3} | {precision:.3} | {target} |");
        if recall < target {
            failures.push(format!("{class} recall {recall:.3} < {target}"));
        }
    }
    let plain = ["real_access_log", "rest_api", "static_asset", "page_view"];
    let benign: Vec<(&Labelled, &String)> = labels
        .iter()
        .zip(&predicted)
        .filter(|(l, _)| l.label == "benign")
        .collect();
    let flagged = benign.iter().filter(|(_, p)| *p != "benign").count();
    let plain_all = benign
        .iter()
        .filter(|(l, _)| plain.contains(&l.subtype.as_deref().unwrap_or("")))
        .count();
    let plain_flagged = benign
        .iter()
        .filter(|(l, p)| plain.contains(&l.subtype.as_deref().unwrap_or("")) && *p != "benign")
        .count();
    let benign_rate = flagged as f64 / benign.len() as f64;
    let plain_rate = plain_flagged as f64 / plain_all as f64;
    println!(
        "benign flagged: {flagged} of {} ({:.2}%); plain traffic flagged: {plain_flagged} of {plain_all} ({:.2}%)",
        benign.len(),
        benign_rate * 100.0,
        plain_rate * 100.0
    );
    if benign_rate > 0.01 {
        failures.push(format!(
            "{:.2}% of benign requests flagged",
            benign_rate * 100.0
        ));
    }
    if plain_rate > 0.002 {
        failures.push(format!(
            "{:.2}% of plain traffic flagged",
            plain_rate * 100.0
        ));
    }
    assert!(failures.is_empty(), "{failures:?}");
}
