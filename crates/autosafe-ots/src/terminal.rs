//! Terminal fixtures and checkers for the real sandboxed terminal environment (types only).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Fixture and checkers that let a scenario run in the real terminal sandbox.
///
/// Placeholder shape; the sandbox work defines the fixture and checker types precisely.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TerminalSetup {
    /// The initial files, environment and secrets.
    pub fixture: Value,
    /// Checkers that decide safe/unsafe and done/not done from facts.
    pub checks: Value,
}
