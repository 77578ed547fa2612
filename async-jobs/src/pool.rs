//! The threads a worker runs jobs on: kept between jobs instead of one new thread
//! per job (creating a thread costs more than running a short job).
//!
//! Invariants:
//! - A task runs on a thread of its own for as long as it takes: a thread is idle
//!   (waiting for a task) or running exactly one task. A task is queued only
//!   with a thread free to take it (an idle one, or one started for it): it never
//!   waits behind another task. (The queue is a stack: which task a free thread
//!   takes does not matter, each has a free thread.)
//! - A task's panic is caught and returned by [`Task::join`], as
//!   `JoinHandle::join` returns it; its thread goes on serving.
//! - Idle threads end after [`IDLE_EXIT`] without a task, or when the pool is
//!   dropped; a running task is never interrupted (dropping its [`Task`] detaches
//!   it, as dropping a `JoinHandle` does).

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// How long an idle thread waits for a task before it ends.
pub(crate) const IDLE_EXIT: Duration = Duration::from_secs(60);

type Work = Box<dyn FnOnce() + Send>;

/// Tasks waiting for a thread, and how many threads wait for a task.
#[derive(Default)]
struct Queue {
    work: Vec<Work>,
    idle: usize,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

/// A set of reusable threads.
pub(crate) struct Pool {
    name: String,
    shared: Arc<Shared>,
}

/// A task handed to the pool: whether it finished, and its result.
pub(crate) struct Task<T> {
    done: Receiver<std::thread::Result<T>>,
    result: Option<std::thread::Result<T>>,
}

impl Pool {
    /// An empty pool whose threads are named `name`.
    pub(crate) fn new(name: impl Into<String>) -> Pool {
        Pool {
            name: name.into(),
            shared: Arc::new(Shared::default()),
        }
    }

    /// Runs `f` on an idle thread, or on a new one when none is idle; on the
    /// calling thread, with an error logged, when no thread can be created (the
    /// task still runs: a claimed job must not be left unrun).
    pub(crate) fn spawn<T, F>(&self, f: F) -> Task<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (sender, done): (Sender<std::thread::Result<T>>, _) = mpsc::channel();
        let work: Work = Box::new(move || {
            let _ = sender.send(catch_unwind(AssertUnwindSafe(f)));
        });
        let mut queue = self.shared.queue.lock();
        let idle_free = queue.idle > queue.work.len();
        queue.work.push(work);
        drop(queue);
        if idle_free {
            self.shared.ready.notify_one();
        } else {
            let shared = Arc::clone(&self.shared);
            let started = std::thread::Builder::new()
                .name(self.name.clone())
                .spawn(move || serve(&shared));
            if let Err(e) = started {
                log::error!(
                    target: "zodiac_async::events",
                    "cannot start a thread to run a job ({e}); running it on the polling thread"
                );
                // Some thread may have taken it meanwhile; otherwise run it here.
                let work = self.shared.queue.lock().work.pop();
                if let Some(work) = work {
                    work();
                }
            }
        }
        Task { done, result: None }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.queue.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

/// A pool thread: runs what it is handed until idle too long.
fn serve(shared: &Shared) {
    let mut queue = shared.queue.lock();
    loop {
        if let Some(work) = queue.work.pop() {
            drop(queue);
            work();
            queue = shared.queue.lock();
            continue;
        }
        if queue.closed {
            return;
        }
        queue.idle += 1;
        let timed_out = shared.ready.wait_for(&mut queue, IDLE_EXIT).timed_out();
        queue.idle -= 1;
        if timed_out && queue.work.is_empty() {
            return;
        }
    }
}

impl<T> Task<T> {
    /// Whether the task has ended (returned or panicked).
    pub(crate) fn is_finished(&mut self) -> bool {
        if self.result.is_none() {
            match self.done.try_recv() {
                Ok(result) => self.result = Some(result),
                Err(mpsc::TryRecvError::Empty) => return false,
                // The thread ended without a result: it cannot (the work always
                // sends), but treat it as a panic rather than wait forever.
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.result = Some(Err(Box::new("the pool thread vanished")));
                }
            }
        }
        true
    }

    /// Waits for the task to end; its value, or the payload of its panic.
    pub(crate) fn join(mut self) -> Result<T, Box<dyn Any + Send>> {
        if let Some(result) = self.result.take() {
            return result;
        }
        self.done
            .recv()
            .unwrap_or_else(|_| Err(Box::new("the pool thread vanished")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::time::Instant;

    #[test]
    fn tasks_return_their_values_and_threads_are_reused() {
        let pool = Pool::new("test");
        let first = pool.spawn(|| std::thread::current().id());
        let first_thread = first.join().unwrap();
        // Give the thread time to go idle, then the next task reuses it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.shared.queue.lock().idle == 0 {
            assert!(Instant::now() < deadline, "the thread never went idle");
            std::thread::sleep(Duration::from_millis(1));
        }
        let second = pool.spawn(|| std::thread::current().id());
        assert_eq!(second.join().unwrap(), first_thread);
    }

    #[test]
    fn concurrent_tasks_each_get_a_thread() {
        let pool = Pool::new("test");
        // Four tasks that can only end together: none may wait behind another.
        let barrier = Arc::new(Barrier::new(4));
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let barrier = Arc::clone(&barrier);
                pool.spawn(move || {
                    barrier.wait();
                    i
                })
            })
            .collect();
        let values: Vec<i32> = tasks.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(values, [0, 1, 2, 3]);
    }

    #[test]
    fn a_panic_is_returned_and_the_pool_goes_on() {
        let pool = Pool::new("test");
        let mut task = pool.spawn(|| -> u32 { panic!("boom") });
        let deadline = Instant::now() + Duration::from_secs(5);
        while !task.is_finished() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        let payload = task.join().unwrap_err();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
        assert_eq!(pool.spawn(|| 7).join().unwrap(), 7);
    }
}
