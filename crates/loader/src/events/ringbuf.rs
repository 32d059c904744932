//! BPF ring buffer source (kernels 5.8+).

use std::time::Duration;

use anyhow::Result;
use libbpf_rs::{MapHandle, RingBuffer};

use super::reader::{Drain, Reader};

/// The buffer, and the map it reads (kept open while it is read).
struct Ring(RingBuffer<'static>, #[allow(dead_code)] MapHandle);

impl Drain for Ring {
    fn poll(&mut self, timeout: Duration) -> Result<(), libbpf_rs::Error> {
        self.0.poll(timeout)
    }
    fn drain(&mut self) -> Result<(), libbpf_rs::Error> {
        self.0.consume()
    }
}

/// Reads a `BPF_MAP_TYPE_RINGBUF` map on a thread of its own.
pub struct RingBufferSource;

impl RingBufferSource {
    /// Starts reading the ring buffer `handle` refers to, queueing up to
    /// `queue_bytes` in memory.
    pub fn start(handle: MapHandle, queue_bytes: usize) -> Result<Reader> {
        let reader = Reader::start(
            "ring buffer",
            queue_bytes,
            Box::new(move |mut sink, _lost| {
                let mut builder = libbpf_rs::RingBufferBuilder::new();
                builder
                    .add(&handle, move |data: &[u8]| {
                        sink.push(data);
                        0
                    })
                    .map_err(|e| format!("{e:#}"))?;
                let rb = builder.build().map_err(|e| format!("{e:#}"))?;
                Ok(Box::new(Ring(rb, handle)) as Box<dyn Drain>)
            }),
        )?;
        Ok(reader)
    }
}
