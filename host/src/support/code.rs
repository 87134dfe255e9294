//! Handing the binary's start-up code back to the kernel once it has run.
//!
//! The release binary keeps the functions that only start-up, reloads and
//! plugin loading run together, in its `.text.sluice_startup` section
//! (`host/build.rs`, `host/link/text-order.ld`). Once they have run they
//! are not needed until the next reload, but the pages they ran from stay
//! resident: several MB of an idle proxy's memory. [`release_startup_code`]
//! asks the kernel to reclaim them (`madvise(MADV_PAGEOUT)`); a later
//! reload maps what it runs again, from the page cache or the file. A
//! binary without the section (a debug build, another target) has nothing
//! to hand back, and neither has one for another system than Linux.

#[cfg(target_os = "linux")]
use std::sync::OnceLock;

/// The section the release binary keeps its start-up code in.
#[cfg(target_os = "linux")]
const STARTUP_SECTION: &str = ".text.sluice_startup";

/// Asks the kernel to reclaim the pages of the start-up code, if this
/// binary has it in a section of its own. Call it after start-up, after a
/// reload and after plugins load: what runs after it maps its pages again.
pub fn release_startup_code() {
    #[cfg(target_os = "linux")]
    release_on_linux();
}

#[cfg(target_os = "linux")]
fn release_on_linux() {
    static RANGE: OnceLock<Option<PageRange>> = OnceLock::new();
    let Some(range) = RANGE.get_or_init(startup_pages) else {
        return;
    };
    // SAFETY: the range lies inside the binary's own mapped code; paging
    // out changes no contents, only what is resident.
    let result = unsafe {
        libc::madvise(
            range.start as *mut libc::c_void,
            range.len,
            libc::MADV_PAGEOUT,
        )
    };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "start-up code not handed back");
    }
}

/// A page-aligned address range.
#[cfg(target_os = "linux")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PageRange {
    start: usize,
    len: usize,
}

/// The whole pages of the start-up section, where the loader put it.
#[cfg(target_os = "linux")]
fn startup_pages() -> Option<PageRange> {
    let (address, size) = section_in_own_binary(STARTUP_SECTION)?;
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    whole_pages(load_bias().checked_add(address)?, size, page)
}

/// The pages that lie wholly inside `[start, start + size)`: a page the
/// section shares with its neighbours holds code that keeps running.
#[cfg(target_os = "linux")]
fn whole_pages(start: usize, size: usize, page: usize) -> Option<PageRange> {
    let first = start.checked_add(page - 1)? / page * page;
    let end = start.checked_add(size)? / page * page;
    (end > first).then_some(PageRange {
        start: first,
        len: end - first,
    })
}

/// The link-time address and size of the section `name` of the running
/// binary. Only the section headers and their names are read: the symbol
/// tables, megabytes of them, would come through the heap.
#[cfg(target_os = "linux")]
fn section_in_own_binary(name: &str) -> Option<(usize, usize)> {
    use object::read::elf::{FileHeader, SectionHeader};
    let file = std::fs::File::open("/proc/self/exe").ok()?;
    let cache = object::ReadCache::new(file);
    let header = object::elf::FileHeader64::<object::Endianness>::parse(&cache).ok()?;
    let endian = header.endian().ok()?;
    let sections = header.sections(endian, &cache).ok()?;
    let (_, section) = sections.section_by_name(endian, name.as_bytes())?;
    Some((
        usize::try_from(section.sh_addr(endian)).ok()?,
        usize::try_from(section.sh_size(endian)).ok()?,
    ))
}

/// How far the loader moved the running binary from its link-time
/// addresses (position-independent executables load anywhere).
#[cfg(target_os = "linux")]
fn load_bias() -> usize {
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        bias: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid entry, and `bias` is the
        // `usize` below; the first entry is the executable itself.
        unsafe { *bias.cast::<usize>() = (*info).dlpi_addr as usize };
        1
    }
    let mut bias = 0usize;
    // SAFETY: the callback only writes the `usize` it is handed.
    unsafe { libc::dl_iterate_phdr(Some(first), (&raw mut bias).cast()) };
    bias
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn only_pages_wholly_inside_the_section_are_handed_back() {
        let page = 4096;
        assert_eq!(
            whole_pages(4096, 3 * 4096, page),
            Some(PageRange {
                start: 4096,
                len: 3 * 4096
            })
        );
        assert_eq!(
            whole_pages(4000, 3 * 4096, page),
            Some(PageRange {
                start: 4096,
                len: 2 * 4096
            })
        );
        assert_eq!(whole_pages(4000, 4096, page), None);
    }

    #[test]
    fn a_binary_without_the_section_hands_nothing_back() {
        // Test binaries are linked without the layout.
        assert_eq!(section_in_own_binary(STARTUP_SECTION), None);
        assert!(section_in_own_binary(".text").is_some());
        release_startup_code();
    }
}
