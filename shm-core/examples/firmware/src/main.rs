//! Example firmware for a Cortex-M4 (`thumbv7em-none-eabihf`): shm-core over a static RAM
//! region, shared by the main loop and the SysTick interrupt handler.
//!
//! What it demonstrates:
//! - one 64 KiB static array formatted as a shm-core heap, which is at the same time the
//!   `#[global_allocator]` (the latency log below is an ordinary `alloc::vec::Vec`);
//! - the main loop and the SysTick handler as two members (registrations) of that heap,
//!   each acting through its own `Member` and with a participant (an offset queue): the
//!   main loop is the server, the handler a client;
//! - buffers passed back and forth with `Heap::send(.., SendMode::Give)`: ownership follows
//!   every buffer, so at the end the heap shows that none was lost;
//! - `CriticalSectionPlatform`: every heap operation runs inside `critical_section::with`,
//!   so the handler never sees a half-done operation; `recv` needs no lock at all;
//! - C code using the FreeRTOS heap_5 API of `shm-heap5` (`src/heap5_demo.c`, see
//!   [`heap5_c`]): a second heap over two RAM banks, filled until `pvPortMalloc` returns
//!   NULL, with the malloc-failed hook and the heap statistics.
//!
//! The main loop keeps [`IN_FLIGHT`] buffers of various sizes on their way: it fills each
//! with a pattern and sends it to the handler's queue. On every tick the handler takes up
//! to [`ECHOES_PER_TICK`] of them, verifies the pattern, writes a checksum and sends the
//! buffer back. The main loop verifies the answer, logs the round-trip time and frees the
//! buffer, [`ROUND_TRIPS`] times.
//!
//! Run it on QEMU (Debian package `qemu-system-arm`, board `mps2-an386`; `.cargo/config.toml`
//! makes QEMU the cargo runner):
//!
//! ```text
//! cd shm-core/examples/firmware && cargo run --release
//! ```
//!
//! It prints its progress over semihosting, ends with a line starting with `firmware ok:`
//! and exits with status 0; on any failure it prints `firmware FAILED: <reason>` and exits
//! with status 1.
#![no_std]
#![no_main]
#![deny(
    clippy::undocumented_unsafe_blocks,
    clippy::unwrap_used,
    unsafe_op_in_unsafe_fn
)]

extern crate alloc;

mod heap5_c;
mod packet;

use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::{debug, hprintln};
use critical_section::Mutex;
use shm_core::format::{KIND_CLIENT, KIND_SERVER};
use shm_core::Doorbell;
use shm_core::ParticipantId;
use shm_core::RegionAllocator;
use shm_core::{
    Control, CriticalSectionPlatform, Error, Heap, HeapConfig, HeapStats, Incarnation, Member,
    Offset, ParticipantRef, ProcSlot, ProcessId, Received, SendMode,
};

/// Bytes of RAM given to shm-core.
const REGION_BYTES: usize = 64 * 1024;
/// Buffers that travel to the handler and back before the run ends.
const ROUND_TRIPS: u32 = 2000;
/// Buffers on their way at any time.
const IN_FLIGHT: u32 = 8;
/// Data bytes of the buffers, taken in turn (the header comes on top).
const DATA_SIZES: [u32; 4] = [32, 100, 250, 600];
/// Slots of each queue: room for every buffer in flight plus the control entries.
const QUEUE_SLOTS: u32 = 16;
/// Buffers the SysTick handler answers per tick, at most.
const ECHOES_PER_TICK: u32 = 2;
/// Processor cycles between two SysTick interrupts.
const TICK_CYCLES: u32 = 10_000;
/// The run fails if it has not finished after this many ticks (QEMU's SysTick follows
/// the host clock: 10 000 cycles at 25 MHz are 0.4 ms, so this is about 20 s).
const MAX_TICKS: u32 = 50_000;
/// A progress line every this many round trips.
const PROGRESS_EVERY: u32 = 500;

/// The heap type: a region shared by the main loop and interrupt handlers.
type Shm = Heap<'static, CriticalSectionPlatform>;

/// The global allocator, and the heap every buffer comes from.
#[global_allocator]
static HEAP: RegionAllocator<CriticalSectionPlatform> = RegionAllocator::new();

/// The RAM given to shm-core (16-byte alignment is what the region needs).
#[repr(align(16))]
struct Ram([u8; REGION_BYTES]);

static mut RAM: Ram = Ram([0; REGION_BYTES]);

/// What the SysTick handler needs to know: the member it acts as and its participant, and
/// the main loop's incarnation and participant. Only plain values: the handler re-validates
/// its participant, and the core checks the member under the lock.
#[derive(Clone, Copy)]
struct Link {
    me: Member,
    mine: Offset,
    main: Incarnation,
    main_at: ParticipantId,
}

/// Set by the main loop once the handler may start serving; `None` stops it.
static LINK: Mutex<Cell<Option<Link>>> = Mutex::new(Cell::new(None));
/// The first failure inside the handler, for the main loop to report.
static HANDLER_FAILURE: Mutex<Cell<Option<Failure>>> = Mutex::new(Cell::new(None));
/// SysTick interrupts so far.
static TICKS: AtomicU32 = AtomicU32::new(0);
/// Set when the handler has received the server's `Connected` answer.
static CONNECTED: AtomicBool = AtomicBool::new(false);

/// Why the run failed.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Failure {
    /// A heap operation failed.
    Heap(&'static str, Error),
    /// A buffer arrived with contents it should not have.
    Corrupted { seq: u32, what: &'static str },
    /// An unexpected protocol control entry arrived.
    Unexpected(&'static str, Control),
    /// A number at the end of the run differs from what it must be.
    Mismatch {
        what: &'static str,
        expected: u64,
        found: u64,
    },
    /// A check in `heap5_demo.c` failed at this line.
    CHeap { line: i32 },
    /// The run did not finish in time.
    Timeout { done: u32, ticks: u32 },
    /// Anything else.
    Other(&'static str),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Heap(what, e) => write!(f, "{what}: {e}"),
            Failure::Corrupted { seq, what } => write!(f, "buffer {seq}: {what}"),
            Failure::Unexpected(who, c) => write!(f, "{who} got an unexpected {c:?}"),
            Failure::Mismatch {
                what,
                expected,
                found,
            } => write!(f, "{what}: expected {expected}, found {found}"),
            Failure::CHeap { line } => write!(f, "heap5_demo.c:{line}: check failed"),
            Failure::Timeout { done, ticks } => write!(
                f,
                "timed out after {ticks} ticks with {done} of {ROUND_TRIPS} round trips done"
            ),
            Failure::Other(what) => f.write_str(what),
        }
    }
}

/// Names the step a heap error happened in.
trait Context<T> {
    fn context(self, what: &'static str) -> Result<T, Failure>;
}

impl<T> Context<T> for Result<T, Error> {
    fn context(self, what: &'static str) -> Result<T, Failure> {
        self.map_err(|e| Failure::Heap(what, e))
    }
}

#[entry]
fn main() -> ! {
    hprintln!("firmware: shm-core example on a Cortex-M4 (QEMU mps2-an386)");
    match run().and_then(|leaked| Ok((leaked, run_c()?))) {
        Ok((leaked, c)) => {
            hprintln!(
                "firmware ok: {} round trips, {} blocks leaked, check passed; C heap_5: {} regions, {} blocks of 256 B until NULL (twice), malloc-failed hook called {} times, {} allocations and {} frees, {} bytes free after each run",
                ROUND_TRIPS,
                leaked,
                c.regions,
                c.blocks,
                c.hook_calls,
                c.allocations,
                c.frees,
                c.free_bytes
            );
            debug::exit(debug::EXIT_SUCCESS);
            halt()
        }
        Err(failure) => fail(&failure),
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("firmware FAILED: panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    halt()
}

fn fail(failure: &Failure) -> ! {
    hprintln!("firmware FAILED: {}", failure);
    debug::exit(debug::EXIT_FAILURE);
    halt()
}

/// Where execution ends if semihosting did not stop the machine.
fn halt() -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}

/// The whole run: set up, exchange buffers, show that everything came back. Returns the
/// number of blocks leaked (0, or it fails).
fn run() -> Result<u64, Failure> {
    let (heap, main, isr, main_p, isr_p) = setup()?;
    let before = Snapshot::take(heap, &main_p, &isr_p)?;
    hprintln!(
        "before traffic: {} live allocations, {} free bytes",
        before.live(),
        before.stats.free_bytes
    );

    // Hand the handler its link, then let SysTick fire every TICK_CYCLES cycles.
    critical_section::with(|cs| {
        LINK.borrow(cs).set(Some(Link {
            me: isr,
            mine: isr_p.at,
            main: main.incarnation(),
            main_at: main_p.id(),
        }));
    });
    let mut core = cortex_m::Peripherals::take().ok_or(Failure::Other("peripherals taken"))?;
    core.SYST.set_clock_source(SystClkSource::Core);
    core.SYST.set_reload(TICK_CYCLES - 1);
    core.SYST.clear_current();
    core.SYST.enable_counter();
    core.SYST.enable_interrupt();

    let traffic = exchange(heap, main, &main_p, &isr_p);

    core.SYST.disable_interrupt();
    core.SYST.disable_counter();
    critical_section::with(|cs| LINK.borrow(cs).set(None));
    let (latencies, ticks) = traffic?;
    report_latencies(latencies, ticks)?;

    let after = Snapshot::take(heap, &main_p, &isr_p)?;
    let leaked = after.compare(&before)?;
    let report = heap.check().context("check")?;
    hprintln!(
        "check: passed ({} blocks: {} used, {} free; {} processes, {} owner cells)",
        report.blocks,
        report.used_blocks,
        report.free_blocks,
        report.processes,
        report.owner_cells
    );
    Ok(leaked)
}

/// The C code's run over the heap_5 API (see [`heap5_c`]), with a line of its results.
fn run_c() -> Result<heap5_c::HeapDemo, Failure> {
    let c = heap5_c::run()?;
    hprintln!(
        "C heap_5: {} regions; {} blocks of 256 B before NULL, from both regions; lowest free {} bytes; {} free after freeing all",
        c.regions,
        c.blocks,
        c.lowest_free,
        c.free_bytes
    );
    Ok(c)
}

/// Formats the region, registers the SysTick handler as a second process and connects
/// its participant to the main loop's. Returns the heap, the members of the main loop and
/// the handler, and their participants.
fn setup() -> Result<(&'static Shm, Member, Member, Participant, Participant), Failure> {
    // SAFETY: `setup` is called once, from the entry point, before any interrupt is
    // enabled, and this is the only place that names RAM: this is the only reference
    // ever made to it.
    let memory: &'static mut [u8] = unsafe { &mut *core::ptr::addr_of_mut!(RAM.0) };
    let config = HeapConfig {
        max_processes: 4,
        ..HeapConfig::default()
    };
    HEAP.init(memory, config, CriticalSectionPlatform::new(1))
        .context("formatting the region")?;
    let heap: &'static Shm = HEAP.heap().ok_or(Failure::Other("heap not initialised"))?;
    // The global allocator registered the program as one process: the main loop uses it.
    let main = HEAP
        .process()
        .ok_or(Failure::Other("allocator has no process slot"))?;
    hprintln!(
        "region: {} bytes at {:#010x}, {}-byte alignment, {} free after formatting",
        REGION_BYTES,
        heap.region().base_addr(),
        heap.align(),
        heap.stats().context("stats")?.free_bytes
    );

    let isr = heap
        .register_as(ProcessId::from_pid(2))
        .context("registering the SysTick slot")?;
    let main_p = heap
        .create_participant(main, KIND_SERVER, QUEUE_SLOTS)
        .context("creating the main participant")?;
    // No heartbeat: both sides live in the same program and cannot die separately.
    heap.start_server(main, main_p.at, 0, 0)
        .context("starting the server")?;
    let isr_p = heap
        .create_participant(isr, KIND_CLIENT, QUEUE_SLOTS)
        .context("creating the SysTick participant")?;
    // The handler is not running yet, so the main loop sends its `Connect` for it; the
    // handler finds the `Connected` answer in its queue on its first tick.
    heap.connect(isr, isr_p.at, no_doorbell)
        .context("connecting")?;
    match heap.recv(&main_p).context("receiving Connect")? {
        Some(Received::Control {
            control: Control::Connect,
            participant,
        }) if participant == isr_p.at => {}
        _ => return Err(Failure::Other("no Connect entry in the server queue")),
    }
    heap.accept(main, isr_p.at, no_doorbell)
        .context("accepting")?;
    hprintln!(
        "setup: main loop = member {} (server, participant {}), SysTick = member {} (client, participant {}), queues of {}",
        main,
        main_p.at,
        isr,
        isr_p.at,
        QUEUE_SLOTS
    );
    Ok((heap, main, isr, main_p, isr_p))
}

/// A participant of the static heap.
type Participant = ParticipantRef<'static>;

/// What must be the same before and after the traffic.
struct Snapshot {
    stats: HeapStats,
    main_blocks: u32,
    isr_blocks: u32,
    queued: u32,
}

impl Snapshot {
    fn take(heap: &Shm, main_p: &Participant, isr_p: &Participant) -> Result<Self, Failure> {
        Ok(Snapshot {
            stats: heap.stats().context("stats")?,
            main_blocks: heap.process(main_p.slot).context("main slot")?.blocks,
            isr_blocks: heap.process(isr_p.slot).context("SysTick slot")?.blocks,
            queued: main_p.queue.len() + isr_p.queue.len(),
        })
    }

    /// Blocks allocated and not yet freed.
    fn live(&self) -> u64 {
        self.stats.allocs - self.stats.frees
    }

    /// Prints the comparison with `before` and fails on any difference. Returns the
    /// number of blocks leaked (0).
    fn compare(&self, before: &Snapshot) -> Result<u64, Failure> {
        let allocs = self.stats.allocs - before.stats.allocs;
        hprintln!(
            "heap stats: {} allocs and {} frees since setup ({} buffers, {} by the global allocator)",
            allocs,
            self.stats.frees - before.stats.frees,
            ROUND_TRIPS,
            allocs.saturating_sub(u64::from(ROUND_TRIPS))
        );
        hprintln!(
            "live allocations (allocs - frees): {} before traffic, {} after",
            before.live(),
            self.live()
        );
        hprintln!(
            "free bytes: {} before traffic, {} after (lowest ever {})",
            before.stats.free_bytes,
            self.stats.free_bytes,
            self.stats.min_ever_free_bytes
        );
        let same = |what, expected: u64, found: u64| {
            if expected == found {
                Ok(())
            } else {
                Err(Failure::Mismatch {
                    what,
                    expected,
                    found,
                })
            }
        };
        same("live allocations", before.live(), self.live())?;
        same(
            "free bytes",
            before.stats.free_bytes.into(),
            self.stats.free_bytes.into(),
        )?;
        same(
            "blocks owned by the main loop",
            before.main_blocks.into(),
            self.main_blocks.into(),
        )?;
        same(
            "blocks owned by the SysTick handler",
            before.isr_blocks.into(),
            self.isr_blocks.into(),
        )?;
        same("entries left in the queues", 0, self.queued.into())?;
        Ok(self.live() - before.live())
    }
}

/// The main loop's side of the traffic. Returns the round-trip times (in ticks) and the
/// ticks the whole exchange took.
fn exchange(
    heap: &'static Shm,
    main: Member,
    main_p: &Participant,
    isr_p: &Participant,
) -> Result<(Vec<u32>, u32), Failure> {
    // Who answers: the handler's incarnation, as the core records it on every message.
    let isr = isr_p.owner;
    // An ordinary Vec: its memory comes from the same region, through the global allocator.
    let mut latencies = Vec::new();
    let start = TICKS.load(Relaxed);
    let mut sent = 0u32;
    let mut in_flight = 0u32;
    let mut announced = false;
    while latencies.len() < ROUND_TRIPS as usize {
        if let Some(failure) = critical_section::with(|cs| HANDLER_FAILURE.borrow(cs).get()) {
            return Err(failure);
        }
        let now = TICKS.load(Relaxed);
        if now.wrapping_sub(start) > MAX_TICKS {
            return Err(Failure::Timeout {
                done: latencies.len() as u32,
                ticks: now.wrapping_sub(start),
            });
        }
        if !announced && CONNECTED.load(Relaxed) {
            hprintln!("SysTick handler connected at tick {}", now);
            announced = true;
        }

        // Take back every answered buffer.
        while let Some(received) = heap.recv(main_p).context("receiving an answer")? {
            let (block, tag) = match received {
                Received::Message {
                    block, tag, from, ..
                } if from == isr => (block, tag),
                Received::Message { .. } => {
                    return Err(Failure::Other("the main loop got a buffer from a stranger"))
                }
                Received::Control { control, .. } => {
                    return Err(Failure::Unexpected("the main loop", control))
                }
            };
            let now = TICKS.load(Relaxed);
            let latency = with_payload(heap, main.slot(), block, |bytes| {
                packet::check_answer(bytes, tag, now)
            })?;
            heap.free(main, block).context("freeing a buffer")?;
            in_flight -= 1;
            latencies.push(latency);
            let done = latencies.len() as u32;
            if done % PROGRESS_EVERY == 0 {
                let stats = heap.stats().context("stats")?;
                hprintln!(
                    "progress: {}/{} round trips, tick {}, {} in flight, {} free bytes",
                    done,
                    ROUND_TRIPS,
                    now.wrapping_sub(start),
                    in_flight,
                    stats.free_bytes
                );
            }
        }

        // Keep IN_FLIGHT buffers on their way.
        while in_flight < IN_FLIGHT && sent < ROUND_TRIPS {
            let len = DATA_SIZES[sent as usize % DATA_SIZES.len()];
            let block = heap
                .try_alloc(main, packet::HEADER + len)
                .context("allocating a buffer")?;
            let now = TICKS.load(Relaxed);
            with_payload(heap, main.slot(), block, |bytes| {
                packet::fill(bytes, sent, len, now)
            })?;
            // The buffer's ownership moves to the handler's slot with the message.
            if let Err(e) = heap.send(main, isr_p.id(), block, sent, SendMode::Give, no_doorbell) {
                // Not sent: the buffer is still ours. Free it before reporting.
                let _ = heap.free(main, block);
                return Err(Failure::Heap("sending a buffer", e));
            }
            sent += 1;
            in_flight += 1;
        }

        // Sleep until the next interrupt. An answer that arrived since the queue was
        // last read waits for the next tick: it costs latency, never a lost message.
        cortex_m::asm::wfi();
    }
    Ok((latencies, TICKS.load(Relaxed).wrapping_sub(start)))
}

/// Prints round-trip statistics; the Vec's memory goes back to the region on return.
fn report_latencies(mut latencies: Vec<u32>, ticks: u32) -> Result<(), Failure> {
    let capacity = latencies.capacity();
    latencies.sort_unstable();
    let (Some(&min), Some(&max)) = (latencies.first(), latencies.last()) else {
        return Err(Failure::Other("no round trips recorded"));
    };
    let median = latencies[latencies.len() / 2];
    let total: u64 = latencies.iter().map(|&l| u64::from(l)).sum();
    let hundredths = total * 100 / latencies.len() as u64;
    hprintln!(
        "traffic: {} round trips in {} ticks of {} cycles; round trip min {} / median {} / mean {}.{:02} / max {} ticks",
        latencies.len(),
        ticks,
        TICK_CYCLES,
        min,
        median,
        hundredths / 100,
        hundredths % 100,
        max
    );
    hprintln!(
        "global allocator: latency log of {} entries in a Vec of capacity {} ({} bytes) from the region",
        latencies.len(),
        capacity,
        capacity * core::mem::size_of::<u32>()
    );
    Ok(())
}

/// The `wake` callback of the sending operations. Nobody sleeps on a doorbell here (the
/// main loop sleeps in WFI, which every interrupt ends), so there is nobody to wake.
fn no_doorbell(_: &Doorbell) {}

/// Runs `f` on the payload bytes of `block`, which `me` must own alone.
fn with_payload<R>(
    heap: &Shm,
    me: ProcSlot,
    block: Offset,
    f: impl FnOnce(&mut [u8]) -> Result<R, Failure>,
) -> Result<R, Failure> {
    if heap.owner_of(block).context("owner")? != Some(me)
        || heap.ref_count(block).context("refcount")? != 1
    {
        return Err(Failure::Other("touching a buffer this side does not own"));
    }
    let (ptr, len) = heap.payload(block).context("payload")?;
    // SAFETY: `payload` checked that `ptr..ptr+len` is the payload of a used block inside
    // the region, which lives for 'static. `me` owns that block alone (checked above), and
    // in this program a slot's buffers are touched only by that slot's side (the main loop
    // or the SysTick handler, which cannot run at the same time as itself), so no other
    // reference to these bytes exists while `f` runs. The slice does not outlive `f`.
    let bytes = unsafe { core::slice::from_raw_parts_mut(ptr.as_ptr(), len as usize) };
    f(bytes)
}

/// The SysTick handler: counts ticks and answers up to [`ECHOES_PER_TICK`] buffers.
#[exception]
fn SysTick() {
    TICKS.fetch_add(1, Relaxed);
    let Some(link) = critical_section::with(|cs| LINK.borrow(cs).get()) else {
        return;
    };
    if let Err(failure) = serve(link) {
        // Stop serving and leave the failure for the main loop to report.
        critical_section::with(|cs| {
            LINK.borrow(cs).set(None);
            HANDLER_FAILURE.borrow(cs).set(Some(failure));
        });
    }
}

/// The handler's side of the traffic.
fn serve(link: Link) -> Result<(), Failure> {
    let heap = HEAP.heap().ok_or(Failure::Other("heap not initialised"))?;
    let mine = heap.participant(link.mine).context("SysTick participant")?;
    for _ in 0..ECHOES_PER_TICK {
        match heap.recv(&mine).context("SysTick receiving")? {
            None => break,
            Some(Received::Control {
                control: Control::Connected,
                ..
            }) => CONNECTED.store(true, Relaxed),
            Some(Received::Control { control, .. }) => {
                return Err(Failure::Unexpected("the SysTick handler", control))
            }
            Some(Received::Message {
                block, tag, from, ..
            }) => {
                if from != link.main {
                    return Err(Failure::Other(
                        "the SysTick handler got a buffer from a stranger",
                    ));
                }
                with_payload(heap, link.me.slot(), block, |bytes| {
                    packet::answer(bytes, tag)
                })?;
                heap.send(
                    link.me,
                    link.main_at,
                    block,
                    tag,
                    SendMode::Give,
                    no_doorbell,
                )
                .context("SysTick answering")?;
            }
        }
    }
    Ok(())
}
