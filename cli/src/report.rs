//! The human-readable summary table of a replay.

use std::fmt::Write;

use crate::replay::Summary;

/// Renders the summary as a two-column table.
pub fn table(summary: &Summary) -> String {
    let mut rows: Vec<(&str, String)> = Vec::new();
    let mut trace = format!("{} ({})", summary.trace[0], summary.format);
    match summary.trace.len() {
        1 => {}
        2 => {
            let _ = write!(trace, " + {}", summary.trace[1]);
        }
        count => {
            let _ = write!(trace, " + {} etcd operations files", count - 1);
        }
    }
    rows.push(("trace", trace));

    let skipped: u64 = summary.skipped.values().sum();
    rows.push((
        "operations",
        format!(
            "{} to replay, {} skipped record{}, {} cop{}",
            summary.operations,
            skipped,
            if skipped == 1 { "" } else { "s" },
            summary.scale,
            if summary.scale == 1 { "y" } else { "ies" }
        ),
    ));
    rows.push((
        "setup",
        format!(
            "{} writer{}, {} watcher{} x {} type{} ({}), filter {}, ring capacity {}, on lag {}",
            summary.scale,
            plural(summary.scale),
            summary.watchers,
            plural(summary.watchers),
            summary.types.len(),
            plural(summary.types.len()),
            summary.types.join(", "),
            summary.filter,
            summary.ring_capacity,
            match summary.lag_mode {
                crate::replay::watcher::LagMode::Reset => "reset",
                crate::replay::watcher::LagMode::Error => "error",
            }
        ),
    ));
    rows.push(("applied", summary.applied.to_string()));
    let mut rejected = summary.rejected.to_string();
    if let Some(first) = &summary.first_rejection {
        let _ = write!(rejected, " (first: {first})");
    }
    rows.push(("rejected", rejected));
    if summary.unchanged_deletes > 0 {
        rows.push((
            "no-op deletes",
            format!("{} (key not held by the writer)", summary.unchanged_deletes),
        ));
    }
    let lost = &summary.lost_cas;
    if lost.replayed > 0 {
        rows.push((
            "lost CAS",
            format!(
                "{} replayed: {} rejected, {} unchanged (key already gone), {} accepted",
                lost.replayed, lost.rejected, lost.unchanged, lost.accepted
            ),
        ));
    }
    rows.push((
        "events",
        format!(
            "{} delivered live, {} in snapshots",
            summary.live_events, summary.snapshot_events
        ),
    ));
    rows.push((
        "events/s",
        format!(
            "{:.0} (live events from the first write to the last delivery)",
            summary.events_per_second
        ),
    ));
    rows.push((
        "writes/s",
        format!(
            "{:.0} (committed operations over the writers' time)",
            summary.writes_per_second
        ),
    ));
    let latency = &summary.latency;
    rows.push((
        "latency",
        if latency.samples == 0 {
            "no live events".to_string()
        } else {
            format!(
                "p50 {} p99 {} max {} ({} events, commit call start to watcher)",
                micros(latency.p50_us),
                micros(latency.p99_us),
                micros(latency.max_us),
                latency.samples
            )
        },
    ));
    rows.push(("lag errors", summary.lag_errors.to_string()));
    rows.push((
        "elapsed",
        format!(
            "writers {}, last delivery {}, run {} (final index {})",
            seconds(summary.writers_seconds),
            seconds(summary.delivery_seconds),
            seconds(summary.elapsed_seconds),
            summary.final_index
        ),
    ));
    let verification = &summary.verification;
    rows.push((
        "verification",
        if verification.ok {
            format!(
                "ok: {} watches match store.list, live indexes strictly increase, no event \
                 missing or extra, final contents match the recording ({} objects)",
                verification.watches_checked, verification.final_objects
            )
        } else {
            format!(
                "FAILED ({} check{} failed): {}",
                verification.failures,
                plural(verification.failures),
                verification.first_failure.as_deref().unwrap_or("")
            )
        },
    ));
    for (reason, count) in &summary.skipped {
        rows.push(("skipped", format!("{count} x {reason}")));
    }
    for note in &summary.notes {
        rows.push(("note", note.clone()));
    }
    if verification.unresolved_deletes > 0 {
        rows.push((
            "note",
            format!(
                "{} deletes have an unknown commit index; checks that need it were skipped",
                verification.unresolved_deletes
            ),
        ));
    }

    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, value) in rows {
        let _ = writeln!(out, "{label:<width$}  {value}");
    }
    out
}

fn plural(count: usize) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}

fn micros(value: f64) -> String {
    if value >= 1000.0 {
        format!("{:.2} ms", value / 1000.0)
    } else {
        format!("{value:.1} µs")
    }
}

fn seconds(value: f64) -> String {
    if value >= 1.0 {
        format!("{value:.2} s")
    } else {
        format!("{:.1} ms", value * 1000.0)
    }
}
