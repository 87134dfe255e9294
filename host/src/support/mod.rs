//! Small helpers every layer may use, and which use nothing of the crate:
//! file writes and content versions ([`files`]), and time stamps
//! ([`time`]).

pub mod files;
pub mod time;
