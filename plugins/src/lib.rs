//! The plugins shipped with Berth, built from C into Wasm components by
//! this crate's build script, so every build and test run has them:
//!
//! - `binpack` (score): the native `binpack` rule, for native-vs-Wasm cost.
//! - `fgd` (score and allocate): FGD, number for number with the native one.
//! - `label-filter` (filter): keeps nodes whose label has an allowed value.
//! - `team-admission` (admission): GPU apps need a `team` label; small
//!   requests are raised to a minimum.
//! - `allowed-registries` (admission, contract 0.2 `admission-review`):
//!   refuses images from registries outside a list, naming the registry.
//! - `last-gpu` (allocate): the highest-numbered free GPUs.
//! - `hostile-*`: plugins that misbehave (an endless loop, a memory hog, a
//!   trap, wrong output, a log flood, an impossible GPU), for the host's tests.
#![forbid(unsafe_code)]

use std::path::PathBuf;

include!(concat!(env!("OUT_DIR"), "/built.rs"));

/// The built component of the plugin `name`.
pub fn path(name: &str) -> Option<PathBuf> {
    BUILT
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, p)| PathBuf::from(p))
}

/// The world (kind of plugin) the plugin `name` was built for.
pub fn world(name: &str) -> Option<&'static str> {
    BUILT
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, w, _)| *w)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_plugin_is_a_component() {
        assert!(super::BUILT.len() >= 12);
        for (name, _, path) in super::BUILT {
            let bytes = std::fs::read(path).unwrap();
            // A component's preamble: magic, then layer 1.
            assert_eq!(&bytes[..4], b"\0asm", "{name}");
            assert_eq!(bytes[6..8], [1, 0], "{name} is a component");
        }
        assert!(super::path("nope").is_none());
    }
}
