// A `Member` cannot be built from numbers: its field is private.
use shm_core::{Incarnation, Member, ProcSlot};

fn main() {
    let inc = Incarnation { slot: ProcSlot(0), serial: 1 };
    let _forged = Member { inc };
}
