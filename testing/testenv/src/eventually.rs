//! The one polling helper of capstan's tests: retry a check until it succeeds or time runs out,
//! and print how long it took (slow runs then show in the log, not as flakes).
use std::{
    fmt::Display,
    future::Future,
    time::{Duration, Instant},
};

/// What a check returns: `Some`/`Ok` ends the wait; `Err` carries what was seen last, for the
/// failure message.
pub trait Attempt<T> {
    fn outcome(self) -> Result<T, Option<String>>;
}

impl<T> Attempt<T> for Option<T> {
    fn outcome(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: Display> Attempt<T> for Result<T, E> {
    fn outcome(self) -> Result<T, Option<String>> {
        self.map_err(|last| Some(last.to_string()))
    }
}

/// Polls `check` every 100 ms until it yields a value; panics after `timeout` naming `what` (and
/// the last thing `check` reported, if it returns a `Result`).
pub async fn eventually<T, A, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    A: Attempt<T>,
    F: FnMut() -> Fut,
    Fut: Future<Output = A>,
{
    let started = Instant::now();
    loop {
        match check().await.outcome() {
            Ok(value) => {
                eprintln!("[{:>6} ms] {what}", started.elapsed().as_millis());
                return value;
            }
            Err(last) => {
                assert!(
                    started.elapsed() < timeout,
                    "timed out after {timeout:?} waiting until {what}{}",
                    last.map(|l| format!("; last seen: {l}")).unwrap_or_default()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_first_value_and_reports_the_last_failure_on_timeout() {
        let mut calls = 0;
        let value = eventually("the third call", Duration::from_secs(5), || {
            calls += 1;
            let n = calls;
            async move { (n >= 3).then_some(n) }
        })
        .await;
        assert_eq!(value, 3);
        let failed = tokio::spawn(async {
            eventually("never", Duration::from_millis(150), || async {
                Err::<(), _>("still 0")
            })
            .await
        })
        .await
        .expect_err("panics after the timeout");
        let message = failed.into_panic().downcast::<String>().map(|m| *m).unwrap_or_default();
        assert!(message.contains("never; last seen: still 0"), "{message}");
    }
}
