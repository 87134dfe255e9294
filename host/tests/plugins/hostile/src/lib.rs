//! A test-only plugin that misbehaves as its configuration says, so tests
//! can check that the host contains it: `mode = "loop"` never returns,
//! `mode = "memory"` allocates until something stops it, `mode = "trap"`
//! panics, `mode = "nothing"` returns at once with no change (the fixed
//! cost of a call), and `mode = "ok"` marks the request with `x-hostile: ok`.

use serde::Deserialize;
use sluice_plugin_sdk::prelude::*;

/// The misbehaviour to show.
#[derive(Debug, Default, Deserialize)]
pub struct Config {
    /// `loop`, `memory`, `trap`, `nothing` or `ok`.
    #[serde(default)]
    pub mode: String,
}

/// The plugin.
pub struct Hostile;

impl Plugin for Hostile {
    type Config = Config;

    fn on_request(config: &Config, _request: &RequestView) -> RequestAction {
        match config.mode.as_str() {
            "loop" => {
                let mut counter: u64 = 0;
                loop {
                    counter = std::hint::black_box(counter.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("the hostile plugin traps on purpose"),
            "nothing" => RequestChanges::new().into(),
            _ => RequestChanges::new().set_header("x-hostile", "ok").into(),
        }
    }
}

sluice_plugin_sdk::export!(Hostile => on_request);
