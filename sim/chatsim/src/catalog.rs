//! Where a scenario argument comes from: a file on disk, a folder of one's own
//! (`--scenarios DIR` or `CHATSIM_SCENARIOS`), or the scenarios bundled into the binary at build
//! time, so an installed `chatsim` runs the zoo, the lessons and `chatsim run smoke` from any
//! directory.
//!
//! The rule, in order: an argument that names an existing file is that file; otherwise a bare
//! name (`smoke`) or a path into a `scenarios/` folder that is not here
//! (`scenarios/smoke.toml`, as the README writes them) is looked up by name, first in the
//! folder of one's own, then among the bundled ones. Anything else is a file that cannot be
//! read, and the error says so and names the way out.

use crate::scenario::{Scenario, ScenarioError};
use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// The environment variable naming a folder of one's own scenarios (`--scenarios` wins).
pub const ENV: &str = "CHATSIM_SCENARIOS";

/// The bundled scenario's text, by name.
pub fn bundled(name: &str) -> Option<&'static str> {
    BUNDLED.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The name an argument asks for when it is not a file here: `smoke`, `smoke.toml` or
/// `scenarios/smoke.toml`. `None` for a path into some other folder, which is only ever a
/// file.
fn wanted_name(arg: &Path) -> Option<String> {
    let stem = arg.file_stem()?.to_string_lossy().into_owned();
    let ext_ok = arg.extension().is_none_or(|x| x == "toml");
    let parent_ok = match arg.parent() {
        None => true,
        Some(p) => p.as_os_str().is_empty() || p.file_name().is_some_and(|n| n == "scenarios"),
    };
    (ext_ok && parent_ok).then_some(stem)
}

/// Load the scenario an argument names, by the rule in the module's doc.
pub fn load(arg: &Path, own: Option<&Path>) -> Result<Scenario, ScenarioError> {
    if arg.is_file() {
        return Scenario::load(arg);
    }
    if let Some(name) = wanted_name(arg) {
        if let Some(dir) = own {
            let file = dir.join(format!("{name}.toml"));
            if file.is_file() {
                return Scenario::load(&file);
            }
        }
        if let Some(text) = bundled(&name) {
            return Scenario::parse(&PathBuf::from(format!("scenarios/{name}.toml")), text);
        }
    }
    Err(ScenarioError::Read {
        path: arg.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "no such file{}, and no bundled scenario of that name (`chatsim scenarios` lists them)",
                own.map(|d| format!(" here or in {}", d.display()))
                    .unwrap_or_default()
            ),
        ),
    })
}

/// A listing of scenarios: the folder's files when it exists, else the bundled ones (as the
/// `scenarios/NAME.toml` paths [`load`] finds them under).
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, String> {
    if dir.is_dir() {
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("{}: cannot list: {e}", dir.display()))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        return Ok(files);
    }
    if dir == Path::new("scenarios") {
        return Ok(BUNDLED
            .iter()
            .map(|(n, _)| PathBuf::from(format!("scenarios/{n}.toml")))
            .collect());
    }
    Err(format!("{}: cannot list: no such folder", dir.display()))
}

/// Whether a scenario is judged seed by seed: every one but the benchmark's worlds (`bench-*`)
/// and the scale run (`scale-*`), which are measured, not judged (the scale run takes minutes
/// and gigabytes).
pub fn is_judged(path: &Path) -> bool {
    !path.file_name().is_some_and(|n| {
        let n = n.to_string_lossy();
        n.starts_with("bench-") || n.starts_with("scale-")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_scenario_parses_and_the_set_matches_the_folder() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
        let on_disk = list(&dir).expect("the repository's scenarios folder");
        let names: Vec<String> = on_disk
            .iter()
            .map(|p| p.file_stem().expect("stem").to_string_lossy().into_owned())
            .collect();
        let bundled_names: Vec<&str> = BUNDLED.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, bundled_names, "build.rs bundles exactly the folder");
        for (name, text) in BUNDLED {
            let disk = std::fs::read_to_string(dir.join(format!("{name}.toml"))).expect("file");
            assert_eq!(&disk, text, "{name}: the bundled text is the file's");
            Scenario::parse(Path::new(name), text).expect("every bundled scenario is valid");
        }
    }

    #[test]
    fn names_and_missing_paths_fall_back_to_the_bundle_but_other_paths_do_not() {
        let tmp = std::env::temp_dir().join(format!("chatsim-catalog-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).expect("temp dir");
        let here = |p: &str| tmp.join(p);
        // Names and scenarios/NAME.toml resolve from anywhere.
        let s = load(Path::new("smoke"), None).expect("bundled by name");
        assert_eq!(s.name(), "smoke");
        assert!(s.source.contains("[topology]"), "the text is kept");
        let s = load(&here("scenarios/smoke.toml"), None).expect("a missing scenarios/ path");
        assert_eq!(s.name(), "smoke");
        // A path into some other folder is a file or an error naming it.
        let e = load(&here("elsewhere/smoke.toml"), None).expect_err("not a scenarios folder");
        assert!(
            e.to_string().contains("elsewhere/smoke.toml: cannot read"),
            "{e}"
        );
        let e = load(Path::new("no-such-scenario"), None).expect_err("unknown name");
        assert!(e.to_string().contains("chatsim scenarios"), "{e}");
        // A folder of one's own wins over the bundle.
        let mine = here("mine");
        std::fs::create_dir_all(&mine).expect("dir");
        let text = bundled("smoke").expect("smoke is bundled").replacen(
            "description = \"",
            "description = \"MINE ",
            1,
        );
        std::fs::write(mine.join("smoke.toml"), text).expect("write");
        let s = load(Path::new("smoke"), Some(&mine)).expect("own folder");
        assert!(s.description.starts_with("MINE "), "{}", s.description);
        let s = load(Path::new("smoke"), None).expect("bundle");
        assert!(!s.description.starts_with("MINE "));
        std::fs::remove_dir_all(&tmp).expect("clean up");
    }
}
