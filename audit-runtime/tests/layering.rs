//! The layers of the runtime (docs/ARCHITECTURE.md), checked from its source.
//!
//! Reads every file under `src/`, finds the crate paths it uses (`crate::..`,
//! `use crate::{..}` groups, `super::..`, and root re-exports such as
//! `crate::Dispatch`, resolved through `lib.rs`), and fails when a module
//! imports a module of its own layer or of a layer above it, unless the
//! import is one of the few listed in [`EXCEPTIONS`] with its reason. The
//! rules of issue 15 are also checked on their own ([`FORBIDDEN`]): no
//! exception can allow them. Comments, string literals and `#[cfg(test)]`
//! items are left out (a unit test may drive a sink through a dispatcher).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every top-level module of `lib.rs` and its layer, bottom up. Modules of
/// one layer do not import each other; a module imports only layers below.
const LAYERS: &[(&str, u8)] = &[
    ("util", 0),
    ("time", 1),
    ("model", 2),
    ("sanitize", 2),
    ("json", 3),
    ("schema", 4),
    ("integrity", 4),
    ("stats", 4),
    ("config", 5),
    ("context", 5),
    ("report", 5),
    ("review", 6),
    ("record", 6),
    ("sink", 7),
    ("dispatch", 8),
    ("call", 9),
    ("builder", 9),
    ("settings", 10),
    ("task", 10),
    ("web", 10),
];

/// The rules of issue 15: a module (path prefix) never imports these.
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("model", &["json"]),
    ("json", &["record", "config", "context"]),
    ("sink", &["dispatch", "call"]),
    ("integrity::verify", &["sink", "dispatch", "call"]),
    ("integrity::checkpoint", &["sink", "dispatch", "call"]),
    ("report", &["sink", "dispatch", "call"]),
];

/// Imports against the layer order that are allowed, with why. A listed
/// import that no longer occurs fails the test too, so the list stays true.
const EXCEPTIONS: &[(&str, &str, &str)] = &[
    (
        "context",
        "web",
        "a context made by the HTTP layer carries its request scope (feature `tower`)",
    ),
    (
        "call",
        "web",
        "a call inside an audited request is held by the request scope until the status is known",
    ),
    (
        "dispatch",
        "settings::SettingsError",
        "InitError wraps a SettingsError (settings/error.rs imports nothing of the crate)",
    ),
];

/// One use of a crate path: where, and the resolved path (from the crate root).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Use {
    file: String,
    line: usize,
    from: Vec<String>,
    to: Vec<String>,
}

/// A broken rule, as printed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Violation {
    file: String,
    line: usize,
    message: String,
}

/// The module path of a source file: `json/encode.rs` → `json::encode`,
/// `sink/mod.rs` → `sink`, `lib.rs` → root.
fn module_path(rel: &str) -> Vec<String> {
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut parts: Vec<String> = rel.split('/').map(str::to_owned).collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// `src` with comments and string and char literals blanked out (newlines
/// kept, so offsets still give line numbers).
fn strip_comments_and_strings(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                let start = i;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                blank(&mut out, start, i);
            }
            b'r' if matches!(b.get(i + 1), Some(b'#' | b'"'))
                && (i == 0 || !is_ident_byte(b[i - 1])) =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let start = i;
                i += 2 + hashes;
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                while i < b.len() && !b[i..].starts_with(&close) {
                    i += 1;
                }
                i = (i + close.len()).min(b.len());
                blank(&mut out, start, i);
            }
            b'"' => {
                let start = i;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(b.len());
                blank(&mut out, start, i);
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{..}'), or a lifetime ('a).
                let start = i;
                if b.get(i + 1) == Some(&b'\\') {
                    i += 2;
                    while i < b.len() && b[i] != b'\'' {
                        i += 1;
                    }
                    i = (i + 1).min(b.len());
                    blank(&mut out, start, i);
                } else {
                    let ch_len = src[i + 1..].chars().next().map_or(0, char::len_utf8);
                    if b.get(i + 1 + ch_len) == Some(&b'\'') {
                        i += 2 + ch_len;
                        blank(&mut out, start, i);
                    } else {
                        i += 1;
                    }
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Blanks every item under `#[cfg(test)]` (a `mod tests { .. }`, a
/// `mod tests;`, a `use ..;`): test code may reach across layers.
fn strip_test_items(code: &str) -> String {
    let mut out = code.as_bytes().to_vec();
    let b = code.as_bytes();
    let mut from = 0;
    while let Some(p) = code[from..].find("#[cfg(test)]") {
        let start = from + p;
        let mut i = start + "#[cfg(test)]".len();
        let mut depth = 0usize;
        while i < b.len() {
            match b[i] {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                b';' if depth == 0 => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        for c in &mut out[start..i.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
        from = i.min(b.len());
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a path at `i` (`a::b::{c, d::e}`), appending every full path to
/// `out`. Returns the offset after it.
fn parse_path(b: &[u8], mut i: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    let mut path = prefix.to_vec();
    loop {
        skip_ws(&mut i);
        if b.get(i) == Some(&b'{') {
            i += 1;
            loop {
                skip_ws(&mut i);
                match b.get(i) {
                    Some(b'}') => return i + 1,
                    Some(b',') => i += 1,
                    None => return i,
                    _ => {
                        let before = i;
                        i = parse_path(b, i, &path, out);
                        if i == before {
                            i += 1;
                        }
                    }
                }
            }
        }
        let start = i;
        while i < b.len() && is_ident_byte(b[i]) {
            i += 1;
        }
        if i == start {
            // `*`, or the end of the path.
            if b.get(i) == Some(&b'*') {
                i += 1;
            }
            if path.len() > prefix.len() {
                out.push(path);
            }
            return i;
        }
        let seg = String::from_utf8_lossy(&b[start..i]).into_owned();
        if seg != "self" {
            path.push(seg);
        }
        let mut j = i;
        skip_ws(&mut j);
        if b[j..].starts_with(b"::") {
            i = j + 2;
        } else {
            out.push(path);
            return i;
        }
    }
}

/// The crate paths `code` (of the module at `module`) uses, with line
/// numbers: each as written after `crate::`, or after `super::` resolved.
fn crate_paths(code: &str, module: &[String]) -> Vec<(usize, Vec<String>)> {
    let b = code.as_bytes();
    let mut found = Vec::new();
    for kw in ["crate", "super"] {
        let mut from = 0;
        while let Some(p) = code[from..].find(kw) {
            let at = from + p;
            from = at + kw.len();
            if at > 0 && (is_ident_byte(b[at - 1]) || b[at - 1] == b'$') {
                continue;
            }
            let mut base: Vec<String> = Vec::new();
            let mut i = at + kw.len();
            if kw == "super" {
                base = module.to_vec();
                base.pop();
                // `super::super::..`
                while code[i..].starts_with("::super") {
                    base.pop();
                    i += "::super".len();
                }
            }
            if !code[i..].starts_with("::") {
                continue;
            }
            let line = code[..at].matches('\n').count() + 1;
            let mut paths = Vec::new();
            parse_path(b, i + 2, &base, &mut paths);
            for p in paths {
                found.push((line, p));
            }
        }
    }
    found
}

/// What `lib.rs` declares: its top-level modules, and its `pub use`
/// re-exports by name (the path they stand for).
fn root_items(lib: &str) -> (BTreeSet<String>, BTreeMap<String, Vec<String>>) {
    let code = strip_test_items(&strip_comments_and_strings(lib));
    let b = code.as_bytes();
    let mut modules = BTreeSet::new();
    for line in code.lines() {
        let t = line.trim();
        let t = t.strip_prefix("pub ").unwrap_or(t);
        if let Some(rest) = t.strip_prefix("mod ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if rest[name.len()..].trim_start().starts_with(';') {
                modules.insert(name);
            }
        }
    }
    let mut reexports = BTreeMap::new();
    let mut from = 0;
    while let Some(p) = code[from..].find("pub use ") {
        let at = from + p;
        from = at + 8;
        if code[from..].starts_with("crate::") {
            continue; // inside `__private`: not a root name
        }
        let mut paths = Vec::new();
        parse_path(b, from, &[], &mut paths);
        // Resolved when used: `pub use event::{..}` goes through `event`,
        // itself a re-export.
        for path in paths {
            if let Some(name) = path.last() {
                if path.len() > 1 {
                    reexports.insert(name.clone(), path.clone());
                }
            }
        }
    }
    (modules, reexports)
}

/// Every crate path used by the non-test code of `files` (path relative to
/// `src/`, content), resolved from the crate root. Paths that cannot be
/// resolved are returned as violations.
fn uses(files: &[(String, String)]) -> (Vec<Use>, Vec<Violation>, BTreeSet<String>) {
    let lib = files
        .iter()
        .find(|(p, _)| p == "lib.rs")
        .map(|(_, s)| s.as_str())
        .unwrap_or("");
    let (modules, reexports) = root_items(lib);
    let mut all = Vec::new();
    let mut bad = Vec::new();
    for (rel, src) in files {
        let module = module_path(rel);
        if module.is_empty() || module.last().is_some_and(|m| m == "tests") {
            continue;
        }
        let code = strip_test_items(&strip_comments_and_strings(src));
        for (line, path) in crate_paths(&code, &module) {
            let mut to = path;
            // Root names (`crate::Dispatch`, `crate::event::..`) through
            // their re-export, as often as they chain.
            let mut hops = 0;
            while let Some(first) = to.first().cloned() {
                if modules.contains(&first) || hops > 8 {
                    break;
                }
                match reexports.get(&first) {
                    Some(target) => {
                        let mut resolved = target.clone();
                        resolved.extend(to.into_iter().skip(1));
                        to = resolved;
                        hops += 1;
                    }
                    None => break,
                }
            }
            if !to.first().is_some_and(|m| modules.contains(m)) {
                bad.push(Violation {
                    file: rel.clone(),
                    line,
                    message: format!("cannot resolve `crate::{}`", to.join("::")),
                });
                continue;
            }
            all.push(Use {
                file: rel.clone(),
                line,
                from: module.clone(),
                to,
            });
        }
    }
    (all, bad, modules)
}

fn starts_with(path: &[String], prefix: &str) -> bool {
    let p: Vec<&str> = prefix.split("::").collect();
    path.len() >= p.len() && path.iter().zip(&p).all(|(a, b)| a == b)
}

/// The rules, applied to the source files given (relative to `src/`).
fn check(files: &[(String, String)]) -> Vec<Violation> {
    let (all, mut out, modules) = uses(files);
    let rank: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    for m in &modules {
        if !rank.contains_key(m.as_str()) {
            out.push(Violation {
                file: "lib.rs".into(),
                line: 0,
                message: format!(
                    "module `{m}` has no layer: add it to LAYERS in tests/layering.rs (and to docs/ARCHITECTURE.md)"
                ),
            });
        }
    }
    let mut used_exceptions = BTreeSet::new();
    for u in &all {
        let (src, dst) = (&u.from[0], &u.to[0]);
        if src == dst {
            continue;
        }
        let mut forbidden = false;
        for (from, targets) in FORBIDDEN {
            if starts_with(&u.from, from) && targets.iter().any(|t| starts_with(&u.to, t)) {
                forbidden = true;
                out.push(Violation {
                    file: u.file.clone(),
                    line: u.line,
                    message: format!(
                        "`{}` imports `{}`: {from} never imports {}",
                        u.from.join("::"),
                        u.to.join("::"),
                        targets.join(", ")
                    ),
                });
            }
        }
        if forbidden {
            continue;
        }
        let (Some(&rs), Some(&rd)) = (rank.get(src.as_str()), rank.get(dst.as_str())) else {
            continue; // reported above
        };
        if rd < rs {
            continue;
        }
        if let Some(e) = EXCEPTIONS
            .iter()
            .find(|(f, t, _)| starts_with(&u.from, f) && starts_with(&u.to, t))
        {
            used_exceptions.insert((e.0, e.1));
            continue;
        }
        out.push(Violation {
            file: u.file.clone(),
            line: u.line,
            message: format!(
                "`{}` (layer {rs}) imports `{}` (layer {rd}): a module imports only layers below its own",
                u.from.join("::"),
                u.to.join("::")
            ),
        });
    }
    // Only for the real crate: synthetic inputs in the tests below have no
    // need of them.
    if modules.contains("util") && modules.contains("web") {
        for (f, t, why) in EXCEPTIONS {
            if !used_exceptions.contains(&(*f, *t)) {
                out.push(Violation {
                    file: "tests/layering.rs".into(),
                    line: 0,
                    message: format!(
                        "the exception {f} → {t} ({why}) is no longer used: remove it"
                    ),
                });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn source_files(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src/")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            source_files(&p, base, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            let rel = p
                .strip_prefix(base)
                .expect("under src/")
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&p).expect("read source")));
        }
    }
}

#[test]
fn the_runtime_keeps_its_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &src, &mut files);
    assert!(files.len() > 20, "found only {} source files", files.len());
    let (all, _, modules) = uses(&files);
    // The scan sees the imports it checks (guards against a parser that
    // silently finds nothing).
    assert!(all.len() > 200, "only {} crate paths found", all.len());
    assert!(modules.contains("record") && modules.contains("util"));
    assert!(all
        .iter()
        .any(|u| u.from == ["sink", "file"] && u.to.starts_with(&["record".to_owned()])));
    let violations = check(&files);
    let report: Vec<String> = violations
        .iter()
        .map(|v| format!("src/{}:{}: {}", v.file, v.line, v.message))
        .collect();
    assert!(
        violations.is_empty(),
        "{} layering violation(s):\n{}",
        violations.len(),
        report.join("\n")
    );
}

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect()
}

const LIB: &str = "mod util;\nmod model;\nmod json;\npub mod sink;\nmod dispatch;\nmod record;\npub mod integrity;\n\
                   pub use dispatch::{emit, Dispatch};\npub use integrity::verify;\npub use model::event;\n";

#[test]
fn the_checker_reports_each_rule_it_enforces() {
    let v = check(&files(&[
        ("lib.rs", LIB),
        // model never imports json (through a group import).
        ("model/event.rs", "use crate::{util::text::Text, json::encode};\n"),
        // sink never imports dispatch (through a root re-export).
        ("sink/file.rs", "fn f() {\n    let d = crate::Dispatch::new();\n}\n"),
        // verify never imports sink (through `super::super`).
        (
            "integrity/verify.rs",
            "use std::io;\n\nuse super::super::sink::Sink;\n",
        ),
        // record (6) imports dispatch (8): against the layer order.
        ("record/mod.rs", "use crate::model::event;\nuse crate::dispatch::emit;\n"),
        // Comments, strings, `$crate` and test code are not imports.
        (
            "json/encode.rs",
            "// crate::record::X\nconst S: &str = \"crate::config::C\";\nmacro_rules! m { () => { $crate::sink::S } }\n\
             #[cfg(test)]\nmod tests {\n    use crate::record::CallRecord;\n}\nuse crate::model::event::AuditEvent;\n",
        ),
        // An unknown root name.
        ("util/ids.rs", "use crate::NoSuchThing;\n"),
    ]));
    let got: Vec<(String, usize)> = v.iter().map(|v| (v.file.clone(), v.line)).collect();
    assert_eq!(
        got,
        vec![
            ("integrity/verify.rs".to_owned(), 3),
            ("model/event.rs".to_owned(), 1),
            ("record/mod.rs".to_owned(), 2),
            ("sink/file.rs".to_owned(), 2),
            ("util/ids.rs".to_owned(), 1),
        ],
        "{v:#?}"
    );
    assert!(v[0].message.contains("never imports"), "{}", v[0].message);
    assert!(
        v[1].message
            .contains("`model::event` imports `json::encode`"),
        "{}",
        v[1].message
    );
    assert!(v[2].message.contains("layer 6") && v[2].message.contains("layer 8"));
    assert!(
        v[3].message
            .contains("`sink::file` imports `dispatch::Dispatch::new`"),
        "{}",
        v[3].message
    );
    assert!(v[4].message.contains("cannot resolve"));
}

#[test]
fn the_checker_passes_imports_that_point_down() {
    let v = check(&files(&[
        ("lib.rs", LIB),
        (
            "json/encode.rs",
            "use crate::event::{AuditEvent, Outcome};\nuse crate::util::text::Text;\n",
        ),
        (
            "sink/file.rs",
            "use crate::record::{CallRecord, RecordRef};\nuse super::Sink;\n",
        ),
        ("sink/mod.rs", "pub trait Sink {}\n"),
        (
            "dispatch/mod.rs",
            "use crate::sink::Sink;\nuse crate::verify::check;\n",
        ),
    ]));
    assert!(v.is_empty(), "{v:#?}");
}

#[test]
fn a_module_without_a_layer_is_reported() {
    let v = check(&files(&[("lib.rs", "mod util;\nmod newcomer;\n")]));
    assert_eq!(v.len(), 1, "{v:#?}");
    assert!(v[0].message.contains("`newcomer` has no layer"));
}

#[test]
fn group_imports_and_self_resolve_to_full_paths() {
    let mut out = Vec::new();
    parse_path(b"a::{b, c::{self, d}, e::*}; rest", 0, &[], &mut out);
    let s: Vec<String> = out.iter().map(|p| p.join("::")).collect();
    assert_eq!(s, ["a::b", "a::c", "a::c::d", "a::e"]);
    let code = strip_comments_and_strings(
        "let c = 'x'; let l: &'a str = \"crate::z\"; // crate::y\nuse crate::q;",
    );
    let found = crate_paths(&code, &["m".to_owned()]);
    assert_eq!(found, vec![(2, vec!["q".to_owned()])]);
}
