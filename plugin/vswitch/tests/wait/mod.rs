//! Waiting on a condition with a bound, the one way tests here wait: the condition is
//! polled, and the test fails naming what did not happen.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(10);

/// Polls `f` until it returns `Some`, for at most `bound`.
pub fn wait_for<T>(bound: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {bound:?}: {what}");
        std::thread::sleep(POLL);
    }
}

/// As [`wait_for`], for async conditions.
pub async fn eventually<T, Fut>(bound: Duration, what: &str, mut f: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {bound:?}: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}
