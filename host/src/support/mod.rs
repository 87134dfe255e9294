//! Small helpers every layer may use, and which use nothing of the crate:
//! file writes and content versions ([`files`]), the listener a
//! connection arrived on ([`net`]), serving a connection through a layered
//! Pingora app ([`apps`]), and time stamps ([`time`]).

pub mod apps;
pub mod files;
pub mod net;
pub mod time;
