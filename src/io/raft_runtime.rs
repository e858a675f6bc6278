//! openraft's `AsyncRuntime`, implemented once over our `tokio` alias.
//!
//! openraft 0.9 ships a runtime over the real tokio, which would escape the simulator: its timers
//! would run on wall-clock time and its election timeouts would come from `rand` 0.8's
//! `thread_rng`, which madsim cannot seed. This adapter routes spawn, sleep and timeouts through
//! the alias and draws randomness from the simulator's generator under madsim.

use std::fmt;
use std::future::Future;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use openraft::async_runtime::{AsyncRuntime, TokioOneShotSender};
use openraft::OptionalSend;

/// The runtime openraft runs on: real tokio in production, madsim in the simulator.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct RaftRuntime;

/// `tokio::time::Instant` wrapped so openraft's `Instant` trait can be implemented for it.
/// Under madsim it is virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RtInstant(tokio::time::Instant);

impl Add<Duration> for RtInstant {
    type Output = Self;
    fn add(self, d: Duration) -> Self {
        RtInstant(self.0 + d)
    }
}

impl AddAssign<Duration> for RtInstant {
    fn add_assign(&mut self, d: Duration) {
        self.0 += d
    }
}

impl Sub<Duration> for RtInstant {
    type Output = Self;
    fn sub(self, d: Duration) -> Self {
        RtInstant(self.0 - d)
    }
}

impl Sub<RtInstant> for RtInstant {
    type Output = Duration;
    fn sub(self, other: Self) -> Duration {
        self.0 - other.0
    }
}

impl SubAssign<Duration> for RtInstant {
    fn sub_assign(&mut self, d: Duration) {
        self.0 -= d
    }
}

impl openraft::Instant for RtInstant {
    fn now() -> Self {
        RtInstant(tokio::time::Instant::now())
    }
}

/// A deadline passed before the future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

pin_project_lite::pin_project! {
    /// A future with a deadline. openraft needs a nameable type; madsim's `timeout` is not one.
    pub struct Timeout<T> {
        #[pin] fut: T,
        #[pin] sleep: tokio::time::Sleep,
    }
}

impl<T: Future> Future for Timeout<T> {
    type Output = Result<T::Output, Elapsed>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

pub(super) fn timeout<T: Future>(limit: Duration, fut: T) -> Timeout<T> {
    Timeout { fut, sleep: tokio::time::sleep(limit) }
}

#[cfg(madsim)]
type Rng = madsim::rand::GlobalRng;
#[cfg(not(madsim))]
type Rng = rand08::rngs::ThreadRng;

impl AsyncRuntime for RaftRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = RtInstant;
    type TimeoutError = Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = Timeout<T>;
    type ThreadLocalRng = Rng;
    type OneshotSender<T: OptionalSend> = TokioOneShotSender<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        tokio::task::spawn(future)
    }

    fn sleep(d: Duration) -> Self::Sleep {
        tokio::time::sleep(d)
    }

    fn sleep_until(deadline: RtInstant) -> Self::Sleep {
        tokio::time::sleep_until(deadline.0)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(d: Duration, f: F) -> Self::Timeout<R, F> {
        timeout(d, f)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: RtInstant, f: F) -> Self::Timeout<R, F> {
        Timeout { fut: f, sleep: tokio::time::sleep_until(deadline.0) }
    }

    fn is_panic(e: &Self::JoinError) -> bool {
        e.is_panic()
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        #[cfg(madsim)]
        {
            madsim::rand::thread_rng()
        }
        #[cfg(not(madsim))]
        {
            rand08::thread_rng()
        }
    }

    fn oneshot<T: OptionalSend>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (TokioOneShotSender(tx), rx)
    }
}
