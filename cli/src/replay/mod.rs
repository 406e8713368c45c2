//! Replays a parsed trace through a `watchstore::Store` with concurrent
//! writers and watchers, then verifies what every watcher saw.

pub mod keys;
mod verify;
pub mod watcher;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use watchstore::{Store, StoreOptions};

use crate::trace::Trace;
use keys::{Filter, StoreKey, TypeKey};
use verify::{Findings, History};
use watcher::{LagMode, Observed, WatchLog, Watcher};
use writer::{LostCasCounts, Writer, WriterReport};

/// How long a run goes before the progress bar appears.
const PROGRESS_DELAY: Duration = Duration::from_secs(1);

/// Settings of one replay.
#[derive(Clone, Debug)]
pub struct Config {
    /// Watchers; each opens one watch per resource type of the trace.
    pub watchers: usize,
    pub filter: Filter,
    /// Copies of the trace, each replayed by its own writer thread.
    pub scale: usize,
    pub ring_capacity: usize,
    pub lag: LagMode,
    /// Whether a progress bar may appear on stderr.
    pub progress: bool,
}

/// Delivery latency from the start of the store call that committed an
/// event to its receipt by a watcher, over all live events.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    pub ok: bool,
    /// Number of failed checks.
    pub failures: usize,
    /// The first failure, naming the first differing key.
    pub first_failure: Option<String>,
    /// Watches whose view was compared with `store.list`.
    pub watches_checked: usize,
    /// Objects in the final state the recording implies, over all copies.
    pub final_objects: usize,
    /// Deletes whose commit index no watcher reported and the store index
    /// around the call did not pin down; checks that need it were skipped.
    pub unresolved_deletes: usize,
}

/// Everything a replay measured and checked.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub trace: Vec<String>,
    pub format: crate::trace::Format,
    /// Recorded operations in one copy of the trace.
    pub operations: usize,
    /// Records read but not replayed, by reason.
    pub skipped: BTreeMap<String, u64>,
    pub notes: Vec<String>,
    pub scale: usize,
    pub watchers: usize,
    /// Resource types in the trace; each watcher watches all of them.
    pub types: Vec<String>,
    pub filter: String,
    pub ring_capacity: usize,
    pub lag_mode: LagMode,
    /// Writes and deletes the store committed.
    pub applied: u64,
    /// Recorded writes and deletes the store rejected on compare-and-swap.
    pub rejected: u64,
    /// Deletes of keys the writer did not hold; the store changes nothing.
    pub unchanged_deletes: u64,
    pub lost_cas: LostCasCounts,
    pub first_rejection: Option<String>,
    pub snapshot_events: u64,
    /// Upserts and deletes delivered after the snapshots, over all watches.
    pub live_events: u64,
    pub events_per_second: f64,
    pub writes_per_second: f64,
    pub latency: Latency,
    /// Resets and `Lagged` errors over all watches.
    pub lag_errors: u64,
    pub final_index: u64,
    /// From the start of the run until the last writer finished.
    pub writers_seconds: f64,
    /// From the start of the run until the last live event was received.
    pub delivery_seconds: f64,
    /// The whole run, including the watchers' final drain.
    pub elapsed_seconds: f64,
    pub verification: Verification,
}

/// Replays `trace` and verifies every watcher.
pub fn run(trace: &Trace, config: &Config) -> anyhow::Result<Summary> {
    let options = StoreOptions::default().log_capacity(config.ring_capacity);
    let store = Store::with_options(options)
        .map_err(|error| anyhow!("invalid --ring-capacity {}: {error}", config.ring_capacity))?;

    let mut types: BTreeMap<TypeKey, String> = BTreeMap::new();
    for op in &trace.ops {
        let key = StoreKey::for_object(&op.object, 0, 1);
        types
            .entry(key.type_key())
            .or_insert_with(|| op.object.version.clone());
    }

    // Every watch opens before the first write, so each one starts with an
    // empty snapshot and then receives the whole replay live.
    let mut watches = Vec::new();
    for watcher in 0..config.watchers {
        for (ty, group_version) in &types {
            let watch = watcher::open(&store, ty, group_version, &config.filter, config.lag)
                .with_context(|| format!("opening a watch of {ty}"))?;
            let log = WatchLog {
                watcher,
                ty: ty.clone(),
                group_version: group_version.clone(),
                events: Vec::new(),
                view: BTreeMap::new(),
                lag_errors: 0,
                error: None,
            };
            watches.push((watch, log));
        }
    }

    let progress = AtomicU64::new(0);
    let writers_done = AtomicBool::new(false);
    let started = Instant::now();
    let total_ops = (trace.ops.len() * config.scale) as u64;

    let watcher = Watcher {
        store: &store,
        filter: &config.filter,
        lag: config.lag,
        writers_done: &writers_done,
        started,
    };
    let (reports, logs) = thread::scope(|scope| {
        let watcher = &watcher;
        let watch_threads: Vec<_> = watches
            .into_iter()
            .map(|(watch, log)| scope.spawn(move || watcher.run(watch, log)))
            .collect();

        let writer_threads: Vec<_> = (0..config.scale)
            .map(|copy| {
                let (store, progress) = (&store, &progress);
                scope.spawn(move || {
                    Writer::new(store, trace, copy, config.scale, started, progress).run()
                })
            })
            .collect();

        show_progress(config, &writer_threads, &progress, total_ops, started);

        let mut reports = Vec::new();
        let mut failure = None;
        for handle in writer_threads {
            match handle.join() {
                Ok(Ok(report)) => reports.push(report),
                Ok(Err(error)) => failure = failure.or(Some(error)),
                Err(_) => failure = failure.or(Some(anyhow!("a writer thread panicked"))),
            }
        }
        if failure.is_some() {
            // Ends every watch at once with `WatchClosed`.
            store.close();
        }
        writers_done.store(true, Ordering::Release);

        let mut logs = Vec::new();
        for handle in watch_threads {
            match handle.join() {
                Ok(log) => logs.push(log),
                Err(_) => failure = failure.or(Some(anyhow!("a watcher thread panicked"))),
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok((reports, logs)),
        }
    })?;
    let elapsed = started.elapsed();
    // Each writer and watcher timed itself, so the progress poll and the
    // watchers' final poll do not count.
    let writers_elapsed = Duration::from_nanos(
        reports
            .iter()
            .map(|report| report.finished_ns)
            .max()
            .unwrap_or(0),
    );
    let delivery_elapsed = Duration::from_nanos(last_delivery_ns(&logs));

    let final_index = store.current_index();
    let mut findings = Findings::default();
    let mut history = History::build(&reports, final_index, &mut findings);
    history.resolve_deletes(&logs, &mut findings);
    for log in &logs {
        verify::verify_watch(log, &history, &config.filter, &mut findings);
    }
    compare_views_with_list(&store, &logs, &config.filter, &mut findings)?;
    let final_objects = compare_final_contents(&store, trace, config.scale, &mut findings);

    let lost_cas = sum_lost_cas(&reports);
    if lost_cas.accepted > 0 {
        let first = reports
            .iter()
            .find_map(|report| report.first_accepted_lost.clone());
        findings.failures.insert(
            0,
            format!(
                "the store committed {} writes that lost their compare-and-swap in the \
                 recording; first: {}",
                lost_cas.accepted,
                first.unwrap_or_default()
            ),
        );
    }

    let applied: u64 = reports
        .iter()
        .map(|report| (report.writes.len() + report.deletes.len()) as u64)
        .sum();
    let (snapshot_events, live_events) = count_events(&logs);
    Ok(Summary {
        trace: trace
            .paths
            .iter()
            .map(|path| path.display().to_string())
            .collect(),
        format: trace.format,
        operations: trace.ops.len(),
        skipped: trace.skipped.clone(),
        notes: trace.notes.clone(),
        scale: config.scale,
        watchers: config.watchers,
        types: types.keys().map(ToString::to_string).collect(),
        filter: config.filter.to_string(),
        ring_capacity: config.ring_capacity,
        lag_mode: config.lag,
        applied,
        rejected: reports.iter().map(|report| report.rejected).sum(),
        unchanged_deletes: reports.iter().map(|report| report.unchanged_deletes).sum(),
        lost_cas,
        first_rejection: reports
            .iter()
            .find_map(|report| report.first_rejection.clone()),
        snapshot_events,
        live_events,
        events_per_second: per_second(live_events, delivery_elapsed),
        writes_per_second: per_second(applied, writers_elapsed),
        latency: latency(&logs, &history),
        lag_errors: logs.iter().map(|log| log.lag_errors).sum(),
        final_index,
        writers_seconds: writers_elapsed.as_secs_f64(),
        delivery_seconds: delivery_elapsed.as_secs_f64(),
        elapsed_seconds: elapsed.as_secs_f64(),
        verification: Verification {
            ok: findings.failures.is_empty(),
            failures: findings.failures.len(),
            first_failure: findings.failures.first().cloned(),
            watches_checked: logs.len(),
            final_objects,
            unresolved_deletes: history.unresolved_deletes,
        },
    })
}

/// Draws a progress bar on stderr once the writers have run for
/// [`PROGRESS_DELAY`], and returns when every writer has finished.
fn show_progress<T>(
    config: &Config,
    writers: &[thread::ScopedJoinHandle<'_, T>],
    progress: &AtomicU64,
    total: u64,
    started: Instant,
) {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} replaying [{bar:40}] {pos}/{len} operations, {elapsed} elapsed",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    let mut shown = false;
    while !writers.iter().all(|handle| handle.is_finished()) {
        thread::sleep(Duration::from_millis(50));
        if config.progress && !shown && started.elapsed() >= PROGRESS_DELAY {
            // `stderr()` draws nothing when stderr is not a terminal.
            bar.set_draw_target(ProgressDrawTarget::stderr());
            shown = true;
        }
        bar.set_position(progress.load(Ordering::Relaxed));
    }
    bar.finish_and_clear();
}

fn compare_views_with_list(
    store: &Store,
    logs: &[WatchLog],
    filter: &Filter,
    findings: &mut Findings,
) -> anyhow::Result<()> {
    let (tenancy, prefix) = filter.query();
    let mut lists: HashMap<TypeKey, BTreeMap<StoreKey, u64>> = HashMap::new();
    for log in logs {
        if log.error.is_some() {
            continue;
        }
        if !lists.contains_key(&log.ty) {
            let listed = store
                .list(&log.ty.to_type(&log.group_version), &tenancy, prefix)
                .with_context(|| format!("listing {}", log.ty))?;
            let mut versions = BTreeMap::new();
            for resource in listed {
                let version = resource.version.parse().with_context(|| {
                    format!("store.list returned version {:?}", resource.version)
                })?;
                versions.insert(StoreKey::of(&resource), version);
            }
            lists.insert(log.ty.clone(), versions);
        }
        let listed = &lists[&log.ty];
        if let Some(key) = first_difference(&log.view, listed) {
            findings.fail(format!(
                "{}: the view differs from store.list at {key}: view has version {:?}, list has {:?}",
                log.label(),
                log.view.get(&key),
                listed.get(&key)
            ));
        }
    }
    Ok(())
}

/// Returns the first key, in key order, on which two maps differ.
fn first_difference<V: PartialEq>(
    left: &BTreeMap<StoreKey, V>,
    right: &BTreeMap<StoreKey, V>,
) -> Option<StoreKey> {
    left.keys()
        .chain(right.keys())
        .filter(|key| left.get(*key) != right.get(*key))
        .min()
        .cloned()
}

/// Compares the store's contents with the final state the recording
/// implies, keys and bodies, and returns the number of expected objects.
fn compare_final_contents(
    store: &Store,
    trace: &Trace,
    scale: usize,
    findings: &mut Findings,
) -> usize {
    let recorded = trace.final_state();
    let mut expected = BTreeMap::new();
    for copy in 0..scale {
        for (object, body) in &recorded {
            expected.insert(StoreKey::for_object(object, copy, scale), body.clone());
        }
    }
    let stored: BTreeMap<StoreKey, Option<Vec<u8>>> = store
        .snapshot()
        .iter()
        .map(|resource| {
            let body = resource.data.as_ref().map(|data| data.value.clone());
            (StoreKey::of(&resource), body)
        })
        .collect();
    if let Some(key) = first_difference(&expected, &stored) {
        findings.fail(format!(
            "final contents differ from the recording at {key}: the recording implies {}, the \
             store has {}",
            describe(expected.get(&key)),
            describe(stored.get(&key))
        ));
    }
    expected.len()
}

fn describe(entry: Option<&Option<Vec<u8>>>) -> String {
    match entry {
        None => "no object".to_string(),
        Some(None) => "an object without a body".to_string(),
        Some(Some(body)) => {
            let text = String::from_utf8_lossy(body);
            let mut preview: String = text.chars().take(60).collect();
            if preview.len() < text.len() {
                preview.push_str("...");
            }
            format!("body {preview:?}")
        }
    }
}

fn sum_lost_cas(reports: &[WriterReport]) -> LostCasCounts {
    let mut total = LostCasCounts::default();
    for report in reports {
        total.replayed += report.lost_cas.replayed;
        total.rejected += report.lost_cas.rejected;
        total.unchanged += report.lost_cas.unchanged;
        total.accepted += report.lost_cas.accepted;
    }
    total
}

fn count_events(logs: &[WatchLog]) -> (u64, u64) {
    let (mut snapshot, mut live) = (0, 0);
    for event in logs.iter().flat_map(|log| &log.events) {
        match event {
            Observed::Upsert { snapshot: true, .. } => snapshot += 1,
            Observed::Upsert { .. } | Observed::Delete { .. } => live += 1,
            Observed::EndOfSnapshot { .. } | Observed::Lagged { .. } => {}
        }
    }
    (snapshot, live)
}

/// Returns when the last live event was received, in nanoseconds since the
/// run started.
fn last_delivery_ns(logs: &[WatchLog]) -> u64 {
    logs.iter()
        .flat_map(|log| &log.events)
        .filter_map(|event| match event {
            Observed::Upsert {
                snapshot: false,
                recv_ns,
                ..
            }
            | Observed::Delete { recv_ns, .. } => Some(*recv_ns),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// Computes delivery latency of live events.
///
/// Each writer records when its store call started, keyed by the commit
/// index for writes and by the deleted version for deletes, because
/// `delete_cas` returns no index. Each watcher records when it received the
/// event. The start of the call is used rather than its return because the
/// event can reach a watcher before the call returns. So every sample is
/// non-negative, and it includes the time the store took to commit.
fn latency(logs: &[WatchLog], history: &History) -> Latency {
    let mut samples: Vec<u64> = Vec::new();
    for event in logs.iter().flat_map(|log| &log.events) {
        let sample = match event {
            Observed::Upsert {
                snapshot: false,
                index,
                recv_ns,
                ..
            } => history
                .write_start(*index)
                .map(|start| recv_ns.saturating_sub(start)),
            Observed::Delete {
                key,
                version,
                recv_ns,
                ..
            } => history
                .delete_start(key, *version)
                .map(|start| recv_ns.saturating_sub(start)),
            _ => None,
        };
        samples.extend(sample);
    }
    if samples.is_empty() {
        return Latency::default();
    }
    samples.sort_unstable();
    let micros = |ns: u64| ns as f64 / 1_000.0;
    Latency {
        samples: samples.len(),
        p50_us: micros(percentile(&samples, 50)),
        p99_us: micros(percentile(&samples, 99)),
        max_us: micros(*samples.last().expect("not empty")),
    }
}

/// Nearest-rank percentile of sorted, non-empty samples.
fn percentile(sorted: &[u64], percent: usize) -> u64 {
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_uses_nearest_rank() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 50), 50);
        assert_eq!(percentile(&samples, 99), 99);
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(percentile(&[1, 2, 3], 50), 2);
    }

    #[test]
    fn describe_shortens_long_bodies() {
        let body = Some(vec![b'x'; 100]);
        let text = describe(Some(&body));
        assert!(text.ends_with("...\""), "{text}");
        assert_eq!(describe(None), "no object");
        assert_eq!(describe(Some(&None)), "an object without a body");
    }
}
