//! Giving memory back. Start-up (policy evaluation for every installed app, the bus
//! policy, autostart) runs on blocking-pool threads, each with its own malloc arena;
//! glibc keeps freed arena memory mapped, so an idle daemon would carry that peak.
//! `malloc_trim` returns free pages of all arenas to the kernel.

/// Returns free heap pages to the kernel (glibc `malloc_trim(0)`).
#[allow(unsafe_code)]
pub fn trim() {
    // SAFETY: malloc_trim takes a size and touches only the allocator's own state, which
    // it locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
