//! Giving memory back. Start-up (policy evaluation for every installed app, the bus
//! policy, autostart) runs on blocking-pool threads, each with its own malloc arena;
//! glibc keeps freed arena memory mapped, so an idle daemon would carry that peak.
//! `malloc_trim` returns free pages of all arenas to the kernel.

/// Returns free heap pages to the kernel (glibc `malloc_trim(0)`).
pub fn trim() {
    appmgr_sandbox::sys::malloc_trim();
}
