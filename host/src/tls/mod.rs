//! TLS termination: the certificates a snapshot serves, and the resolver
//! that picks one by SNI during each handshake.

pub mod certificates;
pub mod resolver;
