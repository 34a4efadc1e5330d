//! What a `bench` run measures: payload sizes, modes, mechanisms, the segment size, and
//! how peers are started.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{bail, Context as _};
use shm_host::RecvMode;

use super::measure::Budget;
use super::{Args, Mechanism, Mode, Res, MAX_PAYLOAD};
use crate::util::human_bytes;

/// Payload sizes: `min`, then the powers of `step` from 4 x `min` below `max`, then `max`.
pub(super) fn sizes(min: usize, max: usize, step: usize) -> Vec<usize> {
    let mut v = vec![min];
    let mut p = 1usize;
    while let Some(next) = p.checked_mul(step) {
        p = next;
        if p >= max {
            break;
        }
        if p >= min.saturating_mul(4) {
            v.push(p);
        }
    }
    if max > min {
        v.push(max);
    }
    v
}

/// Everything a run needs.
pub(super) struct Plan {
    pub(super) json: bool,
    pub(super) sizes: Vec<usize>,
    pub(super) modes: Vec<Mode>,
    pub(super) mechanisms: Vec<Mechanism>,
    pub(super) budget: Budget,
    pub(super) segment: usize,
    exe: PathBuf,
    pub(super) peer_cpu: Option<usize>,
    /// `--pin`.
    pub(super) pin: Option<(usize, usize)>,
    /// CPUs this process may use (before any pinning).
    pub(super) cpus: usize,
    pub(super) stop: &'static AtomicBool,
}

impl Plan {
    pub(super) fn new(args: &Args, stop: &'static AtomicBool) -> Res<Plan> {
        let max = args
            .max_size
            .unwrap_or(if args.quick { 16 << 20 } else { 64 << 20 });
        let min = args.min_size;
        if min == 0 {
            bail!("--min-size must be at least 1 byte");
        }
        if max > MAX_PAYLOAD {
            bail!(
                "--max-size {} is too large (at most {})",
                human_bytes(max as u64),
                human_bytes(MAX_PAYLOAD as u64)
            );
        }
        if min > max {
            bail!(
                "--min-size {} is above --max-size {}",
                human_bytes(min as u64),
                human_bytes(max as u64)
            );
        }
        let mut modes = Vec::new();
        for m in &args.modes {
            if !modes.contains(m) {
                modes.push(*m);
            }
        }
        let mut mechanisms = Vec::new();
        for m in &args.mechanisms {
            if !mechanisms.contains(m) {
                mechanisms.push(*m);
            }
        }
        if modes.is_empty() || mechanisms.is_empty() {
            bail!("nothing to measure (give --modes and --mechanisms)");
        }
        let time = args.time.unwrap_or(if args.quick {
            Duration::from_millis(25)
        } else {
            Duration::from_secs(1)
        });
        let budget = Budget::new(time, args.quick);
        // One payload-sized block is live at a time; twice that leaves room for the
        // allocator's headers, the queues and any fragmentation.
        let segment = (2 * max + (32 << 20)).max(16 << 20);
        let exe = std::env::current_exe().context("finding this executable")?;
        Ok(Plan {
            json: args.json,
            sizes: sizes(min, max, if args.quick { 64 } else { 4 }),
            modes,
            mechanisms,
            budget,
            segment,
            exe,
            peer_cpu: args.pin.map(|(_, b)| b),
            pin: args.pin,
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            stop,
        })
    }

    /// The mode of the shm-cycle rows: busy if asked for, else the first mode.
    pub(super) fn cycle_mode(&self) -> Mode {
        let busy = Mode::Lib(RecvMode::BusyPoll);
        if self.modes.contains(&busy) {
            busy
        } else {
            self.modes[0]
        }
    }

    pub(super) fn rows(&self) -> usize {
        let per_size: usize = self
            .mechanisms
            .iter()
            .map(|m| match m {
                Mechanism::Shm => self.modes.len(),
                _ => 1,
            })
            .sum();
        per_size * self.sizes.len()
    }

    /// `bench-peer` for `mech`, with no standard input or output.
    pub(super) fn peer_command(&self, mech: Mechanism) -> Command {
        let mut c = Command::new(&self.exe);
        c.args(["bench-peer", "--mechanism", mech.name()]);
        if let Some(cpu) = self.peer_cpu {
            c.args(["--cpu", &cpu.to_string()]);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        c
    }

    pub(super) fn check_stop(&self) -> Res<()> {
        if self.stop.load(Relaxed) {
            bail!("interrupted")
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes go from the minimum by powers of the step to the maximum.
    #[test]
    fn size_steps() {
        let v = sizes(8, 64 << 20, 4);
        assert_eq!(v.first(), Some(&8));
        assert_eq!(v.get(1), Some(&64));
        assert!(v.contains(&(16 << 20)));
        assert_eq!(v.last(), Some(&(64 << 20)));
        assert_eq!(v.len(), 12);
        assert_eq!(
            sizes(8, 16 << 20, 64),
            vec![8, 64, 4096, 256 << 10, 16 << 20]
        );
        assert_eq!(sizes(100, 100, 4), vec![100]);
        assert_eq!(sizes(1, 8, 4), vec![1, 4, 8]);
    }
}
