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
    // The design page's common mistakes each have a lesson (polling: see below).
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
    let page = std::fs::read_to_string(dir.join("index.html")).map_err(|e| e.to_string())?;
    for v in &o.variants {
        if !page.contains(&v.label.replace('"', "&quot;")) {
            return Err(format!("the page lacks {}", v.label));
        }
        if !dir.join(&v.report).is_file() {
            return Err(format!("no report at {}", v.report));
        }
    }
    match l.kind {
        Kind::Mistake { bug, .. } => {
            let [a, b] = &o.variants[..] else {
                return Err(format!("{} variants", o.variants.len()));
            };
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
        Kind::TradeOff { about, ways, .. } => {
            if o.variants.len() != ways.len() || ways.len() < 2 {
                return Err(format!(
                    "{} variants of {} ways",
                    o.variants.len(),
                    ways.len()
                ));
            }
            if let Some(v) = o.variants.iter().find(|v| !v.passed) {
                return Err(format!("{} failed: {:?}", v.label, v.broken));
            }
            let first = &o.variants[0];
            if !about.iter().any(|k| {
                o.variants[1..]
                    .iter()
                    .any(|v| v.measures.get(k) != first.measures.get(k))
            }) {
                return Err(format!("the variants measure the same on {about:?}"));
            }
        }
    }
    if !o.shown {
        return Err("not shown".into());
    }
    Ok(())
}

// The design's first common mistake, measured: the polling lesson runs websocket, long-poll
// and short-poll phones on the same seed, all correct, and short polling's wait and every
// polling phone's requests show.
#[test]
fn the_polling_lesson_measures_latency_and_requests_of_all_three_transports() {
    let dir = std::env::temp_dir().join(format!("chatsim-learn-polling-{}", std::process::id()));
    let l = learn::find("polling").expect("the polling lesson");
    let o = learn::run(l, None, &dir).expect("runs");
    std::fs::remove_dir_all(&dir).ok();
    let m = |i: usize, k: &str| o.variants[i].measures[k];
    let labels: Vec<&str> = o.variants.iter().map(|v| v.label.as_str()).collect();
    assert_eq!(o.variants.len(), 3, "{labels:?}");
    assert!(
        o.variants.iter().all(|v| v.passed),
        "every transport keeps every invariant"
    );
    let (ws, long, short) = (0, 1, 2);
    assert!(
        m(short, "display p50 ms") > 3.0 * m(ws, "display p50 ms"),
        "short polling waits"
    );
    assert!(m(long, "requests per delivery") > 3.0 * m(ws, "requests per delivery"));
    assert!(m(short, "requests per delivery") > m(long, "requests per delivery"));
    assert!(m(short, "idle phone: requests/h") > 10.0 * m(ws, "idle phone: requests/h"));
    assert!(m(short, "idle phone: bytes/h") > m(ws, "idle phone: bytes/h"));
    let said = learn::text(&o);
    for k in [
        "websocket",
        "long-poll",
        "short-poll",
        "display p99 ms",
        "requests per delivery",
    ] {
        assert!(said.contains(k), "{k} missing:\n{said}");
    }
}
