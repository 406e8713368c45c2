//! Keys, input validation and queries around the generated resource types.

use std::cmp::Ordering;

use equivalent::Comparable as _;
use prost::Message;

use crate::error::Error;
use crate::pb::{Id, Resource, Tenancy, Type};
use crate::sync::Arc;

/// Maximum length of a resource name or name prefix, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Maximum length of a uid, group, group version, kind, partition or
/// namespace, in bytes.
pub const MAX_FIELD_BYTES: usize = 128;

/// Maximum length of a version string, in bytes (a u64 has at most 20
/// decimal digits).
pub const MAX_VERSION_BYTES: usize = 20;

/// Maximum protobuf-encoded size of a written resource, in bytes (4 MiB),
/// not counting its version field. The store replaces the version, so the
/// limit leaves it out: a stored copy can always be written back.
pub const MAX_RESOURCE_BYTES: usize = 4 << 20;

/// The tenancy wildcard accepted by `list` and `watch_list`.
pub const WILDCARD: &str = "*";

/// The identity of a stored resource: (group, kind, partition, namespace,
/// name), compared field by field as byte strings.
///
/// The group version and the uid are not part of the key, so one copy is
/// stored per key whatever its group version.
///
/// The parts sit behind an `Arc` because the persistent map clones every
/// key of each node it copies on a write: a clone must cost one reference
/// count, not five string allocations.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key(Arc<KeyParts>);

/// The fields of a [`Key`], in comparison order.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct KeyParts {
    pub(crate) group: String,
    pub(crate) kind: String,
    pub(crate) partition: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl std::ops::Deref for Key {
    type Target = KeyParts;

    fn deref(&self) -> &KeyParts {
        &self.0
    }
}

impl Key {
    pub(crate) fn new(parts: KeyParts) -> Key {
        Key(Arc::new(parts))
    }

    /// Builds the key of an id that has already been validated.
    pub(crate) fn of(id: &Id) -> Key {
        let ty = id.r#type.as_ref();
        let tenancy = id.tenancy.as_ref();
        Key::new(KeyParts {
            group: ty.map(|t| t.group.clone()).unwrap_or_default(),
            kind: ty.map(|t| t.kind.clone()).unwrap_or_default(),
            partition: tenancy.map(|t| t.partition.clone()).unwrap_or_default(),
            namespace: tenancy.map(|t| t.namespace.clone()).unwrap_or_default(),
            name: id.name.clone(),
        })
    }
}

/// A borrowed key, for map lookups that should not allocate.
#[derive(Clone, Copy)]
pub(crate) struct KeyRef<'a> {
    group: &'a str,
    kind: &'a str,
    partition: &'a str,
    namespace: &'a str,
    name: &'a str,
}

impl<'a> KeyRef<'a> {
    pub(crate) fn of(id: &'a Id) -> KeyRef<'a> {
        let ty = id.r#type.as_ref();
        let tenancy = id.tenancy.as_ref();
        KeyRef {
            group: ty.map_or("", |t| t.group.as_str()),
            kind: ty.map_or("", |t| t.kind.as_str()),
            partition: tenancy.map_or("", |t| t.partition.as_str()),
            namespace: tenancy.map_or("", |t| t.namespace.as_str()),
            name: &id.name,
        }
    }
}

impl equivalent::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.compare(key) == Ordering::Equal
    }
}

impl equivalent::Comparable<Key> for KeyRef<'_> {
    fn compare(&self, key: &Key) -> Ordering {
        (
            self.group,
            self.kind,
            self.partition,
            self.namespace,
            self.name,
        )
            .cmp(&(
                key.group.as_str(),
                key.kind.as_str(),
                key.partition.as_str(),
                key.namespace.as_str(),
                key.name.as_str(),
            ))
    }
}

/// The key of an owner reference: the owner's key plus its uid. The group
/// version of the owner is ignored, as in `list_by_owner`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct OwnerKey {
    pub(crate) key: Key,
    pub(crate) uid: String,
}

impl OwnerKey {
    pub(crate) fn of(id: &Id) -> OwnerKey {
        OwnerKey {
            key: Key::of(id),
            uid: id.uid.clone(),
        }
    }
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), Error> {
    if value.len() > max {
        return Err(Error::invalid(
            field,
            format!("is {} bytes long, the maximum is {max} bytes", value.len()),
        ));
    }
    Ok(())
}

fn check_present(field: &'static str, value: &str, max: usize) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, "is empty, a value is required"));
    }
    check_len(field, value, max)
}

/// Field names for the errors of [`check_id`]: `owner.name` for an owner,
/// `id.name` for the id.
struct IdFields {
    id: &'static str,
    ty: &'static str,
    group: &'static str,
    group_version: &'static str,
    kind: &'static str,
    partition: &'static str,
    namespace: &'static str,
    name: &'static str,
    uid: &'static str,
}

const ID_FIELDS: IdFields = IdFields {
    id: "id",
    ty: "id.type",
    group: "id.type.group",
    group_version: "id.type.group_version",
    kind: "id.type.kind",
    partition: "id.tenancy.partition",
    namespace: "id.tenancy.namespace",
    name: "id.name",
    uid: "id.uid",
};

const OWNER_FIELDS: IdFields = IdFields {
    id: "owner",
    ty: "owner.type",
    group: "owner.type.group",
    group_version: "owner.type.group_version",
    kind: "owner.type.kind",
    partition: "owner.tenancy.partition",
    namespace: "owner.tenancy.namespace",
    name: "owner.name",
    uid: "owner.uid",
};

/// Checks an id's shape. `need_group_version` is false for deletes, which
/// ignore the group version.
fn check_id<'a>(
    id: Option<&'a Id>,
    fields: &IdFields,
    need_group_version: bool,
) -> Result<&'a Id, Error> {
    let id = id.ok_or_else(|| Error::invalid(fields.id, "is missing"))?;
    let ty = id
        .r#type
        .as_ref()
        .ok_or_else(|| Error::invalid(fields.ty, "is missing"))?;
    check_present(fields.group, &ty.group, MAX_FIELD_BYTES)?;
    if need_group_version {
        check_present(fields.group_version, &ty.group_version, MAX_FIELD_BYTES)?;
    } else {
        check_len(fields.group_version, &ty.group_version, MAX_FIELD_BYTES)?;
    }
    check_present(fields.kind, &ty.kind, MAX_FIELD_BYTES)?;
    check_present(fields.name, &id.name, MAX_NAME_BYTES)?;
    check_len(fields.uid, &id.uid, MAX_FIELD_BYTES)?;
    if let Some(tenancy) = &id.tenancy {
        for (field, value) in [
            (fields.partition, &tenancy.partition),
            (fields.namespace, &tenancy.namespace),
        ] {
            if value == WILDCARD {
                return Err(Error::invalid(
                    field,
                    "is the wildcard \"*\", which is allowed only in list and watch queries",
                ));
            }
            check_len(field, value, MAX_FIELD_BYTES)?;
        }
    }
    Ok(id)
}

/// Validates the id of a `read`.
pub(crate) fn check_read_id(id: &Id) -> Result<(), Error> {
    check_id(Some(id), &ID_FIELDS, true).map(|_| ())
}

/// Validates the owner id of a `list_by_owner`, which ignores the group
/// version.
pub(crate) fn check_owner_id(owner: &Id) -> Result<(), Error> {
    check_id(Some(owner), &OWNER_FIELDS, false).map(|_| ())
}

/// Validates the id and version of a `delete_cas`; the group version is
/// ignored there.
pub(crate) fn check_delete(id: &Id, version: &str) -> Result<(), Error> {
    check_id(Some(id), &ID_FIELDS, false)?;
    check_len("version", version, MAX_VERSION_BYTES)
}

/// Validates a resource given to `write_cas` or `restore`, and returns its id.
pub(crate) fn check_resource(resource: &Resource) -> Result<&Id, Error> {
    let id = check_id(resource.id.as_ref(), &ID_FIELDS, true)?;
    if resource.owner.is_some() {
        check_id(resource.owner.as_ref(), &OWNER_FIELDS, true)?;
    }
    check_len("version", &resource.version, MAX_VERSION_BYTES)?;
    check_len("generation", &resource.generation, MAX_VERSION_BYTES)?;
    // proto3 leaves an empty string out of the encoding.
    let version_len = match resource.version.is_empty() {
        true => 0,
        false => prost::encoding::string::encoded_len(3, &resource.version),
    };
    let size = resource.encoded_len() - version_len;
    if size > MAX_RESOURCE_BYTES {
        return Err(Error::invalid(
            "resource",
            format!(
                "encodes to {size} bytes without its version, the maximum is {MAX_RESOURCE_BYTES} bytes"
            ),
        ));
    }
    Ok(id)
}

/// The filter of a `list` or `watch_list`: a type (any group version), a
/// tenancy whose fields may be the wildcard `"*"`, and a name prefix.
#[derive(Clone, Debug)]
pub(crate) struct Query {
    group: String,
    kind: String,
    /// `None` matches every partition.
    partition: Option<String>,
    /// `None` matches every namespace.
    namespace: Option<String>,
    name_prefix: String,
}

impl Query {
    pub(crate) fn new(ty: &Type, tenancy: &Tenancy, name_prefix: &str) -> Result<Query, Error> {
        check_present("type.group", &ty.group, MAX_FIELD_BYTES)?;
        check_present("type.kind", &ty.kind, MAX_FIELD_BYTES)?;
        check_len("type.group_version", &ty.group_version, MAX_FIELD_BYTES)?;
        check_len("tenancy.partition", &tenancy.partition, MAX_FIELD_BYTES)?;
        check_len("tenancy.namespace", &tenancy.namespace, MAX_FIELD_BYTES)?;
        check_len("name_prefix", name_prefix, MAX_NAME_BYTES)?;
        let exact = |value: &str| (value != WILDCARD).then(|| value.to_owned());
        Ok(Query {
            group: ty.group.clone(),
            kind: ty.kind.clone(),
            partition: exact(&tenancy.partition),
            namespace: exact(&tenancy.namespace),
            name_prefix: name_prefix.to_owned(),
        })
    }

    /// Returns whether a stored key matches the query.
    pub(crate) fn matches(&self, key: &Key) -> bool {
        self.matches_ref(KeyRef {
            group: &key.group,
            kind: &key.kind,
            partition: &key.partition,
            namespace: &key.namespace,
            name: &key.name,
        })
    }

    /// Returns whether a resource matches the query. Allocates nothing,
    /// because every watcher calls it for every event in the log.
    pub(crate) fn matches_resource(&self, resource: &Resource) -> bool {
        resource
            .id
            .as_ref()
            .is_some_and(|id| self.matches_ref(KeyRef::of(id)))
    }

    fn matches_ref(&self, key: KeyRef<'_>) -> bool {
        key.group == self.group
            && key.kind == self.kind
            && self.partition.as_ref().is_none_or(|p| p == key.partition)
            && self.namespace.as_ref().is_none_or(|n| n == key.namespace)
            && key.name.starts_with(self.name_prefix.as_str())
    }

    /// Returns the smallest key that can match, where a scan starts.
    pub(crate) fn start_key(&self) -> Key {
        let (partition, namespace, name) = match (&self.partition, &self.namespace) {
            (Some(p), Some(n)) => (p.clone(), n.clone(), self.name_prefix.clone()),
            (Some(p), None) => (p.clone(), String::new(), String::new()),
            _ => (String::new(), String::new(), String::new()),
        };
        Key::new(KeyParts {
            group: self.group.clone(),
            kind: self.kind.clone(),
            partition,
            namespace,
            name,
        })
    }

    /// Returns whether a key, visited in key order from [`Self::start_key`],
    /// lies past every possible match, so the scan can stop.
    pub(crate) fn is_past_end(&self, key: &Key) -> bool {
        let type_order =
            (key.group.as_str(), key.kind.as_str()).cmp(&(self.group.as_str(), self.kind.as_str()));
        if type_order != Ordering::Equal {
            return type_order == Ordering::Greater;
        }
        let Some(partition) = &self.partition else {
            return false;
        };
        match key.partition.cmp(partition) {
            Ordering::Less => return false,
            Ordering::Greater => return true,
            Ordering::Equal => {}
        }
        let Some(namespace) = &self.namespace else {
            return false;
        };
        match key.namespace.cmp(namespace) {
            Ordering::Less => false,
            Ordering::Greater => true,
            // Names sharing the prefix are contiguous in byte order, and
            // the scan starts at the prefix, so the first name without it
            // ends the scan.
            Ordering::Equal => !key.name.starts_with(&self.name_prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(group: &str, kind: &str) -> Type {
        Type {
            group: group.into(),
            group_version: "v1".into(),
            kind: kind.into(),
        }
    }

    fn key(group: &str, kind: &str, partition: &str, namespace: &str, name: &str) -> Key {
        Key::new(KeyParts {
            group: group.into(),
            kind: kind.into(),
            partition: partition.into(),
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    #[test]
    fn query_scan_bounds_exact_tenancy() {
        let tenancy = Tenancy {
            partition: "p".into(),
            namespace: "n".into(),
        };
        let query = Query::new(&ty("g", "k"), &tenancy, "ab").unwrap();
        assert_eq!(query.start_key(), key("g", "k", "p", "n", "ab"));
        assert!(!query.is_past_end(&key("g", "k", "p", "n", "abc")));
        assert!(query.is_past_end(&key("g", "k", "p", "n", "ac")));
        assert!(query.is_past_end(&key("g", "k", "p", "o", "ab")));
        assert!(query.is_past_end(&key("g", "l", "a", "a", "a")));
    }

    #[test]
    fn query_scan_bounds_wildcard_namespace() {
        let tenancy = Tenancy {
            partition: "p".into(),
            namespace: WILDCARD.into(),
        };
        let query = Query::new(&ty("g", "k"), &tenancy, "ab").unwrap();
        assert_eq!(query.start_key(), key("g", "k", "p", "", ""));
        assert!(!query.is_past_end(&key("g", "k", "p", "z", "zz")));
        assert!(query.is_past_end(&key("g", "k", "q", "a", "ab")));
        assert!(!query.matches(&key("g", "k", "p", "z", "zz")));
        assert!(query.matches(&key("g", "k", "p", "z", "abz")));
    }
}
