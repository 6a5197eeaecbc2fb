//! A future polled again only after its own waker fired.
//!
//! A session waits on its two sockets and, all along, on two signals that almost never come
//! (shutdown, a new cluster view). `select!` polls every branch each time the task wakes,
//! and polling a `watch` receiver that has nothing new costs a few hundred instructions (it
//! takes the channel's lock to check its waiter), on each of the two or three turns of a
//! transaction (about 600 of a select-only transaction's 10k instructions, callgrind).
//! [`Woken`] gives the inner future a waker of its own that raises a flag before waking the
//! task, and polls the inner future only when the flag is up (or the task's waker changed): a
//! signal that did not fire costs an atomic swap.
//!
//! Written here because no crate of the workspace offers it (`futures` has no such
//! combinator; tokio's task machinery is private).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// `inner`, polled only when it asked to be (see the module note).
pub(crate) struct Woken<F> {
    inner: Pin<Box<F>>,
    flag: Arc<Flag>,
    /// The waker handed to `inner`: raises `flag`, then wakes the task.
    waker: Waker,
    /// The task's waker as last registered in `flag`, compared without the lock.
    task: Option<Waker>,
}

struct Flag {
    /// Up when `inner` must be polled: initially, and whenever its waker was called.
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        // Cloned under the lock, woken outside it.
        let task = self.task.lock().ok().and_then(|task| task.clone());
        if let Some(task) = task {
            task.wake();
        }
    }
}

impl<F: Future> Woken<F> {
    pub(crate) fn new(inner: F) -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Woken {
            inner: Box::pin(inner),
            waker: Waker::from(flag.clone()),
            flag,
            task: None,
        }
    }
}

impl<F: Future> Future for Woken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if !this.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            // Registered before the flag is read: a wake from now on reaches this task.
            if let Ok(mut task) = this.flag.task.lock() {
                *task = Some(cx.waker().clone());
            }
            this.task = Some(cx.waker().clone());
            // The inner future may have been woken towards the old task: look.
            this.flag.woken.store(true, Ordering::Release);
        }
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::Woken;
    use std::future::Future;
    use std::pin::{Pin, pin};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Wake, Waker};

    /// A task waker that counts its wakes.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A signal: counts its polls, keeps the waker it was last given, ready once fired.
    #[derive(Default)]
    struct Signal {
        polls: AtomicUsize,
        fired: Mutex<bool>,
        waker: Mutex<Option<Waker>>,
    }

    impl Signal {
        fn fire(&self) {
            *self.fired.lock().unwrap() = true;
            if let Some(waker) = self.waker.lock().unwrap().take() {
                waker.wake();
            }
        }

        fn polls(&self) -> usize {
            self.polls.load(Ordering::SeqCst)
        }
    }

    struct Wait(Arc<Signal>);

    impl Future for Wait {
        type Output = ();

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.0.polls.fetch_add(1, Ordering::SeqCst);
            if *self.0.fired.lock().unwrap() {
                return Poll::Ready(());
            }
            *self.0.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    fn task() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        (counter.clone(), Waker::from(counter))
    }

    #[test]
    fn the_inner_future_is_polled_again_only_after_its_waker_fired() {
        let signal = Arc::new(Signal::default());
        let (wakes, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let mut woken = pin!(Woken::new(Wait(signal.clone())));

        assert!(woken.as_mut().poll(&mut cx).is_pending());
        assert_eq!(signal.polls(), 1, "the first poll reaches it");
        for _ in 0..5 {
            assert!(woken.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(signal.polls(), 1, "not woken: not polled");

        signal.fire();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the task is woken");
        assert!(woken.as_mut().poll(&mut cx).is_ready());
        assert_eq!(signal.polls(), 2);
    }

    #[test]
    fn a_new_task_waker_gets_the_inner_future_polled_and_the_wake() {
        let signal = Arc::new(Signal::default());
        let (first_wakes, first) = task();
        let (second_wakes, second) = task();
        let mut woken = pin!(Woken::new(Wait(signal.clone())));

        assert!(
            woken
                .as_mut()
                .poll(&mut Context::from_waker(&first))
                .is_pending()
        );
        assert!(
            woken
                .as_mut()
                .poll(&mut Context::from_waker(&second))
                .is_pending()
        );
        assert_eq!(signal.polls(), 2, "moved to another task: looked again");

        signal.fire();
        assert_eq!(first_wakes.0.load(Ordering::SeqCst), 0);
        assert_eq!(
            second_wakes.0.load(Ordering::SeqCst),
            1,
            "the wake reaches the new task"
        );
        assert!(
            woken
                .as_mut()
                .poll(&mut Context::from_waker(&second))
                .is_ready()
        );
    }
}
