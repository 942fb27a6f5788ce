//! Waiting for conditions with a bounded backoff instead of fixed sleeps.
//!
//! Every helper checks the condition at once, then after 5 ms, 10 ms, 20 ms… (capped at
//! 100 ms between checks) until it holds or the timeout passes. The condition is checked
//! one last time at the deadline, so a timeout never hides a condition that just became
//! true.

use std::time::{Duration, Instant};

const FIRST_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_millis(100);

/// The delays between checks: 5 ms doubling to 100 ms, never past `deadline`.
#[derive(Debug)]
pub(crate) struct Backoff {
    delay: Duration,
    deadline: Instant,
}

impl Backoff {
    /// A backoff that ends `timeout` from now.
    pub(crate) fn new(timeout: Duration) -> Self {
        Backoff { delay: FIRST_DELAY, deadline: Instant::now() + timeout }
    }

    /// How long to sleep before the next check, or `None` when the deadline has passed.
    pub(crate) fn next_delay(&mut self) -> Option<Duration> {
        let left = self.deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        let delay = self.delay.min(left);
        self.delay = (self.delay * 2).min(MAX_DELAY);
        Some(delay)
    }
}

/// Polls `cond` (blocking the thread between checks) until it returns true or `timeout`
/// passes. Returns whether it became true.
///
/// Use from synchronous tests; in async tests use [`wait_until_async`] so the runtime
/// keeps running.
#[must_use = "assert on the result: false means the condition never held"]
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let mut backoff = Backoff::new(timeout);
    loop {
        if cond() {
            return true;
        }
        match backoff.next_delay() {
            Some(delay) => std::thread::sleep(delay),
            None => return cond(),
        }
    }
}

/// Polls the synchronous `cond` with tokio sleeps in between until it returns true or
/// `timeout` passes. Returns whether it became true.
#[must_use = "assert on the result: false means the condition never held"]
pub async fn wait_until_async(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let mut backoff = Backoff::new(timeout);
    loop {
        if cond() {
            return true;
        }
        match backoff.next_delay() {
            Some(delay) => tokio::time::sleep(delay).await,
            None => return cond(),
        }
    }
}

/// Polls the asynchronous `cond` (e.g. `async || client.list().await.unwrap().active == 0`)
/// until it returns true or `timeout` passes. Returns whether it became true.
///
/// A check that is still running at the deadline is allowed to finish.
#[must_use = "assert on the result: false means the condition never held"]
pub async fn wait_until_with(timeout: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let mut backoff = Backoff::new(timeout);
    loop {
        if cond().await {
            return true;
        }
        match backoff.next_delay() {
            Some(delay) => tokio::time::sleep(delay).await,
            None => return cond().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn true_at_once_does_not_sleep() {
        let start = Instant::now();
        assert!(wait_until(Duration::from_secs(5), || true));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn false_times_out_after_the_timeout() {
        let start = Instant::now();
        let mut checks = 0;
        assert!(!wait_until(Duration::from_millis(150), || {
            checks += 1;
            false
        }));
        assert!(start.elapsed() >= Duration::from_millis(150));
        assert!(checks >= 4, "{checks} checks");
    }

    #[test]
    fn becomes_true_later() {
        let start = Instant::now();
        assert!(wait_until(Duration::from_secs(5), || start.elapsed() > Duration::from_millis(30)));
    }

    #[tokio::test]
    async fn async_variants() {
        let start = Instant::now();
        assert!(
            wait_until_async(Duration::from_secs(5), || start.elapsed()
                > Duration::from_millis(20))
            .await
        );
        let mut n = 0;
        assert!(
            wait_until_with(Duration::from_secs(5), async || {
                n += 1;
                tokio::task::yield_now().await;
                n >= 3
            })
            .await
        );
        assert!(!wait_until_with(Duration::from_millis(30), async || false).await);
    }
}
