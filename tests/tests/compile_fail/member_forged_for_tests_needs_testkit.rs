// Without the `testkit` feature there is no way to forge a `Member` from numbers.
use shm_core::{Incarnation, Member, ProcSlot};

fn main() {
    let inc = Incarnation { slot: ProcSlot(0), serial: 1 };
    let _forged = Member::forged_for_tests(inc);
}
