//! Per-route request and response transforms: header rules, path rewrites and
//! the forwarding headers every proxied request carries.

pub(crate) mod compile;
pub(crate) mod forwarding;
pub mod headers;
pub mod respond;
pub mod rewrite;
