//! Memory corral freed goes back to the system.
//!
//! glibc keeps the memory a program frees for its next allocations, in
//! each thread's arena, and gives little of it back by itself. After a
//! burst (an HTTP/2 client's held bodies, many large responses at once)
//! corral's RSS stayed 50-60 MiB above where it was for as long as it
//! ran, which a container's memory limit counts. [`give_back`] asks glibc
//! to return the free pages of every arena (`malloc_trim`) every few
//! seconds: a walk of the free lists, some microseconds on a quiet heap.

use std::time::Duration;

/// Returns free memory to the system every `every`, for as long as the
/// runtime runs. The trim runs on a blocking thread: it locks each arena
/// in turn while it walks it.
pub async fn give_back(every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks and trims the allocator's own free
    // lists, under its locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// musl has no `malloc_trim`; its allocator unmaps large frees itself.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
