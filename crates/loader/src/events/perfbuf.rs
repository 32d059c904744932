//! Perf event array source, for kernels without BPF ring buffers: one
//! buffer per CPU; records the kernel could not write are reported lost.

use std::time::Duration;

use anyhow::Result;
use libbpf_rs::{MapHandle, PerfBuffer};

use super::reader::{Drain, Reader};

/// The buffer, and the map it reads (kept open while it is read).
struct Perf(PerfBuffer<'static>, #[allow(dead_code)] MapHandle);

impl Drain for Perf {
    fn poll(&mut self, timeout: Duration) -> Result<(), libbpf_rs::Error> {
        self.0.poll(timeout)
    }
    fn drain(&mut self) -> Result<(), libbpf_rs::Error> {
        self.0.consume()
    }
}

/// Reads a `BPF_MAP_TYPE_PERF_EVENT_ARRAY` map on a thread of its own.
pub struct PerfBufferSource;

impl PerfBufferSource {
    /// Starts reading the perf event array `handle` refers to, with
    /// `pages` pages (a power of two) per CPU, queueing up to `queue_bytes`
    /// in memory.
    pub fn start(handle: MapHandle, pages: usize, queue_bytes: usize) -> Result<Reader> {
        let reader = Reader::start(
            "perf buffer",
            queue_bytes,
            Box::new(move |mut sink, lost| {
                let pb = libbpf_rs::PerfBufferBuilder::new(&handle)
                    .sample_cb(move |_cpu, data: &[u8]| sink.push(data))
                    .lost_cb(move |cpu, n| {
                        *lost.lock().unwrap_or_else(|p| p.into_inner()) += n;
                        log::warn!("perf buffer of CPU {cpu}: {n} records lost");
                    })
                    .pages(pages)
                    .build()
                    .map_err(|e| format!("{e:#}"))?;
                Ok(Box::new(Perf(pb, handle)) as Box<dyn Drain>)
            }),
        )?;
        Ok(reader)
    }
}
