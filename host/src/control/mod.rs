//! Control: where the configuration comes from ([`source`], [`etcd`]) and
//! the fleet sharing it ([`fleet`]), what makes it
//! reload ([`watch`]), and the reloader that validates, compiles and
//! publishes each snapshot, keeps the last known good and hands each
//! service its part ([`reload`]); with the reload metrics ([`metrics`]),
//! and the start-up of it all with ACME ([`start`]).

pub mod etcd;
pub mod fleet;
pub mod metrics;
pub mod reload;
pub(crate) mod source;
pub(crate) mod start;
pub mod watch;

pub use reload::{
    compile_text, resolve_names, ConfigStatus, Plugins, ReloadOutcome, Reloader, StartupError,
};
pub use source::ConfigSource;
