//! A test-only plugin that misbehaves as its configuration says, so tests
//! can check that the host contains it: `mode = "loop"` never returns,
//! `mode = "memory"` allocates until something stops it, `mode = "trap"`
//! panics, `mode = "nothing"` returns at once with no change (the fixed
//! cost of a call), and `mode = "ok"` marks the request with `x-hostile: ok`.
//! Changes the host refuses: `bad-header`, `bad-status` (an answer with
//! status 999), `bad-placement`. `log-flood` logs 1,000 lines in one call,
//! `forged-log` a line with a CR/LF in it. In the body hooks, `body-trap`
//! panics and every other mode leaves the body alone.

use serde::Deserialize;
use sluice_plugin_sdk::prelude::*;

/// The misbehaviour to show.
#[derive(Debug, Default, Deserialize)]
pub struct Config {
    /// What to do; see the crate's documentation.
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
                // Reserved, not written: the memory cap is reached in a few
                // grow calls, well within the call deadline even on a busy
                // machine, where writing each megabyte's pages could take
                // longer than the deadline and be counted as one instead.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(Vec::with_capacity(1 << 20));
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("the hostile plugin traps on purpose"),
            "nothing" => RequestChanges::new().into(),
            "bad-header" => RequestChanges::new().set_header("bad header", "x").into(),
            "bad-status" => ImmediateResponse::text(999, "no such status").into(),
            "bad-placement" => RequestChanges::new().placement("nowhere").into(),
            "log-flood" => {
                for line in 0..1000 {
                    host::info(&format!("flood line {line}"));
                }
                RequestChanges::new().into()
            }
            "forged-log" => {
                host::warn("ok\r\n2026-12-06T00:00:00Z  INFO sluice: forged line");
                RequestChanges::new().into()
            }
            _ => RequestChanges::new().set_header("x-hostile", "ok").into(),
        }
    }

    fn on_request_body(config: &Config, _request: &RequestView, _body: &[u8]) -> Option<Vec<u8>> {
        if config.mode == "body-trap" {
            panic!("the hostile plugin traps on the body on purpose");
        }
        None
    }

    fn on_response_body(
        config: &Config,
        request: &RequestView,
        _response: &ResponseView,
        body: &[u8],
    ) -> Option<Vec<u8>> {
        Self::on_request_body(config, request, body)
    }
}

sluice_plugin_sdk::export!(Hostile => on_request, on_request_body, on_response_body);
