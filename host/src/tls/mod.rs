//! TLS termination and certificates: the certificates a snapshot serves,
//! the resolver that picks one by SNI during each handshake, the handshake
//! itself with each listener's settings, and ACME, which obtains and renews
//! certificates.

pub mod acme;
pub mod certificates;
pub mod compile;
pub mod resolver;
pub mod store;
pub mod termination;
