//! The results of a run: medians over the rounds, the tables, the ratios and the JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::{Config, COMPARED};

/// One measurement of one row at one size: one-way nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Median one-way time.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Round trips timed.
    pub round_trips: u64,
}

/// Every measurement of a run.
pub struct Results {
    cfg: Config,
    /// Whether this process and its peers ran on CPUs of their own.
    pinned: bool,
    /// CPUs of the machine (as this process saw them before it was pinned).
    cpus: usize,
    /// (row, payload) -> one sample per round.
    latency: BTreeMap<(&'static str, usize), Vec<Sample>>,
    /// Clients -> messages per second, one per round.
    many: BTreeMap<usize, Vec<f64>>,
}

/// The median of `v` (the mean of the middle two for an even count); 0 when empty.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `8 B`, `4 KiB`, `16 MiB`.
fn size_label(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

/// The row names as the table shows them, in column order.
const COLUMNS: [(&str, &str); 4] = [
    ("cycle", "ours: full cycle"),
    ("cached", "ours: full cycle, caches"),
    ("same", "ours: same buffer"),
    ("iceoryx2", "iceoryx2"),
];

impl Results {
    pub fn new(cfg: &Config, pinned: bool, cpus: usize) -> Results {
        Results {
            cfg: cfg.clone(),
            pinned,
            cpus,
            latency: BTreeMap::new(),
            many: BTreeMap::new(),
        }
    }

    pub fn push(&mut self, row: &'static str, len: usize, s: Sample) {
        self.latency.entry((row, len)).or_default().push(s);
    }

    pub fn push_many(&mut self, clients: usize, rate: f64) {
        self.many.entry(clients).or_default().push(rate);
    }

    /// Median p50 and p99 over the rounds of `row` at `len`, if measured.
    fn medians(&self, row: &str, len: usize) -> Option<(f64, f64)> {
        let v = self
            .latency
            .iter()
            .find(|((r, l), _)| *r == row && *l == len)?
            .1;
        Some((
            median(v.iter().map(|s| s.p50 as f64).collect()),
            median(v.iter().map(|s| s.p99 as f64).collect()),
        ))
    }

    /// `ours / iceoryx2` of the median p50s at `len`.
    fn ratio(&self, ours: &str, len: usize) -> Option<f64> {
        let (a, _) = self.medians(ours, len)?;
        let (b, _) = self.medians("iceoryx2", len)?;
        (b > 0.0).then(|| a / b)
    }

    /// `max / min - 1` of `row`'s median p50s over the sweep.
    fn spread(&self, row: &str) -> Option<f64> {
        let p50s: Vec<f64> = self
            .cfg
            .sweep
            .iter()
            .filter_map(|&len| Some(self.medians(row, len)?.0))
            .collect();
        let max = p50s.iter().copied().fold(f64::NAN, f64::max);
        let min = p50s.iter().copied().fold(f64::NAN, f64::min);
        (min > 0.0).then(|| max / min - 1.0)
    }

    /// The tables, Markdown.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let cpus = self.cpus;
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_owned))
            .unwrap_or_else(|| "unknown".into());
        let _ = writeln!(
            t,
            "One-way latency, ns: p50 (p99), median of {} rounds{}; {cpus} CPUs, load average {load}; {}; shm-core {}",
            self.cfg.rounds,
            if self.cfg.quick { " (smoke run: not a measurement)" } else { "" },
            if self.pinned {
                "this process on CPU 0, its peers on CPU 1"
            } else {
                "not pinned"
            },
            shm_tests::shm_core_build(),
        );
        let _ = writeln!(t);
        let _ = write!(t, "| payload |");
        for (_, title) in COLUMNS {
            let _ = write!(t, " {title} |");
        }
        let _ = writeln!(t, "\n|---:|{}", "---:|".repeat(COLUMNS.len()));
        for &len in &self.cfg.sweep {
            let _ = write!(t, "| {} |", size_label(len));
            for (row, _) in COLUMNS {
                match self.medians(row, len) {
                    Some((p50, p99)) => {
                        let _ = write!(t, " {p50:.0} ({p99:.0}) |");
                    }
                    None => t.push_str(" |"),
                }
            }
            t.push('\n');
        }
        if let Some((p50, p99)) = self.medians("cacheline", 64) {
            let _ = writeln!(
                t,
                "\nFloor, one cache line between the two processes: {p50:.0} ns ({p99:.0})"
            );
            if p50 > 1000.0 {
                let _ = writeln!(
                    t,
                    "(Above a microsecond, the two processes did not each have a CPU most of \
                     the time: other work ran on this machine, and the figures above measure \
                     its scheduler more than any transport.)"
                );
            }
        }
        let _ = writeln!(t, "\nRatios of the median p50s, ours / iceoryx2, this run:");
        for &len in &COMPARED {
            let r = |row| {
                self.ratio(row, len)
                    .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"))
            };
            let _ = writeln!(
                t,
                "- {}: full cycle {}, full cycle with caches {}, same buffer {}",
                size_label(len),
                r("cycle"),
                r("cached"),
                r("same")
            );
        }
        let (lo, hi) = (
            self.cfg.sweep.first().copied().unwrap_or(0),
            self.cfg.sweep.last().copied().unwrap_or(0),
        );
        let pct = |row| {
            self.spread(row)
                .map_or_else(|| "-".to_owned(), |s| format!("{:.1} %", s * 100.0))
        };
        let _ = writeln!(
            t,
            "- spread of our p50s from {} to {} (largest / smallest - 1): full cycle {}, with caches {}, same buffer {}",
            size_label(lo),
            size_label(hi),
            pct("cycle"),
            pct("cached"),
            pct("same")
        );
        let _ = writeln!(
            t,
            "\nMany-to-one: {}-byte messages, {} per client; messages per second, median of {} rounds\n",
            crate::many::MSG_LEN,
            self.cfg.per_client,
            self.cfg.rounds
        );
        let _ = writeln!(t, "| clients | msgs/s | vs 1 client |\n|---:|---:|---:|");
        let one = self.many.get(&1).map(|v| median(v.clone()));
        for (n, v) in &self.many {
            let m = median(v.clone());
            let rel = one.filter(|&o| o > 0.0).map_or(0.0, |o| m / o);
            let _ = writeln!(t, "| {n} | {m:.0} | {rel:.2} |");
        }
        let sent: u64 = self.latency.values().flatten().map(|s| s.round_trips).sum();
        let _ = writeln!(
            t,
            "\nChecked: every peer received every message sent to it, every stamp intact \
             ({sent} timed round trips; {} many-to-one messages).",
            self.many
                .iter()
                .map(|(n, v)| *n as u64 * v.len() as u64 * self.cfg.per_client)
                .sum::<u64>()
        );
        t
    }

    /// Everything measured, as JSON.
    pub fn json(&self) -> String {
        let latency: Vec<_> = self
            .latency
            .iter()
            .map(|((row, len), v)| {
                let (p50, p99) = self.medians(row, *len).unwrap_or_default();
                serde_json::json!({
                    "row": row,
                    "payload_bytes": len,
                    "p50_ns": p50,
                    "p99_ns": p99,
                    "rounds": v.iter().map(|s| serde_json::json!({
                        "p50_ns": s.p50, "p99_ns": s.p99, "round_trips": s.round_trips,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let ratios: Vec<_> = COMPARED
            .iter()
            .map(|&len| {
                serde_json::json!({
                    "payload_bytes": len,
                    "cycle_over_iceoryx2": self.ratio("cycle", len),
                    "cached_over_iceoryx2": self.ratio("cached", len),
                    "same_over_iceoryx2": self.ratio("same", len),
                })
            })
            .collect();
        let many: Vec<_> = self
            .many
            .iter()
            .map(|(n, v)| {
                serde_json::json!({
                    "clients": n,
                    "msgs_per_s": median(v.clone()),
                    "rounds": v,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "quick": self.cfg.quick,
            "pinned": self.pinned,
            "rounds": self.cfg.rounds,
            "latency": latency,
            "ratios": ratios,
            "spread": {
                "cycle": self.spread("cycle"),
                "cached": self.spread("cached"),
                "same": self.spread("same"),
            },
            "many_to_one": {
                "message_bytes": crate::many::MSG_LEN,
                "per_client": self.cfg.per_client,
                "rows": many,
            },
        });
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    }
}
