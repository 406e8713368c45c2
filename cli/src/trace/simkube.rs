//! SimKube tracer recordings in JSON: one document whose `events[]` hold, per
//! time step, the objects applied (`applied_objs`) and deleted
//! (`deleted_objs`). An applied object is created on first sight and replaced
//! afterwards. The tracer strips uids and resourceVersions, so the store
//! assigns versions.
//!
//! Errors name the JSON path (such as `events[3].applied_objs[0]`) but no
//! line, because the document is parsed as a whole.

use std::path::Path;

use serde_json::Value;

use super::json::{FieldError, Node};
use super::{
    Action, Format, ObjectRef, Origin, Trace, TraceError, TraceOp, CLUSTER_NAMESPACE, CORE_GROUP,
};

pub(super) fn parse(path: &Path, text: &str) -> Result<Trace, TraceError> {
    let document: Value =
        serde_json::from_str(text).map_err(|error| TraceError::json(path, 0, &error))?;
    let mut trace = Trace::new(path, Format::Simkube);
    read_document(&document, &mut trace).map_err(|error| TraceError::field(path, None, error))?;
    if trace.ops.is_empty() {
        return Err(TraceError::Invalid {
            path: path.to_path_buf(),
            message: "the trace applies or deletes no objects".to_string(),
        });
    }
    Ok(trace)
}

fn read_document(document: &Value, trace: &mut Trace) -> Result<(), FieldError> {
    let root = Node::root(document);
    root.get("events")?;
    for event in root.children("events")? {
        for object in event.children("applied_objs")? {
            push(trace, Action::Apply, &object)?;
        }
        for object in event.children("deleted_objs")? {
            push(trace, Action::Delete, &object)?;
        }
    }
    Ok(())
}

fn push(trace: &mut Trace, action: Action, object: &Node<'_>) -> Result<(), FieldError> {
    let api_version = object.str_field("apiVersion")?;
    let kind = object.str_field("kind")?;
    let metadata = object.child("metadata")?;
    let name = metadata.str_field("name")?;
    let namespace = metadata
        .opt_str_field("namespace")?
        .unwrap_or(CLUSTER_NAMESPACE);

    // `apps/v1` names group and version; the core API writes only `v1`.
    let (group, version) = match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => (CORE_GROUP, api_version),
    };
    let body = match action {
        Action::Delete => None,
        _ => Some(serde_json::to_vec(object.value).expect("a JSON value always serializes")),
    };
    trace.ops.push(TraceOp {
        action,
        object: ObjectRef {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        },
        body,
        etcd_revision: None,
        origin: Origin {
            line: None,
            path: object.path.clone(),
        },
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(name: &str, replicas: u64) -> String {
        format!(
            r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"{name}","namespace":"dsb"}},"spec":{{"replicas":{replicas}}}}}"#
        )
    }

    fn parse_text(text: &str) -> Result<Trace, TraceError> {
        parse(Path::new("trace.json"), text)
    }

    #[test]
    fn applies_and_deletes_in_order() {
        let text = format!(
            r#"{{"version":2,"events":[{{"ts":1,"applied_objs":[{},{}],"deleted_objs":[]}},{{"ts":2,"applied_objs":[{}],"deleted_objs":[{}]}}]}}"#,
            deployment("a", 1),
            deployment("b", 1),
            deployment("a", 3),
            deployment("b", 1),
        );
        let trace = parse_text(&text).unwrap();

        let actions: Vec<_> = trace.ops.iter().map(|op| op.action.clone()).collect();
        assert_eq!(
            actions,
            [Action::Apply, Action::Apply, Action::Apply, Action::Delete]
        );
        let object = &trace.ops[0].object;
        assert_eq!(object.group, "apps");
        assert_eq!(object.version, "v1");
        assert_eq!(object.kind, "Deployment");
        assert_eq!(object.namespace, "dsb");
        assert_eq!(trace.ops[2].origin.path, "events[1].applied_objs[0]");

        let state = trace.final_state();
        assert_eq!(state.len(), 1);
        let body: Value =
            serde_json::from_slice(state.values().next().unwrap().as_ref().unwrap()).unwrap();
        assert_eq!(body["spec"]["replicas"], 3);
    }

    #[test]
    fn core_api_version_maps_to_core_group() {
        let text = r#"{"events":[{"applied_objs":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}]}]}"#;
        let trace = parse_text(text).unwrap();
        assert_eq!(trace.ops[0].object.group, CORE_GROUP);
        assert_eq!(trace.ops[0].object.version, "v1");
        assert_eq!(trace.ops[0].object.namespace, CLUSTER_NAMESPACE);
    }

    #[test]
    fn missing_name_names_path() {
        let text = r#"{"events":[{"applied_objs":[]},{"applied_objs":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}]}]}"#;
        let err = parse_text(text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "trace.json: field `events[1].applied_objs[0].metadata.name`: missing field"
        );
    }

    #[test]
    fn events_of_wrong_type_is_error() {
        let err = parse_text(r#"{"events":{}}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "trace.json: field `events`: expected an array, found an object"
        );
    }

    #[test]
    fn trace_without_objects_is_error() {
        let err = parse_text(r#"{"events":[{"applied_objs":[],"deleted_objs":[]}]}"#).unwrap_err();
        assert!(err.to_string().contains("no objects"), "{err}");
    }
}
