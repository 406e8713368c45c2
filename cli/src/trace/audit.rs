//! Kubernetes audit logs: JSON lines of `audit.k8s.io` `Event`s, or one
//! `EventList` document.
//!
//! Only events at stage `ResponseComplete` with a 2xx status are replayed,
//! since those are the writes the API server committed. Audit events record
//! no resourceVersion, so the store assigns versions, and at the `Metadata`
//! level they record no bodies either.

use std::path::Path;

use serde_json::Value;

use super::json::{FieldError, Node};
use super::{
    for_each_json_line, Action, Format, ObjectRef, Origin, Trace, TraceError, TraceOp,
    CLUSTER_NAMESPACE, CORE_GROUP, DEFAULT_VERSION,
};

pub(super) fn parse(path: &Path, text: &str) -> Result<Trace, TraceError> {
    let mut trace = Trace::new(path, Format::Audit);

    let document: Option<Value> = serde_json::from_str(text).ok();
    let is_list = document
        .as_ref()
        .and_then(|value| value.get("kind"))
        .and_then(Value::as_str)
        == Some("EventList");

    if let (true, Some(document)) = (is_list, document.as_ref()) {
        let root = Node::root(document);
        let items = root
            .children("items")
            .map_err(|error| TraceError::field(path, None, error))?;
        for item in items {
            let origin = Origin {
                line: None,
                path: item.path.clone(),
            };
            read_event(&item, origin, &mut trace)
                .map_err(|error| TraceError::field(path, None, error))?;
        }
    } else {
        for_each_json_line(path, text, |line, value| {
            let origin = Origin {
                line: Some(line),
                path: String::new(),
            };
            read_event(&Node::root(value), origin, &mut trace)
                .map_err(|error| TraceError::field(path, Some(line), error))
        })?;
    }

    if trace.ops.is_empty() {
        return Err(TraceError::Invalid {
            path: path.to_path_buf(),
            message: "the audit log holds no successful create, update, patch or delete"
                .to_string(),
        });
    }
    Ok(trace)
}

fn read_event(event: &Node<'_>, origin: Origin, trace: &mut Trace) -> Result<(), FieldError> {
    let kind = event.str_field("kind")?;
    if kind != "Event" {
        return Err(FieldError {
            field: join(&event.path, "kind"),
            message: format!("expected \"Event\", found {kind:?}"),
        });
    }
    let stage = event.str_field("stage")?;
    let verb = event.str_field("verb")?;
    if stage != "ResponseComplete" {
        trace.skip(format!("audit event at stage {stage}"));
        return Ok(());
    }

    let action = match verb {
        "create" => Action::Create,
        "update" | "patch" => Action::Update,
        "delete" => Action::Delete,
        other => {
            trace.skip(format!("audit {other} request"));
            return Ok(());
        }
    };
    let code = event.child("responseStatus")?.u64_field("code")?;
    if !(200..300).contains(&code) {
        trace.skip(format!("audit {verb} with status {code}"));
        return Ok(());
    }

    let object_ref = event.child("objectRef")?;
    let reference = object_ref;
    let resource = reference.str_field("resource")?;
    let Some(name) = reference.opt_str_field("name")? else {
        trace.skip(format!("audit {verb} without objectRef.name"));
        return Ok(());
    };
    if let Some(subresource) = reference.opt_str_field("subresource")? {
        // An update of a subresource such as `status` writes the object
        // itself; a create or delete of one (an eviction, a binding) does not
        // create or delete the object, so it is not replayed.
        if action != Action::Update {
            trace.skip(format!("audit {verb} of subresource {subresource}"));
            return Ok(());
        }
    }

    let object = ObjectRef {
        group: reference
            .opt_str_field("apiGroup")?
            .unwrap_or(CORE_GROUP)
            .to_string(),
        version: reference
            .opt_str_field("apiVersion")?
            .unwrap_or(DEFAULT_VERSION)
            .to_string(),
        kind: resource.to_string(),
        namespace: reference
            .opt_str_field("namespace")?
            .unwrap_or(CLUSTER_NAMESPACE)
            .to_string(),
        name: name.to_string(),
    };
    trace.ops.push(TraceOp {
        action,
        object,
        body: None,
        etcd_revision: None,
        origin,
    });
    Ok(())
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(stage: &str, verb: &str, code: u64, object_ref: &str) -> String {
        format!(
            r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1beta1","stage":"{stage}","verb":"{verb}","objectRef":{object_ref},"responseStatus":{{"code":{code}}}}}"#
        )
    }

    const ROLE: &str = r#"{"resource":"roles","namespace":"default","name":"r1","apiGroup":"rbac.authorization.k8s.io","apiVersion":"v1"}"#;
    const CLUSTER_ROLE: &str = r#"{"resource":"clusterroles","name":"c1","apiGroup":"rbac.authorization.k8s.io","apiVersion":"v1"}"#;

    fn parse_lines(lines: &[String]) -> Result<Trace, TraceError> {
        parse(Path::new("audit.log"), &lines.join("\n"))
    }

    #[test]
    fn replays_only_completed_successful_writes() {
        let trace = parse_lines(&[
            event("RequestReceived", "create", 0, ROLE),
            event("ResponseComplete", "create", 201, ROLE),
            event("ResponseComplete", "get", 200, ROLE),
            event("ResponseComplete", "patch", 200, ROLE),
            event("ResponseComplete", "delete", 404, ROLE),
            event("ResponseComplete", "delete", 200, ROLE),
        ])
        .unwrap();

        let actions: Vec<_> = trace.ops.iter().map(|op| op.action.clone()).collect();
        assert_eq!(actions, [Action::Create, Action::Update, Action::Delete]);
        assert_eq!(trace.ops[0].origin.line, Some(2));
        assert_eq!(trace.skipped.values().sum::<u64>(), 3);
        assert!(trace.final_state().is_empty());
    }

    #[test]
    fn maps_object_ref_to_object() {
        let trace = parse_lines(&[
            event("ResponseComplete", "create", 201, ROLE),
            event("ResponseComplete", "create", 201, CLUSTER_ROLE),
            event(
                "ResponseComplete",
                "create",
                201,
                r#"{"resource":"configmaps","namespace":"ns1","name":"cm","apiVersion":"v1"}"#,
            ),
        ])
        .unwrap();

        let role = &trace.ops[0].object;
        assert_eq!(role.group, "rbac.authorization.k8s.io");
        assert_eq!(role.version, "v1");
        assert_eq!(role.kind, "roles");
        assert_eq!(role.namespace, "default");
        assert_eq!(role.name, "r1");
        assert_eq!(trace.ops[1].object.namespace, CLUSTER_NAMESPACE);
        assert_eq!(trace.ops[2].object.group, CORE_GROUP);
        assert!(trace.ops.iter().all(|op| op.body.is_none()));
    }

    #[test]
    fn missing_resource_names_line_and_field() {
        let err = parse_lines(&[
            event("ResponseComplete", "create", 201, ROLE),
            event("ResponseComplete", "create", 201, r#"{"name":"x"}"#),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "audit.log:2: field `objectRef.resource`: missing field"
        );
    }

    #[test]
    fn wrong_code_type_is_error() {
        let line = event("ResponseComplete", "create", 201, ROLE).replace("201", "\"201\"");
        let err = parse_lines(&[line]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "audit.log:1: field `responseStatus.code`: expected a non-negative integer, found a string"
        );
    }

    #[test]
    fn subresource_create_is_skipped() {
        let eviction = r#"{"resource":"pods","namespace":"default","name":"p","subresource":"eviction","apiVersion":"v1"}"#;
        let status = r#"{"resource":"pods","namespace":"default","name":"p","subresource":"status","apiVersion":"v1"}"#;
        let trace = parse_lines(&[
            event("ResponseComplete", "create", 201, eviction),
            event("ResponseComplete", "patch", 200, status),
        ])
        .unwrap();
        assert_eq!(trace.ops.len(), 1);
        assert_eq!(trace.ops[0].action, Action::Update);
        assert_eq!(trace.ops[0].object.name, "p");
    }

    #[test]
    fn event_list_document_is_read() {
        let text = format!(
            r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{},{}]}}"#,
            event("ResponseComplete", "create", 201, ROLE),
            event("ResponseComplete", "delete", 200, ROLE)
        );
        let trace = parse(Path::new("list.json"), &text).unwrap();
        assert_eq!(trace.ops.len(), 2);
        assert_eq!(trace.ops[1].origin.path, "items[1]");
    }

    #[test]
    fn log_without_writes_is_error() {
        let err = parse_lines(&[event("ResponseComplete", "get", 200, ROLE)]).unwrap_err();
        assert!(err.to_string().contains("no successful create"), "{err}");
    }
}
