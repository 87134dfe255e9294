//! Small helpers every layer may use, and which use nothing of the crate:
//! file writes and content versions ([`files`]), the listener a
//! connection arrived on ([`net`]), and time stamps ([`time`]).

pub mod files;
pub mod net;
pub mod time;
