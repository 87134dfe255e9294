//! TLS: certificates and how they are obtained.

pub mod acme;
