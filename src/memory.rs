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

/// Takes the pages of this executable's code out of the resident set once the node has
/// started. The kernel maps code 64 KiB around every first touch ("fault-around"), so
/// start-up — kong.conf, every plugin's schema, the first snapshot — leaves about 15 MB
/// of the binary's code mapped that serving never runs again (idle RSS 23 MB against
/// 6 MB once dropped, bench/RESULTS.md "Idle RSS"). The pages stay in the page cache:
/// one needed again is mapped back by a minor fault, without a disk read. Only the
/// executable (`r-xp`) mapping: the read-only data after it was written by the dynamic
/// loader (relocations) and must not be dropped.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn release_startup_code() {
    let (Ok(maps), Ok(exe)) = (
        std::fs::read_to_string("/proc/self/maps"),
        std::fs::read_link("/proc/self/exe"),
    ) else {
        return;
    };
    for line in maps.lines() {
        // start-end perms offset dev inode path
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[1] != "r-xp" || std::path::Path::new(f[5]) != exe {
            continue;
        }
        let Some((a, b)) = f[0].split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
            continue;
        };
        // SAFETY: the range is this executable's own text mapping, read from
        // /proc/self/maps: private, file-backed, never written (no text relocations in a
        // Rust executable). MADV_DONTNEED on it only unmaps pages that the kernel maps
        // again from the same file on the next access; no Rust object lives there.
        unsafe {
            libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_DONTNEED);
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn release_startup_code() {}
