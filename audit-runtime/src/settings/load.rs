//! Where settings come from: environment variables, the `[phi_audit]` table
//! of the `PHI_AUDIT_CONFIG` file, or a deserialized struct. Each source
//! becomes a [`Layer`] of values that remember their origin; the layers
//! merge (the environment over the file) and [`build`] checks the result,
//! collecting every problem.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use super::error::{Origin, Problem};
use super::spec::{self, SinkKind, SinkSpec};
use super::{Origins, Settings};
use crate::model::event::SchemaVersion;

/// The prefix of every variable.
const PREFIX: &str = "PHI_AUDIT_";

/// The variables, by the setting they carry.
pub(crate) const SERVICE: &str = "PHI_AUDIT_SERVICE";
pub(crate) const ENVIRONMENT: &str = "PHI_AUDIT_ENVIRONMENT";
pub(crate) const VERSION: &str = "PHI_AUDIT_VERSION";
pub(crate) const SCHEMA: &str = "PHI_AUDIT_SCHEMA";
pub(crate) const PSEUDONYM_KEY_FILE: &str = "PHI_AUDIT_PSEUDONYM_KEY_FILE";
pub(crate) const SINK: &str = "PHI_AUDIT_SINK";
pub(crate) const CONFIG: &str = "PHI_AUDIT_CONFIG";

const VARS: [&str; 7] = [
    SERVICE,
    ENVIRONMENT,
    VERSION,
    SCHEMA,
    PSEUDONYM_KEY_FILE,
    SINK,
    CONFIG,
];

#[cfg(feature = "toml")]
/// The keys of the `[phi_audit]` table and of a deserialized [`Settings`].
pub(crate) const KEYS: &str = "service, environment, version, schema, pseudonym_key_file, sink";

/// One value and where it came from.
pub(crate) struct Val<T> {
    pub(crate) value: T,
    pub(crate) origin: Origin,
}

/// One sink spec's text, `base` characters into the value it came from.
pub(crate) struct Piece {
    text: String,
    base: usize,
    origin: Origin,
}

impl Piece {
    /// A whole value holding one spec.
    pub(crate) fn whole(text: &str, origin: Origin) -> Piece {
        Piece {
            text: text.trim().to_owned(),
            base: text.len() - text.trim_start().len(),
            origin,
        }
    }
}

/// The settings one source gives; `None` where it says nothing.
#[derive(Default)]
pub(crate) struct Layer {
    pub(crate) service: Option<Val<String>>,
    pub(crate) environment: Option<Val<String>>,
    pub(crate) version: Option<Val<String>>,
    pub(crate) schema: Option<Val<String>>,
    pub(crate) pseudonym_key_file: Option<Val<PathBuf>>,
    pub(crate) sink: Option<Vec<Piece>>,
}

impl Layer {
    /// This layer with every setting `over` gives replaced.
    fn overridden_by(self, over: Layer) -> Layer {
        Layer {
            service: over.service.or(self.service),
            environment: over.environment.or(self.environment),
            version: over.version.or(self.version),
            schema: over.schema.or(self.schema),
            pseudonym_key_file: over.pseudonym_key_file.or(self.pseudonym_key_file),
            sink: over.sink.or(self.sink),
        }
    }
}

/// The specs of a comma-separated list, each with its number and position.
pub(crate) fn pieces(value: &str, origin: &Origin) -> Vec<Piece> {
    let many = value.contains(',');
    let mut out = Vec::new();
    let mut at = 0;
    for (n, part) in value.split(',').enumerate() {
        let lead = part.len() - part.trim_start().len();
        out.push(Piece {
            text: part.trim().to_owned(),
            base: value[..at + lead].chars().count(),
            origin: if many {
                origin.nth(n + 1)
            } else {
                origin.clone()
            },
        });
        at += part.len() + 1;
    }
    out
}

/// Checks `layer` into settings. The settings hold what could be read even
/// when there are problems (for further checks); use them only when there
/// are none.
/// `missing_service` is reported when no service is given (`None`: say
/// nothing, the file that may hold it could not be read).
pub(crate) fn build(layer: Layer, missing_service: Option<Problem>) -> (Settings, Vec<Problem>) {
    let mut problems = Vec::new();
    let service_missing = layer.service.is_none();
    if service_missing {
        problems.extend(missing_service);
    }
    let schema = match &layer.schema {
        None => SchemaVersion::default(),
        Some(v) => SchemaVersion::from_str(v.value.trim()).unwrap_or_else(|| {
            problems.push(v.origin.problem("must be one of 1.0, 1.1, 2.0"));
            SchemaVersion::default()
        }),
    };
    let mut sinks = Vec::new();
    let mut sink_origins = Vec::new();
    match layer.sink {
        None => {
            sinks.push(SinkSpec::new(SinkKind::Stdout));
            sink_origins.push(Origin::key("sink"));
        }
        Some(pieces) if pieces.is_empty() => problems.push(Origin::key("sink").problem(format!(
            "lists no sink; accepted: one or more of {}",
            spec::ACCEPTED_FORMS
        ))),
        Some(pieces) => {
            for p in pieces {
                match spec::parse(&p.text) {
                    Ok(s) => {
                        sinks.push(s);
                        sink_origins.push(p.origin);
                    }
                    Err(errors) => problems.extend(errors.into_iter().map(|e| {
                        p.origin
                            .at_chars(&p.text, p.base, e.span)
                            .problem(e.message)
                    })),
                }
            }
        }
    }
    let origin = |v: &Option<Val<_>>, name: &str| {
        v.as_ref()
            .map_or_else(|| Origin::key(name), |v| v.origin.clone())
    };
    let origins = Origins {
        service: origin(&layer.service, "service"),
        environment: origin(&layer.environment, "environment"),
        version: origin(&layer.version, "version"),
        pseudonym_key_file: layer
            .pseudonym_key_file
            .as_ref()
            .map_or_else(|| Origin::key("pseudonym_key_file"), |v| v.origin.clone()),
        sinks: sink_origins,
    };
    let settings = Settings {
        service: layer.service.map(|v| v.value).unwrap_or_default(),
        environment: layer.environment.map(|v| v.value),
        version: layer.version.map(|v| v.value),
        schema,
        pseudonym_key_file: layer.pseudonym_key_file.map(|v| v.value),
        sinks,
        origins,
    };
    problems.extend(settings.check(service_missing, true));
    (settings, problems)
}

/// Settings from environment variables (and the file `PHI_AUDIT_CONFIG`
/// names), with every problem found.
pub(crate) fn from_vars<I, K, V>(vars: I) -> (Settings, Vec<Problem>)
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut problems = Vec::new();
    let mut found: BTreeMap<&'static str, OsString> = BTreeMap::new();
    let mut strays: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in vars {
        let Some(name) = k.as_ref().to_str() else {
            continue;
        };
        let Some(suffix) = name.strip_prefix(PREFIX) else {
            continue;
        };
        match VARS.iter().find(|n| n[PREFIX.len()..] == *suffix) {
            Some(known) => {
                found.insert(known, v.as_ref().to_owned());
            }
            None => {
                if let Some(message) = stray(suffix) {
                    strays.insert(name.to_owned(), message);
                }
            }
        }
    }
    problems.extend(strays.iter().map(|(n, m)| Origin::env(n).problem(m)));
    // An empty variable counts as unset.
    found.retain(|_, v| !v.is_empty());

    let mut text = |name: &'static str| -> Option<Val<String>> {
        let v = found.get(name)?;
        match v.to_str() {
            Some(s) => Some(Val {
                value: s.to_owned(),
                origin: Origin::env(name),
            }),
            None => {
                problems.push(Origin::env(name).problem("is not valid UTF-8"));
                None
            }
        }
    };
    let env = Layer {
        service: text(SERVICE),
        environment: text(ENVIRONMENT),
        version: text(VERSION),
        schema: text(SCHEMA),
        sink: text(SINK).map(|v| pieces(&v.value, &v.origin)),
        pseudonym_key_file: found.get(PSEUDONYM_KEY_FILE).map(|v| Val {
            value: PathBuf::from(v),
            origin: Origin::env(PSEUDONYM_KEY_FILE),
        }),
    };
    let file = found.get(CONFIG).map(|path| {
        let before = problems.len();
        let layer = read_file(path.as_ref(), &mut problems);
        (layer, problems.len() == before)
    });
    let missing = match &file {
        None => Some("is not set: the service's name is required (1 to 128 characters)"),
        Some((_, true)) => Some(
            "is not set, and the PHI_AUDIT_CONFIG file's [phi_audit] table has no `service`: \
             the service's name is required (1 to 128 characters)",
        ),
        // The file may hold it: its problems say what to fix first.
        Some((_, false)) => None,
    }
    .map(|m| Origin::env(SERVICE).problem(m));
    let layer = file.map(|(l, _)| l).unwrap_or_default().overridden_by(env);
    let (settings, more) = build(layer, missing);
    problems.extend(more);
    (settings, problems)
}

/// What is wrong with `PHI_AUDIT_<suffix>`, an unknown variable: a secret in
/// the environment, or a near miss of a known name.
fn stray(suffix: &str) -> Option<String> {
    if suffix == "PSEUDONYM_KEY" {
        return Some(
            "would put the pseudonym key itself in the environment: write the key to a file \
             and set PHI_AUDIT_PSEUDONYM_KEY_FILE to its path"
                .into(),
        );
    }
    if !suffix
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return None;
    }
    let near = VARS.iter().find(|known| {
        let k = &known[PREFIX.len()..];
        distance(k, suffix) <= 2
            || (suffix.len() >= 3 && (k.starts_with(suffix) || suffix.starts_with(k)))
    })?;
    Some(format!("is not a phi-audit variable: did you mean {near}?"))
}

/// Levenshtein distance of two short ASCII names.
fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Largest settings file read.
#[cfg(feature = "toml")]
const MAX_FILE: u64 = 1 << 20;

#[cfg(not(feature = "toml"))]
fn read_file(_path: &std::path::Path, problems: &mut Vec<Problem>) -> Layer {
    problems.push(Origin::env(CONFIG).problem(
        "reading a settings file needs the `toml` feature of phi-audit (on by default): \
         depend on phi-audit with its default features, or features = [\"toml\"]",
    ));
    Layer::default()
}

/// The `[phi_audit]` table of the TOML file at `path`.
#[cfg(feature = "toml")]
fn read_file(path: &std::path::Path, problems: &mut Vec<Problem>) -> Layer {
    use std::io::Read;
    use toml::de::{DeTable, DeValue};

    let origin = Origin::env(CONFIG);
    let read = || -> Result<String, String> {
        let f = std::fs::File::open(path).map_err(|e| format!("cannot open the file: {e}"))?;
        let meta = f
            .metadata()
            .map_err(|e| format!("cannot read the file: {e}"))?;
        if !meta.is_file() {
            return Err("is not a regular file".into());
        }
        let mut text = String::new();
        f.take(MAX_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read the file: {e}"))?;
        if text.len() as u64 > MAX_FILE {
            return Err("the file is larger than 1 MiB: not a settings file".into());
        }
        Ok(text)
    };
    let text = match read() {
        Ok(t) => t,
        Err(m) => {
            problems.push(origin.problem(m));
            return Layer::default();
        }
    };
    let line_col = |at: usize| {
        let before = &text[..at.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    };
    let doc = match DeTable::parse(&text) {
        Ok(d) => d,
        Err(e) => {
            let (line, column) = e.span().map_or((1, 1), |s| line_col(s.start));
            // The message says what was expected; it never quotes the file.
            problems.push(
                origin
                    .at_line(line, column)
                    .problem(format!("not valid TOML: {}", e.message())),
            );
            return Layer::default();
        }
    };
    let Some((_, table)) = doc
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == "phi_audit")
    else {
        problems.push(origin.problem(format!(
            "the file has no [phi_audit] table: put the settings ({KEYS}) under `[phi_audit]`"
        )));
        return Layer::default();
    };
    let DeValue::Table(table) = table.get_ref() else {
        let (line, column) = line_col(table.span().start);
        problems.push(
            origin
                .at_line(line, column)
                .problem("`phi_audit` must be a table: `[phi_audit]`"),
        );
        return Layer::default();
    };
    let mut layer = Layer::default();
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(_, v)| v.span().start);
    for (key, value) in entries {
        let name: &str = key.get_ref().as_ref();
        let line = line_col(value.span().start).0;
        let o = Origin::file(name, line);
        let string = |problems: &mut Vec<Problem>| match value.get_ref() {
            DeValue::String(s) => Some(Val {
                value: s.to_string(),
                origin: o.clone(),
            }),
            DeValue::Float(_) if name == "schema" => {
                problems.push(o.problem("write the version as a string: schema = \"1.1\""));
                None
            }
            _ => {
                problems.push(o.problem("must be a string"));
                None
            }
        };
        match name {
            "service" => layer.service = string(problems),
            "environment" => layer.environment = string(problems),
            "version" => layer.version = string(problems),
            "schema" => layer.schema = string(problems),
            "pseudonym_key_file" => {
                layer.pseudonym_key_file = string(problems).map(|v| Val {
                    value: PathBuf::from(v.value),
                    origin: v.origin,
                });
            }
            "sink" => match value.get_ref() {
                DeValue::String(s) => layer.sink = Some(pieces(s, &o)),
                DeValue::Array(items) => {
                    let mut list = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        let o = Origin::file(&format!("sink[{i}]"), line_col(item.span().start).0);
                        match item.get_ref() {
                            DeValue::String(s) => list.push(Piece::whole(s, o)),
                            _ => problems.push(o.problem("must be a string: one sink spec")),
                        }
                    }
                    layer.sink = Some(list);
                }
                _ => problems.push(o.problem(
                    "must be a string of comma-separated sink specs or an array of sink specs",
                )),
            },
            _ => {
                let (o, what) = match spec_word(name) {
                    Some(_) => (o, "unknown key".to_owned()),
                    None => (Origin::file("", line), "an unknown key".to_owned()),
                };
                problems.push(o.problem(format!("{what}; accepted: {KEYS}")));
            }
        }
    }
    layer
}

/// `name` when it can be shown in a message as it is.
#[cfg(feature = "toml")]
fn spec_word(name: &str) -> Option<&str> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ok.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses() {
        assert!(stray("SINKS").unwrap().contains("PHI_AUDIT_SINK"));
        assert!(stray("ENV").unwrap().contains("PHI_AUDIT_ENVIRONMENT"));
        assert!(stray("SERVCE").unwrap().contains("PHI_AUDIT_SERVICE"));
        assert!(stray("PSEUDONYM_KEY").unwrap().contains("KEY_FILE"));
        // The project's own test variables are not near misses.
        assert_eq!(stray("PG_URL"), None);
        assert_eq!(stray("REF_PYTHON"), None);
        assert_eq!(stray("NATS_URL"), None);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn pieces_keep_positions() {
        let p = pieces(" stdout , jsonl:/a", &Origin::env(SINK));
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].text.as_str(), p[0].base), ("stdout", 1));
        assert_eq!((p[1].text.as_str(), p[1].base), ("jsonl:/a", 10));
    }
}
