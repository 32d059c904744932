//! The reader thread shared by the sources: it polls the kernel's buffer
//! and queues each record, so that a slow consumer never leaves the buffer
//! full; `sync` makes everything submitted so far available.
//!
//! The reader runs at real-time priority and must never wait for the main
//! thread. Handing records over as freshly allocated vectors made it wait:
//! the main thread frees them, which takes the lock of the reader's malloc
//! arena, and a main thread preempted while holding it (a traced program
//! with more busy threads than CPUs) stalled the reader for milliseconds
//! while the kernel's buffer overflowed; so did page faults on fresh memory.
//! Records therefore go through a lock-free queue of fixed size, allocated
//! and touched up front; only when it is full
//! (the main thread is busy writing a report) do they spill, in order, into
//! an unbounded channel.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::sync::Mutex;
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

/// Bytes before each record in the queue: its length.
const LEN_BYTES: usize = 4;

/// A kernel buffer the reader thread drains (built on that thread: its
/// callbacks own the sink).
pub(super) trait Drain {
    /// Waits up to `timeout` for records and hands them to the callbacks.
    fn poll(&mut self, timeout: Duration) -> Result<(), libbpf_rs::Error>;
    /// Hands every pending record to the callbacks.
    fn drain(&mut self) -> Result<(), libbpf_rs::Error>;
}

/// Builds the buffer on the reader thread, given the sink for records and
/// the counter of records the kernel reported lost.
pub(super) type Setup = Box<dyn FnOnce(Sink, Lost) -> Result<Box<dyn Drain>, String> + Send>;

/// Records the kernel reported lost (no 64-bit atomics on 32-bit MIPS).
pub(super) type Lost = Arc<Mutex<u64>>;

/// State both threads see.
struct Shared {
    /// Records in the overflow channel the consumer has not taken yet.
    spilled: AtomicUsize,
    /// Sync requests made by the consumer, and the latest one answered.
    sync_req: AtomicUsize,
    synced: AtomicUsize,
    stop: AtomicBool,
    /// Why the reader stopped on its own.
    failed: Mutex<Option<String>>,
}

/// Where the reader's callbacks put records.
pub(super) struct Sink {
    queue: rtrb::Producer<u8>,
    overflow: Sender<Vec<u8>>,
    shared: Arc<Shared>,
    consumer: Thread,
}

impl Sink {
    /// Queues one record and wakes the consumer.
    pub(super) fn push(&mut self, data: &[u8]) {
        // A record goes into the queue only while nothing is spilled: the
        // consumer takes spilled records once the queue is empty, so the
        // order is kept.
        let queued = self.shared.spilled.load(Ordering::Acquire) == 0
            && u32::try_from(data.len()).is_ok()
            && self.queue.slots() >= LEN_BYTES + data.len()
            && self
                .queue
                .push_entire_slice(&(data.len() as u32).to_ne_bytes())
                .is_ok()
            // Room was checked: this cannot fail (the consumer only frees).
            && self.queue.push_entire_slice(data).is_ok();
        if !queued {
            self.shared.spilled.fetch_add(1, Ordering::AcqRel);
            let _ = self.overflow.send(data.to_vec());
        }
        self.consumer.unpark();
    }
}

/// Records read on a thread of their own.
pub struct Reader {
    queue: rtrb::Consumer<u8>,
    overflow: Receiver<Vec<u8>>,
    shared: Arc<Shared>,
    lost: Lost,
    thread: Option<JoinHandle<()>>,
    /// Records taken while waiting for a sync.
    backlog: VecDeque<Vec<u8>>,
}

/// Gives the reader thread real-time priority (SCHED_FIFO 1), so that a
/// traced program with many busy threads cannot starve it while the buffer
/// fills: it only moves records into memory and sleeps. Without the
/// privilege, a higher nice level is the fallback.
fn raise_priority() {
    // SAFETY: sched_param is plain data (musl's has more fields than glibc's).
    let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
    param.sched_priority = 1;
    // SAFETY: plain calls on the current thread with a valid parameter.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if rc != 0 {
        // SAFETY: as above; `who` 0 is the calling thread.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) };
        log::debug!("event reader: no SCHED_FIFO ({rc}); nice -10 instead");
    }
}

/// The reader thread's loop, until stopped or failed.
fn read(mut buf: Box<dyn Drain>, shared: &Shared, consumer: &Thread) {
    let fail = |e: libbpf_rs::Error| {
        *shared.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{e:#}"));
        consumer.unpark();
    };
    let mut synced = 0;
    loop {
        // Records may come without a wakeup: drain on every tick.
        let polled = buf
            .poll(Duration::from_millis(20))
            .and_then(|()| buf.drain());
        if let Err(e) = polled {
            if e.kind() != libbpf_rs::ErrorKind::Interrupted {
                return fail(e);
            }
        }
        let want = shared.sync_req.load(Ordering::SeqCst);
        if want > synced {
            if let Err(e) = buf.drain() {
                if e.kind() != libbpf_rs::ErrorKind::Interrupted {
                    return fail(e);
                }
            }
            synced = want;
            shared.synced.store(want, Ordering::SeqCst);
            consumer.unpark();
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
    }
}

impl Reader {
    /// Starts the reader thread on the buffer `setup` builds, with a queue
    /// of `queue_bytes` bytes.
    pub(super) fn start(what: &'static str, queue_bytes: usize, setup: Setup) -> Result<Reader> {
        let (mut producer, mut queue) = rtrb::RingBuffer::new(queue_bytes);
        // Touch every page now: a page fault on the reader thread waits
        // for the address space's lock, which the main thread may hold.
        let zeros = [0u8; 65536];
        while producer.push_partial_slice(&zeros).0.len() == zeros.len() {}
        if let Ok(chunk) = queue.read_chunk(queue_bytes) {
            chunk.commit_all();
        }
        let (overflow_tx, overflow) = mpsc::channel();
        let shared = Arc::new(Shared {
            spilled: AtomicUsize::new(0),
            sync_req: AtomicUsize::new(0),
            synced: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            failed: Mutex::new(None),
        });
        let lost = Lost::default();
        let consumer = std::thread::current();
        let sink = Sink {
            queue: producer,
            overflow: overflow_tx,
            shared: shared.clone(),
            consumer: consumer.clone(),
        };
        let (shared2, lost2) = (shared.clone(), lost.clone());
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let thread = std::thread::Builder::new()
            .name("memleak-events".into())
            .spawn(move || {
                raise_priority();
                match setup(sink, lost2) {
                    Ok(buf) => {
                        let _ = ready_tx.send(Ok(()));
                        read(buf, &shared2, &consumer);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .context("starting the event reader")?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(anyhow!("{what}: {e}")),
            Err(_) => return Err(anyhow!("{what}: the reader stopped")),
        }
        Ok(Reader {
            queue,
            overflow,
            shared,
            lost,
            thread: Some(thread),
            backlog: VecDeque::new(),
        })
    }

    /// The oldest record the reader handed over, if any.
    fn take(&mut self) -> Option<Vec<u8>> {
        if let Ok(head) = self.queue.read_chunk(LEN_BYTES) {
            let mut len = [0u8; LEN_BYTES];
            let (a, b) = head.as_slices();
            len[..a.len()].copy_from_slice(a);
            len[a.len()..].copy_from_slice(b);
            let len = u32::from_ne_bytes(len) as usize;
            // The reader pushes the length, then the record: it may not be
            // complete yet (nothing is consumed then).
            let chunk = self.queue.read_chunk(LEN_BYTES + len).ok()?;
            let (a, b) = chunk.as_slices();
            let mut record = Vec::with_capacity(len);
            if a.len() >= LEN_BYTES {
                record.extend_from_slice(&a[LEN_BYTES..]);
                record.extend_from_slice(b);
            } else {
                record.extend_from_slice(&b[LEN_BYTES - a.len()..]);
            }
            chunk.commit_all();
            return Some(record);
        }
        match self.overflow.try_recv() {
            Ok(r) => {
                self.shared.spilled.fetch_sub(1, Ordering::AcqRel);
                Some(r)
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }

    /// An error once the reader stopped on its own.
    fn check_reader(&self) -> Result<()> {
        if let Some(e) = &*self.shared.failed.lock().unwrap_or_else(|p| p.into_inner()) {
            return Err(anyhow!("reading events: {e}"));
        }
        if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
            return Err(anyhow!("the event reader stopped"));
        }
        Ok(())
    }
}

impl super::EventSource for Reader {
    fn recv(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        if let Some(r) = self.backlog.pop_front() {
            return Ok(Some(r));
        }
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(r) = self.take() {
                return Ok(Some(r));
            }
            self.check_reader()?;
            let left = deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Ok(None);
            }
            std::thread::park_timeout(left);
        }
    }

    fn sync(&mut self) -> Result<()> {
        let want = self.shared.sync_req.fetch_add(1, Ordering::SeqCst) + 1;
        // Up to 10 s of waiting; time memleak spent stopped (SIGSTOP, a
        // debugger) does not count: each wait counts for at most its tick.
        let tick = Duration::from_millis(250);
        let mut waited = Duration::ZERO;
        while waited < Duration::from_secs(10) {
            // Keep the queue moving: the reader may be waiting for room.
            while let Some(r) = self.take() {
                self.backlog.push_back(r);
            }
            if self.shared.synced.load(Ordering::SeqCst) >= want {
                // What the reader queued before answering.
                while let Some(r) = self.take() {
                    self.backlog.push_back(r);
                }
                return Ok(());
            }
            self.check_reader()?;
            let started = Instant::now();
            std::thread::park_timeout(tick);
            waited += started.elapsed().min(tick);
        }
        Err(anyhow!("the event reader did not answer"))
    }

    fn lost(&self) -> u64 {
        *self.lost.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Reader {
    /// Stops reading; records not yet read are dropped.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::super::EventSource;
    use super::*;

    /// A buffer that hands out `total` numbered records, a few per poll,
    /// of lengths that sometimes exceed the whole queue.
    struct Counter {
        sink: Sink,
        next: u32,
        total: u32,
    }

    fn record(n: u32) -> Vec<u8> {
        let len = 4 + (n as usize * 7) % 90;
        let mut r = vec![n as u8; len];
        r[..4].copy_from_slice(&n.to_ne_bytes());
        r
    }

    impl Drain for Counter {
        fn poll(&mut self, timeout: Duration) -> Result<(), libbpf_rs::Error> {
            if self.next >= self.total {
                std::thread::sleep(timeout);
            }
            Ok(())
        }
        fn drain(&mut self) -> Result<(), libbpf_rs::Error> {
            for _ in 0..5 {
                if self.next < self.total {
                    self.sink.push(&record(self.next));
                    self.next += 1;
                }
            }
            Ok(())
        }
    }

    /// Records come out whole and in order, whether they went through the
    /// queue or spilled because it was full or too small for them.
    #[test]
    fn order_is_kept_through_queue_and_spill() {
        let total = 3000;
        let mut reader = Reader::start(
            "test",
            64,
            Box::new(move |sink, _lost| {
                Ok(Box::new(Counter {
                    sink,
                    next: 0,
                    total,
                }) as Box<dyn Drain>)
            }),
        )
        .unwrap();
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen < total && Instant::now() < deadline {
            if seen % 500 == 0 {
                // A consumer that waits for a sync keeps what it takes.
                reader.sync().unwrap();
            }
            if let Some(r) = reader.recv(Duration::from_millis(100)).unwrap() {
                assert_eq!(r, record(seen), "record {seen}");
                seen += 1;
                if seen % 300 == 0 {
                    // A slow consumer: the queue fills and records spill.
                    std::thread::sleep(Duration::from_millis(30));
                }
            }
        }
        assert_eq!(seen, total);
        assert!(reader.recv(Duration::from_millis(50)).unwrap().is_none());
    }
}
