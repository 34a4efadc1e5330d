// Only registering makes a `Member`: its constructor is private to shm-core.
use shm_core::{Incarnation, Member, ProcSlot};

fn main() {
    let inc = Incarnation { slot: ProcSlot(0), serial: 1 };
    let _forged = Member::new(inc);
}
