//! Bundles every scenario file of the repository's `scenarios/` folder into the binary, so an
//! installed `chatsim` runs the zoo, the lessons and the named scenarios from any directory.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let dir = manifest.join("../../scenarios");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the scenarios folder sits two levels above sim/chatsim")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    // Sorted: the table's order is the listing's, and must not depend on the file system.
    files.sort();
    let mut out = String::from("/// Every bundled scenario, (name, file text), sorted by name.\n");
    out.push_str("pub const BUNDLED: &[(&str, &str)] = &[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let name = f
            .file_stem()
            .expect("a .toml file has a stem")
            .to_string_lossy();
        let abs = f.canonicalize().expect("a listed file exists");
        writeln!(out, "    ({name:?}, include_str!({:?})),", abs.display()).expect("a String");
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("bundled.rs");
    std::fs::write(dest, out).expect("OUT_DIR is writable");
}
