//! The sled engine's scans — listings, pages, retention, sweeps, lease reclaim — run on two
//! threads of the store's own at a lower CPU priority (nice 10 on Linux), never on the async
//! threads that answer Stripe, and behind them: on a two-core machine an operator paging through
//! events would otherwise take the CPU acknowledgements need (BENCHMARKS.md, "admin"). The group
//! commit's fsync keeps tokio's blocking pool. (The Postgres engine needs none of this: its work
//! happens in the database.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

type Chore = Box<dyn FnOnce() + Send>;

/// Threads taking chores; more would only compete with each other for the same spare CPU.
const THREADS: usize = 2;

/// How much lower than the rest of the process the chores run (Linux nice value).
#[cfg(target_os = "linux")]
const NICE: libc::c_int = 10;

/// The chore threads are closed (the proxy is stopping).
#[derive(Debug, thiserror::Error)]
#[error("the proxy is stopping; background work is closed")]
pub struct Gone;

/// The proxy's chore threads.
pub struct Chores {
    queue: Mutex<Option<mpsc::Sender<Chore>>>,
    /// Chores taken and not finished, and a wake-up when that falls.
    in_flight: Arc<(AtomicUsize, tokio::sync::Notify)>,
}

impl Chores {
    pub fn start() -> Arc<Chores> {
        let (tx, rx) = mpsc::channel::<Chore>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("fanout-chores-{i}")).spawn(move || {
                lower_priority();
                loop {
                    let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok(chore) = next else { break };
                    chore();
                }
            });
            if let Err(e) = spawned {
                tracing::error!("cannot start a background thread: {e}");
            }
        }
        Arc::new(Chores { queue: Mutex::new(Some(tx)), in_flight: Arc::default() })
    }

    /// Runs `work` on a chore thread and waits for its result.
    pub async fn run_raw<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, Gone> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let in_flight = self.in_flight.clone();
        let chore: Chore = Box::new(move || {
            // A chore that panics fails its caller (who hears `Gone`), not the thread.
            let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            if let Ok(done) = done {
                let _ = tx.send(done);
            }
            in_flight.0.fetch_sub(1, Ordering::SeqCst);
            in_flight.1.notify_waiters();
        });
        {
            let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let queue = queue.as_ref().ok_or(Gone)?;
            self.in_flight.0.fetch_add(1, Ordering::SeqCst);
            if queue.send(chore).is_err() {
                self.in_flight.0.fetch_sub(1, Ordering::SeqCst);
                return Err(Gone);
            }
        }
        rx.await.map_err(|_| Gone)
    }

    /// Takes no more chores and waits, up to `within`, for those taken to finish: a stop flushes
    /// the store only once nothing in the background writes to it. The threads then end.
    pub async fn close(&self, within: Duration) {
        drop(self.queue.lock().unwrap_or_else(|p| p.into_inner()).take());
        let drained = async {
            loop {
                let woken = self.in_flight.1.notified();
                tokio::pin!(woken);
                // Registered before the count is read, so a chore ending in between wakes it.
                woken.as_mut().enable();
                if self.in_flight.0.load(Ordering::SeqCst) == 0 {
                    return;
                }
                woken.await;
            }
        };
        if tokio::time::timeout(within, drained).await.is_err() {
            tracing::warn!(
                left = self.in_flight.0.load(Ordering::SeqCst),
                "background store work still running at stop"
            );
        }
    }
}

/// On Linux a thread has its own nice value: raising this one's leaves the rest of the process as
/// it was. Elsewhere it would renice the whole process, so it is left alone.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority has no memory effects; failing leaves the thread at the default.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, NICE);
    }
}
