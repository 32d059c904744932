//! Where the BPF records come from. The kernel sends little: stacks it could
//! not finish (misses), verification copies, partial munmaps and `-t`
//! records. A source reads them on its own thread, so that a slow consumer
//! (the first CFI and DWARF load of a library) never leaves the kernel's
//! buffer full, and hands them over as owned byte vectors.
//!
//! The BPF ring buffer (kernels 5.8+) and, for older kernels, a perf event
//! array are the sources; both share the reader thread of [`reader`].

mod perfbuf;
mod reader;
mod ringbuf;

use std::time::Duration;

pub use perfbuf::PerfBufferSource;
pub use ringbuf::RingBufferSource;

/// A stream of raw BPF records.
pub trait EventSource {
    /// The next record, waiting up to `timeout`; `None` when none came.
    fn recv(&mut self, timeout: Duration) -> anyhow::Result<Option<Vec<u8>>>;

    /// Makes every record the kernel submitted before this call available
    /// to [`recv`](Self::recv) (they are queued behind what is pending).
    fn sync(&mut self) -> anyhow::Result<()>;

    /// Records the kernel's buffer reported lost (perf buffers do).
    fn lost(&self) -> u64 {
        0
    }
}
