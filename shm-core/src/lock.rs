//! Taking and releasing the region lock ([`acquire`], [`release`]).
//!
//! Taking it is a compare-and-swap of the lock word from 0 to the caller's [`ProcessId`]
//! (the word is [`LockWord`]). A waiter first retries for a few rounds, then sleeps on the
//! header's `lock_wake` counter through the platform's [`WaitNotify::wait`] (a futex on
//! Linux), so a contended lock costs its waiters a wake-up, not fixed sleeps. The
//! protocol, in the style of a three-state futex mutex, with the holder kept apart:
//! - a sleeping waiter reads `lock_wake`, sets `lock_contended`, tries the lock once more
//!   and sleeps only while `lock_wake` still holds what it read;
//! - a releaser clears the lock word, and if `lock_contended` was set it clears it, bumps
//!   `lock_wake` and wakes one sleeper;
//! - a waiter that sleeps once keeps setting `lock_contended` on every later try, so that
//!   when it gets the lock its own release wakes the next sleeper.
//!
//! A sequentially consistent fence on each side (after the waiter sets the flag, after
//! the releaser clears the word) means a release cannot slip between a waiter's last try
//! and its sleep unseen: either the releaser sees the flag, or the
//! waiter's try sees the lock free. A waiter that died while sleeping leaves the flag set;
//! the next release clears it and pays for one wake-up.
//!
//! A waiter whose sleep times out asks the platform whether the holder still lives; if
//! not, it swaps the dead holder's id for its own (only one waiter can win that swap) and
//! the heap undoes the dead holder's half-done operation from the journal.

use core::sync::atomic::{fence, Ordering::SeqCst};
use core::time::Duration;

use crate::format::RegionHeader;
use crate::ids::ProcessId;
use crate::os::{Processes, WaitNotify, WaitOutcome};

/// Rounds of retrying (with the platform's [`WaitNotify::relax`]) before sleeping.
const SPIN_ROUNDS: u32 = 64;

/// How long a sleeping waiter waits before it checks that the holder still lives.
const LIVENESS_PERIOD: Duration = Duration::from_millis(5);

/// How often (in rounds) a waiter on a platform whose waits return at once (no clock,
/// a bounded spin) checks whether the holder is alive.
const LIVENESS_EVERY: u32 = 64;

/// How the caller got the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// It was free.
    Free,
    /// It was held by this dead process, whose lock was broken.
    FromDead(ProcessId),
}

/// Takes the region lock in `hdr`, breaking it if its holder died.
pub(crate) fn acquire<P: Processes + WaitNotify>(
    hdr: &RegionHeader,
    platform: &P,
    me: ProcessId,
) -> Acquired {
    let lock = &hdr.lock;
    if lock.try_acquire(me) {
        return Acquired::Free;
    }
    let mut round: u32 = 0;
    // Set once this waiter has slept: from then on it marks the lock contended on every
    // try, so its own release wakes whoever sleeps after it.
    let mut slept = false;
    loop {
        round = round.wrapping_add(1);
        if !slept && round < SPIN_ROUNDS {
            platform.relax(round);
            if lock.try_acquire(me) {
                return Acquired::Free;
            }
            continue;
        }
        let seen = hdr.lock_wake.load(SeqCst);
        hdr.lock_contended.store(1, SeqCst);
        // Pairs with the fence in `release`: either that releaser sees the flag, or this
        // try sees its release.
        fence(SeqCst);
        if lock.try_acquire(me) {
            return Acquired::Free;
        }
        slept = true;
        let outcome = platform.wait(&hdr.lock_wake, seen, Some(LIVENESS_PERIOD));
        if outcome == WaitOutcome::TimedOut || round % LIVENESS_EVERY == 0 {
            if let Some(holder) = lock.holder() {
                let dead = holder.pid == 0 || (holder != me && !platform.is_alive(holder));
                if dead && lock.try_break(holder, me) {
                    return Acquired::FromDead(holder);
                }
            }
        }
        // The next try sets the flag first: the release that woke this waiter cleared it,
        // and others may still sleep.
    }
}

/// Releases the region lock in `hdr` and wakes one sleeping waiter, if any may sleep.
/// The common case, nobody waiting, costs a fence and one load of a word on the lock's
/// cache line.
pub(crate) fn release<P: WaitNotify>(hdr: &RegionHeader, platform: &P) {
    hdr.lock.release();
    // Pairs with the fence in `acquire` (see the module docs).
    fence(SeqCst);
    if hdr.lock_contended.load(SeqCst) != 0 && hdr.lock_contended.swap(0, SeqCst) != 0 {
        hdr.lock_wake.fetch_add(1, SeqCst);
        platform.notify_one(&hdr.lock_wake);
    }
}
