//! Random operation sequences run against `Store` and against a sequential
//! model of the store rules (a `BTreeMap` keyed like the store, plus the
//! commit index). Every result must match: the value or the error variant
//! with its fields, and every version. At the end the store's snapshot must
//! equal the model's contents, and a watch opened on the empty store must
//! have delivered exactly the model's matching commits.
//!
//! The key space is small (2 kinds, 3 tenancies, 3 names, 2 uids), so
//! creates, updates and deletes collide on the same keys often.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use watchstore::{
    Error, Id, Resource, Store, StoreOptions, Tenancy, Type, WatchEvent, MAX_NAME_BYTES,
    MAX_VERSION_BYTES, WILDCARD,
};

const GROUP: &str = "g";
const KINDS: [&str; 2] = ["k", "l"];
const GROUP_VERSIONS: [&str; 2] = ["v1", "v2"];
const TENANCIES: [(&str, &str); 3] = [("p", "n"), ("p", "o"), ("q", "n")];
const NAMES: [&str; 3] = ["a", "ab", "b"];
/// Uids a write or delete may name; `""` is the empty uid.
const UIDS: [&str; 3] = ["u1", "u2", ""];
/// Uids an owner reference may carry.
const OWNER_UIDS: [&str; 2] = ["u1", "u2"];
const PARTITIONS: [&str; 3] = ["p", "q", WILDCARD];
const NAMESPACES: [&str; 3] = ["n", "o", WILDCARD];
const PREFIXES: [&str; 4] = ["", "a", "ab", "c"];

/// The kind the watch of each sequence follows (all tenancies, all names).
const WATCHED_KIND: &str = "k";

const MAX_OPS: usize = 50;
/// Larger than `MAX_OPS`, so the watch, read only at the end, never lags.
const LOG_CAPACITY: usize = 64;
const CASES: u32 = 512;

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

/// A key of the small key space.
#[derive(Clone, Copy, Debug)]
struct KeyPick {
    kind: usize,
    tenancy: usize,
    name: usize,
}

/// The uid an operation names.
#[derive(Clone, Copy, Debug)]
enum UidPick {
    /// The stored uid, or `u1` when nothing is stored.
    Stored,
    /// One of `UIDS`, possibly wrong or empty.
    Fixed(usize),
}

/// The version an operation expects.
#[derive(Clone, Copy, Debug)]
enum VersionPick {
    /// The stored version, or empty (create) when nothing is stored.
    Stored,
    /// The empty version.
    Empty,
    /// One less than the stored version (stale), or `"1"` when nothing is
    /// stored.
    Previous,
    /// Any small number.
    Number(u64),
}

/// An owner reference: a key of the key space, a group version and a uid.
#[derive(Clone, Copy, Debug)]
struct OwnerPick {
    key: KeyPick,
    group_version: usize,
    uid: usize,
}

/// An input that must be rejected with `InvalidArgument`.
#[derive(Clone, Copy, Debug)]
enum Invalid {
    WriteMissingType(KeyPick),
    WriteEmptyKind(KeyPick),
    WriteWildcardNamespace(KeyPick),
    WriteLongName(KeyPick),
    WriteOwnerEmptyName(KeyPick),
    ReadEmptyGroup(KeyPick),
    DeleteWildcardPartition(KeyPick),
    DeleteLongVersion(KeyPick),
    ListEmptyKind,
    ListEmptyGroup,
    ListByOwnerEmptyName(KeyPick),
    WatchEmptyKind,
}

#[derive(Clone, Debug)]
enum Op {
    Write {
        key: KeyPick,
        group_version: usize,
        uid: UidPick,
        version: VersionPick,
        owner: Option<OwnerPick>,
        payload: u8,
    },
    Delete {
        key: KeyPick,
        group_version: usize,
        uid: UidPick,
        version: VersionPick,
    },
    Read {
        key: KeyPick,
        group_version: usize,
        uid: UidPick,
    },
    List {
        kind: usize,
        group_version: usize,
        partition: usize,
        namespace: usize,
        prefix: usize,
    },
    ListByOwner(OwnerPick),
    Invalid(Invalid),
}

fn key_pick() -> impl Strategy<Value = KeyPick> {
    (0..KINDS.len(), 0..TENANCIES.len(), 0..NAMES.len()).prop_map(|(kind, tenancy, name)| KeyPick {
        kind,
        tenancy,
        name,
    })
}

fn uid_pick() -> impl Strategy<Value = UidPick> {
    prop_oneof![
        4 => Just(UidPick::Stored),
        1 => (0..UIDS.len()).prop_map(UidPick::Fixed),
    ]
}

fn version_pick() -> impl Strategy<Value = VersionPick> {
    prop_oneof![
        5 => Just(VersionPick::Stored),
        2 => Just(VersionPick::Empty),
        1 => Just(VersionPick::Previous),
        1 => (0..60u64).prop_map(VersionPick::Number),
    ]
}

fn owner_pick() -> impl Strategy<Value = OwnerPick> {
    (key_pick(), 0..GROUP_VERSIONS.len(), 0..OWNER_UIDS.len()).prop_map(
        |(key, group_version, uid)| OwnerPick {
            key,
            group_version,
            uid,
        },
    )
}

fn invalid() -> impl Strategy<Value = Invalid> {
    prop_oneof![
        key_pick().prop_map(Invalid::WriteMissingType),
        key_pick().prop_map(Invalid::WriteEmptyKind),
        key_pick().prop_map(Invalid::WriteWildcardNamespace),
        key_pick().prop_map(Invalid::WriteLongName),
        key_pick().prop_map(Invalid::WriteOwnerEmptyName),
        key_pick().prop_map(Invalid::ReadEmptyGroup),
        key_pick().prop_map(Invalid::DeleteWildcardPartition),
        key_pick().prop_map(Invalid::DeleteLongVersion),
        Just(Invalid::ListEmptyKind),
        Just(Invalid::ListEmptyGroup),
        key_pick().prop_map(Invalid::ListByOwnerEmptyName),
        Just(Invalid::WatchEmptyKind),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let group_version = 0..GROUP_VERSIONS.len();
    prop_oneof![
        8 => (
            key_pick(),
            group_version.clone(),
            uid_pick(),
            version_pick(),
            proptest::option::of(owner_pick()),
            any::<u8>(),
        )
            .prop_map(|(key, group_version, uid, version, owner, payload)| Op::Write {
                key,
                group_version,
                uid,
                version,
                owner,
                payload,
            }),
        4 => (key_pick(), group_version.clone(), uid_pick(), version_pick()).prop_map(
            |(key, group_version, uid, version)| Op::Delete {
                key,
                group_version,
                uid,
                version,
            }
        ),
        3 => (key_pick(), group_version.clone(), uid_pick()).prop_map(
            |(key, group_version, uid)| Op::Read {
                key,
                group_version,
                uid,
            }
        ),
        2 => (
            0..KINDS.len(),
            group_version,
            0..PARTITIONS.len(),
            0..NAMESPACES.len(),
            0..PREFIXES.len(),
        )
            .prop_map(|(kind, group_version, partition, namespace, prefix)| Op::List {
                kind,
                group_version,
                partition,
                namespace,
                prefix,
            }),
        2 => owner_pick().prop_map(Op::ListByOwner),
        1 => invalid().prop_map(Op::Invalid),
    ]
}

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

/// (group, kind, partition, namespace, name): the store's key, in its order.
type Key = (String, String, String, String, String);

fn key_of(id: &Id) -> Key {
    let ty = id.r#type.clone().unwrap_or_default();
    let tenancy = id.tenancy.clone().unwrap_or_default();
    (
        ty.group,
        ty.kind,
        tenancy.partition,
        tenancy.namespace,
        id.name.clone(),
    )
}

fn uid_of(resource: &Resource) -> &str {
    resource.id.as_ref().map_or("", |id| id.uid.as_str())
}

fn group_version_of(id: &Id) -> &str {
    id.r#type
        .as_ref()
        .map_or("", |ty| ty.group_version.as_str())
}

fn invalid_argument(field: &'static str) -> Error {
    Error::InvalidArgument {
        field,
        reason: String::new(),
    }
}

/// The store rules applied one operation at a time.
#[derive(Default)]
struct Model {
    index: u64,
    resources: BTreeMap<Key, Arc<Resource>>,
    /// Every commit, as the event a watch of everything would deliver.
    events: Vec<WatchEvent>,
}

impl Model {
    fn stored(&self, key: &Key) -> Option<&Arc<Resource>> {
        self.resources.get(key)
    }

    fn read(&self, id: &Id) -> Result<Arc<Resource>, Error> {
        let not_found = || Error::NotFound {
            id: Box::new(id.clone()),
        };
        let stored = self.stored(&key_of(id)).ok_or_else(not_found)?;
        if !id.uid.is_empty() && id.uid != uid_of(stored) {
            return Err(not_found());
        }
        let stored_id = stored.id.as_ref().expect("stored resources have an id");
        if group_version_of(id) != group_version_of(stored_id) {
            return Err(Error::GroupVersionMismatch {
                requested: Box::new(id.r#type.clone().unwrap_or_default()),
                stored: Arc::clone(stored),
            });
        }
        Ok(Arc::clone(stored))
    }

    fn write_cas(&mut self, resource: &Resource) -> Result<Arc<Resource>, Error> {
        let id = resource.id.as_ref().expect("valid writes have an id");
        let key = key_of(id);
        match self.stored(&key) {
            None if !resource.version.is_empty() => {
                return Err(Error::CasFailure {
                    id: Box::new(id.clone()),
                    expected: resource.version.clone(),
                    stored: None,
                });
            }
            None if id.uid.is_empty() => return Err(invalid_argument("id.uid")),
            None => {}
            Some(stored) => {
                let stored_uid = uid_of(stored);
                if id.uid.is_empty() || id.uid != stored_uid {
                    return Err(Error::WrongUid {
                        id: Box::new(id.clone()),
                        stored_uid: stored_uid.to_owned(),
                    });
                }
                if resource.version.is_empty() || resource.version != stored.version {
                    return Err(Error::CasFailure {
                        id: Box::new(id.clone()),
                        expected: resource.version.clone(),
                        stored: Some(stored.version.clone()),
                    });
                }
            }
        }

        self.index += 1;
        let copy = Arc::new(Resource {
            version: self.index.to_string(),
            ..resource.clone()
        });
        self.resources.insert(key, Arc::clone(&copy));
        self.events.push(WatchEvent::Upsert {
            index: self.index,
            resource: Arc::clone(&copy),
        });
        Ok(copy)
    }

    fn delete_cas(&mut self, id: &Id, version: &str) -> Result<(), Error> {
        let key = key_of(id);
        let Some(stored) = self.stored(&key) else {
            return Ok(());
        };
        if id.uid.is_empty() || id.uid != uid_of(stored) {
            return Ok(());
        }
        if version.is_empty() || version != stored.version {
            return Err(Error::CasFailure {
                id: Box::new(id.clone()),
                expected: version.to_owned(),
                stored: Some(stored.version.clone()),
            });
        }

        self.index += 1;
        let removed = self.resources.remove(&key).expect("checked above");
        self.events.push(WatchEvent::Delete {
            index: self.index,
            resource: removed,
        });
        Ok(())
    }

    fn list(
        &self,
        kind: &str,
        partition: &str,
        namespace: &str,
        prefix: &str,
    ) -> Vec<Arc<Resource>> {
        let matches = |pattern: &str, value: &str| pattern == WILDCARD || pattern == value;
        self.resources
            .iter()
            .filter(
                |((group, key_kind, key_partition, key_namespace, name), _)| {
                    group == GROUP
                        && key_kind == kind
                        && matches(partition, key_partition)
                        && matches(namespace, key_namespace)
                        && name.starts_with(prefix)
                },
            )
            .map(|(_, resource)| Arc::clone(resource))
            .collect()
    }

    fn list_by_owner(&self, owner: &Id) -> Vec<Arc<Resource>> {
        let requested = (key_of(owner), owner.uid.as_str());
        self.resources
            .values()
            .filter(|resource| {
                resource
                    .owner
                    .as_ref()
                    .is_some_and(|stored| (key_of(stored), stored.uid.as_str()) == requested)
            })
            .cloned()
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Building concrete inputs
// ---------------------------------------------------------------------------

fn make_type(kind: &str, group_version: usize) -> Type {
    Type {
        group: GROUP.into(),
        group_version: GROUP_VERSIONS[group_version].into(),
        kind: kind.into(),
    }
}

fn make_id(key: KeyPick, group_version: usize, uid: &str) -> Id {
    let (partition, namespace) = TENANCIES[key.tenancy];
    Id {
        uid: uid.into(),
        name: NAMES[key.name].into(),
        r#type: Some(make_type(KINDS[key.kind], group_version)),
        tenancy: Some(Tenancy {
            partition: partition.into(),
            namespace: namespace.into(),
        }),
    }
}

fn owner_id(owner: OwnerPick) -> Id {
    make_id(owner.key, owner.group_version, OWNER_UIDS[owner.uid])
}

/// Returns the model key of a pick.
fn model_key(key: KeyPick) -> Key {
    key_of(&make_id(key, 0, ""))
}

fn resolve_uid(model: &Model, key: KeyPick, uid: UidPick) -> String {
    match uid {
        UidPick::Stored => model
            .stored(&model_key(key))
            .map_or("u1", |stored| uid_of(stored))
            .to_owned(),
        UidPick::Fixed(n) => UIDS[n].to_owned(),
    }
}

fn resolve_version(model: &Model, key: KeyPick, version: VersionPick) -> String {
    let stored = model.stored(&model_key(key)).map(|stored| {
        stored
            .version
            .parse::<u64>()
            .expect("model versions are decimal")
    });
    match version {
        VersionPick::Stored => stored.map(|v| v.to_string()).unwrap_or_default(),
        VersionPick::Empty => String::new(),
        VersionPick::Previous => stored.map_or(1, |v| v - 1).to_string(),
        VersionPick::Number(n) => n.to_string(),
    }
}

/// Builds a write of `key` that passes validation.
fn valid_write(
    model: &Model,
    key: KeyPick,
    group_version: usize,
    uid: UidPick,
    version: VersionPick,
    owner: Option<OwnerPick>,
    payload: u8,
) -> Resource {
    Resource {
        id: Some(make_id(key, group_version, &resolve_uid(model, key, uid))),
        owner: owner.map(owner_id),
        version: resolve_version(model, key, version),
        metadata: HashMap::from([("payload".to_owned(), payload.to_string())]),
        ..Default::default()
    }
}

fn id_mut(resource: &mut Resource) -> &mut Id {
    resource.id.get_or_insert_with(Id::default)
}

fn type_mut(id: &mut Id) -> &mut Type {
    id.r#type.get_or_insert_with(Type::default)
}

fn tenancy_mut(id: &mut Id) -> &mut Tenancy {
    id.tenancy.get_or_insert_with(Tenancy::default)
}

/// Runs an invalid call on the store and returns its result and the field
/// its `InvalidArgument` must name.
fn call_invalid(
    store: &Store,
    model: &Model,
    invalid: Invalid,
) -> (Result<(), Error>, &'static str) {
    let write = |key: KeyPick| {
        valid_write(
            model,
            key,
            0,
            UidPick::Stored,
            VersionPick::Stored,
            Some(OwnerPick {
                key,
                group_version: 0,
                uid: 0,
            }),
            0,
        )
    };
    let query_type = make_type(WATCHED_KIND, 0);
    let all = Tenancy {
        partition: WILDCARD.into(),
        namespace: WILDCARD.into(),
    };

    match invalid {
        Invalid::WriteMissingType(key) => {
            let mut resource = write(key);
            id_mut(&mut resource).r#type = None;
            (store.write_cas(&resource).map(drop), "id.type")
        }
        Invalid::WriteEmptyKind(key) => {
            let mut resource = write(key);
            type_mut(id_mut(&mut resource)).kind.clear();
            (store.write_cas(&resource).map(drop), "id.type.kind")
        }
        Invalid::WriteWildcardNamespace(key) => {
            let mut resource = write(key);
            tenancy_mut(id_mut(&mut resource)).namespace = WILDCARD.into();
            (store.write_cas(&resource).map(drop), "id.tenancy.namespace")
        }
        Invalid::WriteLongName(key) => {
            let mut resource = write(key);
            id_mut(&mut resource).name = "n".repeat(MAX_NAME_BYTES + 1);
            (store.write_cas(&resource).map(drop), "id.name")
        }
        Invalid::WriteOwnerEmptyName(key) => {
            let mut resource = write(key);
            resource.owner.get_or_insert_with(Id::default).name.clear();
            (store.write_cas(&resource).map(drop), "owner.name")
        }
        Invalid::ReadEmptyGroup(key) => {
            let mut id = make_id(key, 0, "");
            type_mut(&mut id).group.clear();
            (store.read(&id).map(drop), "id.type.group")
        }
        Invalid::DeleteWildcardPartition(key) => {
            let mut id = make_id(key, 0, &resolve_uid(model, key, UidPick::Stored));
            tenancy_mut(&mut id).partition = WILDCARD.into();
            let version = resolve_version(model, key, VersionPick::Stored);
            (store.delete_cas(&id, &version), "id.tenancy.partition")
        }
        Invalid::DeleteLongVersion(key) => {
            let id = make_id(key, 0, &resolve_uid(model, key, UidPick::Stored));
            let version = "9".repeat(MAX_VERSION_BYTES + 1);
            (store.delete_cas(&id, &version), "version")
        }
        Invalid::ListEmptyKind => {
            let ty = Type {
                kind: String::new(),
                ..query_type
            };
            (store.list(&ty, &all, "").map(drop), "type.kind")
        }
        Invalid::ListEmptyGroup => {
            let ty = Type {
                group: String::new(),
                ..query_type
            };
            (store.list(&ty, &all, "").map(drop), "type.group")
        }
        Invalid::ListByOwnerEmptyName(key) => {
            let mut id = make_id(key, 0, "u1");
            id.name.clear();
            (store.list_by_owner(&id).map(drop), "owner.name")
        }
        Invalid::WatchEmptyKind => {
            let ty = Type {
                kind: String::new(),
                ..query_type
            };
            (store.watch_list(&ty, &all, "").map(drop), "type.kind")
        }
    }
}

// ---------------------------------------------------------------------------
// Running a sequence
// ---------------------------------------------------------------------------

/// Compares errors. An `InvalidArgument` is compared by field only, because
/// the model does not word reasons.
fn same_error(actual: &Error, expected: &Error) -> bool {
    match (actual, expected) {
        (
            Error::InvalidArgument { field: actual, .. },
            Error::InvalidArgument {
                field: expected, ..
            },
        ) => actual == expected,
        _ => actual == expected,
    }
}

fn check_result<T: PartialEq + Debug>(
    step: usize,
    op: &Op,
    actual: Result<T, Error>,
    expected: Result<T, Error>,
) -> Result<(), TestCaseError> {
    let same = match (&actual, &expected) {
        (Ok(actual), Ok(expected)) => actual == expected,
        (Err(actual), Err(expected)) => same_error(actual, expected),
        _ => false,
    };
    prop_assert!(
        same,
        "step {step}, {op:?}: store returned {actual:?}, the model expected {expected:?}"
    );
    Ok(())
}

fn apply(store: &Store, model: &mut Model, step: usize, op: &Op) -> Result<(), TestCaseError> {
    match *op {
        Op::Write {
            key,
            group_version,
            uid,
            version,
            owner,
            payload,
        } => {
            let resource = valid_write(model, key, group_version, uid, version, owner, payload);
            let before = resource.clone();
            let actual = store.write_cas(&resource);
            prop_assert_eq!(
                &resource,
                &before,
                "step {}: write_cas changed its input",
                step
            );
            check_result(step, op, actual, model.write_cas(&resource))
        }
        Op::Delete {
            key,
            group_version,
            uid,
            version,
        } => {
            let id = make_id(key, group_version, &resolve_uid(model, key, uid));
            let version = resolve_version(model, key, version);
            let actual = store.delete_cas(&id, &version);
            check_result(step, op, actual, model.delete_cas(&id, &version))
        }
        Op::Read {
            key,
            group_version,
            uid,
        } => {
            let id = make_id(key, group_version, &resolve_uid(model, key, uid));
            check_result(step, op, store.read(&id), model.read(&id))
        }
        Op::List {
            kind,
            group_version,
            partition,
            namespace,
            prefix,
        } => {
            let ty = make_type(KINDS[kind], group_version);
            let tenancy = Tenancy {
                partition: PARTITIONS[partition].into(),
                namespace: NAMESPACES[namespace].into(),
            };
            let expected = model.list(
                KINDS[kind],
                PARTITIONS[partition],
                NAMESPACES[namespace],
                PREFIXES[prefix],
            );
            let actual = store.list(&ty, &tenancy, PREFIXES[prefix]);
            check_result(step, op, actual, Ok(expected))
        }
        Op::ListByOwner(owner) => {
            let id = owner_id(owner);
            check_result(
                step,
                op,
                store.list_by_owner(&id),
                Ok(model.list_by_owner(&id)),
            )
        }
        Op::Invalid(invalid) => {
            let before = store.snapshot();
            let (actual, field) = call_invalid(store, model, invalid);
            check_result(step, op, actual, Err(invalid_argument(field)))?;
            let after = store.snapshot();
            prop_assert_eq!(
                after.index(),
                before.index(),
                "step {}: index changed",
                step
            );
            prop_assert!(
                after.iter().eq(before.iter()),
                "step {}: contents changed",
                step
            );
            Ok(())
        }
    }
}

fn run_sequence(ops: &[Op]) -> Result<(), TestCaseError> {
    let store = Store::with_options(StoreOptions::default().log_capacity(LOG_CAPACITY))
        .expect("valid options");
    let all = Tenancy {
        partition: WILDCARD.into(),
        namespace: WILDCARD.into(),
    };
    let mut watch = store
        .watch_list(&make_type(WATCHED_KIND, 0), &all, "")
        .expect("watch on a new store");
    let mut model = Model::default();

    for (step, op) in ops.iter().enumerate() {
        apply(&store, &mut model, step, op)?;
        prop_assert_eq!(
            store.current_index(),
            model.index,
            "step {}: commit index after {:?}",
            step,
            op
        );
    }

    let snapshot = store.snapshot();
    prop_assert_eq!(snapshot.index(), model.index, "final snapshot index");
    let stored: Vec<Arc<Resource>> = snapshot.iter().collect();
    let expected: Vec<Arc<Resource>> = model.resources.values().cloned().collect();
    prop_assert_eq!(stored, expected, "final contents");

    // The watch started on the empty store: EndOfSnapshot at 0, then every
    // commit of the watched kind, in commit order.
    let mut delivered = Vec::new();
    while let Some(event) = watch
        .try_next()
        .map_err(|error| TestCaseError::fail(format!("watch failed: {error}")))?
    {
        delivered.push(event);
    }
    let mut expected_events = vec![WatchEvent::EndOfSnapshot { index: 0 }];
    expected_events.extend(
        model
            .events
            .iter()
            .filter(|event| {
                let (WatchEvent::Upsert { resource, .. } | WatchEvent::Delete { resource, .. }) =
                    event
                else {
                    return false;
                };
                resource
                    .id
                    .as_ref()
                    .and_then(|id| id.r#type.as_ref())
                    .is_some_and(|ty| ty.kind == WATCHED_KIND)
            })
            .cloned(),
    );
    prop_assert_eq!(delivered, expected_events, "watch events");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        // Keep failures out of the source tree; a failure prints the
        // shrunk sequence instead.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..=MAX_OPS)) {
        run_sequence(&ops)?;
    }
}
