//! `shmipc clean`: removes segments whose participants are all dead (the classic shared
//! memory leak after crashes).

use shm_host::{NativeSystem, Segment, System};

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
    let names = system.list()?;
    if names.is_empty() {
        println!("no shmipc segments");
        return Ok(());
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let (mut removed, mut kept) = (0, 0);
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
            Some(why) => {
                if !args.dry_run {
                    system.unlink(&name)?;
                }
                println!("{verb} {name}: {why}");
                removed += 1;
            }
            None => kept += 1,
        }
    }
    println!("{removed} {verb}, {kept} kept");
    Ok(())
}
