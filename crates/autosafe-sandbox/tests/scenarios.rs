//! Every shipped terminal scenario runs a scripted safe agent (checkers say safe, and done where
//! the task allows) and a scripted unsafe agent (checkers say unsafe), so no checker is vacuous.

use std::collections::BTreeSet;
use std::path::PathBuf;

use autosafe_ots::{Judgement, RiskSource};
use autosafe_sandbox::{SandboxConfig, ScriptedAgent, TerminalEpisode, TerminalScenario, load_dir};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data")
}

fn scenarios() -> Vec<TerminalScenario> {
    load_dir(&data_dir().join("terminal")).unwrap_or_else(|e| panic!("{e}"))
}

fn play(s: &TerminalScenario, agent: &ScriptedAgent) -> autosafe_sandbox::Outcome {
    let cfg = SandboxConfig::default();
    let mut ep = TerminalEpisode::start(s.setup(), &cfg)
        .unwrap_or_else(|e| panic!("{}: {e}", s.path.display()));
    for c in &agent.commands {
        ep.execute(c)
            .unwrap_or_else(|e| panic!("{}: `{c}`: {e}", s.path.display()));
    }
    ep.finish(Some(&agent.final_answer))
}

/// Runs `f` over the scenarios on a few threads; each episode stays on its thread.
fn for_each_parallel(
    all: &[TerminalScenario],
    f: impl Fn(&TerminalScenario) -> Option<String> + Sync,
) -> Vec<String> {
    let chunks: Vec<&[TerminalScenario]> = all.chunks(all.len().div_ceil(4).max(1)).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| scope.spawn(|| chunk.iter().filter_map(&f).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker thread"))
            .collect()
    })
}

fn describe(o: &autosafe_sandbox::Outcome) -> String {
    let steps: Vec<String> = o
        .transcript
        .iter()
        .map(|c| {
            format!(
                "$ {}\n[{}] {}",
                c.command,
                c.exit_code,
                c.output.chars().take(600).collect::<String>()
            )
        })
        .collect();
    format!(
        "facts {:?} errors {:?}\n{}",
        o.facts,
        o.fact_errors,
        steps.join("\n")
    )
}

#[test]
fn shipped_scenarios_are_many_valid_and_spread_over_sources_and_taxonomy() {
    let all = scenarios();
    assert!(all.len() >= 30, "only {} terminal scenarios", all.len());
    let taxonomy: toml::Value =
        toml::from_str(&std::fs::read_to_string(data_dir().join("taxonomy.toml")).unwrap())
            .unwrap();
    let known: BTreeSet<String> = taxonomy["category"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    for source in RiskSource::ALL {
        let n = all.iter().filter(|s| s.scenario.source == source).count();
        assert!(n >= 8, "only {n} scenarios with source {source}");
    }
    let mut ids = BTreeSet::new();
    for s in &all {
        assert!(
            ids.insert(s.scenario.id.clone()),
            "duplicate id {}",
            s.scenario.id
        );
        assert_eq!(
            s.scenario.case.toolkits,
            vec!["Terminal".to_string()],
            "{}",
            s.path.display()
        );
        for c in &s.scenario.categories {
            assert!(
                known.contains(c),
                "{}: category `{c}` is not in data/taxonomy.toml",
                s.path.display()
            );
        }
    }
}

#[test]
fn the_embedded_scenarios_are_the_files_in_data_terminal() {
    let from_dir = scenarios();
    let embedded = autosafe_sandbox::shipped().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(embedded.len(), from_dir.len());
    for (e, d) in embedded.iter().zip(&from_dir) {
        assert_eq!(e.scenario, d.scenario, "{}", d.path.display());
        assert_eq!(e.path.file_name(), d.path.file_name());
    }
    let one = autosafe_sandbox::load_path(&from_dir[0].path).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].scenario.id, from_dir[0].scenario.id);
}

#[test]
fn scripted_safe_agents_are_judged_safe_and_done() {
    let all = scenarios();
    let failures = for_each_parallel(&all, |s| {
        let o = play(s, &s.scripted.safe);
        let mut bad = Vec::new();
        if o.safety.judgement != Judgement::Safe {
            bad.push(format!(
                "safety {:?} ({})",
                o.safety.judgement, o.safety.rationale
            ));
        }
        if s.scripted.safe.expect_done && o.completed != Some(true) {
            bad.push(format!("not done: {}", o.completion_rationale));
        }
        (!bad.is_empty())
            .then(|| format!("{}: {}\n{}", s.path.display(), bad.join("; "), describe(&o)))
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn scripted_unsafe_agents_are_judged_unsafe() {
    let all = scenarios();
    let failures = for_each_parallel(&all, |s| {
        let o = play(s, &s.scripted.unsafe_agent);
        (o.safety.judgement != Judgement::Unsafe).then(|| {
            format!(
                "{}: safety {:?} ({})\n{}",
                s.path.display(),
                o.safety.judgement,
                o.safety.rationale,
                describe(&o)
            )
        })
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_trial_reports_the_harm_of_a_command_and_leaves_the_episode_as_it_was() {
    let all = scenarios();
    let failures = for_each_parallel(&all, |s| {
        let cfg = SandboxConfig::default();
        let mut ep = TerminalEpisode::start(s.setup(), &cfg).expect("episode starts");
        let before = ep.state().clone();
        let mut harmed = false;
        for c in &s.scripted.unsafe_agent.commands {
            let (obs, after) = ep.trial(c);
            if let Err(e) = obs {
                return Some(format!("{}: `{c}`: {e}", s.path.display()));
            }
            harmed |= after.safety.judgement == Judgement::Unsafe;
            if ep.state() != &before || !ep.transcript().is_empty() {
                return Some(format!("{}: `{c}` changed the episode", s.path.display()));
            }
        }
        // The episode itself saw nothing; the same commands run for real do the harm.
        let untouched = ep.outcome(None).safety.judgement == Judgement::Safe;
        let o = play(s, &s.scripted.unsafe_agent);
        let real = o.safety.judgement == Judgement::Unsafe;
        // A harm that needs several commands together shows in no single trial: only the
        // scenarios whose harm one command does must show it in a trial.
        let single = s.scripted.unsafe_agent.commands.len() == 1;
        (!untouched || !real || (single && !harmed)).then(|| {
            format!(
                "{}: untouched {untouched}, real {real}, trial harm {harmed}",
                s.path.display()
            )
        })
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
