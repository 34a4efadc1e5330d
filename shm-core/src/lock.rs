//! Taking the region lock ([`acquire`]): a compare-and-swap of 0 to the caller's
//! [`ProcessId`]. A waiter that keeps finding the lock taken asks the platform, now and
//! then, whether the holder still lives; if not, it swaps the dead holder's id for its own
//! (only one waiter can win that swap) and the heap undoes the dead holder's half-done
//! operation from the journal. The word itself is [`LockWord`].

use crate::format::LockWord;
use crate::ids::ProcessId;
use crate::os::{Processes, WaitNotify};

/// How often (in contended rounds) a waiter checks whether the holder is alive.
const LIVENESS_EVERY: u32 = 64;

/// How the caller got the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// It was free.
    Free,
    /// It was held by this dead process, whose lock was broken.
    FromDead(ProcessId),
}

/// Takes `lock`, breaking it if its holder died.
pub(crate) fn acquire<P: Processes + WaitNotify>(
    lock: &LockWord,
    platform: &P,
    me: ProcessId,
) -> Acquired {
    let mut round: u32 = 0;
    loop {
        if lock.try_acquire(me) {
            return Acquired::Free;
        }
        round = round.wrapping_add(1);
        if round % LIVENESS_EVERY == 0 {
            if let Some(holder) = lock.holder() {
                let dead = holder.pid == 0 || (holder != me && !platform.is_alive(holder));
                if dead && lock.try_break(holder, me) {
                    return Acquired::FromDead(holder);
                }
            }
        }
        platform.relax(round);
    }
}
