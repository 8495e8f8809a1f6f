//! Background store work that scans — admin queries and `/metrics`, retention, sweeps, lease
//! reclaim — runs on two threads of its own at a lower CPU priority (nice 10), never on the
//! threads that answer Stripe, and never ahead of them: on a two-core machine an operator paging
//! through events in a loop would otherwise take the CPU that acknowledgements need
//! (BENCHMARKS.md, "admin"). The group commit's fsync keeps tokio's blocking pool.

use std::fmt::Display;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type Chore = Box<dyn FnOnce() + Send>;

/// Threads taking chores; more would only compete with each other for the same spare CPU.
const THREADS: usize = 2;

/// How much lower than the rest of the process the chores run (Linux nice value).
const NICE: libc::c_int = 10;

/// The chore threads are gone (the process is exiting).
#[derive(Debug, thiserror::Error)]
#[error("the background threads are gone")]
pub struct Gone;

fn queue() -> &'static Mutex<mpsc::Sender<Chore>> {
    static QUEUE: OnceLock<Mutex<mpsc::Sender<Chore>>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Chore>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for i in 0..THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("fanout-chores-{i}")).spawn(move || {
                // SAFETY: setpriority has no memory effects; on Linux, PRIO_PROCESS with who = 0
                // sets the calling thread's nice value. Failing leaves it at the default.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) };
                loop {
                    let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match next {
                        // A chore that panics fails its caller (it hears `Gone`), not the thread.
                        Ok(chore) => {
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(chore));
                        }
                        Err(_) => break,
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::error!("cannot start a background thread: {e}");
            }
        }
        Mutex::new(tx)
    })
}

/// Runs `work` on a chore thread and waits for its result.
pub async fn run_raw<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, Gone> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let chore: Chore = Box::new(move || {
        let _ = tx.send(work());
    });
    queue().lock().unwrap_or_else(|p| p.into_inner()).send(chore).map_err(|_| Gone)?;
    rx.await.map_err(|_| Gone)
}

/// Runs `work` on a chore thread; its error is logged with `what` and is None.
pub async fn run<T, E>(what: &'static str, work: impl FnOnce() -> Result<T, E> + Send + 'static) -> Option<T>
where
    T: Send + 'static,
    E: Display + Send + 'static,
{
    match run_raw(work).await {
        Ok(Ok(done)) => Some(done),
        Ok(Err(e)) => {
            tracing::error!("{what}: {e}");
            None
        }
        Err(e) => {
            tracing::error!("{what}: {e}");
            None
        }
    }
}
