//! Single-threaded wake-up primitives for tasks on one shard.
//!
//! `Oneshot` carries one value from a producer to one waiting task (an append waiting
//! for its write to complete). `WaitQueue` wakes every waiter when some condition may
//! have changed (space in a buffer, work for the flusher); waiters re-check their
//! condition, so a spurious wake-up is harmless. Neither is `Send`: both live on the
//! shard that created them.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct OneshotState<T> {
    value: Option<T>,
    waker: Option<Waker>,
    sender_gone: bool,
}

/// The receiving half of a one-value channel. Resolves to `None` if the sender was
/// dropped without sending (its owner died), so a waiter never hangs on a lost reply.
pub struct Oneshot<T> {
    state: Rc<RefCell<OneshotState<T>>>,
}

/// The sending half of a one-value channel.
pub struct OneshotSender<T> {
    state: Rc<RefCell<OneshotState<T>>>,
}

impl<T> Oneshot<T> {
    /// A connected sender and receiver.
    #[must_use]
    pub fn channel() -> (OneshotSender<T>, Oneshot<T>) {
        let state = Rc::new(RefCell::new(OneshotState { value: None, waker: None, sender_gone: false }));
        (OneshotSender { state: state.clone() }, Oneshot { state })
    }
}

impl<T> OneshotSender<T> {
    /// Delivers `value` and wakes the receiver (if it still waits).
    pub fn send(self, value: T) {
        let waker = {
            let mut state = self.state.borrow_mut();
            state.value = Some(value);
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for OneshotSender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.state.borrow_mut();
            state.sender_gone = true;
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for Oneshot<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.state.borrow_mut();
        if let Some(v) = state.value.take() {
            return Poll::Ready(Some(v));
        }
        if state.sender_gone {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A set of waiting tasks, all woken by `notify_all`. Waiters register before checking
/// their condition again is not needed: on one thread nothing can change between the
/// check and the registration.
#[derive(Default)]
pub struct WaitQueue {
    wakers: RefCell<Vec<Waker>>,
    generation: std::cell::Cell<u64>,
}

impl WaitQueue {
    #[must_use]
    pub fn new() -> WaitQueue {
        WaitQueue::default()
    }

    /// Wakes every task waiting now.
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }

    /// Resolves at the next `notify_all` after this call.
    pub fn wait(&self) -> Wait<'_> {
        Wait { queue: self, generation: self.generation.get() }
    }
}

/// The future of `WaitQueue::wait`.
pub struct Wait<'a> {
    queue: &'a WaitQueue,
    generation: u64,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.queue.generation.get() != self.generation {
            return Poll::Ready(());
        }
        self.queue.wakers.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

/// A boxed future of this shard, which may borrow from its caller.
pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Runs `futures` concurrently on this task (they may borrow from the caller, unlike
/// spawned tasks) and returns their outputs in order.
pub async fn join_all<'a, T>(futures: Vec<LocalFuture<'a, T>>) -> Vec<T> {
    let mut futures: Vec<Option<LocalFuture<'a, T>>> = futures.into_iter().map(Some).collect();
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Resolves when the first of `futures` does (the others are dropped); at once when
/// there are none.
pub async fn first_of(mut futures: Vec<LocalFuture<'_, ()>>) {
    if futures.is_empty() {
        return;
    }
    std::future::poll_fn(|cx| {
        for f in &mut futures {
            if f.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn oneshot_delivers_the_value_and_a_dropped_sender_resolves_to_none() {
        let (tx, rx) = Oneshot::channel();
        tx.send(7);
        assert_eq!(futures_lite::future::block_on(rx), Some(7));
        let (tx, rx) = Oneshot::<u32>::channel();
        drop(tx);
        assert_eq!(futures_lite::future::block_on(rx), None);
    }

    #[test]
    fn wait_queue_wakes_only_after_a_notify_that_follows_the_wait() {
        let q = WaitQueue::new();
        let mut w = Box::pin(q.wait());
        let waker = futures_lite::future::block_on(futures_lite::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())));
        let mut cx = Context::from_waker(&waker);
        assert!(w.as_mut().poll(&mut cx).is_pending());
        q.notify_all();
        assert!(w.as_mut().poll(&mut cx).is_ready());
    }
}
