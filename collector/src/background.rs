//! Work the collector starts beside a request or an evaluation round and
//! does not wait for there: notifications (with their retries) and their
//! history rows, agents' loss reports. Shutdown waits for it (`drain`), so
//! that none vanishes at exit unrecorded: work still running when the
//! deadline nears is told to give up (`abandoning`), and records that it
//! did in the time left.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Clone, Default)]
pub struct Background {
    tracker: TaskTracker,
    abandon: CancellationToken,
}

impl Background {
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(work);
    }

    /// Cancelled when shutdown stops waiting for work to finish on its
    /// own: work that can take long (a notification's retries) gives up
    /// then, and records that it did.
    pub fn abandoning(&self) -> &CancellationToken {
        &self.abandon
    }

    /// Waits for the work until `deadline`: at `grace` before it, what
    /// still runs is told to give up, and the rest is theirs to record
    /// that. Work spawned meanwhile (those records) is waited for too.
    /// Returns how many tasks were still running at the deadline.
    pub async fn drain(&self, deadline: Instant, grace: Duration) -> usize {
        self.tracker.close();
        let give_up = deadline.checked_sub(grace).unwrap_or(deadline);
        if tokio::time::timeout_at(give_up, self.tracker.wait())
            .await
            .is_ok()
        {
            return 0;
        }
        self.abandon.cancel();
        if tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_ok()
        {
            return 0;
        }
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_finishes_or_is_told_to_give_up_before_the_deadline() {
        let bg = Background::default();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // Finishes on its own.
        let done = tx.clone();
        bg.spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            done.send("finished").expect("open");
        });
        // Would take a minute; gives up when told, and records it in a
        // task of its own.
        let (bg2, gave_up) = (bg.clone(), tx.clone());
        bg.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(60)) => gave_up.send("late").expect("open"),
                () = bg2.abandoning().cancelled() => {
                    bg2.spawn(async move {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        gave_up.send("abandoned").expect("open");
                    });
                }
            }
        });
        // Ignores the request to give up.
        bg.spawn(async {
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        drop(tx);
        let start = Instant::now();
        let left = bg
            .drain(start + Duration::from_secs(10), Duration::from_secs(2))
            .await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(left, 1, "only the task that ignored it");
        let mut seen = Vec::new();
        while let Ok(m) = rx.try_recv() {
            seen.push(m);
        }
        assert_eq!(seen, ["finished", "abandoned"]);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_running_returns_at_once() {
        let bg = Background::default();
        let start = Instant::now();
        assert_eq!(
            bg.drain(start + Duration::from_secs(10), Duration::from_secs(2))
                .await,
            0
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
