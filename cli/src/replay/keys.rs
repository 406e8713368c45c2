//! Store keys, resource types and watcher filters as the replayer uses them.

use std::fmt;

use watchstore::{Resource, Tenancy, Type, WILDCARD};

use crate::trace::ObjectRef;

/// Partition of every replayed resource: the traces are single-partition.
pub const PARTITION: &str = "default";

/// The key of a stored resource: (group, kind, partition, namespace, name),
/// as the store compares them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreKey {
    pub group: String,
    pub kind: String,
    pub partition: String,
    pub namespace: String,
    pub name: String,
}

impl StoreKey {
    /// Returns the key of a resource read back from the store.
    pub fn of(resource: &Resource) -> StoreKey {
        let id = resource.id.as_ref();
        let ty = id.and_then(|id| id.r#type.as_ref());
        let tenancy = id.and_then(|id| id.tenancy.as_ref());
        StoreKey {
            group: ty.map(|t| t.group.clone()).unwrap_or_default(),
            kind: ty.map(|t| t.kind.clone()).unwrap_or_default(),
            partition: tenancy.map(|t| t.partition.clone()).unwrap_or_default(),
            namespace: tenancy.map(|t| t.namespace.clone()).unwrap_or_default(),
            name: id.map(|id| id.name.clone()).unwrap_or_default(),
        }
    }

    /// Returns the key of a recorded object replayed by writer `copy`.
    pub fn for_object(object: &ObjectRef, copy: usize, scale: usize) -> StoreKey {
        StoreKey {
            group: object.group.clone(),
            kind: object.kind.clone(),
            partition: PARTITION.to_string(),
            namespace: namespace_for_copy(&object.namespace, copy, scale),
            name: object.name.clone(),
        }
    }

    pub fn type_key(&self) -> TypeKey {
        TypeKey {
            group: self.group.clone(),
            kind: self.kind.clone(),
        }
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} {}/{}/{}",
            self.group, self.kind, self.partition, self.namespace, self.name
        )
    }
}

/// Returns the store namespace of a recorded namespace in copy `copy` of a
/// trace replayed `scale` times. With one copy the namespace is kept; with
/// more, copy `i` of namespace `ns` goes to `ns.i`. Kubernetes namespace
/// names cannot contain a dot, so copies never collide with recorded names.
pub fn namespace_for_copy(namespace: &str, copy: usize, scale: usize) -> String {
    if scale == 1 {
        namespace.to_string()
    } else {
        format!("{namespace}.{copy}")
    }
}

/// A resource type as the store keys it: group and kind, any group version.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeKey {
    pub group: String,
    pub kind: String,
}

impl TypeKey {
    /// Returns the protobuf type for list and watch queries, which ignore
    /// the group version.
    pub fn to_type(&self, group_version: &str) -> Type {
        Type {
            group: self.group.clone(),
            group_version: group_version.to_string(),
            kind: self.kind.clone(),
        }
    }
}

impl fmt::Display for TypeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.group, self.kind)
    }
}

/// Which resources a watcher follows, within each type of the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    All,
    /// One store namespace (with `--scale`, a copy's namespace such as
    /// `default.2`).
    Namespace(String),
    /// Names starting with this prefix, in every namespace.
    Prefix(String),
}

impl Filter {
    /// Parses `all`, `namespace=NAME` or `prefix=TEXT`.
    pub fn parse(text: &str) -> Result<Filter, String> {
        if text == "all" {
            return Ok(Filter::All);
        }
        if let Some(namespace) = text.strip_prefix("namespace=") {
            if namespace.is_empty() || namespace == WILDCARD {
                return Err("namespace= needs a namespace name".to_string());
            }
            return Ok(Filter::Namespace(namespace.to_string()));
        }
        if let Some(prefix) = text.strip_prefix("prefix=") {
            return Ok(Filter::Prefix(prefix.to_string()));
        }
        Err(format!(
            "invalid filter {text:?}: expected `all`, `namespace=NAME` or `prefix=TEXT`"
        ))
    }

    /// Returns the tenancy and name prefix of the matching list or watch.
    pub fn query(&self) -> (Tenancy, &str) {
        let tenancy = |namespace: &str| Tenancy {
            partition: WILDCARD.to_string(),
            namespace: namespace.to_string(),
        };
        match self {
            Filter::All => (tenancy(WILDCARD), ""),
            Filter::Namespace(namespace) => (tenancy(namespace), ""),
            Filter::Prefix(prefix) => (tenancy(WILDCARD), prefix),
        }
    }

    pub fn matches(&self, key: &StoreKey) -> bool {
        match self {
            Filter::All => true,
            Filter::Namespace(namespace) => &key.namespace == namespace,
            Filter::Prefix(prefix) => key.name.starts_with(prefix.as_str()),
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::All => f.write_str("all"),
            Filter::Namespace(namespace) => write!(f, "namespace={namespace}"),
            Filter::Prefix(prefix) => write!(f, "prefix={prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(namespace: &str, name: &str) -> StoreKey {
        StoreKey {
            group: "core".into(),
            kind: "pods".into(),
            partition: PARTITION.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    #[test]
    fn filter_parses_each_form() {
        assert_eq!(Filter::parse("all").unwrap(), Filter::All);
        assert_eq!(
            Filter::parse("namespace=dsb").unwrap(),
            Filter::Namespace("dsb".into())
        );
        assert_eq!(
            Filter::parse("prefix=audit").unwrap(),
            Filter::Prefix("audit".into())
        );
        assert!(Filter::parse("namespace=").is_err());
        assert!(Filter::parse("namespace=*").is_err());
        assert!(Filter::parse("everything").is_err());
    }

    #[test]
    fn filter_matches_like_its_query() {
        let namespace = Filter::Namespace("a".into());
        assert!(namespace.matches(&key("a", "x")));
        assert!(!namespace.matches(&key("b", "x")));
        let prefix = Filter::Prefix("ab".into());
        assert!(prefix.matches(&key("z", "abc")));
        assert!(!prefix.matches(&key("z", "ba")));
        assert!(Filter::All.matches(&key("z", "")));
    }

    #[test]
    fn copies_get_distinct_namespaces() {
        assert_eq!(namespace_for_copy("default", 0, 1), "default");
        assert_eq!(namespace_for_copy("default", 0, 4), "default.0");
        assert_eq!(namespace_for_copy("_cluster", 3, 4), "_cluster.3");
    }
}
