//! Handing memory the process freed back to the system.

/// Returns the free pages of glibc's heap to the system. glibc gives memory back on its
/// own only from the top of its heap; a whole-configuration load frees the rows it parsed
/// below the compiled snapshot that outlives them, so a DB-less node with 10,000 routes
/// would otherwise stay about 20 MB above what it uses (bench/RESULTS.md, "DB-less
/// memory"). Called only after such loads: it walks every arena, each under its lock.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(crate) fn release_freed() {
    // SAFETY: malloc_trim takes no pointers and only releases pages glibc holds free; it
    // locks each arena while it works on it, like any other allocator call.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators return freed memory themselves or have no such call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn release_freed() {}
