//! etcd robustness test reports: `watch.json` (the committed history as
//! watch responses) and, optionally, `operations.json` (client requests).
//!
//! The watch responses of all requests in a file are merged by revision,
//! because one file can hold several watches that overlap. A watch of the
//! whole keyspace from revision 1 (as `client-1` of the Kubernetes report
//! records) is the complete committed history. From operations files only the
//! conditional writes that lost their compare-and-swap are taken: the
//! successful ones are already in the history, and requests that ended in an
//! error have an unknown outcome.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::json::{FieldError, Node};
use super::{
    for_each_json_line, Action, Format, Input, ObjectRef, Origin, Trace, TraceError, TraceOp,
    CLUSTER_NAMESPACE, CORE_GROUP, DEFAULT_VERSION,
};

/// A conditional write that lost its compare-and-swap in the recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostCas {
    pub client_id: u64,
    /// The mod revision the request expected; 0 means "create if absent".
    pub expected_revision: u64,
    /// Store revision the response reported: the request ran after every
    /// event up to this revision.
    pub at_revision: u64,
    /// True for a conditional delete, false for a conditional put.
    pub delete: bool,
}

const PUT: &str = "put-operation";
const DELETE: &str = "delete-operation";

/// One event of the merged history.
struct HistoryEvent {
    key: String,
    delete: bool,
    value: Option<String>,
    line: usize,
    path: String,
}

pub(super) fn parse(path: &Path, text: &str, operations: &[Input]) -> Result<Trace, TraceError> {
    let mut trace = Trace::new(path, Format::EtcdWatch);
    let mut history: BTreeMap<u64, Vec<HistoryEvent>> = BTreeMap::new();

    for_each_json_line(path, text, |line, value| {
        read_watch_line(value, line, &mut history)
            .map_err(|error| error.into_trace_error(path, line))
    })?;
    if history.is_empty() {
        return Err(TraceError::Invalid {
            path: path.to_path_buf(),
            message: "the watch responses hold no put or delete events".to_string(),
        });
    }
    note_revision_gaps(&mut trace, &history);

    let mut lost = Vec::new();
    for input in operations {
        trace.paths.push(input.path.clone());
        let mut skipped = Vec::new();
        for_each_json_line(&input.path, &input.text, |line, value| {
            match read_operation_line(value)
                .map_err(|error| error.into_trace_error(&input.path, line))?
            {
                Operation::Lost {
                    key,
                    lost: cas,
                    value,
                } => lost.push((
                    cas,
                    key,
                    value,
                    Origin {
                        line: Some(line),
                        path: input.path.display().to_string(),
                    },
                )),
                Operation::Skipped(reason) => skipped.push(reason),
            }
            Ok(())
        })?;
        for reason in skipped {
            trace.skip(reason);
        }
    }
    // A lost write ran after every event up to its response revision. The
    // sort is stable, so lost writes at one revision keep their file order.
    lost.sort_by_key(|(cas, ..)| cas.at_revision);
    // A lost write is checked against the state at its response revision,
    // which is known only while the history has every revision from the
    // first write on.
    let complete_until = complete_until(&history);
    let (lost, unknown): (Vec<_>, Vec<_>) = lost
        .into_iter()
        .partition(|(cas, ..)| cas.at_revision <= complete_until);
    if !unknown.is_empty() {
        trace.notes.push(format!(
            "{} lost writes ran after revision {complete_until}, past which the watch history \
             has gaps, so they were not replayed",
            unknown.len()
        ));
        for _ in &unknown {
            trace.skip("etcd write that lost its compare-and-swap after a gap in the history");
        }
    }
    let mut lost = lost.into_iter().peekable();

    for (revision, events) in history {
        while let Some((cas, ..)) = lost.peek() {
            if cas.at_revision >= revision {
                break;
            }
            let (cas, key, value, origin) = lost.next().expect("peeked");
            push_lost(&mut trace, cas, &key, value, origin);
        }
        for event in events {
            let Some(object) = object_for_key(&event.key) else {
                trace.skip(format!("etcd key outside /registry/: {}", event.key));
                continue;
            };
            trace.ops.push(TraceOp {
                action: if event.delete {
                    Action::Delete
                } else {
                    Action::Apply
                },
                object,
                body: event.value.map(String::into_bytes),
                etcd_revision: Some(revision),
                origin: Origin {
                    line: Some(event.line),
                    path: event.path,
                },
            });
        }
    }
    for (cas, key, value, origin) in lost {
        push_lost(&mut trace, cas, &key, value, origin);
    }
    Ok(trace)
}

fn push_lost(trace: &mut Trace, cas: LostCas, key: &str, value: Option<String>, origin: Origin) {
    let Some(object) = object_for_key(key) else {
        trace.skip(format!("etcd key outside /registry/: {key}"));
        return;
    };
    trace.ops.push(TraceOp {
        action: Action::LostCas(cas),
        object,
        body: value.map(String::into_bytes),
        etcd_revision: None,
        origin,
    });
}

/// A field error on a line. The caller turns it into a trace error with
/// the file's path.
enum LineError {
    Field(FieldError),
    Conflict { field: String, message: String },
}

impl From<FieldError> for LineError {
    fn from(error: FieldError) -> Self {
        LineError::Field(error)
    }
}

impl LineError {
    fn into_trace_error(self, path: &Path, line: usize) -> TraceError {
        match self {
            LineError::Field(error) => TraceError::field(path, Some(line), error),
            LineError::Conflict { field, message } => TraceError::Field {
                path: path.to_path_buf(),
                line: Some(line),
                field,
                message,
            },
        }
    }
}

fn read_watch_line(
    value: &Value,
    line: usize,
    history: &mut BTreeMap<u64, Vec<HistoryEvent>>,
) -> Result<(), LineError> {
    let root = Node::root(value);
    // The request is not needed to rebuild the history, but its presence is
    // what makes this a watch line.
    root.child("Request")?;
    root.get("Responses")?;

    for response in root.children("Responses")? {
        for event in response.children("Events")? {
            let kind = event.str_field("Type")?;
            let delete = match kind {
                PUT => false,
                DELETE => true,
                other => {
                    return Err(LineError::Conflict {
                        field: format!("{}.Type", event.path),
                        message: format!(
                            "unknown event type {other:?}, expected {PUT:?} or {DELETE:?}"
                        ),
                    })
                }
            };
            let key = event.str_field("Key")?.to_string();
            let revision = event.u64_field("Revision")?;
            let value = if delete {
                None
            } else {
                Some(event.child("Value")?.str_field("Value")?.to_string())
            };

            let events = history.entry(revision).or_default();
            match events.iter().find(|seen| seen.key == key) {
                Some(seen) if seen.delete != delete || seen.value != value => {
                    return Err(LineError::Conflict {
                        field: event.path.clone(),
                        message: format!(
                            "revision {revision} of key {key} differs from the event \
                             recorded on line {} ({})",
                            seen.line, seen.path
                        ),
                    });
                }
                Some(_) => {}
                None => events.push(HistoryEvent {
                    key,
                    delete,
                    value,
                    line,
                    path: event.path.clone(),
                }),
            }
        }
    }
    Ok(())
}

/// Returns the last revision up to which the history contains every
/// revision from revision 2, the first write of an etcd cluster. Returns 1
/// when the history starts later.
fn complete_until(history: &BTreeMap<u64, Vec<HistoryEvent>>) -> u64 {
    let mut expected = 2;
    for &revision in history.keys() {
        if revision > expected {
            break;
        }
        expected = revision + 1;
    }
    expected - 1
}

fn note_revision_gaps(trace: &mut Trace, history: &BTreeMap<u64, Vec<HistoryEvent>>) {
    let (Some(first), Some(last)) = (history.keys().next(), history.keys().next_back()) else {
        return;
    };
    let span = last - first + 1;
    let missing = span - history.len() as u64;
    if missing > 0 {
        trace.notes.push(format!(
            "{missing} of the revisions {first}..={last} are missing from the watch \
             responses (outside the watched prefix, or between two watch requests)"
        ));
    }
}

enum Operation {
    Lost {
        key: String,
        lost: LostCas,
        value: Option<String>,
    },
    Skipped(String),
}

fn read_operation_line(value: &Value) -> Result<Operation, LineError> {
    let root = Node::root(value);
    let client_id = root.u64_field("ClientId")?;
    let input = root.child("Input")?;
    let output = root.child("Output")?;

    let kind = input.str_field("Type")?;
    if kind != "txn" {
        return Ok(Operation::Skipped(format!("etcd {kind} request")));
    }
    if output.opt_str_field("Error")?.is_some() {
        return Ok(Operation::Skipped(
            "etcd request that failed with an error (outcome unknown)".to_string(),
        ));
    }
    let txn = input.child("Txn")?;
    let result = output.child("Txn")?;
    if !result.bool_field("Failure")? {
        return Ok(Operation::Skipped(
            "etcd write that succeeded (already in the watch history)".to_string(),
        ));
    }

    let conditions = txn.children("Conditions")?;
    let [condition] = conditions.as_slice() else {
        return Ok(Operation::Skipped(format!(
            "etcd transaction with {} conditions",
            conditions.len()
        )));
    };
    let operations = txn.children("OperationsOnSuccess")?;
    let [operation] = operations.as_slice() else {
        return Ok(Operation::Skipped(format!(
            "etcd transaction with {} operations",
            operations.len()
        )));
    };

    let key = condition.str_field("Key")?.to_string();
    let expected_revision = condition.u64_field("ExpectedRevision")?;
    let at_revision = output.u64_field("Revision")?;
    let (delete, target, value) = match operation.str_field("Type")? {
        PUT => {
            let put = operation.child("Put")?;
            let value = put.child("Value")?.str_field("Value")?.to_string();
            (false, put.str_field("Key")?.to_string(), Some(value))
        }
        DELETE => {
            let delete = operation.child("Delete")?;
            (true, delete.str_field("Key")?.to_string(), None)
        }
        other => {
            return Ok(Operation::Skipped(format!(
                "etcd transaction with a {other}"
            )))
        }
    };
    if target != key {
        return Ok(Operation::Skipped(
            "etcd transaction whose condition and operation name different keys".to_string(),
        ));
    }

    Ok(Operation::Lost {
        key,
        lost: LostCas {
            client_id,
            expected_revision,
            at_revision,
            delete,
        },
        value,
    })
}

/// Maps a Kubernetes storage key to an object: `/registry/<resource>/<name>`
/// is cluster-scoped, `/registry/<resource>/<namespace>/<name>` namespaced.
/// A first segment with a dot is an API group, as the API server stores
/// custom resources under `/registry/<group>/<resource>/...`; keys of other
/// shapes return `None`.
fn object_for_key(key: &str) -> Option<ObjectRef> {
    let rest = key.strip_prefix("/registry/")?;
    let mut segments: Vec<&str> = rest.split('/').collect();
    if segments.iter().any(|segment| segment.is_empty()) {
        return None;
    }
    let group = if segments.len() > 2 && segments[0].contains('.') {
        segments.remove(0).to_string()
    } else {
        CORE_GROUP.to_string()
    };
    let (resource, namespace, name) = match segments.as_slice() {
        [resource, name] => (*resource, CLUSTER_NAMESPACE, *name),
        [resource, namespace, name] => (*resource, *namespace, *name),
        _ => return None,
    };
    Some(ObjectRef {
        group,
        version: DEFAULT_VERSION.to_string(),
        kind: resource.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch_line(events: &str) -> String {
        format!(
            r#"{{"Request":{{"Key":"","Revision":1,"WithPrefix":true}},"Responses":[{{"Events":[{events}],"IsProgressNotify":false,"Revision":9}}]}}"#
        )
    }

    fn put(key: &str, value: &str, revision: u64) -> String {
        format!(
            r#"{{"Type":"put-operation","Key":"{key}","Value":{{"Value":"{value}","Hash":0}},"Revision":{revision}}}"#
        )
    }

    fn delete(key: &str, revision: u64) -> String {
        format!(
            r#"{{"Type":"delete-operation","Key":"{key}","Value":{{"Value":"","Hash":0}},"Revision":{revision}}}"#
        )
    }

    fn parse_text(text: &str) -> Result<Trace, TraceError> {
        parse(Path::new("watch.json"), text, &[])
    }

    #[test]
    fn maps_registry_keys() {
        let pod = object_for_key("/registry/pods/default/abc").unwrap();
        assert_eq!(pod.group, "core");
        assert_eq!(pod.kind, "pods");
        assert_eq!(pod.namespace, "default");
        assert_eq!(pod.name, "abc");

        let node = object_for_key("/registry/minions/node-1").unwrap();
        assert_eq!(node.namespace, CLUSTER_NAMESPACE);
        assert_eq!(node.name, "node-1");

        let custom = object_for_key("/registry/example.com/widgets/ns1/w").unwrap();
        assert_eq!(custom.group, "example.com");
        assert_eq!(custom.kind, "widgets");
        assert_eq!(custom.namespace, "ns1");

        assert_eq!(object_for_key("tombstone"), None);
        assert_eq!(object_for_key("/registry/pods//x"), None);
        assert_eq!(object_for_key("/registry/a/b/c/d"), None);
    }

    #[test]
    fn merges_overlapping_watches_in_revision_order() {
        let first = watch_line(
            &[
                put("/registry/pods/default/a", "1", 2),
                put("/registry/pods/default/b", "2", 3),
            ]
            .join(","),
        );
        let second = watch_line(
            &[
                put("/registry/pods/default/b", "2", 3),
                delete("/registry/pods/default/a", 4),
            ]
            .join(","),
        );
        let trace = parse_text(&format!("{first}\n{second}\n")).unwrap();

        let revisions: Vec<_> = trace
            .ops
            .iter()
            .map(|op| op.etcd_revision.unwrap())
            .collect();
        assert_eq!(revisions, [2, 3, 4]);
        assert_eq!(trace.ops[2].action, Action::Delete);
        assert_eq!(trace.ops[0].body.as_deref(), Some(&b"1"[..]));
        assert!(trace.notes.is_empty(), "{:?}", trace.notes);

        let state = trace.final_state();
        assert_eq!(state.len(), 1);
        assert_eq!(state.keys().next().unwrap().name, "b");
    }

    #[test]
    fn conflicting_revision_is_error() {
        let first = watch_line(&put("/registry/pods/default/a", "1", 2));
        let second = watch_line(&put("/registry/pods/default/a", "5", 2));
        let err = parse_text(&format!("{first}\n{second}\n")).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("watch.json:2: field `Responses[0].Events[0]`"),
            "{message}"
        );
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn missing_revision_names_line_and_field() {
        let line = watch_line(
            r#"{"Type":"put-operation","Key":"/registry/pods/default/a","Value":{"Value":"1"}}"#,
        );
        let err = parse_text(&format!("\n{line}\n")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "watch.json:2: field `Responses[0].Events[0].Revision`: missing field"
        );
    }

    #[test]
    fn skips_keys_outside_registry_and_notes_gaps() {
        let line = watch_line(
            &[
                put("/registry/pods/default/a", "1", 2),
                put("tombstone", "true", 5),
            ]
            .join(","),
        );
        let trace = parse_text(&line).unwrap();
        assert_eq!(trace.ops.len(), 1);
        assert_eq!(trace.skipped.values().sum::<u64>(), 1);
        assert_eq!(trace.notes.len(), 1);
        assert!(
            trace.notes[0].starts_with("2 of the revisions 2..=5"),
            "{:?}",
            trace.notes
        );
    }

    #[test]
    fn empty_history_is_error() {
        let err = parse_text(&watch_line("")).unwrap_err();
        assert!(err.to_string().contains("no put or delete events"), "{err}");
    }

    #[test]
    fn lost_cas_is_placed_after_its_response_revision() {
        let history = watch_line(
            &[
                put("/registry/pods/default/a", "1", 2),
                put("/registry/pods/default/a", "2", 3),
                put("/registry/pods/default/a", "3", 4),
            ]
            .join(","),
        );
        let lost = r#"{"ClientId":7,"Input":{"Type":"txn","Txn":{"Conditions":[{"Key":"/registry/pods/default/a","ExpectedRevision":2}],"OperationsOnSuccess":[{"Type":"put-operation","Put":{"Key":"/registry/pods/default/a","Value":{"Value":"9"}}}]}},"Output":{"Txn":{"Failure":true},"Revision":3,"Error":""}}"#;
        let ok = r#"{"ClientId":7,"Input":{"Type":"txn","Txn":{"Conditions":[]}},"Output":{"Txn":{"Failure":false},"Revision":3,"Error":""}}"#;
        let failed = r#"{"ClientId":7,"Input":{"Type":"txn"},"Output":{"Txn":null,"Revision":0,"Error":"context deadline exceeded"}}"#;
        let range = r#"{"ClientId":7,"Input":{"Type":"range"},"Output":{"Revision":4,"Error":""}}"#;
        let operations = Input {
            path: "operations.json".into(),
            format: Format::EtcdOperations,
            text: [lost, ok, failed, range].join("\n"),
        };
        let trace = parse(Path::new("watch.json"), &history, &[operations]).unwrap();

        assert_eq!(trace.ops.len(), 4);
        let Action::LostCas(cas) = &trace.ops[2].action else {
            panic!(
                "expected the lost write third, got {:?}",
                trace.ops[2].action
            );
        };
        assert_eq!(cas.expected_revision, 2);
        assert_eq!(cas.at_revision, 3);
        assert_eq!(cas.client_id, 7);
        assert!(!cas.delete);
        assert_eq!(trace.ops[2].origin.line, Some(1));
        assert_eq!(trace.skipped.values().sum::<u64>(), 3);
        assert_eq!(trace.paths.len(), 2);
    }

    #[test]
    fn complete_history_ends_at_first_gap() {
        let events = |revisions: &[u64]| {
            let puts: Vec<String> = revisions
                .iter()
                .map(|revision| put("/registry/pods/default/a", "1", *revision))
                .collect();
            let mut history = BTreeMap::new();
            read_watch_line(
                &serde_json::from_str(&watch_line(&puts.join(","))).unwrap(),
                1,
                &mut history,
            )
            .map_err(|_| ())
            .unwrap();
            history
        };
        assert_eq!(complete_until(&events(&[2, 3, 4])), 4);
        assert_eq!(complete_until(&events(&[2, 3, 5, 6])), 3);
        assert_eq!(complete_until(&events(&[4, 5])), 1);
    }

    #[test]
    fn lost_cas_after_gap_is_skipped() {
        let history = watch_line(
            &[
                put("/registry/pods/default/a", "1", 2),
                put("/registry/pods/default/a", "3", 4),
            ]
            .join(","),
        );
        let lost = r#"{"ClientId":7,"Input":{"Type":"txn","Txn":{"Conditions":[{"Key":"/registry/pods/default/a","ExpectedRevision":2}],"OperationsOnSuccess":[{"Type":"put-operation","Put":{"Key":"/registry/pods/default/a","Value":{"Value":"9"}}}]}},"Output":{"Txn":{"Failure":true},"Revision":4,"Error":""}}"#;
        let operations = Input {
            path: "operations.json".into(),
            format: Format::EtcdOperations,
            text: lost.to_string(),
        };
        let trace = parse(Path::new("watch.json"), &history, &[operations]).unwrap();
        assert_eq!(trace.ops.len(), 2);
        assert!(trace.ops.iter().all(|op| op.action == Action::Apply));
        assert_eq!(trace.skipped.values().sum::<u64>(), 1);
        assert!(
            trace
                .notes
                .iter()
                .any(|note| note.starts_with("1 lost writes ran after revision 2")),
            "{:?}",
            trace.notes
        );
    }

    #[test]
    fn operation_missing_failure_flag_is_error() {
        let history = watch_line(&put("/registry/pods/default/a", "1", 2));
        let line = r#"{"ClientId":7,"Input":{"Type":"txn","Txn":{}},"Output":{"Txn":{},"Revision":3,"Error":""}}"#;
        let operations = Input {
            path: "operations.json".into(),
            format: Format::EtcdOperations,
            text: line.to_string(),
        };
        let err = parse(Path::new("watch.json"), &history, &[operations]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "operations.json:1: field `Output.Txn.Failure`: missing field"
        );
    }
}
