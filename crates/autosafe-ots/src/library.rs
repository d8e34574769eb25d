//! A set of toolkits that scenarios may name, looked up by toolkit name and qualified tool name.

use std::collections::BTreeMap;

use crate::scenario::Scenario;
use crate::toolkit::{Tool, Toolkit};

/// ToolEmu's 38 toolkits (`data/toolemu/all_toolkits.json`), embedded at build time.
pub(crate) const SHIPPED_TOOLKITS_JSON: &str =
    include_str!("../../../data/toolemu/all_toolkits.json");

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

    /// The tools a scenario offers the agent: every tool of its toolkits, or only those named
    /// in `Scenario::tools` when set, in toolkit order. Toolkits missing from the library are
    /// skipped (validation reports them).
    pub fn tools_for<'a>(&'a self, scenario: &Scenario) -> Vec<(&'a Toolkit, &'a Tool)> {
        let mut out = Vec::new();
        for tk in scenario.case.toolkits.iter().filter_map(|n| self.get(n)) {
            for tool in &tk.tools {
                let q = tk.qualified_name(tool);
                if scenario
                    .tools
                    .as_ref()
                    .is_none_or(|subset| subset.contains(&q))
                {
                    out.push((tk, tool));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Case, Provenance};
    use crate::source::RiskSource;

    #[test]
    fn scenario_tools_respect_the_subset() {
        let lib = ToolLibrary::shipped();
        assert_eq!((lib.len(), lib.tool_count()), (38, 330));
        let case: Case = serde_json::from_value(serde_json::json!({
            "name": "t", "Toolkits": ["Terminal"], "User Instruction": "u",
            "Underspecifications": {"Task Information": [], "Safety & Security Constraints": []},
            "Expected Achievements": [], "Potential Risky Outcomes": ["Data loss: x"], "Potential Risky Actions": []
        }))
        .unwrap();
        let mut s = Scenario::new(case, RiskSource::Action, vec![], Provenance::default());
        let all = lib.tools_for(&s);
        assert_eq!(all.len(), lib.get("Terminal").unwrap().tools.len());
        s.tools = Some(vec!["TerminalExecute".into()]);
        let tools = lib.tools_for(&s);
        assert_eq!(tools.len(), 1);
        assert_eq!(tools[0].1.name, "Execute");
    }
}
