//! Allocator settings that give memory back to the system.
//!
//! Why: glibc's malloc keeps freed memory in per-thread arenas and raises its
//! mmap threshold up to 32 MB after large frees, so after a burst of 15 MB
//! uploads RSS stayed near 1 GB. Large blocks (image bytes, decode buffers,
//! ONNX Runtime tensors: the allocator is shared with it) are mapped and
//! unmapped directly instead, few arenas are kept, and free heap tops are
//! trimmed early.

/// Blocks at least this big are mmapped and returned to the system on free.
pub const MMAP_THRESHOLD: i32 = 256 * 1024;

/// Applies the settings; call once at start.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters (under glibc's own
    // arena locks).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 * MMAP_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}
