//! `shmipc clean`: removes segments whose participants are all dead (the classic shared
//! memory leak after crashes).

use shm_host::{NamedResult, NativeSystem, Segment, SegmentName, System};

/// Arguments of `clean`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only report what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove segments that are not readable regions (not formatted, or made by an
    /// incompatible version) and segments where no process has registered yet.
    #[arg(long)]
    pub force: bool,
}

/// Scans and removes.
pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let system = NativeSystem;
    let names = shm_host::support::list_segments(&system)?;
    if names.is_empty() {
        println!("no shmipc segments");
        return Ok(());
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut kept = 0;
    let mut victims = Vec::new();
    for name in names {
        let verdict = match Segment::open(system, &name) {
            Ok(seg) => {
                let heap = &seg;
                let mut total = 0;
                let mut alive = Vec::new();
                for p in heap.processes()? {
                    total += 1;
                    if seg.is_alive(p.id) {
                        alive.push(p.id.pid);
                    }
                }
                let st = heap.server_status();
                if st.running && seg.is_alive(st.id) && !alive.contains(&st.id.pid) {
                    alive.push(st.id.pid);
                }
                if total == 0 && !st.running && !args.force {
                    // Nobody registered yet: most likely a server is creating it right now.
                    println!(
                        "kept {name}: no process registered (being created?); --force removes it"
                    );
                    None
                } else if alive.is_empty() {
                    Some(format!("{total} registered processes, all dead"))
                } else {
                    println!("kept {name}: live processes {alive:?}");
                    None
                }
            }
            Err(e) if args.force => Some(format!("unreadable ({e})")),
            Err(e) => {
                println!("kept {name}: cannot read it ({e}); --force removes it");
                None
            }
        };
        match verdict {
            Some(why) => victims.push((name, why)),
            None => kept += 1,
        }
    }
    let (removed, failed) = remove_all(&victims, verb, |name| {
        if args.dry_run {
            Ok(())
        } else {
            system.unlink(name).named(name)
        }
    });
    if failed == 0 {
        println!("{removed} {verb}, {kept} kept");
        return Ok(());
    }
    println!("{removed} {verb}, {kept} kept, {failed} failed");
    Err(format!("{failed} segment(s) could not be removed").into())
}

/// Unlinks every victim, going on after a failure so that one stuck segment does not
/// shield the others; reports each outcome (failures on stderr). Returns (removed,
/// failed).
fn remove_all(
    victims: &[(SegmentName, String)],
    verb: &str,
    mut unlink: impl FnMut(&SegmentName) -> shm_host::Result<()>,
) -> (usize, usize) {
    let (mut removed, mut failed) = (0, 0);
    for (name, why) in victims {
        match unlink(name) {
            Ok(()) => {
                println!("{verb} {name}: {why}");
                removed += 1;
            }
            Err(e) => {
                eprintln!("failed to remove {name} ({why}): {e}");
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
        let (removed, failed) = remove_all(&victims, "removed", |name| {
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
