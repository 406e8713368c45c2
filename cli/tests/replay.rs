//! Runs the `watchstore` binary on each trace format and on malformed input.
//!
//! The files under `tests/data/` are small slices of real recordings; see
//! `data/README.md` at the repository root for their sources.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_watchstore"))
        .args(args)
        .output()
        .expect("the watchstore binary runs")
}

fn run_paths(options: &[&str], paths: &[PathBuf]) -> Output {
    let mut args: Vec<&str> = vec!["replay"];
    args.extend_from_slice(options);
    args.extend(paths.iter().map(|path| path.to_str().expect("UTF-8 path")));
    run(&args)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Parses the JSON summaries printed with `--json`, one per line.
fn summaries(output: &Output) -> Vec<Value> {
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each stdout line is a JSON summary"))
        .collect()
}

/// Writes `text` to a file named after the test, so tests can run in parallel.
fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).expect("the test can write its input file");
    path
}

fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

#[test]
fn default_run_replays_shipped_trace() {
    let output = run(&["replay"]);
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert!(
        text.contains("data/etcd-kubernetes-client-1-watch.json (etcd watch)"),
        "{text}"
    );
    assert!(text.contains("applied       549\n"), "{text}");
    assert!(text.contains("verification  ok"), "{text}");
    assert!(text.contains("(12 objects)"), "{text}");
}

#[test]
fn json_summary_counts_every_event() {
    let output = run(&["replay", "--json", "--watchers", "3"]);
    assert_exit(&output, 0);
    let all = summaries(&output);
    assert_eq!(all.len(), 1);
    let summary = &all[0];
    assert_eq!(summary["format"], "etcd-watch");
    assert_eq!(summary["applied"], 549);
    assert_eq!(summary["rejected"], 0);
    assert_eq!(summary["final_index"], 549);
    // Every watch opens before the first write: all events arrive live.
    assert_eq!(summary["live_events"], 3 * 549);
    assert_eq!(summary["snapshot_events"], 0);
    assert_eq!(summary["latency"]["samples"], 3 * 549);
    assert_eq!(summary["verification"]["ok"], true);
    assert_eq!(summary["verification"]["final_objects"], 12);
}

#[test]
fn scale_replays_copies_in_distinct_namespaces() {
    let output = run(&["replay", "--json", "--scale", "4", "--watchers", "8"]);
    assert_exit(&output, 0);
    let summary = &summaries(&output)[0];
    assert_eq!(summary["scale"], 4);
    assert_eq!(summary["applied"], 4 * 549);
    assert_eq!(summary["live_events"], 8 * 4 * 549);
    assert_eq!(summary["verification"]["final_objects"], 4 * 12);
    assert_eq!(summary["verification"]["watches_checked"], 8);
    assert_eq!(summary["verification"]["ok"], true);
}

#[test]
fn namespace_filter_sees_one_copy() {
    let output = run(&[
        "replay",
        "--json",
        "--scale",
        "2",
        "--filter",
        "namespace=default.1",
    ]);
    assert_exit(&output, 0);
    let summary = &summaries(&output)[0];
    assert_eq!(summary["live_events"], 4 * 549);
    assert_eq!(summary["verification"]["ok"], true);
}

#[test]
fn small_ring_verifies_after_lag() {
    for policy in ["reset", "error"] {
        let output = run(&[
            "replay",
            "--json",
            "--scale",
            "2",
            "--ring-capacity",
            "4",
            "--on-lag",
            policy,
        ]);
        assert_exit(&output, 0);
        let summary = &summaries(&output)[0];
        assert_eq!(summary["verification"]["ok"], true, "{summary}");
    }
}

#[test]
fn etcd_slice_with_operations_rejects_lost_writes() {
    let paths = [
        data("etcd-watch-slice.json"),
        data("etcd-operations-slice.json"),
    ];
    let output = run_paths(&["--json"], &paths);
    assert_exit(&output, 0);
    let summary = &summaries(&output)[0];
    assert_eq!(summary["trace"].as_array().unwrap().len(), 2);
    assert_eq!(summary["applied"], 99);
    // The slice contains four lost updates and two lost deletes of keys that
    // another client had deleted already.
    assert_eq!(summary["lost_cas"]["replayed"], 6);
    assert_eq!(summary["lost_cas"]["rejected"], 4);
    assert_eq!(summary["lost_cas"]["unchanged"], 2);
    assert_eq!(summary["lost_cas"]["accepted"], 0);
    assert_eq!(summary["skipped"]["etcd range request"], 2);
    assert_eq!(summary["verification"]["ok"], true);
}

#[test]
fn audit_slice_replays() {
    let output = run_paths(&["--json"], &[data("audit-slice.log")]);
    assert_exit(&output, 0);
    let summary = &summaries(&output)[0];
    assert_eq!(summary["format"], "audit");
    assert_eq!(summary["applied"], 18);
    assert_eq!(summary["skipped"]["audit delete with status 404"], 2);
    assert_eq!(summary["types"].as_array().unwrap().len(), 2);
    assert_eq!(summary["verification"]["ok"], true);
    assert_eq!(summary["verification"]["final_objects"], 2);
}

#[test]
fn simkube_slice_replays() {
    let output = run_paths(&["--watchers", "2"], &[data("simkube-slice.json")]);
    assert_exit(&output, 0);
    let text = stdout(&output);
    assert!(text.contains("(SimKube trace)"), "{text}");
    assert!(text.contains("apps/Deployment"), "{text}");
    assert!(text.contains("applied       12\n"), "{text}");
    assert!(
        text.contains("final contents match the recording (6 objects)"),
        "{text}"
    );
}

#[test]
fn several_traces_print_one_summary_each() {
    let paths = [data("audit-slice.log"), data("simkube-slice.json")];
    let output = run_paths(&["--json"], &paths);
    assert_exit(&output, 0);
    let all = summaries(&output);
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["format"], "audit");
    assert_eq!(all[1]["format"], "simkube");
}

const WATCH_LINE: &str = r#"{"Request":{"Key":"","Revision":1,"WithPrefix":true},"Responses":[{"Events":[{"Type":"put-operation","Key":"/registry/pods/default/a","Value":{"Value":"1"},"Revision":2},{"Type":"put-operation","Key":"/registry/pods/default/a","Value":{"Value":"2"},"Revision":3}],"Revision":3}]}"#;

#[test]
fn accepted_lost_write_fails_verification() {
    // The recording claims this write lost, yet it expects the key's
    // current revision, so the store commits it.
    let watch = temp_file("accepted-lost-watch.json", WATCH_LINE);
    let operations = temp_file(
        "accepted-lost-operations.json",
        r#"{"ClientId":1,"Input":{"Type":"txn","Txn":{"Conditions":[{"Key":"/registry/pods/default/a","ExpectedRevision":3}],"OperationsOnSuccess":[{"Type":"put-operation","Put":{"Key":"/registry/pods/default/a","Value":{"Value":"9"}}}]}},"Output":{"Txn":{"Failure":true},"Revision":3,"Error":""}}"#,
    );
    let output = run_paths(&[], &[watch, operations]);
    assert_exit(&output, 1);
    let text = stdout(&output);
    assert!(text.contains("verification  FAILED"), "{text}");
    let message = stderr(&output);
    assert!(
        message.contains("the store committed 1 writes that lost their compare-and-swap"),
        "{message}"
    );
}

#[test]
fn bad_json_names_file_line_and_column() {
    let path = temp_file(
        "bad-json.log",
        &format!("{WATCH_LINE}\n{{\"Request\": {{}}, \"Responses\": [}}\n"),
    );
    let output = run_paths(&[], std::slice::from_ref(&path));
    assert_exit(&output, 2);
    let message = stderr(&output);
    assert!(
        message.starts_with(&format!("error: {}:2:", path.display())),
        "{message}"
    );
    assert!(message.contains("invalid JSON"), "{message}");
    assert!(!message.contains("panicked"), "{message}");
}

#[test]
fn missing_field_names_line_and_field() {
    let audit = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","stage":"ResponseComplete","verb":"create","objectRef":{"resource":"roles","namespace":"default","name":"r"},"responseStatus":{"code":201}}"#;
    let broken = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","stage":"ResponseComplete","objectRef":{"resource":"roles","name":"r"}}"#;
    let path = temp_file("missing-field.log", &format!("{audit}\n{broken}\n"));
    let output = run_paths(&[], std::slice::from_ref(&path));
    assert_exit(&output, 2);
    assert_eq!(
        stderr(&output).trim_end(),
        format!("error: {}:2: field `verb`: missing field", path.display())
    );
}

#[test]
fn missing_etcd_revision_names_nested_field() {
    let line = WATCH_LINE.replace(r#","Revision":3}],"#, r#"}],"#);
    let path = temp_file("missing-revision.json", &line);
    let output = run_paths(&[], std::slice::from_ref(&path));
    assert_exit(&output, 2);
    assert_eq!(
        stderr(&output).trim_end(),
        format!(
            "error: {}:1: field `Responses[0].Events[1].Revision`: missing field",
            path.display()
        )
    );
}

#[test]
fn simkube_error_names_json_path() {
    let path = temp_file(
        "simkube-missing-kind.json",
        "{\n  \"events\": [\n    {\"applied_objs\": [{\"apiVersion\": \"v1\", \"metadata\": {\"name\": \"x\"}}]}\n  ]\n}\n",
    );
    let output = run_paths(&[], std::slice::from_ref(&path));
    assert_exit(&output, 2);
    assert_eq!(
        stderr(&output).trim_end(),
        format!(
            "error: {}: field `events[0].applied_objs[0].kind`: missing field",
            path.display()
        )
    );
}

#[test]
fn missing_file_is_reported() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-trace.json");
    let output = run_paths(&[], std::slice::from_ref(&path));
    assert_exit(&output, 2);
    let message = stderr(&output);
    assert!(
        message.starts_with(&format!("error: cannot read {}:", path.display())),
        "{message}"
    );
}

#[test]
fn unknown_format_is_reported() {
    let path = temp_file("unknown-format.json", "{\"hello\": \"world\"}\n");
    let output = run_paths(&[], &[path]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("unknown trace format"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn operations_file_alone_is_rejected() {
    let output = run_paths(&[], &[data("etcd-operations-slice.json")]);
    assert_exit(&output, 2);
    let message = stderr(&output);
    assert!(
        message.contains("need exactly one etcd watch.json"),
        "{message}"
    );
}

#[test]
fn invalid_options_are_rejected() {
    for args in [
        ["replay", "--ring-capacity", "1000"],
        ["replay", "--filter", "everything"],
        ["replay", "--scale", "0"],
        ["replay", "--watchers", "0"],
    ] {
        let output = run(&args);
        assert_exit(&output, 2);
        assert!(
            stderr(&output).contains("invalid value"),
            "{}",
            stderr(&output)
        );
    }
}
