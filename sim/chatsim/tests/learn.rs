//! Every lesson shows what it teaches: a mistake's broken variant breaks the invariant the
//! zoo names for it on the lesson's pinned seed while the design passes the same seed, with a
//! shrunk story of at most 30 events and the phones' view; a trade-off's two variants both
//! pass and differ in what the lesson measures. Each writes its page.

use chatsim::learn::{self, Kind, LESSONS};
use std::collections::BTreeSet;
use std::path::PathBuf;

#[test]
fn there_are_at_least_fourteen_lessons_with_distinct_names_covering_the_common_mistakes() {
    assert!(LESSONS.len() >= 14, "{} lessons", LESSONS.len());
    let names: BTreeSet<&str> = LESSONS.iter().map(|l| l.name).collect();
    assert_eq!(names.len(), LESSONS.len(), "names are unique");
    // The design page's common mistakes each have a lesson (polling has its own check).
    for bug in [
        "ack-before-persist",
        "order-by-timestamp",
        "no-session-service",
        "no-offline-inbox",
        "tls-only",
    ] {
        let bug = bug.parse().expect("a zoo bug");
        assert!(learn::for_bug(bug).is_some(), "no lesson for {bug}");
    }
    for l in LESSONS {
        assert!(!l.questions.is_empty(), "{}: questions", l.name);
        assert!(
            chatsim::catalog::bundled(l.scenario()).is_some(),
            "{}: its scenario is bundled",
            l.name
        );
    }
}

#[test]
fn every_lesson_shows_what_it_teaches_and_writes_its_page() {
    let root = std::env::temp_dir().join(format!("chatsim-learn-{}", std::process::id()));
    let failures: Vec<String> = std::thread::scope(|scope| {
        let chunks: Vec<Vec<&'static learn::Lesson>> = (0..2)
            .map(|k| LESSONS.iter().skip(k).step_by(2).collect())
            .collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let root = root.clone();
                scope.spawn(move || {
                    let mut bad = Vec::new();
                    for l in chunk {
                        if let Err(e) = check(l, root.join(l.name)) {
                            bad.push(format!("{}: {e}", l.name));
                        }
                    }
                    bad
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a lesson thread"))
            .collect()
    });
    std::fs::remove_dir_all(&root).ok();
    assert!(failures.is_empty(), "{failures:#?}");
}

fn check(l: &'static learn::Lesson, dir: PathBuf) -> Result<(), String> {
    let o = learn::run(l, None, &dir)?;
    let [a, b] = &o.variants;
    let page = std::fs::read_to_string(dir.join("index.html")).map_err(|e| e.to_string())?;
    for v in [a, b] {
        if !page.contains(&v.label.replace('"', "&quot;")) {
            return Err(format!("the page lacks {}", v.label));
        }
        if !dir.join(&v.report).is_file() {
            return Err(format!("no report at {}", v.report));
        }
    }
    match l.kind {
        Kind::Mistake { bug, .. } => {
            let inv = bug.info().caught_by;
            if !a.broken.contains_key(inv) {
                return Err(format!(
                    "the broken variant did not break {inv}: {:?}",
                    a.broken
                ));
            }
            if !b.passed {
                return Err(format!("the design failed the same seed: {:?}", b.broken));
            }
            if o.story.is_empty() || o.story.len() > 30 {
                return Err(format!("a story of {} lines", o.story.len()));
            }
            if o.phone.is_empty() || !page.contains("id=\"story\"") {
                return Err("no phones or no story on the page".into());
            }
        }
        Kind::TradeOff { about, .. } => {
            if !(a.passed && b.passed) {
                return Err(format!("a variant failed: {:?} {:?}", a.broken, b.broken));
            }
            if !about.iter().any(|k| a.measures.get(k) != b.measures.get(k)) {
                return Err(format!("the variants measure the same on {about:?}"));
            }
        }
    }
    if !o.shown {
        return Err("not shown".into());
    }
    Ok(())
}
