//! BPF ring buffer source (kernels 5.8+): a reader thread polls the ring and
//! queues each record.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use libbpf_rs::MapHandle;

use super::EventSource;

enum Msg {
    Record(Vec<u8>),
    /// Everything submitted before sync request N has been queued.
    Synced(u64),
    Failed(String),
}

/// Reads a `BPF_MAP_TYPE_RINGBUF` map on a thread of its own.
pub struct RingBufferSource {
    rx: Receiver<Msg>,
    stop: Arc<AtomicBool>,
    sync_req: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
    /// Records received while waiting for a sync.
    backlog: std::collections::VecDeque<Vec<u8>>,
}

impl RingBufferSource {
    /// Starts reading the ring buffer `handle` refers to.
    pub fn start(handle: MapHandle) -> Result<RingBufferSource> {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let sync_req = Arc::new(AtomicU64::new(0));
        let (stop2, req2) = (stop.clone(), sync_req.clone());
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let thread = std::thread::Builder::new()
            .name("memleak-events".into())
            .spawn(move || {
                raise_priority();
                let records = tx.clone();
                let mut builder = libbpf_rs::RingBufferBuilder::new();
                let added = builder.add(&handle, move |data: &[u8]| {
                    let _ = records.send(Msg::Record(data.to_vec()));
                    0
                });
                let rb = match added.map(|_| ()).and_then(|()| builder.build()) {
                    Ok(rb) => {
                        let _ = ready_tx.send(Ok(()));
                        rb
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return;
                    }
                };
                let mut synced = 0;
                loop {
                    // Records are submitted without a wakeup until enough
                    // are pending (misses wake at once): drain on every tick.
                    let polled = rb
                        .poll(Duration::from_millis(20))
                        .and_then(|()| rb.consume());
                    if let Err(e) = polled {
                        if e.kind() != libbpf_rs::ErrorKind::Interrupted {
                            let _ = tx.send(Msg::Failed(format!("{e:#}")));
                            return;
                        }
                    }
                    let want = req2.load(Ordering::SeqCst);
                    if want > synced {
                        let _ = rb.consume();
                        synced = want;
                        let _ = tx.send(Msg::Synced(want));
                    }
                    if stop2.load(Ordering::SeqCst) {
                        return;
                    }
                }
            })
            .context("starting the event reader")?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(anyhow!("ring buffer: {e}")),
            Err(_) => return Err(anyhow!("ring buffer: the reader stopped")),
        }
        Ok(RingBufferSource {
            rx,
            stop,
            sync_req,
            thread: Some(thread),
            backlog: Default::default(),
        })
    }

    fn handle(&mut self, m: Msg) -> Result<Option<Vec<u8>>> {
        match m {
            Msg::Record(r) => Ok(Some(r)),
            Msg::Synced(_) => Ok(None),
            Msg::Failed(e) => Err(anyhow!("reading events: {e}")),
        }
    }
}

/// Gives the reader thread real-time priority (SCHED_FIFO 1), so that a
/// traced program with many busy threads cannot starve it while the ring
/// fills: it only moves records into memory and sleeps. Without the
/// privilege, a higher nice level is the fallback.
fn raise_priority() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: plain calls on the current thread with a valid parameter.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if rc != 0 {
        // SAFETY: as above; `who` 0 is the calling thread.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -10) };
        log::debug!("event reader: no SCHED_FIFO ({rc}); nice -10 instead");
    }
}

impl EventSource for RingBufferSource {
    fn recv(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        if let Some(r) = self.backlog.pop_front() {
            return Ok(Some(r));
        }
        match self.rx.recv_timeout(timeout) {
            Ok(m) => self.handle(m),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(anyhow!("the event reader stopped")),
        }
    }

    fn sync(&mut self) -> Result<()> {
        let want = self.sync_req.fetch_add(1, Ordering::SeqCst) + 1;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Msg::Synced(n)) if n >= want => return Ok(()),
                Ok(Msg::Synced(_)) => {}
                Ok(Msg::Record(r)) => self.backlog.push_back(r),
                Ok(Msg::Failed(e)) => return Err(anyhow!("reading events: {e}")),
                Err(_) => return Err(anyhow!("the event reader did not answer")),
            }
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RingBufferSource {
    fn drop(&mut self) {
        self.stop();
    }
}
