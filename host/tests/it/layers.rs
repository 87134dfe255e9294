//! The library's modules point one way: each uses only the layers below
//! it (and `support`, which uses nothing), never one above or beside it in
//! a cycle. Test code is left out; it may build what it tests from above.

use std::collections::BTreeMap;
use std::path::Path;

/// The layers, bottom first. A module may use modules of a lower rank.
const LAYERS: &[(&str, u8)] = &[
    ("support", 0),
    ("config", 1),
    ("transform", 2),
    ("plugins", 3),
    ("routing", 4),
    ("resilience", 5),
    ("tls", 5),
    ("snapshot", 6),
    ("control", 7),
    ("telemetry", 8),
    ("admin", 9),
    ("proxy", 10),
    ("server", 11),
];

fn rank(module: &str) -> Option<u8> {
    LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, rank)| *rank)
}

/// Every `crate::MODULE` a source file names outside comments and its test
/// module, with the line.
fn uses(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((number, line)) = lines.next() {
        let trimmed = line.trim_start();
        // The test module, which ends the file by convention.
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|(_, next)| next.trim_start().starts_with("mod "))
        {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        // A trailing comment, but not `//` inside a string such as a URL.
        let code = line.split(" // ").next().unwrap_or("");
        for (at, _) in code.match_indices("crate::") {
            let module: String = code[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            found.push((number + 1, module));
        }
    }
    found
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn library_modules_use_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut wrong = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap();
        let module = first.as_os_str().to_string_lossy().replace(".rs", "");
        // The binary and the crate root sit above every layer.
        if module == "bin" || module == "lib" {
            continue;
        }
        let Some(own) = rank(&module) else {
            wrong.push(format!(
                "{}: module {module} has no layer",
                relative.display()
            ));
            continue;
        };
        *seen.entry(module.clone()).or_default() += 1;
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, used) in uses(&text) {
            if used == module {
                continue;
            }
            match rank(&used) {
                Some(other) if other < own => {}
                _ => wrong.push(format!(
                    "{}:{line}: {module} uses {used}",
                    relative.display()
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
    assert!(seen.len() >= 10, "too few modules found: {seen:?}");
}

#[test]
fn uses_are_read_from_code_not_comments_or_tests() {
    let text = "use crate::config::Config;\n// crate::proxy in a comment\nlet x = crate::routing::decide(); // crate::admin\nlet url = \"http://x\"; crate::tls::go();\n#[cfg(test)]\nfn helper() { crate::snapshot::compile(); }\n#[cfg(test)]\nmod tests {\nuse crate::proxy::SluiceProxy;\n}\n";
    let found: Vec<_> = uses(text).into_iter().map(|(_, m)| m).collect();
    assert_eq!(found, ["config", "routing", "tls", "snapshot"]);
}
