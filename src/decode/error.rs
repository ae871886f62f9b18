//! Configuration errors. Every error names the field path, the offending value and the reason, and
//! loading reports all of them at once so a user fixes a config in one pass.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Dotted path to the field, e.g. `plugins[2].parameters.blockSizeTokens`; empty for the
    /// document itself.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every error found in one config, in document order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn messages(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    /// `invalid <what> (N errors):` followed by one error per line.
    pub fn render(&self, what: &str) -> String {
        let n = self.0.len();
        let mut s = format!(
            "invalid {what} ({n} error{}):",
            if n == 1 { "" } else { "s" }
        );
        for e in &self.0 {
            s.push_str(&format!("\n  - {e}"));
        }
        s
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render("EndpointPickerConfig"))
    }
}

/// Collects errors and warnings while a config is decoded.
#[derive(Debug, Default)]
pub struct Diagnostics {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<String>,
}

impl Diagnostics {
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn warn(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }
}
