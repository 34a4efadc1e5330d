//! The region's byte format: every `#[repr(C)]` structure that lives in a region, with the
//! constants that describe it, then the [`RegionHeader`] at offset 0, then the layout
//! assertions and the [`LAYOUT_FINGERPRINT`] over all of them.
//!
//! Everything here is made of 32-bit atomics and means the same in every process. These
//! are the bytes; the rules for changing them (the lock, the journal, the owner chains)
//! live in the layers above. Tools that read a region image (inspectors, fuzz seed
//! generators, white-box tests) use this module; writing through it bypasses the journal.

mod block;
mod doorbell;
mod header;
mod index;
mod journal;
mod layout;
mod lock;
mod message;
mod owners;
mod participant;
mod queue;
mod server;

pub use crate::region::MAX_RANGES;
pub use block::{
    BlockHeader, OwnerRef, ALIGN_RANGE, DEFAULT_ALIGN, END, FLAGS, KEPT_OWNER, NO_OWNER, SERVICE,
    USED,
};
pub use doorbell::{Doorbell, OS_AREA_ALIGN, OS_AREA_BYTES};
pub(crate) use header::load_u64;
pub use header::{
    HeapState, RangeDesc, RegionHeader, FORMAT_VERSION, JOURNALED_HEADER_START, MAGIC,
};
pub use index::{class_of, search_class, FreeIndex, FL_COUNT, SL_COUNT, SL_LOG};
pub use journal::{DeferredWords, JournalEntries, JournalEntry, JournalHead, JOURNAL_CAPACITY};
pub use layout::LAYOUT_FINGERPRINT;
pub use lock::LockWord;
pub use message::{Control, KeepAlive, MessageHeader, CONTROL_TAG_BASE};
pub use owners::{
    grown_capacity, record_bytes, OwnerCell, ProcessRecord, INITIAL_CELLS, MAX_CELLS, MAX_SLOTS,
    NO_CELL,
};
pub(crate) use participant::participant_layout;
pub use participant::{
    participant_bytes, Participant, APP_KIND, APP_PARTICIPANT, KIND_CLIENT, KIND_SERVER,
    P_CONNECTED, P_CONNECTING, P_DISCONNECTED, P_NEW,
};
pub(crate) use queue::SLOT_BYTES;
pub use queue::{queue_bytes, QueueHeader, QueueSlot, FROM_SHARED, NO_SENDER};
pub use server::{ServerInfo, SERVER_NONE, SERVER_RUNNING};
