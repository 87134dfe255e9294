//! Small helpers every layer may use, and which use nothing of the crate:
//! the heap allocator ([`allocator`]), file writes and content versions ([`files`]), the listener a
//! connection arrived on ([`net`]), serving a connection through a layered
//! Pingora app ([`apps`]), time stamps ([`time`]), handing the binary's
//! start-up code back to the kernel ([`code`]), reaching etcd ([`etcd`]),
//! and short lists of values resolved once ([`resolved`]).

pub mod allocator;
pub mod apps;
pub mod code;
pub mod etcd;
pub mod files;
pub mod net;
pub mod resolved;
pub mod time;
