//! The scenario parser fuzzed with mutated scenario files: every file in `scenarios/`, with a
//! number swapped for an extreme one, a line deleted or repeated, a byte changed or the text
//! cut short. Parsing and validating never panics (an error names the file and says why);
//! what passes validation and fits a small run is planned for a seed without a panic, and its
//! memory estimate is finite. `chatsim run` maps these to exit 0, 1 or 2.
//!
//! Inputs per run: [`CASES`], times `CHATSIM_FUZZ_SCALE` if set (`scripts/fuzz.sh` runs more).
//! A failing input is kept in `tests/scenario_fuzz.proptest-regressions` and tried first.

use chatsim_world::plan::make_plan;
use chatsim_world::scenario::{Scenario, ScenarioError};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Mutated scenario files per run, before `CHATSIM_FUZZ_SCALE`.
const CASES: u32 = 20_000;

fn config() -> ProptestConfig {
    let scale = std::env::var("CHATSIM_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1);
    ProptestConfig {
        cases: CASES.saturating_mul(scale.max(1)),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/scenario_fuzz.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

/// Every scenario file, read once.
fn files() -> &'static [(PathBuf, String)] {
    static FILES: OnceLock<Vec<(PathBuf, String)>> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
        let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
            .expect("the scenarios folder")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).expect("readable");
                (p, text)
            })
            .collect();
        out.sort();
        out
    })
}

/// Numbers a hostile or careless author might write.
const EXTREMES: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "-1",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "99999999999999999999999",
    "1.5",
    "1e9",
    "nan",
    "\"7\"",
    "[]",
];

#[derive(Clone, Debug)]
enum Mutation {
    /// The n-th number in the file becomes one of [`EXTREMES`].
    Number(usize, usize),
    DeleteLine(usize),
    RepeatLine(usize),
    /// The byte at this position (modulo the length) becomes this one.
    Byte(usize, u8),
    /// Keep only this many bytes (modulo the length).
    Cut(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 0..EXTREMES.len()).prop_map(|(n, e)| Mutation::Number(n, e)),
        1 => any::<usize>().prop_map(Mutation::DeleteLine),
        1 => any::<usize>().prop_map(Mutation::RepeatLine),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Byte(i, b)),
        1 => any::<usize>().prop_map(Mutation::Cut),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    match m {
        Mutation::Number(n, e) => {
            // Runs of digits outside comments.
            let mut spans = Vec::new();
            let mut comment = false;
            let mut start = None;
            for (i, c) in text.char_indices() {
                match c {
                    '#' => comment = true,
                    '\n' => comment = false,
                    _ => {}
                }
                match (c.is_ascii_digit() && !comment, start) {
                    (true, None) => start = Some(i),
                    (false, Some(s)) => {
                        spans.push((s, i));
                        start = None;
                    }
                    _ => {}
                }
            }
            if spans.is_empty() {
                return text.to_string();
            }
            let (a, b) = spans[n % spans.len()];
            format!("{}{}{}", &text[..a], EXTREMES[*e], &text[b..])
        }
        Mutation::DeleteLine(i) | Mutation::RepeatLine(i) => {
            let mut lines: Vec<&str> = text.lines().collect();
            if lines.is_empty() {
                return String::new();
            }
            let at = i % lines.len();
            if matches!(m, Mutation::DeleteLine(_)) {
                lines.remove(at);
            } else {
                lines.insert(at, lines[at]);
            }
            lines.join("\n")
        }
        Mutation::Byte(i, b) => {
            let mut bytes = text.as_bytes().to_vec();
            if !bytes.is_empty() {
                let at = i % bytes.len();
                bytes[at] = *b;
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Mutation::Cut(i) => {
            let mut at = i % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text[..at].to_string()
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_mutated_scenario_is_refused_or_runs_never_panics(
        file in any::<prop::sample::Index>(),
        muts in prop::collection::vec(mutation(), 1..4),
        seed in 0u64..1_000,
    ) {
        let (path, text) = file.get(files());
        let mut text = text.clone();
        for m in &muts {
            text = apply(&text, m);
        }
        match Scenario::parse(path, &text) {
            Ok(s) => {
                let estimate = s.memory_estimate(false);
                prop_assert!(estimate.bytes > 0);
                // Small enough to plan here in a moment: planned without a panic. (Every
                // count has a named bound, so bigger ones plan too, only slower.)
                let w = &s.workload;
                let drawn = u64::from(w.messages)
                    + w.groups.as_ref().map_or(0, |g| u64::from(g.messages) + u64::from(g.count) + g.changes.hi)
                    + u64::from(w.opens)
                    + u64::from(w.backgrounds)
                    + s.faults.iter().map(|f| f.count.hi).sum::<u64>();
                if estimate.bytes < 300 << 20 && drawn < 20_000 {
                    let plan = make_plan(&s, seed);
                    prop_assert!(plan.device.len() <= s.topology.users as usize * 5);
                }
            }
            Err(e) => {
                let said = e.to_string();
                prop_assert!(said.contains(&path.display().to_string()), "{said}");
                prop_assert!(
                    matches!(e, ScenarioError::Parse { .. } | ScenarioError::Invalid { .. }),
                    "{said}"
                );
            }
        }
    }
}

// CI prints how many inputs ran.
#[test]
fn the_input_count_is_stated() {
    println!(
        "scenario fuzz: {} mutated scenario files per run ({} files)",
        config().cases,
        files().len()
    );
    assert!(config().cases >= CASES);
    assert!(files().len() >= 20);
}
