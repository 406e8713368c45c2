//! Checks that every watcher saw exactly what the writers committed.
//!
//! The writers' records are the reference: each write with its commit index,
//! each delete with the version it removed and a bracket around its index.
//! A watcher's stream is split into segments, each a snapshot at index `I`
//! followed by live events up to the index where it fell behind (or the end
//! of the run). For each segment:
//! - the snapshot equals the committed state at `I`, restricted to the
//!   watcher's type and filter;
//! - live indexes strictly increase from `I`, every live upsert is a
//!   committed write with its version equal to its index, and every live
//!   delete removes a version the watcher saw;
//! - no committed write in the segment's range is missing, and no delete of
//!   a version the watcher saw is missing.
//!
//! After the run, each watcher's materialized view must equal `store.list`
//! with the same filter.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::keys::{Filter, StoreKey, TypeKey};
use super::watcher::{Observed, WatchLog};
use super::writer::WriterReport;

struct DeleteInfo {
    /// Store index just before the `delete_cas` call.
    after: u64,
    /// Store index just after it returned.
    upto: u64,
    start_ns: u64,
    /// Commit index, once a watcher saw the delete or the bracket leaves
    /// one free index.
    index: Option<u64>,
}

/// Every commit of the run.
pub struct History {
    final_index: u64,
    /// Commit index to key and `write_cas` start time.
    writes: HashMap<u64, (StoreKey, u64)>,
    write_indexes: Vec<u64>,
    writes_by_key: HashMap<StoreKey, Vec<u64>>,
    deletes: HashMap<(StoreKey, u64), DeleteInfo>,
    /// Deletes whose commit index could not be determined.
    pub unresolved_deletes: usize,
}

/// The result of verification: the failures, first one first.
#[derive(Default)]
pub struct Findings {
    pub failures: Vec<String>,
}

impl Findings {
    pub fn fail(&mut self, message: String) {
        self.failures.push(message);
    }
}

impl History {
    pub fn build(reports: &[WriterReport], final_index: u64, findings: &mut Findings) -> History {
        let mut history = History {
            final_index,
            writes: HashMap::new(),
            write_indexes: Vec::new(),
            writes_by_key: HashMap::new(),
            deletes: HashMap::new(),
            unresolved_deletes: 0,
        };
        for report in reports {
            for write in &report.writes {
                if let Some((other, _)) = history
                    .writes
                    .insert(write.index, (write.key.clone(), write.start_ns))
                {
                    findings.fail(format!(
                        "two writes returned commit index {}: {} and {other}",
                        write.index, write.key
                    ));
                }
                history
                    .writes_by_key
                    .entry(write.key.clone())
                    .or_default()
                    .push(write.index);
            }
            for delete in &report.deletes {
                history.deletes.insert(
                    (delete.key.clone(), delete.version),
                    DeleteInfo {
                        after: delete.after,
                        upto: delete.upto,
                        start_ns: delete.start_ns,
                        index: None,
                    },
                );
            }
        }
        history.write_indexes = history.writes.keys().copied().collect();
        history.write_indexes.sort_unstable();
        for indexes in history.writes_by_key.values_mut() {
            indexes.sort_unstable();
        }

        let commits = history.writes.len() + history.deletes.len();
        if commits as u64 != final_index {
            findings.fail(format!(
                "the store's index is {final_index}, but the writers committed {} writes and {} \
                 deletes",
                history.writes.len(),
                history.deletes.len()
            ));
        }
        history
    }

    /// Learns delete indexes from the watchers, then assigns the indexes no
    /// write took to the deletes whose bracket leaves only one of them.
    pub fn resolve_deletes(&mut self, logs: &[WatchLog], findings: &mut Findings) {
        for log in logs {
            for event in &log.events {
                let Observed::Delete {
                    index,
                    key,
                    version,
                    ..
                } = event
                else {
                    continue;
                };
                let Some(info) = self.deletes.get_mut(&(key.clone(), *version)) else {
                    findings.fail(format!(
                        "{}: received a delete of {key} version {version} at index {index}, \
                         which no writer committed",
                        log.label()
                    ));
                    continue;
                };
                if *index <= info.after || *index > info.upto {
                    findings.fail(format!(
                        "{}: the delete of {key} version {version} has index {index}, but the \
                         store's index was {} before the call and {} after it",
                        log.label(),
                        info.after,
                        info.upto
                    ));
                }
                if self.writes.contains_key(index) {
                    findings.fail(format!(
                        "{}: the delete of {key} has index {index}, which a write returned",
                        log.label()
                    ));
                }
                match info.index {
                    Some(known) if known != *index => findings.fail(format!(
                        "{}: the delete of {key} version {version} has index {index}, another \
                         watcher received it at index {known}",
                        log.label()
                    )),
                    _ => info.index = Some(*index),
                }
            }
        }

        let taken: HashSet<u64> = self
            .deletes
            .values()
            .filter_map(|info| info.index)
            .collect();
        let mut free: BTreeSet<u64> = (1..=self.final_index)
            .filter(|index| !self.writes.contains_key(index) && !taken.contains(index))
            .collect();
        loop {
            let mut progress = false;
            for info in self
                .deletes
                .values_mut()
                .filter(|info| info.index.is_none())
            {
                let mut candidates = free.range(info.after + 1..=info.upto);
                if let (Some(&only), None) = (candidates.next(), candidates.next()) {
                    info.index = Some(only);
                    free.remove(&only);
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        self.unresolved_deletes = self
            .deletes
            .values()
            .filter(|info| info.index.is_none())
            .count();
    }

    /// Returns whether the delete of `key` at `version` committed before
    /// `index`: `None` when no such delete exists or when its bracket
    /// straddles `index` and its index is unknown.
    fn deleted_before(&self, key: &StoreKey, version: u64, index: u64) -> Option<bool> {
        let info = self.deletes.get(&(key.clone(), version))?;
        match info.index {
            Some(d) => Some(d < index),
            None if info.upto < index => Some(true),
            None if info.after + 1 >= index => Some(false),
            None => None,
        }
    }

    /// Returns the `write_cas` start time of the write at `index`.
    pub fn write_start(&self, index: u64) -> Option<u64> {
        self.writes.get(&index).map(|(_, start)| *start)
    }

    /// Returns the `delete_cas` start time of the delete of `key` at `version`.
    pub fn delete_start(&self, key: &StoreKey, version: u64) -> Option<u64> {
        self.deletes
            .get(&(key.clone(), version))
            .map(|info| info.start_ns)
    }

    /// Returns the committed state at `index` for one type and filter. A key
    /// whose delete may or may not precede `index` is left out.
    fn state_at(&self, index: u64, ty: &TypeKey, filter: &Filter) -> BTreeMap<StoreKey, u64> {
        let mut state = BTreeMap::new();
        for (key, writes) in &self.writes_by_key {
            if !key_matches(key, ty, filter) {
                continue;
            }
            let count = writes.partition_point(|&write| write <= index);
            let Some(&version) = writes[..count].last() else {
                continue;
            };
            match self.deleted_before(key, version, index + 1) {
                Some(true) => {}
                Some(false) => {
                    state.insert(key.clone(), version);
                }
                None if self.deletes.contains_key(&(key.clone(), version)) => {}
                None => {
                    state.insert(key.clone(), version);
                }
            }
        }
        state
    }
}

fn key_matches(key: &StoreKey, ty: &TypeKey, filter: &Filter) -> bool {
    key.group == ty.group && key.kind == ty.kind && filter.matches(key)
}

/// The live part of one segment, collected while walking a watch log.
struct Segment {
    start: u64,
    last: u64,
    /// Every (key, version) the watcher saw in this segment.
    seen: HashSet<(StoreKey, u64)>,
    /// Write indexes delivered live.
    upserts: HashSet<u64>,
    deletes: HashSet<(StoreKey, u64)>,
    /// Current version of each key, for checking deletes.
    current: HashMap<StoreKey, u64>,
}

/// Verifies one watch log against the history.
pub fn verify_watch(log: &WatchLog, history: &History, filter: &Filter, findings: &mut Findings) {
    let label = log.label();
    if let Some(error) = &log.error {
        findings.fail(format!("{label}: the watch ended early: {error}"));
        return;
    }
    let mut snapshot: Vec<(u64, StoreKey, u64)> = Vec::new();
    let mut segment: Option<Segment> = None;
    let mut last_live = 0;

    for event in &log.events {
        match event {
            Observed::Upsert {
                index,
                key,
                version,
                snapshot: true,
                ..
            } => snapshot.push((*index, key.clone(), *version)),
            Observed::EndOfSnapshot { index } => {
                segment = Some(check_snapshot(
                    log, history, filter, &snapshot, *index, findings,
                ));
                snapshot.clear();
            }
            Observed::Upsert {
                index,
                key,
                version,
                ..
            } => {
                let Some(live) = segment.as_mut() else {
                    findings.fail(format!(
                        "{label}: a live upsert at index {index} arrived before any snapshot"
                    ));
                    return;
                };
                check_order(&label, *index, &mut last_live, live, findings);
                if *version != *index {
                    findings.fail(format!(
                        "{label}: the upsert of {key} at index {index} carries version {version}"
                    ));
                }
                match history.writes.get(index) {
                    Some((written, _)) if written == key => {}
                    Some((written, _)) => findings.fail(format!(
                        "{label}: the upsert at index {index} is for {key}, but that index wrote {written}"
                    )),
                    None => findings.fail(format!(
                        "{label}: received an upsert of {key} at index {index}, which no writer committed"
                    )),
                }
                if !key_matches(key, &log.ty, filter) {
                    findings.fail(format!(
                        "{label}: received {key}, which the filter excludes"
                    ));
                }
                live.upserts.insert(*index);
                live.seen.insert((key.clone(), *version));
                live.current.insert(key.clone(), *version);
            }
            Observed::Delete {
                index,
                key,
                version,
                ..
            } => {
                let Some(live) = segment.as_mut() else {
                    findings.fail(format!(
                        "{label}: a delete at index {index} arrived before any snapshot"
                    ));
                    return;
                };
                check_order(&label, *index, &mut last_live, live, findings);
                if live.current.get(key) != Some(version) {
                    findings.fail(format!(
                        "{label}: received a delete of {key} version {version} at index {index}, \
                         but its view held version {:?}",
                        live.current.get(key)
                    ));
                }
                live.current.remove(key);
                live.deletes.insert((key.clone(), *version));
            }
            Observed::Lagged { next } => {
                if let Some(live) = segment.take() {
                    check_complete(log, history, filter, &live, Some(*next), findings);
                }
                snapshot.clear();
            }
        }
    }
    match segment {
        Some(live) => check_complete(log, history, filter, &live, None, findings),
        None => findings.fail(format!("{label}: the watch never completed a snapshot")),
    }
}

fn check_order(
    label: &str,
    index: u64,
    last_live: &mut u64,
    live: &mut Segment,
    findings: &mut Findings,
) {
    if index <= live.last || index <= *last_live {
        findings.fail(format!(
            "{label}: index {index} arrived after index {}",
            live.last.max(*last_live)
        ));
    }
    live.last = index;
    *last_live = index;
}

fn check_snapshot(
    log: &WatchLog,
    history: &History,
    filter: &Filter,
    entries: &[(u64, StoreKey, u64)],
    index: u64,
    findings: &mut Findings,
) -> Segment {
    let label = log.label();
    let mut received = BTreeMap::new();
    for (event_index, key, version) in entries {
        if *event_index != index {
            findings.fail(format!(
                "{label}: a snapshot upsert of {key} has index {event_index}, the snapshot's index is {index}"
            ));
        }
        if received.insert(key.clone(), *version).is_some() {
            findings.fail(format!(
                "{label}: the snapshot at index {index} holds {key} twice"
            ));
        }
    }

    let expected = history.state_at(index, &log.ty, filter);
    for key in expected.keys().chain(received.keys()) {
        let want = expected.get(key);
        let got = received.get(key);
        // A key whose delete may or may not precede the snapshot is absent
        // from `expected`. Accept it when the version it shows was written
        // at or before the snapshot.
        let ambiguous = want.is_none()
            && got.is_some_and(|&version| {
                history.deleted_before(key, version, index + 1).is_none()
                    && history
                        .writes
                        .get(&version)
                        .is_some_and(|(written, _)| written == key)
            });
        if want != got && !ambiguous {
            findings.fail(format!(
                "{label}: in the snapshot at index {index}, {key} has version {got:?}, the \
                 committed state has {want:?}"
            ));
            break;
        }
    }

    Segment {
        start: index,
        last: index,
        seen: received
            .iter()
            .map(|(key, version)| (key.clone(), *version))
            .collect(),
        upserts: HashSet::new(),
        deletes: HashSet::new(),
        current: received.into_iter().collect(),
    }
}

/// Checks that a segment received every matching write in
/// `(start, bound)` and every delete of a version it saw. `bound` is the
/// index the watcher missed, or `None` for the segment that ran to the end.
fn check_complete(
    log: &WatchLog,
    history: &History,
    filter: &Filter,
    live: &Segment,
    bound: Option<u64>,
    findings: &mut Findings,
) {
    let label = log.label();
    let end = bound.unwrap_or(u64::MAX);
    let first = history
        .write_indexes
        .partition_point(|&index| index <= live.start);
    for &index in &history.write_indexes[first..] {
        if index >= end {
            break;
        }
        let (key, _) = &history.writes[&index];
        if key_matches(key, &log.ty, filter) && !live.upserts.contains(&index) {
            findings.fail(format!(
                "{label}: missed the upsert of {key} at index {index}"
            ));
            return;
        }
    }
    for (key, version) in &live.seen {
        if live.deletes.contains(&(key.clone(), *version)) {
            continue;
        }
        let required = match bound {
            None => history.deletes.contains_key(&(key.clone(), *version)),
            Some(bound) => history.deleted_before(key, *version, bound) == Some(true),
        };
        if required {
            findings.fail(format!(
                "{label}: missed the delete of {key} version {version}"
            ));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::writer::{DeleteRecord, WriteRecord};

    fn key(name: &str) -> StoreKey {
        StoreKey {
            group: "core".into(),
            kind: "pods".into(),
            partition: "default".into(),
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn pods() -> TypeKey {
        key("").type_key()
    }

    /// Writes a@1, b@2, deletes a@1 at index 3, writes b@4.
    fn report() -> WriterReport {
        let write = |index, name| WriteRecord {
            index,
            key: key(name),
            start_ns: 0,
        };
        WriterReport {
            writes: vec![write(1, "a"), write(2, "b"), write(4, "b")],
            deletes: vec![DeleteRecord {
                key: key("a"),
                version: 1,
                after: 2,
                upto: 3,
                start_ns: 0,
            }],
            ..WriterReport::default()
        }
    }

    fn upsert(index: u64, name: &str) -> Observed {
        Observed::Upsert {
            index,
            key: key(name),
            version: index,
            snapshot: false,
            recv_ns: 0,
        }
    }

    fn snapshot_upsert(index: u64, name: &str, version: u64) -> Observed {
        Observed::Upsert {
            index,
            key: key(name),
            version,
            snapshot: true,
            recv_ns: 0,
        }
    }

    fn delete(index: u64, name: &str, version: u64) -> Observed {
        Observed::Delete {
            index,
            key: key(name),
            version,
            recv_ns: 0,
        }
    }

    fn end(index: u64) -> Observed {
        Observed::EndOfSnapshot { index }
    }

    fn full_stream() -> Vec<Observed> {
        vec![
            end(0),
            upsert(1, "a"),
            upsert(2, "b"),
            delete(3, "a", 1),
            upsert(4, "b"),
        ]
    }

    /// Verifies one watch of pods with filter `all` and returns the failures.
    fn verify(events: Vec<Observed>, final_index: u64) -> Vec<String> {
        verify_with(events, final_index, &Filter::All)
    }

    fn verify_with(events: Vec<Observed>, final_index: u64, filter: &Filter) -> Vec<String> {
        let log = WatchLog {
            watcher: 0,
            ty: pods(),
            group_version: "v1".into(),
            events,
            view: BTreeMap::new(),
            lag_errors: 0,
            error: None,
        };
        let mut findings = Findings::default();
        let mut history = History::build(&[report()], final_index, &mut findings);
        let logs = [log];
        history.resolve_deletes(&logs, &mut findings);
        verify_watch(&logs[0], &history, filter, &mut findings);
        findings.failures
    }

    fn assert_one_failure(failures: &[String], expected: &str) {
        assert_eq!(failures.len(), 1, "{failures:#?}");
        assert!(failures[0].contains(expected), "{failures:#?}");
    }

    #[test]
    fn exact_stream_passes() {
        assert_eq!(verify(full_stream(), 4), Vec::<String>::new());
    }

    #[test]
    fn missing_upsert_is_reported() {
        let mut events = full_stream();
        events.remove(2);
        assert_one_failure(
            &verify(events, 4),
            "missed the upsert of core/pods default/default/b at index 2",
        );
    }

    #[test]
    fn duplicate_event_is_reported() {
        let mut events = full_stream();
        events.insert(3, upsert(2, "b"));
        assert_one_failure(&verify(events, 4), "index 2 arrived after index 2");
    }

    #[test]
    fn missing_delete_is_reported() {
        let mut events = full_stream();
        events.remove(3);
        assert_one_failure(
            &verify(events, 4),
            "missed the delete of core/pods default/default/a version 1",
        );
    }

    #[test]
    fn wrong_version_is_reported() {
        let mut events = full_stream();
        events[2] = Observed::Upsert {
            index: 2,
            key: key("b"),
            version: 1,
            snapshot: false,
            recv_ns: 0,
        };
        assert_one_failure(&verify(events, 4), "carries version 1");
    }

    #[test]
    fn uncommitted_upsert_is_reported() {
        let mut events = full_stream();
        events.push(upsert(9, "c"));
        assert_one_failure(&verify(events, 4), "which no writer committed");
    }

    #[test]
    fn delete_outside_its_bracket_is_reported() {
        let mut events = full_stream();
        events[3] = delete(2, "a", 1);
        events.remove(2);
        let failures = verify(events, 4);
        assert!(
            failures
                .iter()
                .any(|failure| failure.contains("the store's index was 2 before the call")),
            "{failures:#?}"
        );
    }

    #[test]
    fn excluded_key_is_reported() {
        let filter = Filter::Prefix("b".into());
        let events = vec![end(0), upsert(1, "a"), upsert(2, "b"), upsert(4, "b")];
        let failures = verify_with(events, 4, &filter);
        assert!(
            failures
                .iter()
                .any(|failure| failure.contains("which the filter excludes")),
            "{failures:#?}"
        );
    }

    #[test]
    fn filtered_stream_passes() {
        let filter = Filter::Prefix("b".into());
        let events = vec![end(0), upsert(2, "b"), upsert(4, "b")];
        assert_eq!(verify_with(events, 4, &filter), Vec::<String>::new());
    }

    #[test]
    fn snapshot_after_lag_is_checked() {
        // The watch misses index 2, restarts with a snapshot at index 3
        // (only b@2 is live then), and follows from there.
        let good = vec![
            end(0),
            upsert(1, "a"),
            Observed::Lagged { next: 2 },
            snapshot_upsert(3, "b", 2),
            end(3),
            upsert(4, "b"),
        ];
        assert_eq!(verify(good, 4), Vec::<String>::new());

        let stale = vec![
            end(0),
            upsert(1, "a"),
            Observed::Lagged { next: 2 },
            snapshot_upsert(3, "a", 1),
            snapshot_upsert(3, "b", 2),
            end(3),
            upsert(4, "b"),
        ];
        let failures = verify(stale, 4);
        assert!(
            failures[0].contains("in the snapshot at index 3, core/pods default/default/a"),
            "{failures:#?}"
        );
    }

    #[test]
    fn upsert_missed_before_lag_is_reported() {
        // The watch claims to have missed index 3 but never received index 2.
        let events = vec![
            end(0),
            upsert(1, "a"),
            Observed::Lagged { next: 3 },
            snapshot_upsert(3, "b", 2),
            end(3),
            upsert(4, "b"),
        ];
        assert_one_failure(
            &verify(events, 4),
            "missed the upsert of core/pods default/default/b at index 2",
        );
    }

    #[test]
    fn index_without_commit_is_reported() {
        let failures = verify(full_stream(), 5);
        assert!(
            failures[0].contains(
                "the store's index is 5, but the writers committed 3 writes and 1 deletes"
            ),
            "{failures:#?}"
        );
    }

    #[test]
    fn delete_index_is_resolved_from_the_bracket() {
        let mut findings = Findings::default();
        let mut history = History::build(&[report()], 4, &mut findings);
        history.resolve_deletes(&[], &mut findings);
        assert_eq!(history.unresolved_deletes, 0);
        assert_eq!(history.deleted_before(&key("a"), 1, 4), Some(true));
        assert_eq!(history.deleted_before(&key("a"), 1, 3), Some(false));
        assert!(findings.failures.is_empty(), "{:#?}", findings.failures);
    }
}
