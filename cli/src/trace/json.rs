//! Field access on parsed JSON that remembers the path it took, so a missing
//! or mistyped field is reported as `Responses[2].Events[0].Revision` rather
//! than as a bare serde message.

use serde_json::Value;

/// A field that is missing or has the wrong JSON type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path from the record's root, such as `objectRef.name`.
    pub field: String,
    pub message: String,
}

/// A JSON value together with its path from the record's root, such as
/// `Responses[2].Events[0]`.
pub struct Node<'a> {
    pub value: &'a Value,
    pub path: String,
}

impl<'a> Node<'a> {
    pub fn root(value: &'a Value) -> Self {
        Node {
            value,
            path: String::new(),
        }
    }

    fn child_path(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn error(&self, field: String, message: impl Into<String>) -> FieldError {
        FieldError {
            field,
            message: message.into(),
        }
    }

    /// Returns the value of field `name`, or `None` when it is absent or null.
    pub fn get_opt(&self, name: &str) -> Option<(&'a Value, String)> {
        match self.value.get(name) {
            None | Some(Value::Null) => None,
            Some(value) => Some((value, self.child_path(name))),
        }
    }

    /// Returns field `name`; an absent or null field is an error.
    pub fn get(&self, name: &str) -> Result<(&'a Value, String), FieldError> {
        if !self.value.is_object() {
            return Err(self.error(
                self.path.clone(),
                format!("expected an object, found {}", type_name(self.value)),
            ));
        }
        self.get_opt(name)
            .ok_or_else(|| self.error(self.child_path(name), "missing field"))
    }

    pub fn str_field(&self, name: &str) -> Result<&'a str, FieldError> {
        let (value, path) = self.get(name)?;
        value
            .as_str()
            .ok_or_else(|| self.error(path, expected("a string", value)))
    }

    /// Returns string field `name`, or `None` when it is absent, null or empty.
    pub fn opt_str_field(&self, name: &str) -> Result<Option<&'a str>, FieldError> {
        match self.get_opt(name) {
            None => Ok(None),
            Some((value, path)) => match value.as_str() {
                Some("") => Ok(None),
                Some(text) => Ok(Some(text)),
                None => Err(self.error(path, expected("a string", value))),
            },
        }
    }

    pub fn u64_field(&self, name: &str) -> Result<u64, FieldError> {
        let (value, path) = self.get(name)?;
        value
            .as_u64()
            .ok_or_else(|| self.error(path, expected("a non-negative integer", value)))
    }

    pub fn bool_field(&self, name: &str) -> Result<bool, FieldError> {
        let (value, path) = self.get(name)?;
        value
            .as_bool()
            .ok_or_else(|| self.error(path, expected("a boolean", value)))
    }

    /// Returns the elements of array field `name` with their paths. An
    /// absent or null field is an empty array, because Go encodes a nil
    /// slice as `null`.
    pub fn array_field(&self, name: &str) -> Result<Vec<(&'a Value, String)>, FieldError> {
        let Some((value, path)) = self.get_opt(name) else {
            return Ok(Vec::new());
        };
        let items = value
            .as_array()
            .ok_or_else(|| self.error(path.clone(), expected("an array", value)))?;
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, item)| (item, format!("{path}[{i}]")))
            .collect())
    }

    /// Descends into object field `name`; an absent or null field is an error.
    pub fn child(&self, name: &str) -> Result<Node<'a>, FieldError> {
        let (value, path) = self.get(name)?;
        if !value.is_object() {
            return Err(FieldError {
                field: path,
                message: expected("an object", value),
            });
        }
        Ok(Node { value, path })
    }

    /// Returns the elements of array field `name` (absent or null: empty).
    pub fn children(&self, name: &str) -> Result<Vec<Node<'a>>, FieldError> {
        Ok(self
            .array_field(name)?
            .into_iter()
            .map(|(value, path)| Node { value, path })
            .collect())
    }
}

fn expected(what: &str, found: &Value) -> String {
    format!("expected {what}, found {}", type_name(found))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_field_names_full_path() {
        let value = json!({"a": {"b": [{"c": 1}, {}]}});
        let root = Node::root(&value);
        let items = root.child("a").unwrap().children("b").unwrap();
        let err = items[1].u64_field("c").unwrap_err();
        assert_eq!(err.field, "a.b[1].c");
        assert_eq!(err.message, "missing field");
    }

    #[test]
    fn wrong_type_names_found_type() {
        let value = json!({"n": "7"});
        let err = Node::root(&value).u64_field("n").unwrap_err();
        assert_eq!(err.field, "n");
        assert_eq!(
            err.message,
            "expected a non-negative integer, found a string"
        );
    }

    #[test]
    fn null_array_is_empty() {
        let value = json!({"Events": null});
        let items = Node::root(&value).children("Events").unwrap();
        assert!(items.is_empty());
    }

    #[test]
    fn empty_optional_string_is_none() {
        let value = json!({"apiGroup": "", "namespace": "ns1"});
        let node = Node::root(&value);
        assert_eq!(node.opt_str_field("apiGroup").unwrap(), None);
        assert_eq!(node.opt_str_field("namespace").unwrap(), Some("ns1"));
        assert_eq!(node.opt_str_field("name").unwrap(), None);
    }

    #[test]
    fn field_of_non_object_is_error() {
        let value = json!([1, 2]);
        let err = Node::root(&value).str_field("kind").unwrap_err();
        assert_eq!(err.message, "expected an object, found an array");
    }
}
