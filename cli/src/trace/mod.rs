//! Recorded control-plane traces and their parsers.
//!
//! Every format is parsed into one [`Trace`]: an ordered list of operations on
//! objects named by [`ObjectRef`]. Parsing does not touch a store, so a bad
//! file is rejected before anything is replayed.

mod audit;
mod etcd;
mod json;
mod simkube;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use etcd::LostCas;
use json::FieldError;

/// Namespace given to cluster-scoped objects, which have none in the
/// recording. Kubernetes namespace names are DNS labels, which cannot contain
/// `_`, so this name never collides with a recorded namespace.
pub const CLUSTER_NAMESPACE: &str = "_cluster";

/// Group of the Kubernetes core API, whose objects have an empty API group.
pub const CORE_GROUP: &str = "core";

/// Version used when the recording names none.
pub const DEFAULT_VERSION: &str = "v1";

/// The trace formats the replayer reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// etcd robustness `watch.json`: JSON lines of watch requests and responses.
    EtcdWatch,
    /// etcd robustness `operations.json`: JSON lines of client requests.
    EtcdOperations,
    /// Kubernetes audit log: JSON lines of `audit.k8s.io` events.
    Audit,
    /// SimKube tracer output: one JSON document with `events[]`.
    Simkube,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::EtcdWatch => "etcd watch",
            Format::EtcdOperations => "etcd operations",
            Format::Audit => "Kubernetes audit log",
            Format::Simkube => "SimKube trace",
        })
    }
}

/// Identity of a recorded object before the replayer places it in a store
/// namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// API group, [`CORE_GROUP`] for the core API.
    pub group: String,
    pub version: String,
    /// Kind as the recording names it: the Kind for SimKube, the plural
    /// resource name (such as `pods`) for etcd keys and audit events, which
    /// carry no Kind.
    pub kind: String,
    /// Namespace, or [`CLUSTER_NAMESPACE`] for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} {}/{}",
            self.group, self.kind, self.namespace, self.name
        )
    }
}

/// Effect of one recorded operation on its object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create only: replayed with an empty expected version.
    Create,
    /// Update of an existing object: replayed with the version the replayer
    /// holds. The recording shows it succeeded, so an object the replayer
    /// does not hold existed before the recording started, and the update is
    /// replayed as a create.
    Update,
    /// Create or replace, as an etcd put or a SimKube apply: an update when
    /// the replayer has a version for the object, else a create.
    Apply,
    /// Delete with the held version and uid.
    Delete,
    /// A conditional write that lost its compare-and-swap in the recording;
    /// the store must reject it too.
    LostCas(LostCas),
}

/// Position of an operation in its file, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// 1-based line for JSON-lines formats.
    pub line: Option<usize>,
    /// Path of the record inside the line or document, such as
    /// `events[3].applied_objs[0]`; empty for a whole line.
    pub path: String,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.path.is_empty()) {
            (Some(line), true) => write!(f, "line {line}"),
            (Some(line), false) => write!(f, "line {line}, {}", self.path),
            (None, _) => f.write_str(&self.path),
        }
    }
}

/// One recorded operation.
#[derive(Clone, Debug)]
pub struct TraceOp {
    pub action: Action,
    pub object: ObjectRef,
    /// Object body: the JSON object for SimKube, the value bytes for etcd,
    /// `None` for audit events, which record no bodies at Metadata level.
    pub body: Option<Vec<u8>>,
    /// etcd revision of this put or delete in the recorded history.
    pub etcd_revision: Option<u64>,
    pub origin: Origin,
}

/// A parsed trace, ready to replay.
#[derive(Debug)]
pub struct Trace {
    /// The files the trace was read from: the main file first.
    pub paths: Vec<PathBuf>,
    pub format: Format,
    pub ops: Vec<TraceOp>,
    /// Records read but not replayed, by reason (such as `get` verbs or
    /// failed requests).
    pub skipped: BTreeMap<String, u64>,
    /// Facts about the input worth printing, such as revision gaps.
    pub notes: Vec<String>,
}

impl Trace {
    fn new(path: &Path, format: Format) -> Self {
        Trace {
            paths: vec![path.to_path_buf()],
            format,
            ops: Vec::new(),
            skipped: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    fn skip(&mut self, reason: impl Into<String>) {
        *self.skipped.entry(reason.into()).or_insert(0) += 1;
    }

    /// Returns the final contents the recording implies: every live object
    /// with its last body. Lost compare-and-swap writes change nothing.
    pub fn final_state(&self) -> BTreeMap<ObjectRef, Option<Vec<u8>>> {
        let mut state = BTreeMap::new();
        for op in &self.ops {
            match op.action {
                Action::Create | Action::Update | Action::Apply => {
                    state.insert(op.object.clone(), op.body.clone());
                }
                Action::Delete => {
                    state.remove(&op.object);
                }
                Action::LostCas(_) => {}
            }
        }
        state
    }
}

/// An unreadable or malformed trace file.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: invalid JSON: {message}", path.display())]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}:{}field `{field}`: {message}", path.display(), line_prefix(*line))]
    Field {
        path: PathBuf,
        line: Option<usize>,
        field: String,
        message: String,
    },
    #[error("{}: unknown trace format: {reason}", path.display())]
    UnknownFormat { path: PathBuf, reason: String },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

fn line_prefix(line: Option<usize>) -> String {
    match line {
        Some(line) => format!("{line}: "),
        None => " ".to_string(),
    }
}

impl TraceError {
    fn field(path: &Path, line: Option<usize>, error: FieldError) -> Self {
        TraceError::Field {
            path: path.to_path_buf(),
            line,
            field: error.field,
            message: error.message,
        }
    }

    fn json(path: &Path, line_offset: usize, error: &serde_json::Error) -> Self {
        // serde_json appends " at line L column C" to its message; the
        // position is printed in front instead.
        let message = error.to_string();
        let message = match message.rfind(" at line ") {
            Some(at) => message[..at].to_string(),
            None => message,
        };
        TraceError::Json {
            path: path.to_path_buf(),
            line: line_offset + error.line(),
            column: error.column(),
            message,
        }
    }
}

/// Parses each line of a JSON-lines file, skipping blank lines, and hands
/// each value with its 1-based line number to `parse_line`.
fn for_each_json_line(
    path: &Path,
    text: &str,
    mut parse_line: impl FnMut(usize, &Value) -> Result<(), TraceError>,
) -> Result<(), TraceError> {
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(line).map_err(|error| TraceError::json(path, index, &error))?;
        parse_line(index + 1, &value)?;
    }
    Ok(())
}

/// Reads the first JSON value of `text` to tell the format apart.
fn detect_format(path: &Path, text: &str) -> Result<Format, TraceError> {
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let first = match values.next() {
        None => {
            return Err(TraceError::Invalid {
                path: path.to_path_buf(),
                message: "the file is empty".to_string(),
            })
        }
        Some(Err(error)) => return Err(TraceError::json(path, 0, &error)),
        Some(Ok(value)) => value,
    };
    let Some(object) = first.as_object() else {
        return Err(TraceError::UnknownFormat {
            path: path.to_path_buf(),
            reason: "the first JSON value is not an object".to_string(),
        });
    };

    if object.contains_key("Request") && object.contains_key("Responses") {
        return Ok(Format::EtcdWatch);
    }
    if object.contains_key("ClientId") && object.contains_key("Input") {
        return Ok(Format::EtcdOperations);
    }
    let api_version = object.get("apiVersion").and_then(Value::as_str);
    if api_version.is_some_and(|version| version.starts_with("audit.k8s.io/")) {
        return Ok(Format::Audit);
    }
    if object.get("events").is_some_and(Value::is_array) {
        return Ok(Format::Simkube);
    }
    Err(TraceError::UnknownFormat {
        path: path.to_path_buf(),
        reason: "expected etcd watch lines (Request, Responses), etcd operations lines \
                 (ClientId, Input), audit.k8s.io events, or a SimKube trace (events[])"
            .to_string(),
    })
}

fn read(path: &Path) -> Result<String, TraceError> {
    std::fs::read_to_string(path).map_err(|source| TraceError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A file read and classified, but not yet parsed.
pub struct Input {
    pub path: PathBuf,
    pub format: Format,
    text: String,
}

impl Input {
    pub fn open(path: &Path) -> Result<Input, TraceError> {
        let text = read(path)?;
        let format = detect_format(path, &text)?;
        Ok(Input {
            path: path.to_path_buf(),
            format,
            text,
        })
    }

    /// Classifies text that did not come from a file, such as a built-in
    /// trace; `path` names it in messages.
    pub fn from_text(path: &Path, text: String) -> Result<Input, TraceError> {
        let format = detect_format(path, &text)?;
        Ok(Input {
            path: path.to_path_buf(),
            format,
            text,
        })
    }

    /// Parses a file holding a trace on its own. etcd operations files
    /// cannot stand alone and go through [`Input::parse_etcd`].
    pub fn parse(self) -> Result<Trace, TraceError> {
        match self.format {
            Format::EtcdWatch => self.parse_etcd(Vec::new()),
            Format::Audit => audit::parse(&self.path, &self.text),
            Format::Simkube => simkube::parse(&self.path, &self.text),
            Format::EtcdOperations => Err(TraceError::Invalid {
                path: self.path,
                message: "an etcd operations file records requests, some with unknown \
                          outcome, so it cannot be replayed alone: pass the watch.json of \
                          the same run with it"
                    .to_string(),
            }),
        }
    }

    /// Parses an etcd watch file and merges the lost compare-and-swap writes
    /// of the given operations files into its history.
    pub fn parse_etcd(self, operations: Vec<Input>) -> Result<Trace, TraceError> {
        etcd::parse(&self.path, &self.text, &operations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(text: &str) -> Result<Format, TraceError> {
        detect_format(Path::new("t.json"), text)
    }

    #[test]
    fn detects_each_format() {
        assert_eq!(
            detect(r#"{"Request":{},"Responses":[]}"#).unwrap(),
            Format::EtcdWatch
        );
        assert_eq!(
            detect(r#"{"ClientId":1,"Input":{}}"#).unwrap(),
            Format::EtcdOperations
        );
        assert_eq!(
            detect(r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1"}"#).unwrap(),
            Format::Audit
        );
        assert_eq!(
            detect("{\n \"version\": 2,\n \"events\": []\n}").unwrap(),
            Format::Simkube
        );
    }

    #[test]
    fn detect_rejects_unknown_object() {
        let err = detect(r#"{"hello":1}"#).unwrap_err();
        assert!(matches!(err, TraceError::UnknownFormat { .. }), "{err}");
    }

    #[test]
    fn detect_reports_json_position() {
        let err = detect("\n\n{\"Request\": }").unwrap_err();
        match err {
            TraceError::Json { line, column, .. } => {
                assert_eq!(line, 3);
                assert_eq!(column, 13);
            }
            other => panic!("expected a JSON error, got {other}"),
        }
    }

    #[test]
    fn detect_rejects_empty_file() {
        let err = detect("  \n").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn field_error_message_names_line_and_field() {
        let err = TraceError::Field {
            path: PathBuf::from("a.log"),
            line: Some(4),
            field: "objectRef.name".to_string(),
            message: "missing field".to_string(),
        };
        assert_eq!(
            err.to_string(),
            "a.log:4: field `objectRef.name`: missing field"
        );
    }
}
