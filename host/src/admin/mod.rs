//! The admin API, on its own listener: status, config state, reloads and
//! the metrics text.

pub mod api;
