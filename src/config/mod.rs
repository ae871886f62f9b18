//! `EndpointPickerConfig`: the YAML that says which plugins run with which weights.
//!
//! Loading is strict like GIE's (unknown fields, types, gates and references are errors) and
//! reports every error with its field path. GIE's system defaults are applied, so a GIE config
//! means the same here; [`EndpointPickerConfig::to_yaml`] shows the result with every default
//! spelled out.

mod loader;
pub mod model;
pub mod registry;
mod render;

#[cfg(test)]
mod tests;

pub use crate::decode::{ConfigError, ConfigErrors};
pub use loader::{API_VERSIONS, DEFAULT_CONFIG_YAML, KIND, default_config, load_str};
pub use model::*;
pub use registry::{KNOWN_TYPES, PluginSpec, Roles};
