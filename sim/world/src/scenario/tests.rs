//! Loading and validation: what the schema accepts and how it names what it refuses.

use super::*;

const GOOD: &str = r#"
description = "ok"
[topology]
users = 4
gateways = 2
shards = 2
[workload]
messages = 10
conversations = 2
send_window_ms = [0, 1000]
[run]
heal_at_ms = 2000
settle_ms = 5000
liveness_ms = 4000
[[fault]]
kind = "kill"
targets = ["shard"]
count = [1, 2]
window_ms = [100, 1000]
duration_ms = [10, 100]
"#;

fn err(text: &str) -> String {
    Scenario::parse(Path::new("x.toml"), text)
        .expect_err("must be refused")
        .to_string()
}

// The schema accepts a well-formed file.
#[test]
fn a_well_formed_scenario_loads() {
    let s = Scenario::parse(Path::new("x.toml"), GOOD).expect("valid");
    assert_eq!(s.faults.len(), 1);
    assert_eq!(s.end_ms(), 7000);
}

// Typos must not be silently ignored: the message names file, line and field.
#[test]
fn an_unknown_field_is_an_error_naming_file_line_and_field() {
    let e = err(&GOOD.replace("shards = 2", "shards = 2\nshardz = 3"));
    assert!(e.starts_with("x.toml: "), "{e}");
    assert!(e.contains("line 7"), "{e}");
    assert!(e.contains("shardz"), "{e}");
    let e = err(&GOOD.replace("kind = \"kill\"", "kind = \"kill\"\nseverity = 3"));
    assert!(e.contains("severity"), "{e}");
}

// Values out of range are refused with the field's dotted path.
#[test]
fn out_of_range_values_name_their_field() {
    assert!(err(&GOOD.replace("users = 4", "users = 1")).contains("`topology.users`"));
    assert!(err(&GOOD.replace("count = [1, 2]", "count = [3, 2]")).contains("`fault[0].count`"));
    assert!(
        err(&GOOD.replace("window_ms = [100, 1000]", "window_ms = [100, 9000]"))
            .contains("`fault[0].window_ms`")
    );
    assert!(err(&GOOD.replace("conversations = 2", "conversations = 7"))
        .contains("`workload.conversations`"));
    assert!(
        err(&GOOD.replace("liveness_ms = 4000", "liveness_ms = 6000"))
            .contains("`run.liveness_ms`")
    );
    assert!(err("description = 3").contains("x.toml: "));
    let e = err(&GOOD.replace("shards = 2", "shards = 2\nreplicas = 2"));
    assert!(
        e.contains("`topology.replicas`") && e.contains("majority"),
        "{e}"
    );
}

// A scenario that must never buggify says why, and cannot also ask to buggify.
#[test]
fn buggify_never_needs_a_reason_and_contradicts_buggify() {
    let never = GOOD.replace(
        "description = \"ok\"",
        "description = \"ok\"\nbuggify_never = \"too slow under small bounds\"",
    );
    let s = Scenario::parse(Path::new("x.toml"), &never).expect("valid");
    assert_eq!(
        s.buggify_never.as_deref(),
        Some("too slow under small bounds")
    );
    let e = err(&never.replace(
        "description = \"ok\"",
        "description = \"ok\"\nbuggify = true",
    ));
    assert!(
        e.contains("`buggify_never`") && e.contains("buggify = true"),
        "{e}"
    );
    let e = err(&never.replace("too slow under small bounds", " "));
    assert!(
        e.contains("`buggify_never`") && e.contains("say why"),
        "{e}"
    );
}

// `chatsim scenarios` lists every fault kind under the name a scenario file uses for it.
#[test]
fn every_fault_kind_is_listed_under_its_file_name() {
    use serde::de::value::{Error, StrDeserializer};
    use serde::Deserialize;
    let mut names = Vec::new();
    for k in FaultKind::ALL {
        let parsed = FaultKind::deserialize(StrDeserializer::<Error>::new(k.name()));
        assert_eq!(parsed, Ok(k), "{}", k.name());
        assert!(!k.summary().is_empty());
        names.push(k.name());
    }
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), FaultKind::ALL.len(), "a kind listed twice");
}
