//! Reusable threads: one pool for every part of Zodiac that runs work on a thread
//! of its own (the server's connection readers and commits, a worker's jobs),
//! kept between tasks because creating a thread costs more than a short task.
//!
//! Invariants:
//! - A task runs on a thread of its own for as long as it takes: a thread is idle
//!   (waiting for a task) or running exactly one task. A task is queued only with
//!   a thread free to take it (an idle one, or one started for it): it never waits
//!   behind another task. (The queue is a stack: which task a free thread takes
//!   does not matter, each has a free thread.)
//! - A task's panic is caught and returned by [`PoolTask::join`], as
//!   `JoinHandle::join` returns it; its thread goes on serving.
//! - Idle threads end after the pool's idle time without a task, or when the pool
//!   is dropped; a running task is never interrupted (dropping its [`PoolTask`]
//!   detaches it, as dropping a `JoinHandle` does).

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

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
pub struct ThreadPool {
    name: String,
    idle_exit: Duration,
    shared: Arc<Shared>,
}

/// A task handed to the pool: whether it finished, and its result.
pub struct PoolTask<T> {
    done: Receiver<std::thread::Result<T>>,
    result: Option<std::thread::Result<T>>,
}

impl ThreadPool {
    /// An empty pool whose threads are named `name` and end after `idle_exit`
    /// without a task.
    pub fn new(name: impl Into<String>, idle_exit: Duration) -> ThreadPool {
        ThreadPool {
            name: name.into(),
            idle_exit,
            shared: Arc::new(Shared::default()),
        }
    }

    /// Runs `f` on an idle thread, or on a new one when none is idle. When no
    /// thread can be started, gives `f` back: the caller runs it itself or
    /// refuses the work.
    pub fn try_spawn<T, F>(&self, f: F) -> Result<PoolTask<T>, F>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (sender, done): (Sender<std::thread::Result<T>>, _) = mpsc::channel();
        let task = PoolTask { done, result: None };
        let mut queue = self.shared.queue.lock();
        if queue.idle > queue.work.len() {
            queue.work.push(Box::new(move || {
                let _ = sender.send(catch_unwind(AssertUnwindSafe(f)));
            }));
            drop(queue);
            self.shared.ready.notify_one();
            return Ok(task);
        }
        drop(queue);
        // A new thread takes `f` from this slot; if the thread cannot start, the
        // slot still holds it to give back.
        let slot = Arc::new(Mutex::new(Some(f)));
        let taken = Arc::clone(&slot);
        let shared = Arc::clone(&self.shared);
        let idle_exit = self.idle_exit;
        let started = std::thread::Builder::new()
            .name(self.name.clone())
            .spawn(move || {
                let first = taken.lock().take();
                drop(taken);
                if let Some(f) = first {
                    let _ = sender.send(catch_unwind(AssertUnwindSafe(f)));
                }
                serve(&shared, idle_exit);
            });
        match started {
            Ok(_) => Ok(task),
            Err(_) => Err(slot
                .lock()
                .take()
                .expect("a thread that never started took nothing")),
        }
    }

    /// Runs `f` on a pool thread, or on the calling thread, with an error logged,
    /// when no thread can be started (the task still runs: work that was accepted
    /// must not be left undone).
    pub fn spawn<T, F>(&self, f: F) -> PoolTask<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        match self.try_spawn(f) {
            Ok(task) => task,
            Err(f) => {
                log::error!(
                    "cannot start a thread for {}; running the task on the calling thread",
                    self.name
                );
                let (sender, done) = mpsc::channel();
                let _ = sender.send(catch_unwind(AssertUnwindSafe(f)));
                PoolTask { done, result: None }
            }
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.queue.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

/// A pool thread: runs what it is handed until idle too long.
fn serve(shared: &Shared, idle_exit: Duration) {
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
        let timed_out = shared.ready.wait_for(&mut queue, idle_exit).timed_out();
        queue.idle -= 1;
        if timed_out && queue.work.is_empty() {
            return;
        }
    }
}

impl<T> PoolTask<T> {
    /// Whether the task has ended (returned or panicked).
    pub fn is_finished(&mut self) -> bool {
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
    pub fn join(mut self) -> Result<T, Box<dyn Any + Send>> {
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

    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn tasks_return_their_values_and_threads_are_reused() {
        let pool = ThreadPool::new("test", IDLE);
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
        let pool = ThreadPool::new("test", IDLE);
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
        let pool = ThreadPool::new("test", IDLE);
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

    #[test]
    fn idle_threads_end_after_the_idle_time() {
        let pool = ThreadPool::new("test", Duration::from_millis(20));
        pool.spawn(|| ()).join().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        // The thread goes idle, then ends: idle drops back to zero.
        while pool.shared.queue.lock().idle == 0 {
            assert!(Instant::now() < deadline, "the thread never went idle");
            std::thread::sleep(Duration::from_millis(1));
        }
        while pool.shared.queue.lock().idle != 0 {
            assert!(Instant::now() < deadline, "the idle thread never ended");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
