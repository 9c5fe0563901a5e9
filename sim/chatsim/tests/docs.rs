//! The documentation's links. README.md is the front door and docs/ holds the rest, so this
//! test checks, from the workspace root, that every relative link in README.md and docs/*.md
//! leads somewhere (a file, a folder, or a heading of a Markdown page, by GitHub's anchor
//! rule), that README.md links every page of docs/ (and docs/README.md, the index, every other
//! page), and that README.md stays short. Links inside fenced code blocks and code spans are
//! not links; http(s) and mailto links are not checked. Std only: the extractor is below, and a
//! second test runs it on a sample with known broken links.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

/// README.md stays a front door: past this many lines, move material into a page of docs/.
const README_MAX_LINES: usize = 260;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The pages of docs/, as paths from the workspace root ("docs/zoo.md"), sorted.
fn docs_pages(root: &Path) -> Vec<String> {
    let dir = root.join("docs");
    let entries =
        fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    let mut pages: Vec<String> = entries
        .map(|entry| {
            entry
                .expect("a docs/ entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    pages.sort();
    pages
}

fn read(root: &Path, page: &str) -> String {
    let path = root.join(page);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A fence opener or closer (three or more backticks or tildes): its character, its length,
/// and whether nothing but blanks follows it (a closing fence must be bare).
fn fence_of(body: &str) -> Option<(char, usize, bool)> {
    let ch = body.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let n = body.chars().take_while(|c| *c == ch).count();
    if n >= 3 {
        Some((ch, n, body[n..].trim().is_empty()))
    } else {
        None
    }
}

/// The lines of `text` outside fenced code blocks, numbered from 1.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut open: Option<(char, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let body = line.trim_start_matches(' ');
        let fence = if line.len() - body.len() <= 3 {
            fence_of(body)
        } else {
            None
        };
        match (open, fence) {
            (None, Some((ch, n, _))) => open = Some((ch, n)),
            (Some((ch, n)), Some((c, m, bare))) if c == ch && m >= n && bare => open = None,
            (None, None) => out.push((i + 1, line)),
            _ => {}
        }
    }
    out
}

/// The line with every code span (`...`, ``...``) replaced by spaces, as chars.
fn blank_code_spans(line: &str) -> Vec<char> {
    let chars: Vec<char> = line.chars().collect();
    let mut out = chars.clone();
    let run_at = |i: usize| chars[i..].iter().take_while(|c| **c == '`').count();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            i += 1;
            continue;
        }
        let run = run_at(i);
        let mut j = i + run;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let r = run_at(j);
                if r == run {
                    close = Some(j);
                    break;
                }
                j += r;
            } else {
                j += 1;
            }
        }
        match close {
            Some(j) => {
                out[i..j + run].fill(' ');
                i = j + run;
            }
            None => i += run,
        }
    }
    out
}

/// The targets of inline links and images on one line: whatever follows each `](`, up to the
/// closing parenthesis or a title. Keying on `](` also finds a link whose text wrapped from
/// the line before.
fn inline_targets(line: &[char]) -> Vec<String> {
    let mut out = Vec::new();
    let mut k = 0;
    while k + 1 < line.len() {
        if !(line[k] == ']' && line[k + 1] == '(') {
            k += 1;
            continue;
        }
        let mut j = k + 2;
        while j < line.len() && line[j] == ' ' {
            j += 1;
        }
        let mut target = String::new();
        if j < line.len() && line[j] == '<' {
            j += 1;
            while j < line.len() && line[j] != '>' {
                target.push(line[j]);
                j += 1;
            }
        } else {
            let mut depth = 0usize;
            while j < line.len() {
                let c = line[j];
                if c.is_whitespace() || (c == ')' && depth == 0) {
                    break;
                }
                if c == '(' {
                    depth += 1;
                } else if c == ')' {
                    depth -= 1;
                }
                target.push(c);
                j += 1;
            }
        }
        out.push(target);
        k = j;
    }
    out
}

/// The target of a reference definition (`[label]: target`), if the line is one.
fn definition_target(line: &[char]) -> Option<String> {
    let line: String = line.iter().collect();
    let body = line.trim_start_matches(' ');
    if line.len() - body.len() > 3 {
        return None;
    }
    let inner = body.strip_prefix('[')?;
    let close = inner.find("]:")?;
    let label = &inner[..close];
    if label.trim().is_empty() || label.starts_with('^') || label.contains('[') {
        return None;
    }
    let target = inner[close + 2..].split_whitespace().next()?;
    Some(
        target
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string(),
    )
}

/// Every link target in `text` outside code, with its line number.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (number, line) in prose_lines(text) {
        let line = blank_code_spans(line);
        out.extend(definition_target(&line).map(|target| (number, target)));
        out.extend(
            inline_targets(&line)
                .into_iter()
                .map(|target| (number, target)),
        );
    }
    out
}

/// GitHub's anchor for a heading's text: lowercase, punctuation and symbols dropped (letters,
/// digits, '-', '_' and spaces stay), each space a '-'.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The text of an ATX heading line (`## Title`, `## Title ##`), if the line is one.
fn heading(line: &str) -> Option<&str> {
    let body = line.trim_start_matches(' ');
    if line.len() - body.len() > 3 {
        return None;
    }
    let level = body.chars().take_while(|c| *c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &body[level..];
    if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t')) {
        return None;
    }
    let rest = rest.trim();
    let without_closing = rest.trim_end_matches('#');
    Some(if without_closing.is_empty() {
        ""
    } else if without_closing.ends_with(' ') || without_closing.ends_with('\t') {
        without_closing.trim_end()
    } else {
        rest
    })
}

/// A heading's text as rendered: a link shows its text, not its target.
fn rendered(heading: &str) -> String {
    let chars: Vec<char> = heading.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == ']' && chars.get(i + 1) == Some(&'(') {
            let mut depth = 0usize;
            i += 2;
            while i < chars.len() && !(chars[i] == ')' && depth == 0) {
                if chars[i] == '(' {
                    depth += 1;
                } else if chars[i] == ')' {
                    depth -= 1;
                }
                i += 1;
            }
        } else {
            out.push(chars[i]);
        }
        i += 1;
    }
    out
}

/// The anchors of a Markdown page's headings, in order; a repeated slug gets -1, -2, ... as
/// GitHub numbers them.
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (_, line) in prose_lines(text) {
        let Some(title) = heading(line) else { continue };
        let base = slug(&rendered(title));
        let mut anchor = base.clone();
        while seen.contains_key(&anchor) {
            let count = seen.entry(base.clone()).or_insert(0);
            *count += 1;
            anchor = format!("{base}-{count}");
        }
        seen.insert(anchor.clone(), 0);
        out.push(anchor);
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = if bytes[i] == b'%' {
            s.get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        } else {
            None
        };
        if let Some(byte) = escaped {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path a link in `page` points at, from the workspace root ("docs/zoo.md", "scenarios";
/// "" is the root itself).
fn resolve(page: &str, path: &str) -> Result<String, String> {
    let decoded = percent_decode(path);
    let mut parts: Vec<&str> = Vec::new();
    if !decoded.starts_with('/') {
        parts.extend(page.split('/'));
        parts.pop();
    }
    for part in decoded.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err("leads outside the repository".to_string());
                }
            }
            part => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

/// Whether `rel` exists under `root` with exactly this spelling (GitHub's paths are case
/// sensitive, some file systems are not).
fn exists_exactly(root: &Path, rel: &str) -> bool {
    let mut dir = root.to_path_buf();
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        let Ok(entries) = fs::read_dir(&dir) else {
            return false;
        };
        if !entries
            .flatten()
            .any(|e| e.file_name().to_str() == Some(part))
        {
            return false;
        }
        dir.push(part);
    }
    true
}

fn is_external(target: &str) -> bool {
    let lower = target.to_ascii_lowercase();
    ["http:", "https:", "mailto:"]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
}

/// Why a link target in `page` (whose text is `own`) leads nowhere, if it does.
fn check_target(root: &Path, page: &str, own: &str, target: &str) -> Result<(), String> {
    if is_external(target) {
        return Ok(());
    }
    if target.is_empty() {
        return Err("the link is empty".to_string());
    }
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let (target_page, text) = if path.is_empty() {
        (page.to_string(), own.to_string())
    } else {
        let rel = resolve(page, path)?;
        if !exists_exactly(root, &rel) {
            return Err(format!("{rel} does not exist"));
        }
        if anchor.is_none() {
            return Ok(());
        }
        if !rel.ends_with(".md") {
            return Err(format!(
                "{rel} is not a Markdown page, so its anchor cannot be checked"
            ));
        }
        let text =
            fs::read_to_string(root.join(&rel)).map_err(|e| format!("cannot read {rel}: {e}"))?;
        (rel, text)
    };
    let Some(anchor) = anchor else { return Ok(()) };
    let anchor = percent_decode(anchor);
    if anchors(&text).contains(&anchor) {
        Ok(())
    } else {
        Err(format!(
            "{target_page} has no heading whose anchor is #{anchor}"
        ))
    }
}

/// Every broken link of one page, as "page:line: link TARGET: reason".
fn check_page(root: &Path, page: &str, text: &str) -> Vec<String> {
    links(text)
        .into_iter()
        .filter_map(|(line, target)| {
            let reason = check_target(root, page, text, &target).err()?;
            Some(format!("{page}:{line}: link {target}: {reason}"))
        })
        .collect()
}

/// The paths (from the root) that `page` links to, anchors dropped.
fn linked_paths(page: &str, text: &str) -> BTreeSet<String> {
    links(text)
        .into_iter()
        .filter(|(_, target)| !is_external(target))
        .filter_map(|(_, target)| {
            let path = target.split('#').next().unwrap_or_default();
            if path.is_empty() {
                None
            } else {
                resolve(page, path).ok()
            }
        })
        .collect()
}

#[test]
fn every_doc_link_leads_somewhere_and_the_readme_is_a_short_front_door_to_every_page() {
    let root = workspace_root();
    let pages = docs_pages(&root);
    let mut failures = Vec::new();

    let readme = read(&root, "README.md");
    failures.extend(check_page(&root, "README.md", &readme));
    for page in &pages {
        failures.extend(check_page(&root, page, &read(&root, page)));
    }

    let from_readme = linked_paths("README.md", &readme);
    for page in pages.iter().filter(|p| !from_readme.contains(*p)) {
        failures.push(format!(
            "README.md: link {page}: missing; README.md must link every page of docs/"
        ));
    }
    let index = "docs/README.md";
    if pages.iter().any(|p| p == index) {
        let from_index = linked_paths(index, &read(&root, index));
        for page in pages
            .iter()
            .filter(|p| *p != index && !from_index.contains(*p))
        {
            failures.push(format!(
                "{index}: link {page}: missing; the docs index must link every other page of docs/"
            ));
        }
    }

    let lines = readme.lines().count();
    if lines >= README_MAX_LINES {
        failures.push(format!(
            "README.md:{lines}: README.md has {lines} lines, it must stay under {README_MAX_LINES}; \
             move reference material into a page of docs/"
        ));
    }

    assert!(
        failures.is_empty(),
        "{} documentation problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_link_checker_reports_broken_links_and_skips_code_and_the_web() {
    assert_eq!(
        slug("Two engines: madsim and turmoil"),
        "two-engines-madsim-and-turmoil"
    );
    assert_eq!(slug("`no_loss` holds, ✓✓ too"), "no_loss-holds--too");
    assert_eq!(slug(&rendered("See [the zoo](zoo.md#bugs)")), "see-the-zoo");
    assert_eq!(heading("## Reports ##"), Some("Reports"));
    assert_eq!(heading("## C#"), Some("C#"));
    assert_eq!(heading("#hashtag"), None);
    assert_eq!(
        anchors("# A\n## A\n```\n## Hidden\n```\n## A\n### a-1\n"),
        ["a", "a-1", "a-2", "a-1-1"]
    );

    let sample = [
        "# A page",                                                           // 1
        "",                                                                   // 2
        "## Two engines: madsim and turmoil",                                 // 3
        "",                                                                   // 4
        "[fine](#two-engines-madsim-and-turmoil), [broken](#two-engines).",   // 5
        "[fine](../README.md#two-commands), [broken](no-such-page.md).",      // 6
        "[broken](../README.md#no-such-heading), [fine](../scenarios/).",     // 7
        "[web](https://example.com/x), [mail](mailto:someone@example.com).",  // 8
        "`[in code](gone.md)` is not a link, [broken](#hidden) is.",          // 9
        "```",                                                                // 10
        "## Hidden",                                                          // 11
        "[in a fence](gone.md)",                                              // 12
        "```",                                                                // 13
        "[text that wraps",                                                   // 14
        "onto a second line](gone.md) [out](../../outside.md)",               // 15
        "",                                                                   // 16
        "[label]: missing-definition.md",                                     // 17
        "[fine](<../README.md> \"a title\"), [fine](../README.md 'a title')", // 18
    ]
    .join("\n");
    let root = workspace_root();
    let failures = check_page(&root, "docs/sample.md", &sample);
    let expected = [
        (5, "#two-engines"),
        (6, "no-such-page.md"),
        (7, "../README.md#no-such-heading"),
        (9, "#hidden"),
        (15, "gone.md"),
        (15, "../../outside.md"),
        (17, "missing-definition.md"),
    ];
    let found: Vec<String> = failures
        .iter()
        .map(|f| f.split(": ").take(2).collect::<Vec<_>>().join(": "))
        .collect();
    let wanted: Vec<String> = expected
        .iter()
        .map(|(line, target)| format!("docs/sample.md:{line}: link {target}"))
        .collect();
    assert_eq!(
        found,
        wanted,
        "the checker's failures were:\n{}",
        failures.join("\n")
    );
}
