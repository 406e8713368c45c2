//! Runs the conformance suite against `Store`, one `#[test]` per case, and
//! checks that the suite fails on backends that break a rule.

use std::collections::BTreeSet;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use watchstore::conformance::{self, Backend, BackendWatch, Contents};
use watchstore::{Error, Id, Resource, Store, StoreOptions, Tenancy, Type, WatchEvent};

/// Defines one `#[test]` per named case, and `TESTED`, the list of names.
macro_rules! conformance_tests {
    ($($case:ident),* $(,)?) => {
        /// Names of the cases that have a test in this file.
        const TESTED: &[&str] = &[$(stringify!($case)),*];

        $(
            #[test]
            fn $case() {
                conformance::run_case(stringify!($case), Store::new);
            }
        )*
    };
}

conformance_tests![
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
    // list scenarios
    list_default_default_all,
    list_billing_payments_all,
    list_default_default_prefix_a,
    list_any_any_all,
    list_default_any_all,
    list_any_default_all,
    list_any_any_prefix_a,
    // watch scenarios, seeds written first
    watch_seeded_default_default_all,
    watch_seeded_billing_payments_all,
    watch_seeded_default_default_prefix_a,
    watch_seeded_any_any_all,
    watch_seeded_default_any_all,
    watch_seeded_any_default_all,
    watch_seeded_any_any_prefix_a,
    // watch scenarios, empty store watched first
    watch_empty_first_default_default_all,
    watch_empty_first_billing_payments_all,
    watch_empty_first_default_default_prefix_a,
    watch_empty_first_any_any_all,
    watch_empty_first_default_any_all,
    watch_empty_first_any_default_all,
    watch_empty_first_any_any_prefix_a,
    // invalid arguments
    invalid_write_missing_id,
    invalid_write_missing_type,
    invalid_write_empty_group,
    invalid_write_empty_group_version,
    invalid_write_empty_kind,
    invalid_write_empty_name,
    invalid_write_wildcard_partition,
    invalid_write_wildcard_namespace,
    invalid_write_long_group,
    invalid_write_long_group_version,
    invalid_write_long_kind,
    invalid_write_long_partition,
    invalid_write_long_namespace,
    invalid_write_long_name,
    invalid_write_long_uid,
    invalid_write_long_version,
    invalid_write_oversized_resource,
    invalid_write_create_with_empty_uid,
    invalid_write_owner_missing_type,
    invalid_write_owner_empty_name,
    invalid_write_owner_wildcard_partition,
    invalid_read_empty_kind,
    invalid_read_long_name,
    invalid_delete_empty_name,
    invalid_delete_wildcard_namespace,
    invalid_delete_long_version,
    invalid_list_by_owner_empty_group,
    invalid_list_empty_group,
    invalid_list_empty_kind,
    invalid_list_long_partition,
    invalid_list_long_prefix,
    invalid_watch_empty_group,
    invalid_watch_empty_kind,
    invalid_watch_long_prefix,
];

#[test]
fn every_case_has_one_test() {
    let names: Vec<String> = conformance::cases::<Store>()
        .iter()
        .map(|case| case.name().to_owned())
        .collect();
    let unique: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(unique.len(), names.len(), "case names are not unique");

    let tested: BTreeSet<&str> = TESTED.iter().copied().collect();
    assert_eq!(tested.len(), TESTED.len(), "a case is tested twice");
    assert_eq!(tested, unique, "tests in this file differ from the suite");
}

#[test]
fn run_all_passes_on_store() {
    conformance::run_all(Store::new);
}

/// Each watch case reads its watch before eight more changes commit, so an
/// eight-slot log must serve every case without a lag error.
#[test]
fn run_all_passes_with_small_log() {
    conformance::run_all(|| {
        Store::with_options(StoreOptions::default().log_capacity(8)).expect("valid options")
    });
}

#[test]
#[should_panic(expected = "no conformance case is named")]
fn run_case_rejects_unknown_name() {
    conformance::run_case("no_such_case", Store::new);
}

// ---------------------------------------------------------------------------
// The suite must fail on a backend that breaks a rule.
// ---------------------------------------------------------------------------

/// One rule a [`Faulty`] backend breaks.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// `delete_cas` deletes whatever uid the id carries.
    DeleteIgnoresUid,
    /// `read` returns the stored copy whatever group version is requested.
    ReadIgnoresGroupVersion,
    /// `list` ignores the name prefix.
    ListIgnoresPrefix,
    /// `list` accepts an empty kind and returns nothing.
    ListAcceptsEmptyKind,
    /// `list_by_owner` ignores the owner's uid.
    OwnerIgnoresUid,
    /// Watches deliver every upsert twice.
    WatchRepeatsUpserts,
}

/// A `Store` with one rule broken.
struct Faulty {
    store: Store,
    fault: Fault,
}

struct FaultyWatch {
    inner: watchstore::Watch,
    repeat_upserts: bool,
    pending: Option<WatchEvent>,
}

impl FaultyWatch {
    fn pass(&mut self, event: Option<WatchEvent>) -> Option<WatchEvent> {
        if self.repeat_upserts {
            if let Some(upsert @ WatchEvent::Upsert { .. }) = &event {
                self.pending = Some(upsert.clone());
            }
        }
        event
    }
}

impl BackendWatch for FaultyWatch {
    fn next_timeout(&mut self, timeout: Duration) -> Result<Option<WatchEvent>, Error> {
        if let Some(event) = self.pending.take() {
            return Ok(Some(event));
        }
        let event = self.inner.next_timeout(timeout)?;
        Ok(self.pass(event))
    }

    fn try_next(&mut self) -> Result<Option<WatchEvent>, Error> {
        if let Some(event) = self.pending.take() {
            return Ok(Some(event));
        }
        let event = self.inner.try_next()?;
        Ok(self.pass(event))
    }
}

impl Backend for Faulty {
    type Watch = FaultyWatch;

    fn read(&self, id: &Id) -> Result<Arc<Resource>, Error> {
        match (self.fault, self.store.read(id)) {
            (Fault::ReadIgnoresGroupVersion, Err(Error::GroupVersionMismatch { stored, .. })) => {
                Ok(stored)
            }
            (_, result) => result,
        }
    }

    fn write_cas(&self, resource: &Resource) -> Result<Arc<Resource>, Error> {
        self.store.write_cas(resource)
    }

    fn delete_cas(&self, id: &Id, version: &str) -> Result<(), Error> {
        let Fault::DeleteIgnoresUid = self.fault else {
            return self.store.delete_cas(id, version);
        };
        let any_uid = Id {
            uid: String::new(),
            ..id.clone()
        };
        let stored_uid = match self.store.read(&any_uid) {
            Ok(stored) => stored.id.as_ref().map(|id| id.uid.clone()),
            Err(Error::GroupVersionMismatch { stored, .. }) => {
                stored.id.as_ref().map(|id| id.uid.clone())
            }
            Err(_) => None,
        };
        let id = Id {
            uid: stored_uid.unwrap_or_else(|| id.uid.clone()),
            ..id.clone()
        };
        self.store.delete_cas(&id, version)
    }

    fn list(
        &self,
        ty: &Type,
        tenancy: &Tenancy,
        name_prefix: &str,
    ) -> Result<Vec<Arc<Resource>>, Error> {
        match self.fault {
            Fault::ListIgnoresPrefix => self.store.list(ty, tenancy, ""),
            Fault::ListAcceptsEmptyKind if ty.kind.is_empty() => Ok(Vec::new()),
            _ => self.store.list(ty, tenancy, name_prefix),
        }
    }

    fn list_by_owner(&self, owner: &Id) -> Result<Vec<Arc<Resource>>, Error> {
        let Fault::OwnerIgnoresUid = self.fault else {
            return self.store.list_by_owner(owner);
        };
        let owned = self
            .store
            .snapshot()
            .iter()
            .filter(|resource| {
                resource.owner.as_ref().is_some_and(|stored| {
                    stored.name == owner.name
                        && stored.tenancy == owner.tenancy
                        && stored.r#type.as_ref().map(|t| (&t.group, &t.kind))
                            == owner.r#type.as_ref().map(|t| (&t.group, &t.kind))
                })
            })
            .collect();
        Ok(owned)
    }

    fn watch_list(
        &self,
        ty: &Type,
        tenancy: &Tenancy,
        name_prefix: &str,
    ) -> Result<FaultyWatch, Error> {
        Ok(FaultyWatch {
            inner: self.store.watch_list(ty, tenancy, name_prefix)?,
            repeat_upserts: matches!(self.fault, Fault::WatchRepeatsUpserts),
            pending: None,
        })
    }

    fn contents(&self) -> Contents {
        self.store.contents()
    }
}

fn faulty(fault: Fault) -> impl Fn() -> Faulty {
    move || Faulty {
        store: Store::new(),
        fault,
    }
}

/// Returns the panic message of `run`, or `None` if it did not panic.
fn panic_message(run: impl FnOnce()) -> Option<String> {
    let payload = panic::catch_unwind(AssertUnwindSafe(run)).err()?;
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default();
    Some(message)
}

#[test]
fn suite_detects_broken_rules() {
    let detections = [
        (
            Fault::DeleteIgnoresUid,
            "delete_with_other_uid_changes_nothing",
        ),
        (
            Fault::DeleteIgnoresUid,
            "delete_with_empty_uid_changes_nothing",
        ),
        (
            Fault::ReadIgnoresGroupVersion,
            "read_with_other_group_version_is_mismatch",
        ),
        (
            Fault::ReadIgnoresGroupVersion,
            "read_as_v1_after_v2_write_is_mismatch",
        ),
        (Fault::ListIgnoresPrefix, "list_any_any_prefix_a"),
        (Fault::ListIgnoresPrefix, "list_prefix_is_case_sensitive"),
        (Fault::ListAcceptsEmptyKind, "invalid_list_empty_kind"),
        (Fault::OwnerIgnoresUid, "list_by_owner_matches_uid"),
        (Fault::WatchRepeatsUpserts, "watch_seeded_any_any_all"),
        (
            Fault::WatchRepeatsUpserts,
            "watch_empty_first_default_default_all",
        ),
    ];
    for (fault, case) in detections {
        assert!(
            panic_message(|| conformance::run_case(case, faulty(fault))).is_some(),
            "{case} passed on a backend with fault {fault:?}"
        );
    }
}

#[test]
fn run_all_names_failed_cases() {
    let message = panic_message(|| conformance::run_all(faulty(Fault::ListIgnoresPrefix)))
        .expect("run_all passed on a backend that ignores the name prefix");

    assert!(message.contains("list_any_any_prefix_a:"), "{message}");
    assert!(
        message.contains("list_default_default_prefix_a:"),
        "{message}"
    );
    assert!(!message.contains("read_missing_is_not_found"), "{message}");
}
