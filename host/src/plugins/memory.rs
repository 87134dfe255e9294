//! Handing freed heap memory back to the operating system after a burst of
//! allocation that will not come again soon.
//!
//! mimalloc, Sluice's allocator, keeps freed pages to reuse them and gives
//! them back only after a delay, and only when the thread that freed them
//! allocates again. Loading plugins is such a burst: compiling a component
//! allocates tens of MiB, and deserialising a cached one and instantiating
//! it some MiB more, almost all freed once the plugin is ready. The thread
//! that did it then waits for the next change of the plugin directory, so
//! without a collection the pages stayed resident for good. With the
//! collection (and the other changes `docs/optimisations.md` lists), an
//! idle proxy with three cached plugins holds 26 MiB instead of 33 MiB,
//! and 41 MiB instead of 83 MiB right after compiling them.

/// Returns the pages the calling thread has freed to the operating system,
/// and with them what the allocator's arenas hold for reuse.
pub fn release_freed() {
    // SAFETY: mi_collect takes no pointers and has no preconditions; when
    // mimalloc is not the global allocator it finds nothing to release.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
