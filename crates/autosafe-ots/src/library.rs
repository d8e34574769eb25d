//! A set of toolkits that scenarios may name, looked up by toolkit name and qualified tool name.

use std::collections::BTreeMap;

use crate::toolkit::{Tool, Toolkit};

/// ToolEmu's 38 toolkits (`data/toolemu/all_toolkits.json`), embedded at build time.
pub const SHIPPED_TOOLKITS_JSON: &str = include_str!("../../../data/toolemu/all_toolkits.json");

/// Toolkits by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToolLibrary {
    toolkits: BTreeMap<String, Toolkit>,
}

impl ToolLibrary {
    /// An empty library.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shipped ToolEmu toolkits.
    pub fn shipped() -> Self {
        let toolkits =
            crate::toolemu::read_toolkits("data/toolemu/all_toolkits.json", SHIPPED_TOOLKITS_JSON)
                .expect("the shipped toolkits are valid");
        Self::from_toolkits(toolkits)
    }

    /// A library holding these toolkits (a later toolkit with the same name replaces an earlier one).
    pub fn from_toolkits(toolkits: impl IntoIterator<Item = Toolkit>) -> Self {
        let mut lib = Self::new();
        lib.extend(toolkits);
        lib
    }

    /// Adds toolkits (a later toolkit with the same name replaces an earlier one).
    pub fn extend(&mut self, toolkits: impl IntoIterator<Item = Toolkit>) {
        for tk in toolkits {
            self.toolkits.insert(tk.toolkit.clone(), tk);
        }
    }

    /// A toolkit by name.
    pub fn get(&self, name: &str) -> Option<&Toolkit> {
        self.toolkits.get(name)
    }

    /// All toolkits, by name.
    pub fn toolkits(&self) -> impl Iterator<Item = &Toolkit> {
        self.toolkits.values()
    }

    /// Number of toolkits.
    pub fn len(&self) -> usize {
        self.toolkits.len()
    }

    /// True when the library holds no toolkit.
    pub fn is_empty(&self) -> bool {
        self.toolkits.is_empty()
    }

    /// Number of tools over all toolkits.
    pub fn tool_count(&self) -> usize {
        self.toolkits.values().map(|t| t.tools.len()).sum()
    }

    /// Finds a tool by qualified name among the named toolkits.
    pub fn find_tool<'a>(
        &'a self,
        toolkits: &[String],
        qualified: &str,
    ) -> Option<(&'a Toolkit, &'a Tool)> {
        toolkits
            .iter()
            .filter_map(|name| self.get(name))
            .find_map(|tk| tk.find_tool(qualified).map(|t| (tk, t)))
    }
}
