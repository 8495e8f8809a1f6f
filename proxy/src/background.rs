//! A runtime of its own for the admin API, on one thread at a lower CPU priority (nice 10 on
//! Linux): an operator's request (paging through events, folding their histories into states,
//! encoding the JSON) runs behind acknowledgements, never on the threads that answer Stripe.
//! A request that panics fails alone (500), not the thread.

use std::future::Future;

/// How much lower than the rest of the process the admin runtime runs (Linux nice value).
#[cfg(target_os = "linux")]
const NICE: libc::c_int = 10;

/// The admin runtime; dropped, its thread ends.
pub struct Background {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Background {
    pub fn start() -> std::io::Result<Background> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new().name("fanout-admin".to_owned()).spawn(move || {
            lower_priority();
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })?;
        Ok(Background { handle, _stop: stop })
    }

    /// Runs `work` on the admin runtime and waits for it; Err if it panicked.
    pub async fn run<F>(&self, work: F) -> Result<F::Output, tokio::task::JoinError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(work).await
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
