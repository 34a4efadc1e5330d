//! `shmipc clean`: removes segments whose participants are all dead (the classic shared
//! memory leak after crashes).

use shm_host::{Backend, NamedResult, OnSystem, Segment, SegmentName, System};

/// Arguments of `clean`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only report what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove segments that are not readable regions (not formatted, made by an
    /// incompatible version, or with a process table that cannot be read) and segments
    /// where no process has registered yet.
    #[arg(long)]
    pub force: bool,
    /// Scan only this kind of segment (posix or sysv); by default every kind whose
    /// segments outlive their processes (on Linux, POSIX and System V). File-backed
    /// segments are never removed: their heaps are meant to outlive their processes.
    #[arg(long)]
    pub backend: Option<Backend>,
}

/// What one kind's scan did.
#[derive(Default)]
struct Tally {
    found: usize,
    removed: usize,
    kept: usize,
    failed: usize,
}

/// Scans and removes.
pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let kinds = match &args.backend {
        Some(b) => vec![b.clone()],
        None => Backend::listed(),
    };
    let mut all = Tally::default();
    for kind in &kinds {
        let t = kind.run(Scan { args: &args, kind })??;
        all.found += t.found;
        all.removed += t.removed;
        all.kept += t.kept;
        all.failed += t.failed;
    }
    if all.found == 0 {
        println!("no shmipc segments");
        return Ok(());
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let (removed, kept, failed) = (all.removed, all.kept, all.failed);
    if failed == 0 {
        println!("{removed} {verb}, {kept} kept");
        return Ok(());
    }
    println!("{removed} {verb}, {kept} kept, {failed} failed");
    Err(format!("{failed} segment(s) could not be removed").into())
}

/// The scan of one kind of segment.
struct Scan<'a> {
    args: &'a Args,
    kind: &'a Backend,
}

impl OnSystem for Scan<'_> {
    type Output = Result<Tally, Box<dyn std::error::Error>>;
    fn on<S: System>(self, system: S) -> Self::Output {
        scan(system, self.args, self.kind)
    }
}

fn scan<S: System>(
    system: S,
    args: &Args,
    kind: &Backend,
) -> Result<Tally, Box<dyn std::error::Error>> {
    // POSIX names are shown as they are (as before there were other kinds); others say
    // their kind.
    let label = |name: &SegmentName| match kind {
        Backend::Native | Backend::Posix => name.to_string(),
        other => format!("{name} ({other})"),
    };
    let names = shm_host::support::list_segments(&system)?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut tally = Tally {
        found: names.len(),
        ..Tally::default()
    };
    let mut victims = Vec::new();
    // The victims that could be opened, kept mapped until removed: what is removed is the
    // segment judged (`System::remove`), not whatever the name names by then.
    let mut judged = std::collections::HashMap::new();
    for name in names {
        let shown = label(&name);
        let mut opened = None;
        let verdict = match Segment::open(system.clone(), &name) {
            // A table that cannot be read is a segment whose processes cannot be told
            // dead: kept (unless --force), and the scan goes on to the next segment.
            Ok(seg) => match seg.processes() {
                Err(e) if args.force => {
                    opened = Some(seg);
                    Some(format!("process table unreadable ({e})"))
                }
                Err(e) => {
                    println!(
                        "kept {shown}: cannot read its process table ({e}); --force removes it"
                    );
                    None
                }
                Ok(processes) => {
                    let total = processes.len();
                    let mut alive: Vec<u32> = processes
                        .iter()
                        .filter(|p| seg.is_alive(p.id))
                        .map(|p| p.id.pid)
                        .collect();
                    let st = seg.server_status();
                    if st.running && seg.is_alive(st.id) && !alive.contains(&st.id.pid) {
                        alive.push(st.id.pid);
                    }
                    if total == 0 && !st.running && !args.force {
                        // Nobody registered yet: most likely a server is creating it now.
                        println!(
                            "kept {shown}: no process registered (being created?); --force removes it"
                        );
                        None
                    } else if alive.is_empty() {
                        opened = Some(seg);
                        Some(format!("{total} registered processes, all dead"))
                    } else {
                        println!("kept {shown}: live processes {alive:?}");
                        None
                    }
                }
            },
            Err(e) if args.force => Some(format!("unreadable ({e})")),
            Err(e) => {
                println!("kept {shown}: cannot read it ({e}); --force removes it");
                None
            }
        };
        match verdict {
            Some(why) => {
                if let Some(seg) = opened {
                    judged.insert(name.clone(), seg);
                }
                victims.push((name, why));
            }
            None => tally.kept += 1,
        }
    }
    let (removed, failed) = remove_all(&victims, verb, &label, |name| {
        if args.dry_run {
            Ok(())
        } else if let Some(seg) = judged.get(name) {
            system.remove(name, seg.mapping()).named(name)
        } else {
            system.unlink(name).named(name)
        }
    });
    tally.removed = removed;
    tally.failed = failed;
    Ok(tally)
}

/// Unlinks every victim, going on after a failure so that one stuck segment does not
/// shield the others; reports each outcome (failures on stderr). Returns (removed,
/// failed).
fn remove_all(
    victims: &[(SegmentName, String)],
    verb: &str,
    label: &dyn Fn(&SegmentName) -> String,
    mut unlink: impl FnMut(&SegmentName) -> shm_host::Result<()>,
) -> (usize, usize) {
    let (mut removed, mut failed) = (0, 0);
    for (name, why) in victims {
        let shown = label(name);
        match unlink(name) {
            Ok(()) => {
                println!("{verb} {shown}: {why}");
                removed += 1;
            }
            Err(e) => {
                eprintln!("failed to remove {shown} ({why}): {e}");
                failed += 1;
            }
        }
    }
    (removed, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed unlink does not stop the others: every victim is tried once, and the
    /// counts say how many were removed and how many failed.
    #[test]
    fn remove_all_goes_on_after_a_failure() {
        let victims: Vec<(SegmentName, String)> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| (SegmentName::new(n).expect("valid name"), "dead".into()))
            .collect();
        let mut tried = Vec::new();
        let (removed, failed) = remove_all(&victims, "removed", &|n| n.to_string(), |name| {
            tried.push(name.as_str().to_owned());
            if name.as_str() == "a" || name.as_str() == "c" {
                Err(shm_host::HostError::Os {
                    call: "shm_unlink",
                    code: 13,
                })
            } else {
                Ok(())
            }
        });
        assert_eq!(tried, ["a", "b", "c", "d"]);
        assert_eq!((removed, failed), (2, 2));
    }
}
