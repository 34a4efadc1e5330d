//! What `bench` prints: the rows as JSON lines at once, or as a table with a summary at
//! the end, and the progress on stderr.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::plan::Plan;
use crate::util::human_bytes;

/// One measured row.
#[derive(Clone, Debug)]
pub(super) struct Row {
    mechanism: &'static str,
    mode: String,
    payload: usize,
    iterations: u64,
    p50_ns: u64,
    p99_ns: u64,
    min_ns: u64,
    msgs_per_s: f64,
    mib_per_s: f64,
    /// For the cache-line reference: measured at the "start" or the "end" of the run.
    when: Option<&'static str>,
}

impl Row {
    /// The row of `rounds` round trips of `payload` bytes by `(mechanism, mode)`, which
    /// took `elapsed` in all and whose times (ns) `latency` holds: one way is half a
    /// round trip, and a round trip is two messages.
    pub(super) fn new(
        (mechanism, mode): (&'static str, &str),
        payload: usize,
        rounds: u64,
        latency: &Histogram<u64>,
        elapsed: Duration,
        when: Option<&'static str>,
    ) -> Row {
        let msgs = 2.0 * rounds as f64 / elapsed.as_secs_f64().max(1e-9);
        Row {
            mechanism,
            mode: mode.to_owned(),
            payload,
            iterations: rounds,
            p50_ns: latency.value_at_quantile(0.5) / 2,
            p99_ns: latency.value_at_quantile(0.99) / 2,
            min_ns: latency.min() / 2,
            msgs_per_s: msgs,
            mib_per_s: msgs * payload as f64 / f64::from(1u32 << 20),
            when,
        }
    }
}

/// A row as one line of `--json`: these field names, in this order.
#[derive(Serialize)]
struct JsonRow<'a> {
    mechanism: &'a str,
    mode: &'a str,
    payload_bytes: usize,
    iterations: u64,
    p50_ns: u64,
    p99_ns: u64,
    min_ns: u64,
    /// Rounded to a whole number.
    msgs_per_s: u64,
    /// Rounded to a tenth.
    mib_per_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    when: Option<&'a str>,
}

impl Row {
    fn json(&self) -> JsonRow<'_> {
        JsonRow {
            mechanism: self.mechanism,
            mode: &self.mode,
            payload_bytes: self.payload,
            iterations: self.iterations,
            p50_ns: self.p50_ns,
            p99_ns: self.p99_ns,
            min_ns: self.min_ns,
            msgs_per_s: self.msgs_per_s.round() as u64,
            mib_per_s: (self.mib_per_s * 10.0).round() / 10.0,
            when: self.when,
        }
    }
}

/// Where rows go: JSON lines at once, or a table at the end; progress on stderr.
pub(super) struct Output {
    json: bool,
    tty: bool,
    rows: Vec<Row>,
    /// The cache-line references (not part of the table).
    reference: Vec<Row>,
    notes: Vec<String>,
    total: usize,
    started: Instant,
    /// `/proc/loadavg` when the run started (empty elsewhere).
    load_at_start: String,
}

impl Output {
    pub(super) fn new(json: bool, total: usize) -> Output {
        Output {
            json,
            tty: std::io::stderr().is_terminal(),
            rows: Vec::new(),
            reference: Vec::new(),
            notes: Vec::new(),
            total,
            started: Instant::now(),
            load_at_start: std::fs::read_to_string("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
        }
    }

    /// A progress line: overwritten in place on a terminal, one per phase otherwise.
    pub(super) fn progress(&self, mech: &str, mode: &str, payload: Option<usize>) {
        let done = self.rows.len();
        let secs = self.started.elapsed().as_secs();
        match payload {
            Some(n) if self.tty => eprint!(
                "\r\x1b[K[{done}/{}] {secs}s {mech} {mode} {}",
                self.total,
                size_label(n)
            ),
            None if !self.tty => {
                eprintln!("bench: [{done}/{}] {secs}s {mech} {mode}", self.total)
            }
            _ => {}
        }
    }

    pub(super) fn clear_progress(&self) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
    }

    pub(super) fn push(&mut self, row: Row) {
        self.print_json(&row);
        self.rows.push(row);
    }

    pub(super) fn push_reference(&mut self, row: Row) {
        self.print_json(&row);
        self.reference.push(row);
    }

    pub(super) fn print_json(&self, row: &Row) {
        if self.json {
            self.clear_progress();
            let mut out = std::io::stdout().lock();
            // Writing to a closed stdout is not worth failing the run for.
            if serde_json::to_writer(&mut out, &row.json()).is_ok() {
                let _ = writeln!(out);
            }
            let _ = out.flush();
        }
    }

    /// A note for the table's header (and stderr with `--json`) about `rows` rows that
    /// are not measured.
    pub(super) fn skip(&mut self, rows: usize, note: String) {
        if self.json {
            self.clear_progress();
            eprintln!("bench: {note}");
        }
        self.notes.push(note);
        self.total = self.total.saturating_sub(rows);
    }

    /// Prints the table (table mode) and a summary of the headline figures.
    pub(super) fn finish(&self, plan: &Plan) {
        self.clear_progress();
        if self.json || self.rows.is_empty() {
            return;
        }
        println!(
            "shmipc bench: ping-pong with one peer process, {} CPUs{}; shm segment {} prefaulted",
            plan.cpus,
            match plan.pin {
                Some((a, b)) => format!(", pinned to CPUs {a} (bench) and {b} (peer)"),
                None => String::new(),
            },
            size_label(plan.segment)
        );
        println!("one-way latency = round trip / 2; msgs/s counts both directions");
        // Busy polling competes with any other work for the cores: show how loaded they were.
        if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
            let fields: Vec<&str> = load.split_whitespace().take(3).collect();
            println!(
                "load average {} at the start, {} at the end (1, 5, 15 min)",
                self.load_at_start,
                fields.join(" ")
            );
        }
        if !self.reference.is_empty() {
            let parts: Vec<String> = self
                .reference
                .iter()
                .map(|r| {
                    format!(
                        "{} (p99 {}) at the {}",
                        fmt_ns(r.p50_ns),
                        fmt_ns(r.p99_ns),
                        r.when.unwrap_or("?")
                    )
                })
                .collect();
            println!(
                "a cache line between two spinning threads, one way: {}",
                parts.join(", ")
            );
        }
        for n in &self.notes {
            println!("note: {n}");
        }
        println!();
        println!(
            "{:<10} {:<9} {:>9} {:>8} {:>10} {:>10} {:>9} {:>10}",
            "mechanism", "mode", "payload", "iters", "p50", "p99", "msgs/s", "MiB/s"
        );
        let mut last = "";
        for r in &self.rows {
            if !last.is_empty() && last != r.mechanism {
                println!();
            }
            last = r.mechanism;
            println!(
                "{:<10} {:<9} {:>9} {:>8} {:>10} {:>10} {:>9} {:>10}",
                r.mechanism,
                r.mode,
                size_label(r.payload),
                r.iterations,
                fmt_ns(r.p50_ns),
                fmt_ns(r.p99_ns),
                fmt_rate(r.msgs_per_s),
                fmt_mib(r.mib_per_s)
            );
        }
        self.summary();
    }

    pub(super) fn find(&self, mech: &str, mode: &str, payload: usize) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.mechanism == mech && r.mode == mode && r.payload == payload)
    }

    pub(super) fn summary(&self) {
        let mut picks: Vec<usize> = Vec::new();
        for n in [
            8,
            16 << 20,
            self.rows.iter().map(|r| r.payload).max().unwrap_or(8),
        ] {
            if !picks.contains(&n) && self.rows.iter().any(|r| r.payload == n) {
                picks.push(n);
            }
        }
        let cell = |r: &Row| format!("{} (p99 {})", fmt_ns(r.p50_ns), fmt_ns(r.p99_ns));
        let mut lines = Vec::new();
        for &n in &picks {
            let parts: Vec<String> = [("shm", "busy"), ("uds", "blocking"), ("pipe", "blocking")]
                .iter()
                .filter_map(|&(m, mode)| self.find(m, mode, n).map(|r| format!("{m} {}", cell(r))))
                .collect();
            if !parts.is_empty() {
                lines.push(format!("  {:>8}: {}", size_label(n), parts.join(", ")));
            }
        }
        if !lines.is_empty() {
            println!();
            println!("one-way latency p50, shm busy-poll vs uds and pipe:");
            for l in lines {
                println!("{l}");
            }
        }
        let cycles: Vec<String> = picks
            .iter()
            .filter_map(|&n| {
                self.rows
                    .iter()
                    .find(|r| r.mechanism == "shm-cycle" && r.payload == n)
                    .map(|r| {
                        format!(
                            "  {:>8}: {} per cycle, {} cycles/s ({})",
                            size_label(n),
                            cell(r),
                            fmt_rate(r.msgs_per_s),
                            r.mode
                        )
                    })
            })
            .collect();
        if !cycles.is_empty() {
            println!("alloc -> send -> recv -> free (shm-cycle):");
            for l in cycles {
                println!("{l}");
            }
        }
    }
}

// ----- formatting -------------------------------------------------------------------------

/// `8 B`, `64 KiB`, `16 MiB`: like `human_bytes`, without a decimal for whole numbers.
pub(super) fn size_label(n: usize) -> String {
    let s = human_bytes(n as u64);
    s.replace(".0 ", " ")
}

/// `312 ns`, `4.7 us`, `12.3 ms`.
pub(super) fn fmt_ns(ns: u64) -> String {
    if ns < 10_000 {
        format!("{ns} ns")
    } else if ns < 10_000_000 {
        format!("{:.1} us", ns as f64 / 1e3)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

/// MiB/s: one decimal while small, whole numbers above.
pub(super) fn fmt_mib(v: f64) -> String {
    if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// `3.12M`, `812k`, `41.0`.
pub(super) fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Figures are shown with the units and digits the table promises.
    #[test]
    fn formats() {
        assert_eq!(fmt_ns(312), "312 ns");
        assert_eq!(fmt_ns(12_345), "12.3 us");
        assert_eq!(size_label(16 << 20), "16 MiB");
    }

    /// A JSON line has the documented fields in order; `when` only for the reference.
    #[test]
    fn json_line() {
        let mut row = Row {
            mechanism: "shm",
            mode: "busy".into(),
            payload: 8,
            iterations: 30,
            p50_ns: 500,
            p99_ns: 900,
            min_ns: 400,
            msgs_per_s: 1234.4,
            mib_per_s: 0.0094,
            when: None,
        };
        let line = serde_json::to_string(&row.json()).unwrap();
        assert_eq!(
            line,
            r#"{"mechanism":"shm","mode":"busy","payload_bytes":8,"iterations":30,"p50_ns":500,"p99_ns":900,"min_ns":400,"msgs_per_s":1234,"mib_per_s":0.0}"#
        );
        row.when = Some("start");
        let line = serde_json::to_string(&row.json()).unwrap();
        assert!(line.ends_with(r#","when":"start"}"#), "{line}");
    }
}
