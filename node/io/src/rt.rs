//! The executor and its tasks, as the node uses them: one pinned executor per shard,
//! tasks spawned on the current shard (cancelled when their `Task` is dropped, or
//! detached into a `TaskHandle` whose await gives their output), local channels between
//! tasks of one shard, and a semaphore. These are glommio's own types, named here so that
//! the rest of the node reaches glommio only through this crate.

pub use glommio::channels::local_channel::{new_bounded as local_channel, LocalReceiver, LocalSender};
pub use glommio::sync::{Semaphore, StaticPermit};
pub use glommio::task::JoinHandle as TaskHandle;
pub use glommio::{LocalExecutorBuilder, Placement, Task};

/// Runs `future` as a task on this shard; dropping the returned `Task` cancels it, and
/// `Task::detach` turns it into a `TaskHandle`.
pub fn spawn<F>(future: F) -> Task<F::Output>
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    glommio::spawn_local(future)
}

/// Lets every other task that is ready now run before this one goes on (this task goes
/// to the back of its queue).
pub async fn yield_now() {
    glommio::executor().yield_now().await;
}
