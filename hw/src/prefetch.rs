//! A cache prefetch hint, for lookups that know early which memory they will read.

/// Hints the CPU to bring the cache line holding `value` towards the core. Never faults,
/// never changes memory; a no-op on architectures without the instruction.
#[inline(always)]
pub fn prefetch_read<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` is marked unsafe only because it is a `target_feature(sse)`
    // function; SSE is part of the x86_64 baseline, so it is always available. A prefetch
    // is a hint: it neither reads into a register nor faults, whatever the address, and
    // here the address comes from a live reference anyway.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (value as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
