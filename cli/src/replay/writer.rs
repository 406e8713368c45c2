//! A writer thread: replays one copy of a trace through compare-and-swap
//! writes and deletes, with the version and uid it holds for each key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use prost_types::Any;
use watchstore::{Error, Id, Resource, Store, Tenancy, Type};

use super::keys::StoreKey;
use crate::trace::{Action, LostCas, Trace, TraceOp};

/// A write this writer committed.
#[derive(Clone, Debug)]
pub struct WriteRecord {
    /// Commit index, equal to the stored version.
    pub index: u64,
    pub key: StoreKey,
    /// When the `write_cas` call started, in nanoseconds since the run
    /// started.
    pub start_ns: u64,
}

/// A delete this writer committed. `delete_cas` does not return the commit
/// index, so the writer records the store's current index just before and
/// just after the call: the delete's index lies in `(after, upto]`.
#[derive(Clone, Debug)]
pub struct DeleteRecord {
    pub key: StoreKey,
    /// Version of the copy that was deleted.
    pub version: u64,
    pub after: u64,
    pub upto: u64,
    pub start_ns: u64,
}

/// Outcome counts of replaying lost compare-and-swap writes, which the
/// store must reject as etcd did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LostCasCounts {
    /// Lost writes replayed.
    pub replayed: u64,
    /// Rejected by the store with a CAS failure or a uid mismatch.
    pub rejected: u64,
    /// Deletes of a key that was already gone, which the store accepts
    /// without a change, as etcd changed nothing.
    pub unchanged: u64,
    /// Committed by the store although they lost in the recording.
    pub accepted: u64,
}

#[derive(Debug, Default)]
pub struct WriterReport {
    pub writes: Vec<WriteRecord>,
    pub deletes: Vec<DeleteRecord>,
    /// Recorded operations the store rejected (lost CAS writes excluded).
    pub rejected: u64,
    /// Deletes of keys the writer did not hold, which change nothing.
    pub unchanged_deletes: u64,
    pub lost_cas: LostCasCounts,
    /// Description of the first rejected recorded operation.
    pub first_rejection: Option<String>,
    /// Description of the first lost write the store accepted.
    pub first_accepted_lost: Option<String>,
    /// When the writer finished, in nanoseconds since the run started.
    pub finished_ns: u64,
}

/// The version and uid a writer holds for a key it created.
struct Held {
    version: String,
    uid: String,
}

pub struct Writer<'a> {
    store: &'a Store,
    trace: &'a Trace,
    copy: usize,
    scale: usize,
    started: Instant,
    progress: &'a AtomicU64,
    held: HashMap<StoreKey, Held>,
    /// Store version of each (key, etcd revision) this writer wrote, to
    /// translate the expected revision of a lost etcd write.
    etcd_versions: HashMap<(StoreKey, u64), String>,
    next_uid: u64,
    report: WriterReport,
}

impl<'a> Writer<'a> {
    pub fn new(
        store: &'a Store,
        trace: &'a Trace,
        copy: usize,
        scale: usize,
        started: Instant,
        progress: &'a AtomicU64,
    ) -> Self {
        Writer {
            store,
            trace,
            copy,
            scale,
            started,
            progress,
            held: HashMap::new(),
            etcd_versions: HashMap::new(),
            next_uid: 0,
            report: WriterReport::default(),
        }
    }

    /// Replays every operation of the trace; stops at the first error that
    /// is not a compare-and-swap rejection.
    pub fn run(mut self) -> anyhow::Result<WriterReport> {
        for op in &self.trace.ops {
            self.apply(op).with_context(|| {
                format!(
                    "writer {} failed to replay {} ({}) at {}",
                    self.copy,
                    op.object,
                    self.trace.paths[0].display(),
                    op.origin
                )
            })?;
            self.progress.fetch_add(1, Ordering::Relaxed);
        }
        self.report.finished_ns = self.now_ns();
        Ok(self.report)
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn new_uid(&mut self) -> String {
        self.next_uid += 1;
        format!("{}-{}", self.copy, self.next_uid)
    }

    fn apply(&mut self, op: &TraceOp) -> anyhow::Result<()> {
        let key = StoreKey::for_object(&op.object, self.copy, self.scale);
        match &op.action {
            Action::Create => {
                let uid = self.new_uid();
                self.write(op, key, String::new(), uid)
            }
            Action::Update | Action::Apply => {
                let (version, uid) = match self.held.get(&key) {
                    Some(held) => (held.version.clone(), held.uid.clone()),
                    None => (String::new(), self.new_uid()),
                };
                self.write(op, key, version, uid)
            }
            Action::Delete => self.delete(op, key),
            Action::LostCas(lost) => self.replay_lost(op, key, lost),
        }
    }

    fn resource(&self, op: &TraceOp, key: &StoreKey, version: String, uid: String) -> Resource {
        let object = &op.object;
        Resource {
            id: Some(Id {
                uid,
                name: key.name.clone(),
                r#type: Some(Type {
                    group: key.group.clone(),
                    group_version: object.version.clone(),
                    kind: key.kind.clone(),
                }),
                tenancy: Some(Tenancy {
                    partition: key.partition.clone(),
                    namespace: key.namespace.clone(),
                }),
            }),
            version,
            // The type URL names the recorded type; the value is the body
            // as recorded (JSON for SimKube, the etcd value bytes for etcd).
            data: op.body.as_ref().map(|body| Any {
                type_url: format!("trace/{}/{}/{}", object.group, object.version, object.kind),
                value: body.clone(),
            }),
            ..Resource::default()
        }
    }

    fn write(
        &mut self,
        op: &TraceOp,
        key: StoreKey,
        version: String,
        uid: String,
    ) -> anyhow::Result<()> {
        let resource = self.resource(op, &key, version, uid.clone());
        let start_ns = self.now_ns();
        match self.store.write_cas(&resource) {
            Ok(stored) => {
                self.record_write(op, key, uid, &stored.version, start_ns)?;
                Ok(())
            }
            Err(error) if is_cas_rejection(&error) => {
                self.report.rejected += 1;
                if self.report.first_rejection.is_none() {
                    self.report.first_rejection =
                        Some(format!("{} at {}: {error}", key, op.origin));
                }
                Ok(())
            }
            Err(error) => Err(anyhow!(error)),
        }
    }

    fn record_write(
        &mut self,
        op: &TraceOp,
        key: StoreKey,
        uid: String,
        version: &str,
        start_ns: u64,
    ) -> anyhow::Result<()> {
        let index: u64 = version.parse().with_context(|| {
            format!("the store returned version {version:?}, not a commit index")
        })?;
        if let Some(revision) = op.etcd_revision {
            self.etcd_versions
                .insert((key.clone(), revision), version.to_string());
        }
        self.held.insert(
            key.clone(),
            Held {
                version: version.to_string(),
                uid,
            },
        );
        self.report.writes.push(WriteRecord {
            index,
            key,
            start_ns,
        });
        Ok(())
    }

    fn delete(&mut self, op: &TraceOp, key: StoreKey) -> anyhow::Result<()> {
        let Some(held) = self.held.get(&key) else {
            // Nothing held: the store treats a delete with an empty uid as a
            // no-op, which this call exercises.
            let resource = self.resource(op, &key, String::new(), String::new());
            let id = resource.id.expect("built with an id");
            self.store.delete_cas(&id, "")?;
            self.report.unchanged_deletes += 1;
            return Ok(());
        };
        let version = held.version.clone();
        let resource = self.resource(op, &key, String::new(), held.uid.clone());
        let id = resource.id.expect("built with an id");

        let start_ns = self.now_ns();
        let after = self.store.current_index();
        match self.store.delete_cas(&id, &version) {
            Ok(()) => {
                let upto = self.store.current_index();
                self.held.remove(&key);
                self.report.deletes.push(DeleteRecord {
                    key,
                    version: version
                        .parse()
                        .context("held version is not a commit index")?,
                    after,
                    upto,
                    start_ns,
                });
                Ok(())
            }
            Err(error) if is_cas_rejection(&error) => {
                self.report.rejected += 1;
                if self.report.first_rejection.is_none() {
                    self.report.first_rejection =
                        Some(format!("{} at {}: {error}", key, op.origin));
                }
                Ok(())
            }
            Err(error) => Err(anyhow!(error)),
        }
    }

    /// Replays a write that lost its compare-and-swap in the recording, with
    /// the store version that corresponds to the etcd revision it expected.
    fn replay_lost(&mut self, op: &TraceOp, key: StoreKey, lost: &LostCas) -> anyhow::Result<()> {
        self.report.lost_cas.replayed += 1;
        let held_uid = self.held.get(&key).map(|held| held.uid.clone());
        let version = if lost.expected_revision == 0 {
            String::new()
        } else {
            // A revision this writer never wrote for the key (a life of the
            // key before the recorded history) maps to "0", which no stored
            // resource has, because the first commit index is 1.
            self.etcd_versions
                .get(&(key.clone(), lost.expected_revision))
                .cloned()
                .unwrap_or_else(|| "0".to_string())
        };

        let accepted = if lost.delete {
            let uid = held_uid.unwrap_or_default();
            let resource = self.resource(op, &key, String::new(), uid);
            let id = resource.id.expect("built with an id");
            let start_ns = self.now_ns();
            let after = self.store.current_index();
            match self.store.delete_cas(&id, &version) {
                Ok(()) if !self.held.contains_key(&key) => {
                    self.report.lost_cas.unchanged += 1;
                    false
                }
                Ok(()) => {
                    let upto = self.store.current_index();
                    let held = self.held.remove(&key).expect("checked above");
                    self.report.deletes.push(DeleteRecord {
                        key: key.clone(),
                        version: held
                            .version
                            .parse()
                            .context("held version is not a commit index")?,
                        after,
                        upto,
                        start_ns,
                    });
                    true
                }
                Err(error) if is_cas_rejection(&error) => {
                    self.report.lost_cas.rejected += 1;
                    false
                }
                Err(error) => bail!(error),
            }
        } else {
            // A lost create was made for a new object, so it carries a new
            // uid. A lost update carries the uid of the life it expected.
            let uid = match (&held_uid, version.is_empty()) {
                (Some(uid), false) => uid.clone(),
                _ => self.new_uid(),
            };
            let resource = self.resource(op, &key, version, uid.clone());
            let start_ns = self.now_ns();
            match self.store.write_cas(&resource) {
                Ok(stored) => {
                    self.record_write(op, key.clone(), uid, &stored.version, start_ns)?;
                    true
                }
                Err(error) if is_cas_rejection(&error) => {
                    self.report.lost_cas.rejected += 1;
                    false
                }
                Err(error) => bail!(error),
            }
        };

        if accepted {
            self.report.lost_cas.accepted += 1;
            if self.report.first_accepted_lost.is_none() {
                self.report.first_accepted_lost = Some(format!(
                    "{key} at {} (client {}, expected etcd revision {}, run after revision {})",
                    op.origin, lost.client_id, lost.expected_revision, lost.at_revision
                ));
            }
        }
        Ok(())
    }
}

/// Returns true for the errors a compare-and-swap loses with.
fn is_cas_rejection(error: &Error) -> bool {
    matches!(error, Error::CasFailure { .. } | Error::WrongUid { .. })
}
