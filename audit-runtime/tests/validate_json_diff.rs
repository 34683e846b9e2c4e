//! Differential tests: `schema::validate_json` (borrowed parsing, no tree)
//! against the oracle `serde_json::from_slice` + `schema::validate_value` on
//! the same bytes. Same verdict (not UTF-8 / not JSON / the version / the
//! same violations in the same order) on every input: valid events of every
//! version, members of the wrong type, missing, too long or of a bad format,
//! unknown members, keys in any order, duplicate keys, escaped keys and
//! values, huge and odd numbers, deep and garbage nesting, non-UTF-8 bytes
//! and text soup.

use phi_audit_runtime::schema::{validate_json, validate_value, JsonError, ValidationErrors};
use phi_audit_runtime::SchemaVersion;
use proptest::prelude::*;
use serde_json::{json, Value};

#[path = "common/schema_gen.rs"]
mod schema_gen;

type Verdict = Result<Result<SchemaVersion, ValidationErrors>, JsonError>;

fn oracle(text: &[u8], version: Option<SchemaVersion>) -> Verdict {
    if std::str::from_utf8(text).is_err() {
        return Err(JsonError::Utf8);
    }
    match serde_json::from_slice::<Value>(text) {
        Err(_) => Err(JsonError::Syntax),
        Ok(v) => Ok(validate_value(&v, version)),
    }
}

const VERSIONS: [Option<SchemaVersion>; 4] = [
    None,
    Some(SchemaVersion::V1_0),
    Some(SchemaVersion::V1_1),
    Some(SchemaVersion::V2_0),
];

/// Compares both on every version; returns whether the text was JSON.
fn same(text: &[u8]) -> bool {
    let mut json = false;
    for version in VERSIONS {
        let want = oracle(text, version);
        let got = validate_json(text, version);
        assert_eq!(
            got,
            want,
            "version {version:?} on {:?}",
            String::from_utf8_lossy(text)
        );
        json = want.is_ok();
    }
    json
}

// ---------------------------------------------------------------------------
// Documents as text: members in any order, duplicates, escapes, whitespace
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Doc {
    /// A token as written (a number, literal or string with its quotes).
    Tok(String),
    Arr(Vec<Doc>),
    /// Members: the key as written (with quotes) and the value.
    Obj(Vec<(String, Doc)>),
}

fn render(d: &Doc, sp: &str, out: &mut String) {
    match d {
        Doc::Tok(t) => out.push_str(t),
        Doc::Arr(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                    out.push_str(sp);
                }
                render(x, sp, out);
            }
            out.push(']');
        }
        Doc::Obj(members) => {
            out.push('{');
            out.push_str(sp);
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(k);
                out.push_str(sp);
                out.push(':');
                render(v, sp, out);
            }
            out.push_str(sp);
            out.push('}');
        }
    }
}

/// A string token; `escape_all` writes every character as `\uXXXX`
/// (surrogate pairs above the BMP).
fn string_token(s: &str, escape_all: bool) -> String {
    if !escape_all {
        return serde_json::to_string(s).unwrap_or_default();
    }
    let mut out = String::from("\"");
    for unit in s.encode_utf16() {
        out.push_str(&format!("\\u{unit:04x}"));
    }
    out.push('"');
    out
}

/// Tiny deterministic generator for the document mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn one_in(&mut self, n: u64) -> bool {
        self.next() % n == 0
    }
}

/// Tokens the oracle reads in odd ways (or refuses).
const ODD: &[&str] = &[
    "0",
    "-0",
    "200",
    "200.0",
    "2e2",
    "2E+2",
    "-100",
    "99",
    "1.5",
    "1e400",
    "-1e400",
    "1e-400",
    "0e999999999999999999999",
    "1e999999999999999999999",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "123456789012345678901234567890",
    "1.7976931348623157e308",
    "1.7976931348623159e308",
    "01",
    "1.",
    ".5",
    "+1",
    "-",
    "1e",
    "tru",
    "nul",
    "\"\\ud800\"",
    "\"\\udc00\"",
    "\"\\ud800\\u0041\"",
    "\"\\ud83d\\ude00\"",
    "\"\\x\"",
    "\"a\tb\"",
    "\"\\u00e9\\/\\b\\f\\n\\r\\t\\\"\\\\\"",
    "\"2026-01-02T03:04:05Z\\n\"",
    "\"6f1c2a34-9b7e-4d21-8a55-0c3e9f4b7a1\\u0030\"",
    "[]",
    "{}",
    "[1,]",
    "{\"a\":1,}",
    "{\"a\" 1}",
    "[[[[[[[[[[]]]]]]]]]]",
];

fn to_doc(v: &Value, rng: &mut Rng) -> Doc {
    match v {
        Value::String(s) => Doc::Tok(string_token(s, rng.one_in(8))),
        Value::Array(a) => Doc::Arr(a.iter().map(|x| to_doc(x, rng)).collect()),
        Value::Object(m) => {
            let mut members: Vec<(String, Doc)> = m
                .iter()
                .map(|(k, x)| (string_token(k, rng.one_in(10)), to_doc(x, rng)))
                .collect();
            // Any order.
            if rng.one_in(2) {
                for i in (1..members.len()).rev() {
                    let j = rng.below(i + 1);
                    members.swap(i, j);
                }
            }
            // A duplicate member: an odd value, or another member's, before
            // or after the original.
            if !members.is_empty() && rng.one_in(3) {
                let i = rng.below(members.len());
                let key = members[i].0.clone();
                let value = if rng.one_in(2) {
                    Doc::Tok(ODD[rng.below(ODD.len())].to_owned())
                } else {
                    members[rng.below(members.len())].1.clone()
                };
                let at = rng.below(members.len() + 1);
                members.insert(at, (key, value));
            }
            Doc::Obj(members)
        }
        other => Doc::Tok(other.to_string()),
    }
}

/// Replaces a random token of `d` by an odd one.
fn odd_token(d: &mut Doc, rng: &mut Rng) {
    match d {
        Doc::Tok(t) => *t = ODD[rng.below(ODD.len())].to_owned(),
        Doc::Arr(items) if !items.is_empty() => {
            let i = rng.below(items.len());
            odd_token(&mut items[i], rng);
        }
        Doc::Obj(members) if !members.is_empty() => {
            let i = rng.below(members.len());
            odd_token(&mut members[i].1, rng);
        }
        _ => *d = Doc::Tok(ODD[rng.below(ODD.len())].to_owned()),
    }
}

// ---------------------------------------------------------------------------
// Events and values
// ---------------------------------------------------------------------------

const PHI: &str = "PHI-TOKEN-Jane-Roe";

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        Just(json!(200.0)),
        Just(json!(1.5)),
        Just(json!(1)),
        Just(json!(2)),
        ".{0,40}".prop_map(|s| Value::String(format!("{s}{PHI}"))),
        "\\PC{0,80}".prop_map(Value::String),
        (0usize..1200).prop_map(|n| Value::String("é".repeat(n))),
        (0usize..600).prop_map(|n| Value::String("x".repeat(n))),
        prop::sample::select(vec![
            "",
            "1.0",
            "1.1",
            "2.0",
            "READ",
            "OVERRIDE",
            "DENIED",
            "FAILURE",
            "SUCCESS",
            "agent",
            "human",
            "service",
            "AgentSession",
            "api",
            "sha256",
            "md5",
            "GET",
            "::1",
            "1.2.3.4",
            "01.2.3.4",
            "fe80::1%eth0",
            "2026-01-02T03:04:05Z",
            "2026-02-30T03:04:05Z",
            "2026-01-02 03:04:05Z",
            "6f1c2a34-9b7e-4d21-8a55-0c3e9f4b7a10",
            "6f1c2a34-9b7e-4d21-8a55-0c3e9f4b7a1g",
            "{6f1c2a349b7e-4d21-8a55-0c3e9f4b7a10}",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    schema_gen::tree(leaf(), 5, 64, 10, 16)
}

fn valid(version: SchemaVersion) -> Value {
    let mut v = json!({
        "schema_version": version.as_str(),
        "event_id": "6f1c2a34-9b7e-4d21-8a55-0c3e9f4b7a10",
        "timestamp": "2026-01-02T03:04:05.678Z",
        "service": {"name": "charts", "environment": "prod", "version": "1"},
        "actor": {"subject_id": "u-1", "subject_type": "human", "roles": ["a", "b"],
                  "org_id": "o-1"},
        "action": {"type": "READ", "phi_touched": true, "name": "n",
                   "data_classification": "PHI"},
        "resource": {"type": "Patient", "id": "p-1", "patient_id": "p-1"},
        "outcome": {"status": "FAILURE", "error_type": "E", "error_message": "m"},
        "correlation": {"request_id": "r-1", "trace_id": "t", "session_id": "s"},
        "http": {"method": "GET", "status_code": 200, "client_ip": "::1",
                 "route_template": "/p/{id}", "user_agent": "ua"},
        "integrity": {"event_hash": "ab", "hash_alg": "sha256", "prev_event_hash": "cd"},
        "metadata": {"page": 3, "why": "care", "ok": true, "none": null}
    });
    if version != SchemaVersion::V1_0 {
        v["actor"]["owner_org_id"] = json!("o-2");
    }
    if version == SchemaVersion::V2_0 {
        v["delegation"] = json!({
            "acting": {"subject_id": "a-1", "subject_type": "agent",
                       "agent": {"interface": "api", "vendor": "v", "model_family": "m",
                                 "model_version": "1", "harness": "h", "harness_version": "2"}},
            "authorizing": {"subject_id": "h-1", "subject_type": "human", "org_id": "o"},
            "delegation_type": "supervised",
            "agent_session_id": "s-1",
            "chain_depth": 2,
            "parent_agent_session_id": "s-0"
        });
    }
    v
}

const POINTERS: &[&str] = &[
    "",
    "/schema_version",
    "/event_id",
    "/timestamp",
    "/service",
    "/service/name",
    "/service/version",
    "/actor",
    "/actor/subject_id",
    "/actor/subject_type",
    "/actor/org_id",
    "/actor/roles",
    "/actor/roles/1",
    "/action",
    "/action/type",
    "/action/phi_touched",
    "/action/data_classification",
    "/resource",
    "/resource/type",
    "/resource/id",
    "/outcome",
    "/outcome/status",
    "/outcome/error_type",
    "/outcome/error_message",
    "/correlation",
    "/correlation/trace_id",
    "/http",
    "/http/method",
    "/http/status_code",
    "/http/client_ip",
    "/http/user_agent",
    "/integrity",
    "/integrity/hash_alg",
    "/integrity/event_hash",
    "/metadata",
    "/metadata/page",
    "/delegation",
    "/delegation/chain_depth",
    "/delegation/acting",
    "/delegation/acting/subject_type",
    "/delegation/acting/agent",
    "/delegation/acting/agent/interface",
    "/delegation/authorizing",
    "/delegation/delegation_type",
];

/// What an edit does at its pointer.
#[derive(Debug, Clone)]
enum Edit {
    Set(&'static str, Value),
    Remove(&'static str),
    /// Adds a member that no schema defines.
    Unknown(&'static str, String, Value),
}

fn edit() -> impl Strategy<Value = Edit> {
    let ptr = || prop::sample::select(POINTERS.to_vec());
    prop_oneof![
        3 => (ptr(), arb_json()).prop_map(|(p, v)| Edit::Set(p, v)),
        2 => ptr().prop_map(Edit::Remove),
        1 => (ptr(), schema_gen::key(), leaf()).prop_map(|(p, k, v)| Edit::Unknown(p, k, v)),
    ]
}

fn apply(v: &mut Value, e: Edit) {
    match e {
        Edit::Set("", new) => *v = new,
        Edit::Set(p, new) => {
            if let Some(slot) = v.pointer_mut(p) {
                *slot = new;
            }
        }
        Edit::Remove(p) => {
            let (parent, last) = p.rsplit_once('/').unwrap_or(("", ""));
            match v.pointer_mut(parent) {
                Some(Value::Object(m)) => {
                    m.remove(last);
                }
                Some(Value::Array(a)) => {
                    if let Ok(i) = last.parse::<usize>() {
                        if i < a.len() {
                            a.remove(i);
                        }
                    }
                }
                _ => {}
            }
        }
        Edit::Unknown(p, k, new) => {
            if let Some(Value::Object(m)) = v.pointer_mut(p) {
                m.insert(k, new);
            }
        }
    }
}

/// Renders `v` as text through the document mutations of `seed`.
fn text_of(v: &Value, seed: u64, odd: bool) -> String {
    let mut rng = Rng(seed | 1);
    let mut d = to_doc(v, &mut rng);
    if odd {
        odd_token(&mut d, &mut rng);
    }
    let sp = [" ", "", "\t", "\r\n "][rng.below(4)];
    let mut out = String::new();
    render(&d, if rng.one_in(3) { sp } else { "" }, &mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn valid_events_agree(
        version in prop::sample::select(SchemaVersion::ALL.to_vec()),
        seed in any::<u64>(),
    ) {
        let v = valid(version);
        prop_assert!(validate_value(&v, None).is_ok());
        let text = text_of(&v, seed, false);
        same(text.as_bytes());
        // The compact form (serde_json's own) is valid for both.
        let compact = serde_json::to_vec(&v).unwrap_or_default();
        prop_assert_eq!(validate_json(&compact, None), Ok(Ok(version)));
    }

    #[test]
    fn edited_events_agree(
        version in prop::sample::select(SchemaVersion::ALL.to_vec()),
        edits in prop::collection::vec(edit(), 1..5),
        seed in any::<u64>(),
        odd in prop::bool::weighted(0.25),
    ) {
        let mut v = valid(version);
        for e in edits {
            apply(&mut v, e);
        }
        same(text_of(&v, seed, odd).as_bytes());
        same(&serde_json::to_vec(&v).unwrap_or_default());
    }

    #[test]
    fn arbitrary_json_agrees(v in arb_json(), seed in any::<u64>(), odd in any::<bool>()) {
        same(text_of(&v, seed, odd).as_bytes());
    }

    #[test]
    fn damaged_text_agrees(
        version in prop::sample::select(SchemaVersion::ALL.to_vec()),
        seed in any::<u64>(),
        cuts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let mut bytes = text_of(&valid(version), seed, false).into_bytes();
        for (at, byte, how) in cuts {
            let i = at.index(bytes.len() + 1);
            match how {
                0 => bytes.insert(i, byte),
                1 if i < bytes.len() => { bytes.remove(i); }
                _ => bytes.truncate(i),
            }
        }
        same(&bytes);
    }

    #[test]
    fn arbitrary_bytes_agree(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        same(&bytes);
    }

    #[test]
    fn json_like_text_agrees(text in "[\\[\\]{}\":,0-9a-z.\\-+eEu\\\\ ]{0,120}") {
        same(text.as_bytes());
    }
}

#[test]
fn odd_tokens_everywhere() {
    for version in SchemaVersion::ALL {
        let v = valid(*version);
        for seed in 1..400u64 {
            same(text_of(&v, seed, true).as_bytes());
        }
    }
    for t in ODD {
        same(t.as_bytes());
        same(format!("{{\"http\":{{\"status_code\":{t}}}}}").as_bytes());
    }
}

#[test]
fn nesting_limit_is_serde_jsons() {
    for depth in [1usize, 2, 100, 126, 127, 128, 129, 300] {
        for (open, close) in [("[", "]"), ("{\"metadata\":", "}")] {
            let text = format!("{}1{}", open.repeat(depth), close.repeat(depth));
            same(text.as_bytes());
            let text = format!(
                "{{\"metadata\":{{\"k\":{}null{}}}}}",
                open.repeat(depth),
                close.repeat(depth)
            );
            same(text.as_bytes());
        }
    }
}

#[test]
fn whitespace_and_trailing_text() {
    for t in [
        " {} ",
        "{}x",
        "{} {}",
        "\u{c}{}",
        "{}\n",
        "",
        " ",
        "\"1.1\"",
        "[{\"schema_version\":\"1.1\"}]",
    ] {
        same(t.as_bytes());
    }
}

#[test]
fn duplicate_keys_last_wins() {
    let text = br#"{"schema_version":"9","schema_version":"1.1","event_id":"6f1c2a34-9b7e-4d21-8a55-0c3e9f4b7a10","timestamp":"2026-01-02T03:04:05Z","service":{"name":""},"service":{"name":"s"},"actor":{"subject_id":"u","subject_type":"human"},"action":{"type":"READ"},"resource":{"type":"P"},"outcome":{"status":"SUCCESS"}}"#;
    assert_eq!(validate_json(text, None), Ok(Ok(SchemaVersion::V1_1)));
    same(text);
}
