//! TLS termination and certificates: the certificates a snapshot serves,
//! the resolver that picks one by SNI during each handshake, the handshake
//! itself with each listener's settings, and ACME, which obtains and renews
//! certificates.

pub mod acme;
pub mod certificates;
pub(crate) mod compile;
pub(crate) mod resolver;
pub(crate) mod store;
pub(crate) mod termination;
