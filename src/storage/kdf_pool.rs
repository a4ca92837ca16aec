//! The threads that run PBKDF2 (RFC 8018) for SASL PLAIN checks, registrations and password
//! changes. PBKDF2 is slow on purpose, so it never runs on a core's executor, and it has
//! threads of its own so that a flood of password attempts cannot queue ahead of the
//! storage lookups every login and roster load needs. The queue is small and bounded: when
//! it is full, a login is answered `<temporary-auth-failure/>` at once (RFC 6120 §6.5.12)
//! instead of waiting behind the flood; administrative calls wait their turn.

use std::sync::Arc;

use super::{StorageError, Workers};

type Job = Box<dyn FnOnce() + Send>;

/// What a call does when every thread is busy and the queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenBusy {
    /// Fail with `StorageError::Busy`: a client's request, answered with a retry-later error.
    Refuse,
    /// Wait for room (backpressure): an administrator's request, which should not fail.
    Wait,
}

#[derive(Clone)]
pub(super) struct KdfPool {
    jobs: flume::Sender<Job>,
    _threads: Arc<Workers>,
}

impl KdfPool {
    pub(super) fn start(threads: usize, queue_jobs_max: usize) -> Result<KdfPool, StorageError> {
        let (jobs, queue) = flume::bounded::<Job>(queue_jobs_max);
        let threads = (0..threads)
            .map(|i| {
                let queue = queue.clone();
                std::thread::Builder::new()
                    .name(format!("kdf-{i}"))
                    .spawn(move || queue.iter().for_each(|job| job()))
                    .map_err(|e| StorageError::Backend(format!("starting kdf thread: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KdfPool { jobs, _threads: Arc::new(Workers(threads)) })
    }

    /// Runs `op` on a pool thread and awaits its result.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        when_busy: WhenBusy,
        op: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let (reply, result) = flume::bounded(1);
        let job: Job = Box::new(move || {
            // The caller may have given up waiting (its client hung up); nothing to do then.
            let _ = reply.send(op());
        });
        match when_busy {
            WhenBusy::Refuse => self.jobs.try_send(job).map_err(|e| match e {
                flume::TrySendError::Full(_) => StorageError::Busy,
                flume::TrySendError::Disconnected(_) => StorageError::Unavailable,
            })?,
            WhenBusy::Wait => self.jobs.send_async(job).await.map_err(|_| StorageError::Unavailable)?,
        }
        result.recv_async().await.map_err(|_| StorageError::Unavailable)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    #[test]
    fn a_full_queue_refuses_or_waits() {
        let pool = KdfPool::start(1, 1).unwrap();
        let (release, gate) = flume::bounded::<()>(0);
        let (started, running) = flume::bounded::<()>(1);
        // One job holds the thread (running before the next is sent, so the worker cannot
        // take the quick one first), one fills the queue.
        let held = std::thread::spawn({
            let pool = pool.clone();
            move || {
                block_on(pool.run(WhenBusy::Wait, move || {
                    let _ = started.send(());
                    Ok(gate.recv().is_ok())
                }))
            }
        });
        running.recv().unwrap();
        let queued = {
            let pool = pool.clone();
            std::thread::spawn(move || block_on(pool.run(WhenBusy::Wait, || Ok(7))))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !pool.jobs.is_full() {
            assert!(std::time::Instant::now() < deadline, "the queue never filled");
            std::thread::yield_now();
        }
        assert!(matches!(block_on(pool.run(WhenBusy::Refuse, || Ok(1))), Err(StorageError::Busy)));
        release.send(()).unwrap();
        assert!(held.join().unwrap().unwrap());
        assert_eq!(queued.join().unwrap().unwrap(), 7);
        assert_eq!(block_on(pool.run(WhenBusy::Refuse, || Ok(2))).unwrap(), 2);
    }
}
