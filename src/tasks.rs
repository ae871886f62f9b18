//! Long-lived background tasks (the flow-control dispatcher, the scrape supervisor, the file and
//! Kubernetes watchers). A panic in one of them would leave the process serving degraded —
//! routing blind, or never seeing a configuration change again — while reporting healthy, so a
//! panic is logged and ends the process with a non-zero status for the orchestrator to restart.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tokio::task::JoinHandle;

/// The exit status of a process ended by a panicking background task (EX_SOFTWARE).
pub const PANIC_EXIT_STATUS: i32 = 70;

/// Spawns `task`; if it panics, the panic is logged and the process exits with
/// [`PANIC_EXIT_STATUS`].
pub fn spawn_critical<F>(name: &'static str, task: F) -> JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    spawn_critical_with(name, task, |_| std::process::exit(PANIC_EXIT_STATUS))
}

/// Like [`spawn_critical`], calling `on_panic` with the task's name instead of exiting.
pub fn spawn_critical_with<F>(
    name: &'static str,
    task: F,
    on_panic: impl FnOnce(&'static str) + Send + 'static,
) -> JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(panic) = AssertUnwindSafe(task).catch_unwind().await {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            tracing::error!(task = name, %reason, "a background task panicked: exiting");
            on_panic(name);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_reported_and_a_normal_end_is_not() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        spawn_critical_with(
            "boom",
            async { panic!("period must be non-zero") },
            move |name| {
                let _ = tx.send(name);
            },
        )
        .await
        .unwrap();
        assert_eq!(rx.await.unwrap(), "boom");

        let (tx, mut rx) = tokio::sync::oneshot::channel::<&str>();
        spawn_critical_with("fine", async {}, move |n| {
            let _ = tx.send(n);
        })
        .await
        .unwrap();
        assert!(rx.try_recv().is_err());
    }
}
