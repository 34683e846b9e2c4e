//! The rule tables against the schema files they were written from
//! (`audit-runtime/schema/<version>/audit_event.schema.json`, vendored from
//! bh-audit-logger 2.0.0): every property, required list, enum, constant,
//! format, length, item, property and integer limit, closed object and
//! `dependentRequired` must agree. The root's `allOf` conditionals (an
//! outcome's required fields by status, 2.0's agent rules) are code in the
//! checker and are held to the reference implementation by
//! `tests/schema_props.rs`.

use serde_json::{Map, Value};

use super::{root_of, Format, Node, Obj};
use crate::model::event::SchemaVersion;

const FILES: [(SchemaVersion, &str); 3] = [
    (
        SchemaVersion::V1_0,
        include_str!("../../schema/1.0/audit_event.schema.json"),
    ),
    (
        SchemaVersion::V1_1,
        include_str!("../../schema/1.1/audit_event.schema.json"),
    ),
    (
        SchemaVersion::V2_0,
        include_str!("../../schema/2.0/audit_event.schema.json"),
    ),
];

/// Keywords that say nothing a validator checks.
const ANNOTATIONS: &[&str] = &["description", "default", "title", "$schema", "$id", "$defs"];

struct Walk<'a> {
    defs: &'a Map<String, Value>,
    errors: Vec<String>,
}

impl Walk<'_> {
    fn fail(&mut self, at: &str, what: String) {
        self.errors.push(format!("{at}: {what}"));
    }

    fn resolve<'v>(&self, mut v: &'v Value) -> &'v Value
    where
        Self: 'v,
    {
        while let Some(r) = v.get("$ref").and_then(Value::as_str) {
            let name = r.strip_prefix("#/$defs/").expect("a local $ref");
            v = self.defs.get(name).expect("a defined $ref");
        }
        v
    }

    fn keywords(&mut self, at: &str, v: &Value, known: &[&str]) {
        for k in v.as_object().into_iter().flat_map(Map::keys) {
            if !known.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()) {
                self.fail(at, format!("keyword `{k}` is not checked by the table"));
            }
        }
    }

    fn usize_of(v: &Value, k: &str) -> Option<usize> {
        v.get(k).and_then(Value::as_u64).map(|n| n as usize)
    }

    fn node(&mut self, at: &str, v: &Value, node: &Node) {
        let v = self.resolve(v).clone();
        let ty = v.get("type").and_then(Value::as_str);
        match node {
            Node::Enum(values) => {
                self.keywords(at, &v, &["type", "enum"]);
                let want: Vec<&str> = v["enum"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut got = values.to_vec();
                let mut want_sorted = want.clone();
                got.sort_unstable();
                want_sorted.sort_unstable();
                if got != want_sorted || ty != Some("string") {
                    self.fail(at, format!("enum {values:?}, the schema says {want:?}"));
                }
            }
            Node::Const(c) => {
                self.keywords(at, &v, &["type", "const"]);
                if v.get("const").and_then(Value::as_str) != Some(c) {
                    self.fail(at, format!("const {c:?}, the schema says {}", v["const"]));
                }
            }
            Node::Str { min, max, format } => {
                self.keywords(
                    at,
                    &v,
                    &["type", "minLength", "maxLength", "format", "anyOf"],
                );
                let schema_format = match v.get("format").and_then(Value::as_str) {
                    Some("uuid") => Some(Format::Uuid),
                    Some("date-time") => Some(Format::DateTime),
                    Some(other) => {
                        self.fail(at, format!("format {other} has no table counterpart"));
                        None
                    }
                    // `anyOf: [{format: ipv4}, {format: ipv6}]`
                    None if v.get("anyOf").is_some() => {
                        let formats: Vec<&str> = v["anyOf"]
                            .as_array()
                            .map(|a| a.iter().filter_map(|f| f["format"].as_str()).collect())
                            .unwrap_or_default();
                        if formats != ["ipv4", "ipv6"] {
                            self.fail(at, format!("anyOf formats {formats:?}"));
                        }
                        Some(Format::Ip)
                    }
                    None => None,
                };
                if ty != Some("string")
                    || Self::usize_of(&v, "minLength").unwrap_or(0) != *min
                    || Self::usize_of(&v, "maxLength") != *max
                    || schema_format.map(|f| f as u8) != format.map(|f| f as u8)
                {
                    self.fail(
                        at,
                        format!(
                            "string {min}..{max:?} {:?}, the schema says {v}",
                            format.map(|f| f as u8)
                        ),
                    );
                }
            }
            Node::Bool => {
                self.keywords(at, &v, &["type"]);
                if ty != Some("boolean") {
                    self.fail(at, format!("boolean, the schema says {v}"));
                }
            }
            Node::Int { min, max } => {
                self.keywords(at, &v, &["type", "minimum", "maximum"]);
                if ty != Some("integer")
                    || v.get("minimum").and_then(Value::as_i64) != *min
                    || v.get("maximum").and_then(Value::as_i64) != *max
                {
                    self.fail(
                        at,
                        format!("integer {min:?}..={max:?}, the schema says {v}"),
                    );
                }
            }
            Node::Array { items, max_items } => {
                self.keywords(at, &v, &["type", "items", "maxItems"]);
                if ty != Some("array") || Self::usize_of(&v, "maxItems") != *max_items {
                    self.fail(
                        at,
                        format!("array of at most {max_items:?}, the schema says {v}"),
                    );
                }
                self.node(&format!("{at}/items"), &v["items"], items);
            }
            Node::Object(obj) => self.object(at, &v, obj),
            Node::Metadata {
                scalar_only,
                max_props,
            } => {
                self.keywords(at, &v, &["type", "additionalProperties", "maxProperties"]);
                let scalar = match &v["additionalProperties"] {
                    Value::Bool(true) => false,
                    Value::Object(o) => {
                        let types: Vec<&str> = o["type"]
                            .as_array()
                            .map(|a| a.iter().filter_map(Value::as_str).collect())
                            .unwrap_or_default();
                        if types != ["string", "integer", "number", "boolean", "null"] {
                            self.fail(at, format!("metadata values {types:?}"));
                        }
                        true
                    }
                    other => {
                        self.fail(at, format!("metadata additionalProperties {other}"));
                        false
                    }
                };
                if ty != Some("object")
                    || scalar != *scalar_only
                    || Self::usize_of(&v, "maxProperties") != *max_props
                {
                    self.fail(
                        at,
                        format!(
                            "metadata scalar={scalar_only} max={max_props:?}, the schema says {v}"
                        ),
                    );
                }
            }
        }
    }

    fn object(&mut self, at: &str, v: &Value, obj: &Obj) {
        let root = at.is_empty();
        let mut known = vec![
            "type",
            "properties",
            "required",
            "additionalProperties",
            "minProperties",
            "dependentRequired",
        ];
        if root {
            known.push("allOf");
        }
        self.keywords(at, v, &known);
        if v["type"] != "object" || v["additionalProperties"] != Value::Bool(false) {
            self.fail(at, "a closed object in the table, not in the schema".into());
        }
        let props = v["properties"].as_object().cloned().unwrap_or_default();
        let mut schema_names: Vec<&str> = props.keys().map(String::as_str).collect();
        let mut table_names: Vec<&str> = obj.props.iter().map(|(n, _)| *n).collect();
        schema_names.sort_unstable();
        table_names.sort_unstable();
        if schema_names != table_names {
            self.fail(
                at,
                format!("properties {table_names:?}, the schema has {schema_names:?}"),
            );
        }
        let mut required: Vec<&str> = v["required"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut table_required = obj.required.to_vec();
        required.sort_unstable();
        table_required.sort_unstable();
        if required != table_required {
            self.fail(
                at,
                format!("required {table_required:?}, the schema says {required:?}"),
            );
        }
        if Self::usize_of(v, "minProperties").unwrap_or(0) != obj.min_props {
            self.fail(at, format!("minProperties {}", obj.min_props));
        }
        let mut dependent: Vec<(String, Vec<String>)> = v
            .get("dependentRequired")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, list)| {
                        let l = list
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_owned)
                                    .collect()
                            })
                            .unwrap_or_default();
                        (k.clone(), l)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut table_dependent: Vec<(String, Vec<String>)> = obj
            .dependent
            .iter()
            .map(|(k, l)| ((*k).to_owned(), l.iter().map(|s| (*s).to_owned()).collect()))
            .collect();
        dependent.sort();
        table_dependent.sort();
        if dependent != table_dependent {
            self.fail(
                at,
                format!("dependentRequired {table_dependent:?}, the schema says {dependent:?}"),
            );
        }
        for (name, node) in obj.props {
            if let Some(p) = props.get(*name) {
                self.node(&format!("{at}/{name}"), p, node);
            }
        }
    }
}

/// The differences between the table of `version` and `schema` (JSON text).
fn differences(version: SchemaVersion, schema: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(schema).expect("vendored schema is JSON");
    let empty = Map::new();
    let defs = v.get("$defs").and_then(Value::as_object).unwrap_or(&empty);
    let mut walk = Walk {
        defs,
        errors: Vec::new(),
    };
    walk.object("", &v, root_of(version));
    walk.errors
}

#[test]
fn the_rule_tables_say_what_the_vendored_schemas_say() {
    for (version, text) in FILES {
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(
            v["$id"],
            format!(
                "https://bh-healthcare.github.io/bh-audit-schema/{}/audit_event.schema.json",
                version.as_str()
            ),
        );
        let diffs = differences(version, text);
        assert!(
            diffs.is_empty(),
            "{}:\n{}",
            version.as_str(),
            diffs.join("\n")
        );
    }
}

#[test]
fn a_changed_limit_or_enum_is_found() {
    let text = FILES[2].1;
    for (from, to, expect) in [
        (
            r#""maxLength": 256"#,
            r#""maxLength": 255"#,
            "string 1..Some(256)",
        ),
        (
            r#""maxProperties": 20"#,
            r#""maxProperties": 21"#,
            "metadata",
        ),
        (r#""DENIED""#, r#""REFUSED""#, "enum"),
        (r#""maxItems": 25"#, r#""maxItems": 26"#, "array"),
    ] {
        assert!(text.contains(from), "{from}");
        let changed = text.replacen(from, to, 1);
        let diffs = differences(SchemaVersion::V2_0, &changed);
        assert!(
            diffs.iter().any(|d| d.contains(expect)),
            "{from} -> {to}: {diffs:?}"
        );
    }
    let mut v: Value = serde_json::from_str(text).unwrap();
    v["properties"]["outcome"]["required"] = serde_json::json!(["status", "error_type"]);
    v["properties"]["actor"]["properties"]["nickname"] = serde_json::json!({"type": "string"});
    let diffs = differences(SchemaVersion::V2_0, &v.to_string());
    assert!(
        diffs.iter().any(|d| d.starts_with("/outcome: required")),
        "{diffs:?}"
    );
    assert!(
        diffs.iter().any(|d| d.starts_with("/actor: properties")),
        "{diffs:?}"
    );
}
