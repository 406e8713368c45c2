//! A reusable conformance suite for store backends.
//!
//! The suite checks a backend against the behaviour that [`Store`]
//! documents: the read, CAS write, CAS delete, list and list-by-owner rules,
//! the list and watch scenarios of Consul's storage test suite, the version
//! and commit index rules, and input validation. It is generic over the
//! [`Backend`] trait, so another backend (a replicated one, or a wrapper
//! around `Store`) can run the same cases. The module is built only with the
//! `conformance` cargo feature.
//!
//! # Running it
//!
//! [`run_all`] runs every case against a fresh backend per case and panics
//! with the names of the failed cases. [`run_case`] runs one case by name, so
//! a test file can give every case its own `#[test]`, and [`cases`] lists
//! them.
//!
//! ```
//! use watchstore::conformance;
//! use watchstore::Store;
//!
//! conformance::run_case("read_missing_is_not_found", Store::new);
//! conformance::run_case("list_any_any_prefix_a", Store::new);
//! // Or every case at once:
//! // conformance::run_all(Store::new);
//! ```
//!
//! # What a backend must provide
//!
//! Besides the store operations, a backend implements
//! [`Backend::contents`], which returns the commit index and every stored
//! resource at one point in time. With it the generic suite checks the commit
//! index rules itself, so no case is specific to `Store`. A version must be
//! the decimal commit index of the write that stored it, and each committed
//! write or delete must advance the index by exactly one. Rejected and no-op
//! operations must leave the index and the contents unchanged.
//!
//! The expected `InvalidArgument` field names (`id.type.kind`,
//! `type.group`, `name_prefix`, ...) and the length limits
//! ([`MAX_NAME_BYTES`], [`MAX_FIELD_BYTES`], [`MAX_VERSION_BYTES`],
//! [`MAX_RESOURCE_BYTES`]) are those of [`Store`].
//!
//! # Watches
//!
//! A case waits up to [`EVENT_TIMEOUT`] for each event it expects, and checks
//! that nothing more is ready with [`BackendWatch::try_next`]. No case
//! asserts on how long anything takes.
//!
//! NOTE: the "nothing more" check assumes that an event is ready by the time
//! the write or delete that caused it returns, as with `Store`. A backend
//! that delivers events later could pass it with an extra late event.

use std::collections::HashMap;
use std::fmt::Debug;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use crate::{
    Error, Id, Resource, Store, Tenancy, Type, Watch, WatchEvent, MAX_FIELD_BYTES, MAX_NAME_BYTES,
    MAX_RESOURCE_BYTES, MAX_VERSION_BYTES, WILDCARD,
};

/// Maximum time a case waits for a watch event it expects.
///
/// Generous on purpose: the wait ends as soon as the event arrives, and a
/// loaded machine must not fail a correct backend.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The store operations the suite exercises.
pub trait Backend {
    /// The watch returned by [`Backend::watch_list`].
    type Watch: BackendWatch;

    /// Reads the resource stored under `id`'s key.
    fn read(&self, id: &Id) -> Result<Arc<Resource>, Error>;

    /// Writes `resource` if `resource.version` matches the stored version
    /// (empty means "create only"), and returns the stored copy.
    fn write_cas(&self, resource: &Resource) -> Result<Arc<Resource>, Error>;

    /// Deletes the resource stored under `id`'s key if its version is
    /// `version`.
    fn delete_cas(&self, id: &Id, version: &str) -> Result<(), Error>;

    /// Lists the resources matching a type (any group version), a tenancy
    /// whose fields may be `"*"`, and a name prefix, in key order.
    fn list(
        &self,
        ty: &Type,
        tenancy: &Tenancy,
        name_prefix: &str,
    ) -> Result<Vec<Arc<Resource>>, Error>;

    /// Lists the resources whose owner is `owner`, in key order.
    fn list_by_owner(&self, owner: &Id) -> Result<Vec<Arc<Resource>>, Error>;

    /// Watches the resources matching the query of [`Backend::list`].
    fn watch_list(
        &self,
        ty: &Type,
        tenancy: &Tenancy,
        name_prefix: &str,
    ) -> Result<Self::Watch, Error>;

    /// Returns the commit index and every stored resource, in key order, at
    /// one point in time.
    fn contents(&self) -> Contents;
}

/// The events of one watch.
pub trait BackendWatch {
    /// Returns the next event, or `Ok(None)` if none arrives within
    /// `timeout`.
    fn next_timeout(&mut self, timeout: Duration) -> Result<Option<WatchEvent>, Error>;

    /// Returns the next event if one is ready, without blocking.
    fn try_next(&mut self) -> Result<Option<WatchEvent>, Error>;
}

/// A point-in-time view of a backend: its commit index and its resources.
#[derive(Clone, Debug, PartialEq)]
pub struct Contents {
    /// The commit index the resources reflect.
    pub index: u64,
    /// Every stored resource, in key order.
    pub resources: Vec<Arc<Resource>>,
}

impl Backend for Store {
    type Watch = Watch;

    fn read(&self, id: &Id) -> Result<Arc<Resource>, Error> {
        Store::read(self, id)
    }

    fn write_cas(&self, resource: &Resource) -> Result<Arc<Resource>, Error> {
        Store::write_cas(self, resource)
    }

    fn delete_cas(&self, id: &Id, version: &str) -> Result<(), Error> {
        Store::delete_cas(self, id, version)
    }

    fn list(
        &self,
        ty: &Type,
        tenancy: &Tenancy,
        name_prefix: &str,
    ) -> Result<Vec<Arc<Resource>>, Error> {
        Store::list(self, ty, tenancy, name_prefix)
    }

    fn list_by_owner(&self, owner: &Id) -> Result<Vec<Arc<Resource>>, Error> {
        Store::list_by_owner(self, owner)
    }

    fn watch_list(&self, ty: &Type, tenancy: &Tenancy, name_prefix: &str) -> Result<Watch, Error> {
        Store::watch_list(self, ty, tenancy, name_prefix)
    }

    fn contents(&self) -> Contents {
        let snapshot = self.snapshot();
        Contents {
            index: snapshot.index(),
            resources: snapshot.iter().collect(),
        }
    }
}

impl BackendWatch for Watch {
    fn next_timeout(&mut self, timeout: Duration) -> Result<Option<WatchEvent>, Error> {
        Watch::next_timeout(self, timeout)
    }

    fn try_next(&mut self) -> Result<Option<WatchEvent>, Error> {
        Watch::try_next(self)
    }
}

// ---------------------------------------------------------------------------
// Running cases
// ---------------------------------------------------------------------------

/// One named conformance case.
pub struct Case<'a, B> {
    name: String,
    run: Box<dyn Fn(&B) + 'a>,
}

impl<'a, B> Case<'a, B> {
    fn new(name: impl Into<String>, run: impl Fn(&B) + 'a) -> Self {
        Case {
            name: name.into(),
            run: Box::new(run),
        }
    }

    /// Returns the case name, a valid Rust identifier.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the case against `backend`, which should be empty, and panics on
    /// failure.
    pub fn run(&self, backend: &B) {
        (self.run)(backend)
    }
}

impl<B> Debug for Case<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case").field("name", &self.name).finish()
    }
}

/// Builds one [`Case`] per rule function, named after the function.
macro_rules! rule_cases {
    ($($rule:ident),* $(,)?) => {
        vec![$(Case::new(stringify!($rule), $rule::<B>)),*]
    };
}

/// Lists every case of the suite, in a fixed order.
///
/// Names are unique: one per rule function, plus `list_<row>`,
/// `watch_seeded_<row>` and `watch_empty_first_<row>` for each row of
/// [`LIST_CASES`], and `invalid_<name>` for each entry of [`INVALID_CASES`].
pub fn cases<'a, B: Backend + 'a>() -> Vec<Case<'a, B>> {
    let mut cases = rule_cases![
        // read
        read_missing_is_not_found,
        read_returns_stored_copy,
        read_with_empty_uid_ignores_uid,
        read_with_other_uid_is_not_found,
        read_with_other_group_version_is_mismatch,
        read_checks_uid_before_group_version,
        read_after_failed_write_returns_old_version,
        read_as_v1_after_v2_write_is_mismatch,
        // write_cas
        write_missing_with_version_is_cas_failure,
        write_with_other_uid_is_wrong_uid,
        write_with_empty_uid_over_stored_is_wrong_uid,
        write_checks_uid_before_version,
        write_with_stale_version_is_cas_failure,
        write_with_empty_version_over_stored_is_cas_failure,
        write_create_returns_stored_copy,
        write_with_current_version_updates,
        write_leaves_input_unchanged,
        write_other_group_version_replaces_stored,
        write_after_delete_starts_new_life,
        write_at_length_limits_is_accepted,
        // delete_cas
        delete_missing_is_ok,
        delete_with_other_uid_changes_nothing,
        delete_with_empty_uid_changes_nothing,
        delete_checks_uid_before_version,
        delete_with_stale_version_is_cas_failure,
        delete_with_empty_version_is_cas_failure,
        delete_with_current_version_removes,
        delete_ignores_group_version,
        delete_event_carries_last_stored_copy,
        // list
        list_empty_result_is_empty_vec,
        list_ignores_query_group_version,
        list_excludes_other_group,
        list_prefix_is_case_sensitive,
        list_returns_key_order,
        // list_by_owner
        list_by_owner_returns_owned_in_key_order,
        list_by_owner_unknown_owner_is_empty,
        list_by_owner_matches_uid,
        list_by_owner_ignores_group_version,
        list_by_owner_outlives_owner_delete,
        list_by_owner_drops_deleted_resource,
        list_by_owner_drops_rewrite_without_owner,
        list_by_owner_follows_owner_change,
        // versions and the commit index
        version_is_decimal_commit_index,
        commits_advance_index_by_one,
        rejected_operations_keep_index_and_contents,
        // watch
        watch_snapshot_holds_latest_version,
        watch_follows_changes_in_commit_order,
    ];
    for row in &LIST_CASES {
        cases.push(Case::new(
            format!("list_{}", row.name),
            move |backend: &B| list_case(backend, row),
        ));
    }
    for row in &LIST_CASES {
        cases.push(Case::new(
            format!("watch_seeded_{}", row.name),
            move |backend: &B| watch_seeded_case(backend, row),
        ));
    }
    for row in &LIST_CASES {
        cases.push(Case::new(
            format!("watch_empty_first_{}", row.name),
            move |backend: &B| watch_empty_first_case(backend, row),
        ));
    }
    for invalid in INVALID_CASES {
        cases.push(Case::new(
            format!("invalid_{}", invalid.name),
            move |backend: &B| invalid_argument_case(backend, invalid),
        ));
    }
    cases
}

/// Runs the case named `name` against a backend from `make`.
///
/// Panics if the case fails or if no case has that name.
pub fn run_case<B: Backend>(name: &str, make: impl FnOnce() -> B) {
    let cases = cases::<B>();
    let Some(case) = cases.iter().find(|case| case.name == name) else {
        panic!("no conformance case is named {name:?}; conformance::cases() lists the names");
    };
    case.run(&make());
}

/// Runs every case, each against a fresh backend from `make`.
///
/// Every case runs even after a failure. Panics at the end with the name and
/// panic message of each failed case.
pub fn run_all<B: Backend>(make: impl Fn() -> B) {
    let mut failures = Vec::new();
    for case in cases::<B>() {
        let backend = make();
        // AssertUnwindSafe: the backend and the case are dropped right after
        // a panic, and nothing observes them in between.
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| case.run(&backend)));
        if let Err(payload) = outcome {
            failures.push(format!("{}: {}", case.name, panic_message(&*payload)));
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} conformance case(s) failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// The group of every fixture type.
const GROUP: &str = "test";

/// The uid of every fixture resource unless a case sets another.
const UID: &str = "a";

/// Returns the type `test.<group_version>.<kind>`.
fn fixture_type(group_version: &str, kind: &str) -> Type {
    Type {
        group: GROUP.into(),
        group_version: group_version.into(),
        kind: kind.into(),
    }
}

fn tenancy(partition: &str, namespace: &str) -> Tenancy {
    Tenancy {
        partition: partition.into(),
        namespace: namespace.into(),
    }
}

fn make_id(ty: Type, tenancy: Tenancy, name: &str, uid: &str) -> Id {
    Id {
        uid: uid.into(),
        name: name.into(),
        r#type: Some(ty),
        tenancy: Some(tenancy),
    }
}

/// Returns the id of a `test.v1.a` resource in default/default.
fn fixture_id(name: &str, uid: &str) -> Id {
    make_id(
        fixture_type("v1", "a"),
        tenancy("default", "default"),
        name,
        uid,
    )
}

/// Returns a resource to create under `id`, with metadata and data that
/// identify the fixture.
fn new_resource(id: Id) -> Resource {
    let label = format!("{}/{}", id.name, id.uid);
    Resource {
        id: Some(id),
        metadata: HashMap::from([("fixture".to_owned(), label.clone())]),
        data: Some(prost_types::Any {
            type_url: "type.googleapis.com/test.Payload".into(),
            value: label.into_bytes(),
        }),
        ..Default::default()
    }
}

/// Returns a `test.v1.a` resource in default/default to create.
fn fixture(name: &str, uid: &str) -> Resource {
    new_resource(fixture_id(name, uid))
}

/// Returns `stored` prepared for an update: same id, expected version set to
/// the stored version, and a changed payload.
fn update_of(stored: &Resource, payload: &str) -> Resource {
    let mut next = stored.clone();
    next.metadata.insert("payload".into(), payload.into());
    next
}

fn id_of(resource: &Resource) -> Id {
    resource.id.clone().expect("fixture resources have an id")
}

/// Returns `id` with another uid.
fn with_uid(id: &Id, uid: &str) -> Id {
    Id {
        uid: uid.into(),
        ..id.clone()
    }
}

/// Returns `id` with another group version.
fn with_group_version(id: &Id, group_version: &str) -> Id {
    let mut id = id.clone();
    if let Some(ty) = id.r#type.as_mut() {
        ty.group_version = group_version.into();
    }
    id
}

/// Returns the key of a resource as a tuple that sorts like the store's
/// keys.
fn key_of(resource: &Resource) -> (String, String, String, String, String) {
    let id = resource.id.clone().unwrap_or_default();
    let ty = id.r#type.unwrap_or_default();
    let tenancy = id.tenancy.unwrap_or_default();
    (
        ty.group,
        ty.kind,
        tenancy.partition,
        tenancy.namespace,
        id.name,
    )
}

fn sorted_by_key(mut resources: Vec<Arc<Resource>>) -> Vec<Arc<Resource>> {
    resources.sort_by_key(|resource| key_of(resource));
    resources
}

/// The seeds of Consul's list and watch scenarios: group version, kind,
/// partition, namespace and name. All have uid `"a"`.
const SEEDS: [(&str, &str, &str, &str, &str); 6] = [
    ("v1", "a", "default", "default", "admin"),
    ("v1", "a", "default", "default", "api"),
    ("v2", "a", "default", "default", "web"),
    ("v1", "a", "billing", "payments", "api"),
    ("v1", "b", "default", "default", "admin"),
    ("v1", "a", "default", "other", "autoscaler"),
];

/// Returns seed `n` (0 to 5), ready to create.
fn seed(n: usize) -> Resource {
    let (group_version, kind, partition, namespace, name) = SEEDS[n];
    new_resource(make_id(
        fixture_type(group_version, kind),
        tenancy(partition, namespace),
        name,
        UID,
    ))
}

/// Creates every seed in order and returns the stored copies.
fn write_seeds<B: Backend>(backend: &B) -> Vec<Arc<Resource>> {
    (0..SEEDS.len())
        .map(|n| write_ok(backend, &seed(n), &format!("create seed {n}")))
        .collect()
}

fn write_ok<B: Backend>(backend: &B, resource: &Resource, what: &str) -> Arc<Resource> {
    backend
        .write_cas(resource)
        .unwrap_or_else(|error| panic!("{what}: write_cas failed: {error}"))
}

fn create<B: Backend>(backend: &B, name: &str) -> Arc<Resource> {
    write_ok(backend, &fixture(name, UID), &format!("create {name:?}"))
}

fn list_ok<B: Backend>(
    backend: &B,
    ty: &Type,
    tenancy: &Tenancy,
    name_prefix: &str,
) -> Vec<Arc<Resource>> {
    backend
        .list(ty, tenancy, name_prefix)
        .unwrap_or_else(|error| panic!("list {name_prefix:?}: {error}"))
}

fn owned_by_ok<B: Backend>(backend: &B, owner: &Id) -> Vec<Arc<Resource>> {
    backend
        .list_by_owner(owner)
        .unwrap_or_else(|error| panic!("list_by_owner {:?}: {error}", owner.name))
}

fn watch_ok<B: Backend>(backend: &B, ty: &Type, tenancy: &Tenancy, name_prefix: &str) -> B::Watch {
    match backend.watch_list(ty, tenancy, name_prefix) {
        Ok(watch) => watch,
        Err(error) => panic!("watch_list {name_prefix:?}: {error}"),
    }
}

/// Waits for the next event, which must arrive within [`EVENT_TIMEOUT`].
fn expect_event<W: BackendWatch>(watch: &mut W, expected: &str) -> WatchEvent {
    match watch.next_timeout(EVENT_TIMEOUT) {
        Ok(Some(event)) => event,
        Ok(None) => panic!("no event within {EVENT_TIMEOUT:?}; expected {expected}"),
        Err(error) => panic!("watch failed while waiting for {expected}: {error}"),
    }
}

/// Checks that no event is ready.
fn expect_no_event<W: BackendWatch>(watch: &mut W, after: &str) {
    assert_eq!(watch.try_next(), Ok(None), "unexpected event after {after}");
}

/// Reads a watch's snapshot: the upserts before `EndOfSnapshot`, and the
/// index `EndOfSnapshot` carries.
fn read_snapshot<W: BackendWatch>(watch: &mut W) -> (Vec<Arc<Resource>>, u64) {
    let mut upserts = Vec::new();
    let mut indexes = Vec::new();
    loop {
        match expect_event(watch, "a snapshot upsert or EndOfSnapshot") {
            WatchEvent::Upsert { index, resource } => {
                indexes.push(index);
                upserts.push(resource);
            }
            WatchEvent::EndOfSnapshot { index } => {
                assert!(
                    indexes.iter().all(|&upsert_index| upsert_index == index),
                    "snapshot upserts carry indexes {indexes:?}, EndOfSnapshot carries {index}"
                );
                return (upserts, index);
            }
            other => panic!("expected a snapshot upsert or EndOfSnapshot, got {other:?}"),
        }
    }
}

/// Returns the query type of the list and watch scenarios: group `test`,
/// kind `a`. List and watch ignore its group version.
fn scenario_type() -> Type {
    fixture_type("v1", "a")
}

// ---------------------------------------------------------------------------
// read
// ---------------------------------------------------------------------------

/// Checks that reading a key with nothing stored is `NotFound`.
pub fn read_missing_is_not_found<B: Backend>(backend: &B) {
    let id = fixture_id("missing", UID);

    assert_eq!(
        backend.read(&id),
        Err(Error::NotFound {
            id: Box::new(id.clone())
        })
    );
}

/// Checks that a read returns the copy the write stored.
pub fn read_returns_stored_copy<B: Backend>(backend: &B) {
    let stored = create(backend, "r");

    assert_eq!(backend.read(&id_of(&stored)), Ok(stored));
}

/// Checks that a read with an empty uid ignores the uid.
pub fn read_with_empty_uid_ignores_uid<B: Backend>(backend: &B) {
    let stored = create(backend, "r");

    assert_eq!(backend.read(&fixture_id("r", "")), Ok(stored));
}

/// Checks that a read with a uid other than the stored one is `NotFound`.
pub fn read_with_other_uid_is_not_found<B: Backend>(backend: &B) {
    create(backend, "r");
    let id = fixture_id("r", "b");

    assert_eq!(
        backend.read(&id),
        Err(Error::NotFound {
            id: Box::new(id.clone())
        })
    );
}

/// Checks that a read with another group version is `GroupVersionMismatch`
/// carrying the requested type and the stored resource.
pub fn read_with_other_group_version_is_mismatch<B: Backend>(backend: &B) {
    let stored = create(backend, "r");
    let id = with_group_version(&id_of(&stored), "v2");

    assert_eq!(
        backend.read(&id),
        Err(Error::GroupVersionMismatch {
            requested: Box::new(fixture_type("v2", "a")),
            stored,
        })
    );
}

/// Checks that a read compares the uid before the group version: another
/// uid and another group version is `NotFound`.
pub fn read_checks_uid_before_group_version<B: Backend>(backend: &B) {
    create(backend, "r");
    let id = with_group_version(&fixture_id("r", "b"), "v2");

    assert_eq!(
        backend.read(&id),
        Err(Error::NotFound {
            id: Box::new(id.clone())
        })
    );
}

/// Checks that, after a rejected write, a read returns the version stored before
/// it.
pub fn read_after_failed_write_returns_old_version<B: Backend>(backend: &B) {
    let created = create(backend, "r");
    let updated = write_ok(backend, &update_of(&created, "1"), "update");
    let mut stale = update_of(&updated, "2");
    stale.version.clone_from(&created.version);
    let rejected = backend.write_cas(&stale);
    assert!(
        matches!(rejected, Err(Error::CasFailure { .. })),
        "stale write returned {rejected:?}"
    );

    assert_eq!(backend.read(&id_of(&created)), Ok(updated));
}

/// Checks that, after a `test.v2.a` write replaced a stored `test.v1.a`, reading
/// as v1 is `GroupVersionMismatch` carrying the stored v2 copy.
pub fn read_as_v1_after_v2_write_is_mismatch<B: Backend>(backend: &B) {
    let v1 = create(backend, "r");
    let mut v2_write = update_of(&v1, "v2");
    v2_write.id = Some(with_group_version(&id_of(&v1), "v2"));
    let v2 = write_ok(backend, &v2_write, "write v2 over v1");

    assert_eq!(
        backend.read(&id_of(&v1)),
        Err(Error::GroupVersionMismatch {
            requested: Box::new(fixture_type("v1", "a")),
            stored: v2,
        })
    );
}

// ---------------------------------------------------------------------------
// write_cas
// ---------------------------------------------------------------------------

/// Checks that, with nothing stored, a write with a version is `CasFailure` with
/// no stored version.
pub fn write_missing_with_version_is_cas_failure<B: Backend>(backend: &B) {
    let mut resource = fixture("w", UID);
    resource.version = "7".into();

    assert_eq!(
        backend.write_cas(&resource),
        Err(Error::CasFailure {
            id: Box::new(id_of(&resource)),
            expected: "7".into(),
            stored: None,
        })
    );
}

/// Checks that a write with a uid other than the stored one is `WrongUid`.
pub fn write_with_other_uid_is_wrong_uid<B: Backend>(backend: &B) {
    let stored = create(backend, "w");
    let mut write = update_of(&stored, "1");
    write.id = Some(with_uid(&id_of(&stored), "b"));

    assert_eq!(
        backend.write_cas(&write),
        Err(Error::WrongUid {
            id: Box::new(id_of(&write)),
            stored_uid: UID.into(),
        })
    );
}

/// Checks that a write with an empty uid over a stored resource is `WrongUid`.
pub fn write_with_empty_uid_over_stored_is_wrong_uid<B: Backend>(backend: &B) {
    let stored = create(backend, "w");
    let mut write = update_of(&stored, "1");
    write.id = Some(with_uid(&id_of(&stored), ""));

    assert_eq!(
        backend.write_cas(&write),
        Err(Error::WrongUid {
            id: Box::new(id_of(&write)),
            stored_uid: UID.into(),
        })
    );
}

/// Checks that a write compares the uid before the version: another uid with
/// an empty version is `WrongUid`.
pub fn write_checks_uid_before_version<B: Backend>(backend: &B) {
    let stored = create(backend, "w");
    let mut write = update_of(&stored, "1");
    write.id = Some(with_uid(&id_of(&stored), "b"));
    write.version = String::new();

    assert_eq!(
        backend.write_cas(&write),
        Err(Error::WrongUid {
            id: Box::new(id_of(&write)),
            stored_uid: UID.into(),
        })
    );
}

/// Checks that a write with a version other than the stored one is `CasFailure`
/// naming both versions.
pub fn write_with_stale_version_is_cas_failure<B: Backend>(backend: &B) {
    let created = create(backend, "w");
    let updated = write_ok(backend, &update_of(&created, "1"), "update");
    let mut stale = update_of(&updated, "2");
    stale.version.clone_from(&created.version);

    assert_eq!(
        backend.write_cas(&stale),
        Err(Error::CasFailure {
            id: Box::new(id_of(&stale)),
            expected: created.version.clone(),
            stored: Some(updated.version.clone()),
        })
    );
}

/// Checks that a create (empty version) over a stored resource is `CasFailure`.
pub fn write_with_empty_version_over_stored_is_cas_failure<B: Backend>(backend: &B) {
    let stored = create(backend, "w");

    assert_eq!(
        backend.write_cas(&fixture("w", UID)),
        Err(Error::CasFailure {
            id: Box::new(fixture_id("w", UID)),
            expected: String::new(),
            stored: Some(stored.version.clone()),
        })
    );
}

/// Checks that a create returns the written resource with its new version, and
/// stores it.
pub fn write_create_returns_stored_copy<B: Backend>(backend: &B) {
    let input = fixture("w", UID);
    let stored = write_ok(backend, &input, "create");
    let expected = Resource {
        version: stored.version.clone(),
        ..input
    };

    assert!(!stored.version.is_empty(), "a stored copy has a version");
    assert_eq!(*stored, expected);
    assert_eq!(backend.read(&fixture_id("w", UID)), Ok(stored));
}

/// Checks that a write with the stored uid and version replaces the resource
/// under a new version.
pub fn write_with_current_version_updates<B: Backend>(backend: &B) {
    let created = create(backend, "w");
    let input = update_of(&created, "1");
    let updated = write_ok(backend, &input, "update");

    assert_ne!(updated.version, created.version);
    assert_eq!(
        *updated,
        Resource {
            version: updated.version.clone(),
            ..input
        }
    );
    assert_eq!(backend.read(&id_of(&created)), Ok(updated));
}

/// Checks that `write_cas` does not modify the caller's value, on a create or an
/// update.
pub fn write_leaves_input_unchanged<B: Backend>(backend: &B) {
    let create_input = fixture("w", UID);
    let create_before = create_input.clone();
    let created = write_ok(backend, &create_input, "create");
    assert_eq!(create_input, create_before, "create changed its input");

    let update_input = update_of(&created, "1");
    let update_before = update_input.clone();
    write_ok(backend, &update_input, "update");
    assert_eq!(update_input, update_before, "update changed its input");
}

/// Checks that a write of another group version replaces the stored copy: one
/// copy per key, readable at the new group version.
pub fn write_other_group_version_replaces_stored<B: Backend>(backend: &B) {
    let v1 = create(backend, "w");
    let mut v2_write = update_of(&v1, "v2");
    v2_write.id = Some(with_group_version(&id_of(&v1), "v2"));
    let v2 = write_ok(backend, &v2_write, "write v2 over v1");

    assert_eq!(
        list_ok(
            backend,
            &scenario_type(),
            &tenancy("default", "default"),
            "w"
        ),
        vec![Arc::clone(&v2)]
    );
    assert_eq!(backend.read(&id_of(&v2)), Ok(v2));
}

/// Checks that, after a delete, a create with a new uid starts a new life: the
/// old uid is `NotFound`, the new one reads.
pub fn write_after_delete_starts_new_life<B: Backend>(backend: &B) {
    let first = create(backend, "w");
    backend
        .delete_cas(&id_of(&first), &first.version)
        .expect("delete of the first life");
    let second = write_ok(backend, &fixture("w", "b"), "create the second life");

    assert_eq!(
        backend.read(&id_of(&first)),
        Err(Error::NotFound {
            id: Box::new(id_of(&first))
        })
    );
    assert_eq!(backend.read(&id_of(&second)), Ok(second));
}

/// Checks that names of [`MAX_NAME_BYTES`] and other fields of
/// [`MAX_FIELD_BYTES`] are accepted: the limits are inclusive.
pub fn write_at_length_limits_is_accepted<B: Backend>(backend: &B) {
    let field = "f".repeat(MAX_FIELD_BYTES);
    let ty = Type {
        group: field.clone(),
        group_version: field.clone(),
        kind: field.clone(),
    };
    let id = make_id(
        ty,
        tenancy(&field, &field),
        &"n".repeat(MAX_NAME_BYTES),
        &field,
    );
    let stored = write_ok(backend, &new_resource(id.clone()), "create at the limits");

    assert_eq!(backend.read(&id), Ok(stored));
}

// ---------------------------------------------------------------------------
// delete_cas
// ---------------------------------------------------------------------------

/// Checks that deleting a key with nothing stored is `Ok` and changes nothing.
pub fn delete_missing_is_ok<B: Backend>(backend: &B) {
    create(backend, "other");
    let before = backend.contents();

    assert_eq!(backend.delete_cas(&fixture_id("d", UID), "1"), Ok(()));
    assert_eq!(backend.contents(), before);
}

/// Checks that a delete with a uid other than the stored one is `Ok` and changes
/// nothing.
pub fn delete_with_other_uid_changes_nothing<B: Backend>(backend: &B) {
    let stored = create(backend, "d");
    let before = backend.contents();

    assert_eq!(
        backend.delete_cas(&fixture_id("d", "b"), &stored.version),
        Ok(())
    );
    assert_eq!(backend.contents(), before);
}

/// Checks that a delete with an empty uid is `Ok` and changes nothing.
pub fn delete_with_empty_uid_changes_nothing<B: Backend>(backend: &B) {
    let stored = create(backend, "d");
    let before = backend.contents();

    assert_eq!(
        backend.delete_cas(&fixture_id("d", ""), &stored.version),
        Ok(())
    );
    assert_eq!(backend.contents(), before);
}

/// Checks that a delete compares the uid before the version: another uid
/// with a wrong version is `Ok`, not `CasFailure`.
pub fn delete_checks_uid_before_version<B: Backend>(backend: &B) {
    create(backend, "d");
    let before = backend.contents();

    assert_eq!(backend.delete_cas(&fixture_id("d", "b"), "999"), Ok(()));
    assert_eq!(backend.contents(), before);
}

/// Checks that a delete with a version other than the stored one is `CasFailure`
/// and leaves the resource stored.
pub fn delete_with_stale_version_is_cas_failure<B: Backend>(backend: &B) {
    let created = create(backend, "d");
    let updated = write_ok(backend, &update_of(&created, "1"), "update");
    let id = id_of(&created);

    assert_eq!(
        backend.delete_cas(&id, &created.version),
        Err(Error::CasFailure {
            id: Box::new(id.clone()),
            expected: created.version.clone(),
            stored: Some(updated.version.clone()),
        })
    );
    assert_eq!(backend.read(&id), Ok(updated));
}

/// Checks that a delete with an empty version is `CasFailure` and leaves the
/// resource stored.
pub fn delete_with_empty_version_is_cas_failure<B: Backend>(backend: &B) {
    let stored = create(backend, "d");
    let id = id_of(&stored);

    assert_eq!(
        backend.delete_cas(&id, ""),
        Err(Error::CasFailure {
            id: Box::new(id.clone()),
            expected: String::new(),
            stored: Some(stored.version.clone()),
        })
    );
    assert_eq!(backend.read(&id), Ok(stored));
}

/// Checks that a delete with the stored uid and version removes the resource.
pub fn delete_with_current_version_removes<B: Backend>(backend: &B) {
    let stored = create(backend, "d");
    let id = id_of(&stored);

    assert_eq!(backend.delete_cas(&id, &stored.version), Ok(()));
    assert_eq!(
        backend.read(&id),
        Err(Error::NotFound {
            id: Box::new(id.clone())
        })
    );
}

/// Checks that a delete naming another group version still deletes: the group
/// version is ignored.
pub fn delete_ignores_group_version<B: Backend>(backend: &B) {
    let stored = create(backend, "d");
    let id = id_of(&stored);

    assert_eq!(
        backend.delete_cas(&with_group_version(&id, "v2"), &stored.version),
        Ok(())
    );
    assert_eq!(
        backend.read(&id),
        Err(Error::NotFound {
            id: Box::new(id.clone())
        })
    );
}

/// Checks that the delete event carries the last stored copy, not the first.
pub fn delete_event_carries_last_stored_copy<B: Backend>(backend: &B) {
    let created = create(backend, "d");
    let updated = write_ok(backend, &update_of(&created, "1"), "update");
    let mut watch = watch_ok(
        backend,
        &scenario_type(),
        &tenancy("default", "default"),
        "d",
    );
    let (snapshot, _) = read_snapshot(&mut watch);
    assert_eq!(snapshot, vec![Arc::clone(&updated)]);

    backend
        .delete_cas(&id_of(&updated), &updated.version)
        .expect("delete");
    let index = backend.contents().index;

    assert_eq!(
        expect_event(&mut watch, "the delete"),
        WatchEvent::Delete {
            index,
            resource: updated,
        }
    );
}

// ---------------------------------------------------------------------------
// list
// ---------------------------------------------------------------------------

/// Checks that a list that matches nothing is an empty vec.
pub fn list_empty_result_is_empty_vec<B: Backend>(backend: &B) {
    create(backend, "x");

    assert_eq!(
        backend.list(&scenario_type(), &tenancy("default", "default"), "y"),
        Ok(Vec::new())
    );
}

/// Checks that the group version of the list query is ignored.
pub fn list_ignores_query_group_version<B: Backend>(backend: &B) {
    let seeds = write_seeds(backend);
    let expected = sorted_by_key(vec![
        Arc::clone(&seeds[0]),
        Arc::clone(&seeds[1]),
        Arc::clone(&seeds[2]),
    ]);

    for group_version in ["v1", "v2", "v9"] {
        assert_eq!(
            list_ok(
                backend,
                &fixture_type(group_version, "a"),
                &tenancy("default", "default"),
                ""
            ),
            expected,
            "list with group version {group_version:?}"
        );
    }
}

/// Checks that a list matches the group: a resource of kind `a` in another group
/// is not listed.
pub fn list_excludes_other_group<B: Backend>(backend: &B) {
    let ours = create(backend, "x");
    let other_id = make_id(
        Type {
            group: "other".into(),
            group_version: "v1".into(),
            kind: "a".into(),
        },
        tenancy("default", "default"),
        "x",
        UID,
    );
    write_ok(backend, &new_resource(other_id), "create in group other");

    assert_eq!(
        list_ok(
            backend,
            &scenario_type(),
            &tenancy("default", "default"),
            ""
        ),
        vec![ours]
    );
}

/// Checks that the name prefix is compared byte-wise and case-sensitively.
pub fn list_prefix_is_case_sensitive<B: Backend>(backend: &B) {
    let lower = create(backend, "admin");
    let upper = create(backend, "Admin");
    let default = tenancy("default", "default");

    assert_eq!(
        list_ok(backend, &scenario_type(), &default, "a"),
        vec![lower]
    );
    assert_eq!(
        list_ok(backend, &scenario_type(), &default, "A"),
        vec![upper]
    );
}

/// Checks that a list returns resources in key order, comparing names as bytes.
pub fn list_returns_key_order<B: Backend>(backend: &B) {
    for name in ["b", "ab", "a", "B", "a\u{e9}", "a~"] {
        create(backend, name);
    }
    let listed = list_ok(
        backend,
        &scenario_type(),
        &tenancy("default", "default"),
        "",
    );
    let names: Vec<&str> = listed
        .iter()
        .map(|resource| resource.id.as_ref().map_or("", |id| id.name.as_str()))
        .collect();

    // "é" is 0xC3 0xA9 in UTF-8, so "aé" sorts after "a~" (0x7E).
    assert_eq!(names, ["B", "a", "ab", "a~", "a\u{e9}", "b"]);
}

// ---------------------------------------------------------------------------
// list_by_owner
// ---------------------------------------------------------------------------

/// Creates an owner and returns it.
fn create_owner<B: Backend>(backend: &B, name: &str) -> Arc<Resource> {
    let id = make_id(
        fixture_type("v1", "owner"),
        tenancy("default", "default"),
        name,
        UID,
    );
    write_ok(
        backend,
        &new_resource(id),
        &format!("create owner {name:?}"),
    )
}

/// Creates a `test.v1.a` resource owned by `owner`.
fn create_owned<B: Backend>(backend: &B, name: &str, owner: &Id) -> Arc<Resource> {
    let mut resource = fixture(name, UID);
    resource.owner = Some(owner.clone());
    write_ok(backend, &resource, &format!("create owned {name:?}"))
}

/// Checks that `list_by_owner` returns every resource with that owner, in key
/// order.
pub fn list_by_owner_returns_owned_in_key_order<B: Backend>(backend: &B) {
    let owner = id_of(&create_owner(backend, "o"));
    let second = create_owned(backend, "y", &owner);
    let first = create_owned(backend, "x", &owner);
    create(backend, "unowned");

    assert_eq!(owned_by_ok(backend, &owner), vec![first, second]);
}

/// Checks that an owner that owns nothing has an empty list.
pub fn list_by_owner_unknown_owner_is_empty<B: Backend>(backend: &B) {
    let owner = id_of(&create_owner(backend, "o"));
    create(backend, "unowned");

    assert_eq!(backend.list_by_owner(&owner), Ok(Vec::new()));
}

/// Checks that the owner's uid is part of the match.
pub fn list_by_owner_matches_uid<B: Backend>(backend: &B) {
    let owner = id_of(&create_owner(backend, "o"));
    create_owned(backend, "x", &owner);

    assert_eq!(
        backend.list_by_owner(&with_uid(&owner, "b")),
        Ok(Vec::new())
    );
}

/// Checks that the owner's group version is ignored.
pub fn list_by_owner_ignores_group_version<B: Backend>(backend: &B) {
    let owner = id_of(&create_owner(backend, "o"));
    let owned = create_owned(backend, "x", &owner);

    assert_eq!(
        owned_by_ok(backend, &with_group_version(&owner, "v2")),
        vec![owned]
    );
}

/// Checks that owner references outlive the owner's deletion.
pub fn list_by_owner_outlives_owner_delete<B: Backend>(backend: &B) {
    let owner = create_owner(backend, "o");
    let owner_id = id_of(&owner);
    let owned = create_owned(backend, "x", &owner_id);
    backend
        .delete_cas(&owner_id, &owner.version)
        .expect("delete the owner");

    assert_eq!(owned_by_ok(backend, &owner_id), vec![owned]);
}

/// Checks that deleting the owned resource removes its owner reference.
pub fn list_by_owner_drops_deleted_resource<B: Backend>(backend: &B) {
    let owner = id_of(&create_owner(backend, "o"));
    let owned = create_owned(backend, "x", &owner);
    backend
        .delete_cas(&id_of(&owned), &owned.version)
        .expect("delete the owned resource");

    assert_eq!(backend.list_by_owner(&owner), Ok(Vec::new()));
}

/// Checks that rewriting the owned resource without an owner removes the
/// reference.
pub fn list_by_owner_drops_rewrite_without_owner<B: Backend>(backend: &B) {
    let owner = id_of(&create_owner(backend, "o"));
    let owned = create_owned(backend, "x", &owner);
    let mut rewrite = update_of(&owned, "1");
    rewrite.owner = None;
    write_ok(backend, &rewrite, "rewrite without owner");

    assert_eq!(backend.list_by_owner(&owner), Ok(Vec::new()));
}

/// Checks that rewriting the owned resource with another owner moves the
/// reference.
pub fn list_by_owner_follows_owner_change<B: Backend>(backend: &B) {
    let old_owner = id_of(&create_owner(backend, "o1"));
    let new_owner = id_of(&create_owner(backend, "o2"));
    let owned = create_owned(backend, "x", &old_owner);
    let mut rewrite = update_of(&owned, "1");
    rewrite.owner = Some(new_owner.clone());
    let rewritten = write_ok(backend, &rewrite, "rewrite with another owner");

    assert_eq!(backend.list_by_owner(&old_owner), Ok(Vec::new()));
    assert_eq!(owned_by_ok(backend, &new_owner), vec![rewritten]);
}

// ---------------------------------------------------------------------------
// Versions and the commit index
// ---------------------------------------------------------------------------

/// Checks that a stored version is the decimal commit index of its write.
pub fn version_is_decimal_commit_index<B: Backend>(backend: &B) {
    let created = create(backend, "v");
    assert_eq!(created.version, backend.contents().index.to_string());

    let updated = write_ok(backend, &update_of(&created, "1"), "update");
    assert_eq!(updated.version, backend.contents().index.to_string());
}

/// Checks that every committed write and delete advances the commit index by
/// exactly one.
pub fn commits_advance_index_by_one<B: Backend>(backend: &B) {
    let start = backend.contents().index;
    let first = create(backend, "x");
    assert_eq!(backend.contents().index, start + 1, "after a create");

    let second = create(backend, "y");
    assert_eq!(backend.contents().index, start + 2, "after a second create");

    write_ok(backend, &update_of(&first, "1"), "update");
    assert_eq!(backend.contents().index, start + 3, "after an update");

    backend
        .delete_cas(&id_of(&second), &second.version)
        .expect("delete");
    assert_eq!(backend.contents().index, start + 4, "after a delete");

    let third = create(backend, "z");
    assert_eq!(third.version, (start + 5).to_string(), "after the delete");
}

/// Checks that rejected writes and deletes, no-op deletes, reads and lists
/// change neither the commit index nor the contents.
pub fn rejected_operations_keep_index_and_contents<B: Backend>(backend: &B) {
    let stored = create(backend, "x");
    let id = id_of(&stored);
    let before = backend.contents();

    let mut stale = update_of(&stored, "1");
    stale.version = "999".into();
    assert!(backend.write_cas(&stale).is_err(), "stale write succeeded");
    let mut wrong_uid = update_of(&stored, "1");
    wrong_uid.id = Some(with_uid(&id, "b"));
    assert!(
        backend.write_cas(&wrong_uid).is_err(),
        "wrong uid succeeded"
    );
    assert!(
        backend.delete_cas(&id, "999").is_err(),
        "stale delete succeeded"
    );
    backend
        .delete_cas(&with_uid(&id, "b"), &stored.version)
        .expect("delete with another uid");
    backend
        .delete_cas(&fixture_id("missing", UID), "1")
        .expect("delete of a missing resource");
    backend.read(&id).expect("read");
    list_ok(backend, &scenario_type(), &tenancy(WILDCARD, WILDCARD), "");
    owned_by_ok(backend, &id);

    assert_eq!(backend.contents(), before);
}

// ---------------------------------------------------------------------------
// watch
// ---------------------------------------------------------------------------

/// Checks that a watch snapshot contains each matching resource once, at its
/// latest version.
pub fn watch_snapshot_holds_latest_version<B: Backend>(backend: &B) {
    let created = create(backend, "w");
    let updated = write_ok(backend, &update_of(&created, "1"), "update");
    let latest = write_ok(backend, &update_of(&updated, "2"), "second update");
    let mut watch = watch_ok(
        backend,
        &scenario_type(),
        &tenancy("default", "default"),
        "",
    );

    let (snapshot, index) = read_snapshot(&mut watch);
    assert_eq!(snapshot, vec![latest]);
    assert_eq!(index, backend.contents().index);
    expect_no_event(&mut watch, "EndOfSnapshot");
}

/// Checks that, after the snapshot, a watch delivers each change with its commit
/// index, in commit order.
pub fn watch_follows_changes_in_commit_order<B: Backend>(backend: &B) {
    let mut watch = watch_ok(
        backend,
        &scenario_type(),
        &tenancy("default", "default"),
        "",
    );
    let (snapshot, _) = read_snapshot(&mut watch);
    assert_eq!(snapshot, Vec::new());

    let x = create(backend, "x");
    let y = create(backend, "y");
    let x2 = write_ok(backend, &update_of(&x, "1"), "update x");
    backend
        .delete_cas(&id_of(&y), &y.version)
        .expect("delete y");
    let delete_index = backend.contents().index;

    let version = |resource: &Resource| resource.version.parse::<u64>().expect("decimal version");
    let expected = [
        WatchEvent::Upsert {
            index: version(&x),
            resource: Arc::clone(&x),
        },
        WatchEvent::Upsert {
            index: version(&y),
            resource: Arc::clone(&y),
        },
        WatchEvent::Upsert {
            index: version(&x2),
            resource: Arc::clone(&x2),
        },
        WatchEvent::Delete {
            index: delete_index,
            resource: y,
        },
    ];
    for (n, event) in expected.into_iter().enumerate() {
        assert_eq!(expect_event(&mut watch, &format!("change {n}")), event);
    }
    expect_no_event(&mut watch, "the last change");
}

// ---------------------------------------------------------------------------
// List and watch scenarios
// ---------------------------------------------------------------------------

/// One row of the list and watch scenario table. The query type is group
/// `test`, kind `a` (any group version).
#[derive(Clone, Copy, Debug)]
pub struct ListCase {
    /// Row name, used in case names.
    pub name: &'static str,
    /// Partition to match, or `"*"`.
    pub partition: &'static str,
    /// Namespace to match, or `"*"`.
    pub namespace: &'static str,
    /// Name prefix to match.
    pub name_prefix: &'static str,
    /// Numbers of the seeds that match.
    pub expected: &'static [usize],
}

/// The list and watch scenarios over the six seeds.
pub static LIST_CASES: [ListCase; 7] = [
    ListCase {
        name: "default_default_all",
        partition: "default",
        namespace: "default",
        name_prefix: "",
        expected: &[0, 1, 2],
    },
    ListCase {
        name: "billing_payments_all",
        partition: "billing",
        namespace: "payments",
        name_prefix: "",
        expected: &[3],
    },
    ListCase {
        name: "default_default_prefix_a",
        partition: "default",
        namespace: "default",
        name_prefix: "a",
        expected: &[0, 1],
    },
    ListCase {
        name: "any_any_all",
        partition: WILDCARD,
        namespace: WILDCARD,
        name_prefix: "",
        expected: &[0, 1, 2, 3, 5],
    },
    ListCase {
        name: "default_any_all",
        partition: "default",
        namespace: WILDCARD,
        name_prefix: "",
        expected: &[0, 1, 2, 5],
    },
    ListCase {
        name: "any_default_all",
        partition: WILDCARD,
        namespace: "default",
        name_prefix: "",
        expected: &[0, 1, 2],
    },
    ListCase {
        name: "any_any_prefix_a",
        partition: WILDCARD,
        namespace: WILDCARD,
        name_prefix: "a",
        expected: &[0, 1, 3, 5],
    },
];

impl ListCase {
    fn tenancy(&self) -> Tenancy {
        tenancy(self.partition, self.namespace)
    }

    fn is_expected(&self, seed: usize) -> bool {
        self.expected.contains(&seed)
    }
}

/// Checks that, with every seed stored, the list returns exactly the expected
/// seeds, in key order.
pub fn list_case<B: Backend>(backend: &B, case: &ListCase) {
    let seeds = write_seeds(backend);
    let expected = sorted_by_key(
        case.expected
            .iter()
            .map(|&n| Arc::clone(&seeds[n]))
            .collect(),
    );

    assert_eq!(
        list_ok(backend, &scenario_type(), &case.tenancy(), case.name_prefix),
        expected
    );
}

/// Checks that, with every seed stored before the watch starts, the watch
/// delivers the expected seeds as upserts, then `EndOfSnapshot` at the current
/// index, then nothing.
pub fn watch_seeded_case<B: Backend>(backend: &B, case: &ListCase) {
    let seeds = write_seeds(backend);
    let expected = sorted_by_key(
        case.expected
            .iter()
            .map(|&n| Arc::clone(&seeds[n]))
            .collect(),
    );
    let index = backend.contents().index;
    let mut watch = watch_ok(backend, &scenario_type(), &case.tenancy(), case.name_prefix);

    let (snapshot, end_index) = read_snapshot(&mut watch);
    // The order of snapshot upserts is not part of the contract.
    assert_eq!(sorted_by_key(snapshot), expected, "snapshot upserts");
    assert_eq!(end_index, index, "EndOfSnapshot index");
    expect_no_event(&mut watch, "EndOfSnapshot");
}

/// Checks that a watch on an empty store delivers `EndOfSnapshot`, then one
/// upsert per matching seed as the seeds are written, each readable at exactly
/// the event's version. After one of them is deleted, the watch delivers a
/// delete event carrying the resource as last read, and a read is `NotFound`.
pub fn watch_empty_first_case<B: Backend>(backend: &B, case: &ListCase) {
    let mut watch = watch_ok(backend, &scenario_type(), &case.tenancy(), case.name_prefix);
    let start = backend.contents().index;
    assert_eq!(
        expect_event(&mut watch, "EndOfSnapshot"),
        WatchEvent::EndOfSnapshot { index: start }
    );
    expect_no_event(&mut watch, "EndOfSnapshot");

    let mut delivered = Vec::new();
    for n in 0..SEEDS.len() {
        let stored = write_ok(backend, &seed(n), &format!("create seed {n}"));
        if !case.is_expected(n) {
            continue;
        }
        let event = expect_event(&mut watch, &format!("the upsert of seed {n}"));
        let WatchEvent::Upsert { index, resource } = event else {
            panic!("expected the upsert of seed {n}, got {event:?}");
        };
        assert_eq!(resource, stored, "upsert of seed {n}");
        assert_eq!(index.to_string(), resource.version, "index of seed {n}");
        assert_eq!(
            backend.read(&id_of(&resource)),
            Ok(Arc::clone(&resource)),
            "read of seed {n} when its upsert arrived"
        );
        delivered.push(resource);
    }
    expect_no_event(&mut watch, "the last matching seed");

    let victim = delivered.first().expect("every scenario matches a seed");
    let id = id_of(victim);
    let last_read = backend.read(&id).expect("read before the delete");
    backend
        .delete_cas(&id, &last_read.version)
        .expect("delete a seed");
    let delete_index = backend.contents().index;

    assert_eq!(
        expect_event(&mut watch, "the delete"),
        WatchEvent::Delete {
            index: delete_index,
            resource: last_read,
        }
    );
    assert_eq!(
        backend.read(&id),
        Err(Error::NotFound {
            id: Box::new(id.clone())
        })
    );
    expect_no_event(&mut watch, "the delete");
}

// ---------------------------------------------------------------------------
// Invalid arguments
// ---------------------------------------------------------------------------

/// A list or watch query: type, tenancy and name prefix.
#[derive(Clone, Debug)]
struct Query {
    ty: Type,
    tenancy: Tenancy,
    name_prefix: String,
}

/// An operation made invalid by one change to a valid call.
#[derive(Clone, Copy)]
enum InvalidCall {
    /// Changes a valid create.
    Write(fn(&mut Resource)),
    /// Changes the id of a valid read of seed 0.
    Read(fn(&mut Id)),
    /// Changes the id and version of a valid delete of seed 0.
    Delete(fn(&mut Id, &mut String)),
    /// Changes the owner id of a valid `list_by_owner`.
    ListByOwner(fn(&mut Id)),
    /// Changes a valid list query.
    List(fn(&mut Query)),
    /// Changes a valid watch query.
    Watch(fn(&mut Query)),
}

/// One invalid input and the field its `InvalidArgument` must name.
#[derive(Clone, Copy)]
pub struct InvalidCase {
    /// Case name, used in case names.
    pub name: &'static str,
    /// The field `InvalidArgument` must name.
    pub field: &'static str,
    call: InvalidCall,
}

impl Debug for InvalidCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvalidCase")
            .field("name", &self.name)
            .field("field", &self.field)
            .finish_non_exhaustive()
    }
}

fn id_mut(resource: &mut Resource) -> &mut Id {
    resource.id.get_or_insert_with(Id::default)
}

fn owner_mut(resource: &mut Resource) -> &mut Id {
    resource.owner.get_or_insert_with(Id::default)
}

fn type_mut(id: &mut Id) -> &mut Type {
    id.r#type.get_or_insert_with(Type::default)
}

fn tenancy_mut(id: &mut Id) -> &mut Tenancy {
    id.tenancy.get_or_insert_with(Tenancy::default)
}

/// Returns a string one byte longer than `max`.
fn too_long(max: usize) -> String {
    "x".repeat(max + 1)
}

/// Invalid inputs: each must return `InvalidArgument` naming the field and
/// change nothing.
pub const INVALID_CASES: &[InvalidCase] = &[
    InvalidCase {
        name: "write_missing_id",
        field: "id",
        call: InvalidCall::Write(|r| r.id = None),
    },
    InvalidCase {
        name: "write_missing_type",
        field: "id.type",
        call: InvalidCall::Write(|r| id_mut(r).r#type = None),
    },
    InvalidCase {
        name: "write_empty_group",
        field: "id.type.group",
        call: InvalidCall::Write(|r| type_mut(id_mut(r)).group.clear()),
    },
    InvalidCase {
        name: "write_empty_group_version",
        field: "id.type.group_version",
        call: InvalidCall::Write(|r| type_mut(id_mut(r)).group_version.clear()),
    },
    InvalidCase {
        name: "write_empty_kind",
        field: "id.type.kind",
        call: InvalidCall::Write(|r| type_mut(id_mut(r)).kind.clear()),
    },
    InvalidCase {
        name: "write_empty_name",
        field: "id.name",
        call: InvalidCall::Write(|r| id_mut(r).name.clear()),
    },
    InvalidCase {
        name: "write_wildcard_partition",
        field: "id.tenancy.partition",
        call: InvalidCall::Write(|r| tenancy_mut(id_mut(r)).partition = WILDCARD.into()),
    },
    InvalidCase {
        name: "write_wildcard_namespace",
        field: "id.tenancy.namespace",
        call: InvalidCall::Write(|r| tenancy_mut(id_mut(r)).namespace = WILDCARD.into()),
    },
    InvalidCase {
        name: "write_long_group",
        field: "id.type.group",
        call: InvalidCall::Write(|r| type_mut(id_mut(r)).group = too_long(MAX_FIELD_BYTES)),
    },
    InvalidCase {
        name: "write_long_group_version",
        field: "id.type.group_version",
        call: InvalidCall::Write(|r| type_mut(id_mut(r)).group_version = too_long(MAX_FIELD_BYTES)),
    },
    InvalidCase {
        name: "write_long_kind",
        field: "id.type.kind",
        call: InvalidCall::Write(|r| type_mut(id_mut(r)).kind = too_long(MAX_FIELD_BYTES)),
    },
    InvalidCase {
        name: "write_long_partition",
        field: "id.tenancy.partition",
        call: InvalidCall::Write(|r| tenancy_mut(id_mut(r)).partition = too_long(MAX_FIELD_BYTES)),
    },
    InvalidCase {
        name: "write_long_namespace",
        field: "id.tenancy.namespace",
        call: InvalidCall::Write(|r| tenancy_mut(id_mut(r)).namespace = too_long(MAX_FIELD_BYTES)),
    },
    InvalidCase {
        name: "write_long_name",
        field: "id.name",
        call: InvalidCall::Write(|r| id_mut(r).name = too_long(MAX_NAME_BYTES)),
    },
    InvalidCase {
        name: "write_long_uid",
        field: "id.uid",
        call: InvalidCall::Write(|r| id_mut(r).uid = too_long(MAX_FIELD_BYTES)),
    },
    InvalidCase {
        name: "write_long_version",
        field: "version",
        call: InvalidCall::Write(|r| r.version = "9".repeat(MAX_VERSION_BYTES + 1)),
    },
    InvalidCase {
        name: "write_oversized_resource",
        field: "resource",
        call: InvalidCall::Write(|r| {
            r.metadata
                .insert("bulk".into(), "x".repeat(MAX_RESOURCE_BYTES));
        }),
    },
    InvalidCase {
        name: "write_create_with_empty_uid",
        field: "id.uid",
        call: InvalidCall::Write(|r| id_mut(r).uid.clear()),
    },
    InvalidCase {
        name: "write_owner_missing_type",
        field: "owner.type",
        call: InvalidCall::Write(|r| owner_mut(r).r#type = None),
    },
    InvalidCase {
        name: "write_owner_empty_name",
        field: "owner.name",
        call: InvalidCall::Write(|r| owner_mut(r).name.clear()),
    },
    InvalidCase {
        name: "write_owner_wildcard_partition",
        field: "owner.tenancy.partition",
        call: InvalidCall::Write(|r| tenancy_mut(owner_mut(r)).partition = WILDCARD.into()),
    },
    InvalidCase {
        name: "read_empty_kind",
        field: "id.type.kind",
        call: InvalidCall::Read(|id| type_mut(id).kind.clear()),
    },
    InvalidCase {
        name: "read_long_name",
        field: "id.name",
        call: InvalidCall::Read(|id| id.name = too_long(MAX_NAME_BYTES)),
    },
    InvalidCase {
        name: "delete_empty_name",
        field: "id.name",
        call: InvalidCall::Delete(|id, _| id.name.clear()),
    },
    InvalidCase {
        name: "delete_wildcard_namespace",
        field: "id.tenancy.namespace",
        call: InvalidCall::Delete(|id, _| tenancy_mut(id).namespace = WILDCARD.into()),
    },
    InvalidCase {
        name: "delete_long_version",
        field: "version",
        call: InvalidCall::Delete(|_, version| *version = "9".repeat(MAX_VERSION_BYTES + 1)),
    },
    InvalidCase {
        name: "list_by_owner_empty_group",
        field: "owner.type.group",
        call: InvalidCall::ListByOwner(|id| type_mut(id).group.clear()),
    },
    InvalidCase {
        name: "list_empty_group",
        field: "type.group",
        call: InvalidCall::List(|q| q.ty.group.clear()),
    },
    InvalidCase {
        name: "list_empty_kind",
        field: "type.kind",
        call: InvalidCall::List(|q| q.ty.kind.clear()),
    },
    InvalidCase {
        name: "list_long_partition",
        field: "tenancy.partition",
        call: InvalidCall::List(|q| q.tenancy.partition = too_long(MAX_FIELD_BYTES)),
    },
    InvalidCase {
        name: "list_long_prefix",
        field: "name_prefix",
        call: InvalidCall::List(|q| q.name_prefix = too_long(MAX_NAME_BYTES)),
    },
    InvalidCase {
        name: "watch_empty_group",
        field: "type.group",
        call: InvalidCall::Watch(|q| q.ty.group.clear()),
    },
    InvalidCase {
        name: "watch_empty_kind",
        field: "type.kind",
        call: InvalidCall::Watch(|q| q.ty.kind.clear()),
    },
    InvalidCase {
        name: "watch_long_prefix",
        field: "name_prefix",
        call: InvalidCall::Watch(|q| q.name_prefix = too_long(MAX_NAME_BYTES)),
    },
];

/// Returns a valid create with an owner, the base of the invalid writes.
fn valid_create() -> Resource {
    let mut resource = fixture("fresh", "u");
    resource.owner = Some(make_id(
        fixture_type("v1", "owner"),
        tenancy("default", "default"),
        "parent",
        "p",
    ));
    resource
}

fn valid_query() -> Query {
    Query {
        ty: scenario_type(),
        tenancy: tenancy("default", "default"),
        name_prefix: String::new(),
    }
}

/// Runs `call` with its change applied (`invalid`) or not, and returns the
/// error, if any.
fn perform_call<B: Backend>(backend: &B, call: InvalidCall, invalid: bool) -> Result<(), Error> {
    let seed0 = backend.read(&id_of(&seed(0))).expect("seed 0 is stored");
    match call {
        InvalidCall::Write(change) => {
            let mut resource = valid_create();
            if invalid {
                change(&mut resource);
            }
            backend.write_cas(&resource).map(drop)
        }
        InvalidCall::Read(change) => {
            let mut id = id_of(&seed0);
            if invalid {
                change(&mut id);
            }
            backend.read(&id).map(drop)
        }
        InvalidCall::Delete(change) => {
            let mut id = id_of(&seed0);
            let mut version = seed0.version.clone();
            if invalid {
                change(&mut id, &mut version);
            }
            backend.delete_cas(&id, &version)
        }
        InvalidCall::ListByOwner(change) => {
            let mut id = id_of(&seed0);
            if invalid {
                change(&mut id);
            }
            backend.list_by_owner(&id).map(drop)
        }
        InvalidCall::List(change) => {
            let mut query = valid_query();
            if invalid {
                change(&mut query);
            }
            backend
                .list(&query.ty, &query.tenancy, &query.name_prefix)
                .map(drop)
        }
        InvalidCall::Watch(change) => {
            let mut query = valid_query();
            if invalid {
                change(&mut query);
            }
            backend
                .watch_list(&query.ty, &query.tenancy, &query.name_prefix)
                .map(drop)
        }
    }
}

/// Checks that, with the seeds stored, the invalid call returns
/// `InvalidArgument` naming `case.field` and leaves the commit index and
/// contents unchanged. The same call without the change must succeed.
pub fn invalid_argument_case<B: Backend>(backend: &B, case: &InvalidCase) {
    write_seeds(backend);
    let before = backend.contents();

    match perform_call(backend, case.call, true) {
        Err(Error::InvalidArgument { field, .. }) => {
            assert_eq!(field, case.field, "field named by InvalidArgument")
        }
        other => panic!(
            "expected InvalidArgument naming {:?}, got {other:?}",
            case.field
        ),
    }
    assert_eq!(
        backend.contents(),
        before,
        "contents after the invalid call"
    );

    // The unchanged call succeeds, so the error came from the change.
    assert_eq!(perform_call(backend, case.call, false), Ok(()));
}
