//! Memory hints for the dataplane's large lookup tables.

/// Asks the kernel to back `region` with transparent huge pages where it can (the 2 MiB
/// aligned part of it), so that random lookups into a table of many megabytes stop
/// missing the TLB on nearly every access. Only advice: with THP off, or where it does
/// not apply, nothing changes. Call it before the pages are first written: pages already
/// there are merged later, if ever.
pub fn advise_huge_pages<T>(region: &[T]) {
    const HUGE: usize = 2 << 20;
    let start = region.as_ptr() as usize;
    let end = start + std::mem::size_of_val(region);
    let aligned_start = start.next_multiple_of(HUGE);
    let aligned_end = end / HUGE * HUGE;
    if aligned_end <= aligned_start {
        return;
    }
    // SAFETY: MADV_HUGEPAGE only changes how the kernel backs the range, never its
    // contents or mappings; the range lies inside `region`, a live allocation, rounded
    // inward to page boundaries.
    let rc = unsafe {
        libc::madvise(
            aligned_start as *mut libc::c_void,
            aligned_end - aligned_start,
            libc::MADV_HUGEPAGE,
        )
    };
    // Refused (THP compiled out, or an old kernel): the table works the same, slower.
    let _ = rc;
}

#[cfg(test)]
mod tests {
    #[test]
    fn advice_on_any_region_is_harmless() {
        let big = vec![0u64; 3 << 20];
        super::advise_huge_pages(&big);
        super::advise_huge_pages(&big[1..17]);
        super::advise_huge_pages::<u8>(&[]);
        assert!(big.iter().all(|&x| x == 0));
    }
}
