//! Sharing one read-index round among concurrent reads.
//!
//! A linearizable read needs a confirmation of leadership that started after the read arrived. A
//! round already in flight may have started before, so a read that arrives during a round waits
//! for the next one, and every read waiting for that next round shares it. Under load that turns
//! one quorum round per read into one per batch of reads, without ever answering a read from a
//! round that began before it.

use std::future::Future;
use std::sync::Mutex;

use tokio::sync::watch;

/// Runs an operation on behalf of every caller that arrived before it started.
#[derive(Debug)]
pub struct Coalescer<T> {
    /// Whether a round is running, and how many rounds have started.
    rounds: Mutex<Rounds>,
    /// The newest finished round and its result.
    finished: watch::Sender<(u64, Option<T>)>,
}

#[derive(Debug, Default)]
struct Rounds {
    running: bool,
    started: u64,
    /// The newest round that finished with a result.
    finished: u64,
}

impl<T: Clone> Default for Coalescer<T> {
    fn default() -> Self {
        Coalescer { rounds: Mutex::default(), finished: watch::channel((0, None)).0 }
    }
}

impl<T: Clone> Coalescer<T> {
    /// The result of a round of `op` that started after this call. The caller runs the round
    /// itself if none is running; otherwise it waits for the next round, run by one of the callers
    /// waiting for it.
    pub async fn run<F, Fut>(&self, op: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let mut finished = self.finished.subscribe();
        let needed = self.lock().started + 1;
        let mut op = Some(op);
        loop {
            if let Some(round) = self.try_start(needed) {
                let guard = RoundGuard { coalescer: self, done: false };
                let result = (op.take().expect("a caller runs at most one round"))().await;
                guard.finish(round, result.clone());
                return result;
            }
            if let (round, Some(result)) = &*finished.borrow_and_update() {
                if *round >= needed {
                    return result.clone();
                }
            }
            if finished.changed().await.is_err() {
                unreachable!("the sender lives in self");
            }
        }
    }

    /// Start a round if none is running and none that serves `needed` has finished. Rounds are
    /// numbered as they start, so the new one is at least `needed`.
    fn try_start(&self, needed: u64) -> Option<u64> {
        let mut rounds = self.lock();
        if rounds.running || rounds.finished >= needed {
            return None;
        }
        rounds.running = true;
        rounds.started += 1;
        Some(rounds.started)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rounds> {
        self.rounds.lock().expect("coalescer lock")
    }
}

/// Ends a round: publishes its result, or, if the running caller was cancelled, releases the round
/// so a waiting caller runs it instead.
struct RoundGuard<'a, T> {
    coalescer: &'a Coalescer<T>,
    done: bool,
}

impl<T> RoundGuard<'_, T> {
    fn finish(mut self, round: u64, result: T) {
        self.done = true;
        let mut rounds = self.coalescer.rounds.lock().expect("coalescer lock");
        rounds.running = false;
        rounds.finished = round;
        drop(rounds);
        self.coalescer.finished.send_replace((round, Some(result)));
    }
}

impl<T> Drop for RoundGuard<'_, T> {
    fn drop(&mut self) {
        if !self.done {
            // The round never finished: wake the waiters so one of them starts another.
            self.coalescer.rounds.lock().expect("coalescer lock").running = false;
            self.coalescer.finished.send_modify(|_| {});
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use tokio::sync::oneshot;

    use super::*;

    /// Callers that arrive while a round runs share the next round: two rounds serve eleven calls,
    /// and none of the late callers gets the first round's result.
    #[tokio::test]
    async fn late_callers_share_the_next_round() {
        let coalescer = Arc::new(Coalescer::<u64>::default());
        let rounds = Arc::new(AtomicU64::new(0));
        let (release, gate) = oneshot::channel::<()>();
        let first = {
            let (coalescer, rounds) = (coalescer.clone(), rounds.clone());
            tokio::spawn(async move {
                coalescer
                    .run(|| async move {
                        gate.await.unwrap();
                        rounds.fetch_add(1, Ordering::SeqCst) + 1
                    })
                    .await
            })
        };
        tokio::task::yield_now().await;
        let late: Vec<_> = (0..10)
            .map(|_| {
                let (coalescer, rounds) = (coalescer.clone(), rounds.clone());
                tokio::spawn(
                    async move { coalescer.run(|| async move { rounds.fetch_add(1, Ordering::SeqCst) + 1 }).await },
                )
            })
            .collect();
        tokio::task::yield_now().await;
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), 1);
        for call in late {
            assert_eq!(call.await.unwrap(), 2, "a late caller must get a round that started after it");
        }
        assert_eq!(rounds.load(Ordering::SeqCst), 2);
    }

    /// A caller whose round is cancelled midway does not strand the others: one of them runs it.
    #[tokio::test]
    async fn cancelled_round_is_taken_over() {
        let coalescer = Arc::new(Coalescer::<u64>::default());
        let stuck = {
            let coalescer = coalescer.clone();
            tokio::spawn(async move { coalescer.run(std::future::pending::<u64>).await })
        };
        tokio::task::yield_now().await;
        let waiter = {
            let coalescer = coalescer.clone();
            tokio::spawn(async move { coalescer.run(|| async { 7 }).await })
        };
        tokio::task::yield_now().await;
        stuck.abort();
        assert_eq!(waiter.await.unwrap(), 7);
    }
}
