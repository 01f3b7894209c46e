//! Work that outlives the request that started it (SPEC §1): a settlement, a credit, anything a
//! response promised. Such work runs in a task of its own, spawned through [`Tasks`], so a client
//! that hangs up (hyper then drops the request's future) or an HTTP/2 reset cannot stop it
//! half-way; the request only awaits its outcome. The server's shutdown waits for every such task
//! after the connections have drained.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The promised work running now. Cheap to clone: clones share the count.
#[derive(Clone, Default)]
pub struct Tasks {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    running: AtomicUsize,
    idle: Notify,
}

/// Decrements the count when the task ends, however it ends (a panic included).
struct Running(Arc<Inner>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Tasks {
    /// Runs `work` to its end in a task of its own; the handle answers its result to whoever
    /// still waits (dropping the handle does not stop the work).
    pub fn spawn<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        self.inner.running.fetch_add(1, Ordering::SeqCst);
        let running = Running(self.inner.clone());
        tokio::spawn(async move {
            let _running = running;
            work.await
        })
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        self.inner.running.load(Ordering::SeqCst)
    }

    /// Returns once no task is running.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            if self.running() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_outlives_a_dropped_handle_and_idle_waits_for_it() {
        let tasks = Tasks::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        drop(tasks.spawn(async move {
            let _ = rx.await;
            flag.store(true, Ordering::SeqCst);
        }));
        assert_eq!(tasks.running(), 1);
        tx.send(()).unwrap();
        tasks.idle().await;
        assert!(done.load(Ordering::SeqCst));
        assert_eq!(tasks.running(), 0);
    }
}
