//! Compiles the header rules of a config into the operations applied to
//! requests and responses.

use super::headers::HeaderOps;
use crate::config::{self, Diagnostics, KeyPath};

/// The header rules at `path`, each bad name or value reported under its key.
pub fn header_ops(d: &mut Diagnostics, path: &KeyPath, rules: &config::HeaderRules) -> HeaderOps {
    HeaderOps::compile(rules).unwrap_or_else(|errors| {
        for error in errors {
            let at = if error.list == "remove" {
                path.key("remove").index(error.key.parse().unwrap_or(0))
            } else {
                path.key(error.list).key(&error.key)
            };
            d.error(at, error.message);
        }
        HeaderOps::default()
    })
}
