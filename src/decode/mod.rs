//! Decoding YAML/JSON trees by hand, with the field path of every problem: the toolkit the config
//! loader, the static endpoints file and each plugin's own parameters share. It knows nothing of
//! any particular document, so the domain modules can decode their parameters next to the code
//! they configure without depending on [`crate::config`].

mod error;
mod reader;

use std::fmt::Debug;

use serde_json::Value;

pub use error::{ConfigError, ConfigErrors, Diagnostics};
pub use reader::{
    Obj, format_duration, index, int_of, join, kind, parse_go_duration, parse_quantity, show,
};

/// A plugin's typed parameters: decoded from its `parameters` mapping (defaults filled in, every
/// bad value reported with its path) and rendered back with every default spelled out. A plugin
/// that takes no parameters keeps both defaults: any field given is then reported as unknown.
pub trait Params: Sized + Clone + Debug + PartialEq + Default {
    fn decode(o: &mut Obj<'_>, d: &mut Diagnostics) -> Self {
        let _ = (o, d);
        Self::default()
    }

    /// The effective parameters; `None` for a plugin that takes none.
    fn render(&self) -> Option<Value> {
        None
    }
}

/// The parameters of a plugin that takes none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoParams;

impl Params for NoParams {}
