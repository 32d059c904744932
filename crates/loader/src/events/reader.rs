//! The reader thread shared by the sources: it polls the kernel's buffer
//! and queues each record, so that a slow consumer never leaves the buffer
//! full; `sync` makes everything submitted so far available.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

/// What the reader thread sends.
pub(super) enum Msg {
    Record(Vec<u8>),
    /// Everything submitted before sync request N has been queued.
    Synced(usize),
    Failed(String),
}

/// A kernel buffer the reader thread drains (built on that thread: its
/// callbacks own the sender).
pub(super) trait Drain {
    /// Waits up to `timeout` for records and hands them to the callbacks.
    fn poll(&mut self, timeout: Duration) -> Result<(), libbpf_rs::Error>;
    /// Hands every pending record to the callbacks.
    fn drain(&mut self) -> Result<(), libbpf_rs::Error>;
}

/// Builds the buffer on the reader thread: the sender for records and the
/// counter of records the kernel reported lost.
pub(super) type Setup = Box<dyn FnOnce(Sender<Msg>, Lost) -> Result<Box<dyn Drain>, String> + Send>;

/// Records the kernel reported lost (no 64-bit atomics on 32-bit MIPS).
pub(super) type Lost = Arc<Mutex<u64>>;

/// Records read on a thread of their own.
pub struct Reader {
    rx: Receiver<Msg>,
    stop: Arc<AtomicBool>,
    sync_req: Arc<AtomicUsize>,
    lost: Lost,
    thread: Option<JoinHandle<()>>,
    /// Records received while waiting for a sync.
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

impl Reader {
    /// Starts the reader thread on the buffer `setup` builds.
    pub(super) fn start(what: &'static str, setup: Setup) -> Result<Reader> {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let sync_req = Arc::new(AtomicUsize::new(0));
        let lost = Lost::default();
        let (stop2, req2, lost2) = (stop.clone(), sync_req.clone(), lost.clone());
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let thread = std::thread::Builder::new()
            .name("memleak-events".into())
            .spawn(move || {
                raise_priority();
                let mut buf = match setup(tx.clone(), lost2) {
                    Ok(b) => {
                        let _ = ready_tx.send(Ok(()));
                        b
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut synced = 0;
                loop {
                    // Records may come without a wakeup: drain on every tick.
                    let polled = buf
                        .poll(Duration::from_millis(20))
                        .and_then(|()| buf.drain());
                    if let Err(e) = polled {
                        if e.kind() != libbpf_rs::ErrorKind::Interrupted {
                            let _ = tx.send(Msg::Failed(format!("{e:#}")));
                            return;
                        }
                    }
                    let want = req2.load(Ordering::SeqCst);
                    if want > synced {
                        let _ = buf.drain();
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
            Ok(Err(e)) => return Err(anyhow!("{what}: {e}")),
            Err(_) => return Err(anyhow!("{what}: the reader stopped")),
        }
        Ok(Reader {
            rx,
            stop,
            sync_req,
            lost,
            thread: Some(thread),
            backlog: VecDeque::new(),
        })
    }
}

impl super::EventSource for Reader {
    fn recv(&mut self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        if let Some(r) = self.backlog.pop_front() {
            return Ok(Some(r));
        }
        match self.rx.recv_timeout(timeout) {
            Ok(Msg::Record(r)) => Ok(Some(r)),
            Ok(Msg::Synced(_)) => Ok(None),
            Ok(Msg::Failed(e)) => Err(anyhow!("reading events: {e}")),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(anyhow!("the event reader stopped")),
        }
    }

    fn sync(&mut self) -> Result<()> {
        let want = self.sync_req.fetch_add(1, Ordering::SeqCst) + 1;
        // Up to 10 s of waiting; time memleak spent stopped (SIGSTOP, a
        // debugger) does not count: each wait counts for at most its tick.
        let tick = Duration::from_millis(250);
        let mut waited = Duration::ZERO;
        while waited < Duration::from_secs(10) {
            let started = Instant::now();
            match self.rx.recv_timeout(tick) {
                Ok(Msg::Synced(n)) if n >= want => return Ok(()),
                Ok(Msg::Synced(_)) => {}
                Ok(Msg::Record(r)) => self.backlog.push_back(r),
                Ok(Msg::Failed(e)) => return Err(anyhow!("reading events: {e}")),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(anyhow!("the event reader stopped"))
                }
            }
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
        self.stop.store(true, Ordering::SeqCst);
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
