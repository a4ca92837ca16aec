//! Panic containment for actors: a bug that one actor's input reaches ends that actor's
//! step, not the executor. glommio lets a panic in any task unwind out of the executor
//! thread, which ends the core and with it the process; an actor runs each step through
//! [`contained`] and turns a panic into its own orderly end (a session closes its stream
//! with an error and unbinds as usual; a user's actor drops the one message).
//!
//! `AssertUnwindSafe` is sound here because no state is shared across the catch except
//! through `RefCell`s, which unwinding leaves unborrowed, and the actor that caught the
//! panic stops using the step's half-done state.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_lite::FutureExt;

/// What a caught panic said, for the log.
#[derive(Debug)]
pub struct Panicked(pub String);

/// Runs `step`; a panic inside it comes back as [`Panicked`] instead of unwinding further.
pub async fn contained<F: Future>(step: F) -> Result<F::Output, Panicked> {
    AssertUnwindSafe(step).catch_unwind().await.map_err(|payload| {
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        Panicked(text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_step_is_caught_and_the_executor_goes_on() {
        let ex = glommio::LocalExecutorBuilder::default().make().expect("an executor");
        ex.run(async {
            let caught = glommio::spawn_local(contained(async { panic!("step {}", 1) })).await;
            assert_eq!(caught.unwrap_err().0, "step 1");
            assert_eq!(glommio::spawn_local(contained(async { 7 })).await.unwrap(), 7);
        });
    }
}
