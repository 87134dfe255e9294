//! Every relative link in the READMEs and in `docs/` points at a file that
//! exists and, when it names an anchor, at a heading that file has.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The Markdown files checked: the READMEs and everything under `docs/`.
fn documents() -> Vec<PathBuf> {
    let mut found = vec![
        root().join("README.md"),
        root().join("plugin-sdk/README.md"),
    ];
    let docs = root().join("docs");
    assert!(docs.join("SUMMARY.md").exists(), "no docs/SUMMARY.md");
    let mut pending = vec![docs];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The text outside fenced code blocks and inline code spans.
fn prose(markdown: &str) -> String {
    let mut text = String::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
            } else if !in_code {
                text.push(c);
            }
        }
        text.push('\n');
    }
    text
}

/// Link targets: inline `[text](target)` and reference `[label]: target`.
fn link_targets(markdown: &str) -> Vec<String> {
    let text = prose(markdown);
    let mut targets = Vec::new();
    for (at, _) in text.match_indices("](") {
        let rest = &text[at + 2..];
        if let Some(end) = rest.find(')') {
            let target = rest[..end].split_whitespace().next().unwrap_or("");
            targets.push(target.trim_matches(['<', '>']).to_string());
        }
    }
    for line in text.lines() {
        let line = line.trim_start();
        if let Some(rest) = line.strip_prefix('[') {
            if let Some((_, target)) = rest.split_once("]: ") {
                targets.push(target.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    }
    targets
}

/// A heading's anchor as GitHub and mdBook make it: lower case, spaces to
/// `-`, everything but letters, digits, `-` and `_` dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of a Markdown file's headings, with GitHub's `-1`, `-2`
/// suffixes for repeated ones.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = BTreeSet::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let heading = line.trim_start_matches('#');
        let base = slug(&heading.replace('`', ""));
        let count = seen.entry(base.clone()).or_insert(0);
        let anchor = if *count == 0 {
            base.clone()
        } else {
            format!("{base}-{count}")
        };
        *count += 1;
        anchors.insert(anchor);
    }
    anchors
}

fn is_external(target: &str) -> bool {
    target.contains("://") || target.starts_with("mailto:") || target.is_empty()
}

#[test]
fn relative_links_in_the_readme_and_docs_point_somewhere() {
    let mut broken = Vec::new();
    for document in documents() {
        let text = std::fs::read_to_string(&document).unwrap();
        let dir = document.parent().unwrap();
        for target in link_targets(&text) {
            if is_external(&target) {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            let linked = if file.is_empty() {
                document.clone()
            } else {
                dir.join(file)
            };
            let shown = document.strip_prefix(root()).unwrap().display().to_string();
            if !linked.exists() {
                broken.push(format!("{shown}: {target} (no such file)"));
                continue;
            }
            let Some(anchor) = anchor else {
                continue;
            };
            if linked.extension().is_some_and(|e| e == "md") {
                let linked_text = std::fs::read_to_string(&linked).unwrap();
                if !anchors(&linked_text).contains(anchor) {
                    broken.push(format!("{shown}: {target} (no such heading)"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn anchors_follow_github_slugs() {
    let text = "# Sluice\n## `[placements.NAME.limits]`\n## Plugins, in depth\n## Plugins, in depth\n```\n# not a heading\n```\n";
    let found = anchors(text);
    assert!(found.contains("sluice"));
    assert!(found.contains("placementsnamelimits"));
    assert!(found.contains("plugins-in-depth"));
    assert!(found.contains("plugins-in-depth-1"));
    assert!(!found.contains("not-a-heading"));
    assert_eq!(
        link_targets("see [a](docs/a.md#x) and `[b](nowhere.md)`\n[c]: c.md\n"),
        ["docs/a.md#x", "c.md"]
    );
}
