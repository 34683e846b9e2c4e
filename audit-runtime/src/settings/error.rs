//! [`SettingsError`]: every mistake in the settings, each named by the
//! variable or key it is in and its position, never by a secret's value.

use std::fmt;
use std::ops::Range;

/// Where a setting came from: a variable, a key of the settings file, or a
/// key of a deserialized [`Settings`](super::Settings); and where in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Origin {
    /// `PHI_AUDIT_SINK`, `[phi_audit].sink[1]`, `sink`.
    setting: String,
    /// Line in the `PHI_AUDIT_CONFIG` file.
    line: Option<usize>,
    /// Number of the spec in a comma-separated list (from 1).
    spec: Option<usize>,
    /// Characters of the value (from 1, inclusive).
    chars: Option<(usize, usize)>,
}

impl Origin {
    /// An environment variable.
    pub(crate) fn env(name: &str) -> Origin {
        Origin::key(name)
    }

    /// A key of deserialized settings (or any named setting).
    pub(crate) fn key(name: &str) -> Origin {
        Origin {
            setting: name.to_owned(),
            line: None,
            spec: None,
            chars: None,
        }
    }

    #[cfg(feature = "toml")]
    /// A key of the `[phi_audit]` table of the settings file (the table
    /// itself for an empty key), on `line`.
    pub(crate) fn file(key: &str, line: usize) -> Origin {
        Origin {
            setting: if key.is_empty() {
                "[phi_audit]".to_owned()
            } else {
                format!("[phi_audit].{key}")
            },
            line: Some(line),
            spec: None,
            chars: None,
        }
    }

    /// The variable or key.
    pub(crate) fn setting(&self) -> &str {
        &self.setting
    }

    /// The `n`th spec (from 1) of a comma-separated list.
    pub(crate) fn nth(&self, n: usize) -> Origin {
        Origin {
            spec: Some(n),
            ..self.clone()
        }
    }

    #[cfg(feature = "toml")]
    /// At line `line`, column `column` (both from 1) of the settings file.
    pub(crate) fn at_line(&self, line: usize, column: usize) -> Origin {
        Origin {
            line: Some(line),
            chars: Some((column, column)),
            ..self.clone()
        }
    }

    /// At the bytes `span` of `text`, a piece that starts `base` characters
    /// into the value.
    pub(crate) fn at_chars(&self, text: &str, base: usize, span: Range<usize>) -> Origin {
        let chars_before = |at: usize| text.char_indices().take_while(|(i, _)| *i < at).count();
        let start = base + chars_before(span.start) + 1;
        let end = (base + chars_before(span.end)).max(start);
        Origin {
            chars: Some((start, end)),
            ..self.clone()
        }
    }

    /// A problem here.
    pub(crate) fn problem(&self, message: impl Into<String>) -> Problem {
        Problem {
            origin: self.clone(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.setting)?;
        let mut parts = Vec::new();
        if let Some(line) = self.line {
            parts.push(format!("line {line} of the PHI_AUDIT_CONFIG file"));
        }
        if let Some(n) = self.spec {
            parts.push(format!("sink {n}"));
        }
        match self.chars {
            Some((a, b)) if a == b => parts.push(format!("character {a}")),
            Some((a, b)) => parts.push(format!("characters {a}-{b}")),
            None => {}
        }
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

/// One mistake: the variable or key it is in, where, and what is wrong
/// (with the accepted forms). Never holds a secret's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    origin: Origin,
    message: String,
}

impl Problem {
    /// The variable (`PHI_AUDIT_SINK`), the settings file's key
    /// (`[phi_audit].sink[1]`) or the deserialized key (`sink`) at fault.
    pub fn setting(&self) -> &str {
        self.origin.setting()
    }

    /// What is wrong, and what is accepted.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

/// The phi-audit settings are wrong: every mistake found, at once.
///
/// Its messages name the variable or key, the position of the bad value and
/// the accepted forms; they never contain a key file's contents or a URL's
/// password. Its `Debug` output is the same text, so `main` returning the
/// error through `?` prints something a person can act on.
#[derive(Clone, PartialEq, Eq)]
pub struct SettingsError {
    problems: Vec<Problem>,
}

impl SettingsError {
    pub(crate) fn new(problems: Vec<Problem>) -> SettingsError {
        SettingsError { problems }
    }

    /// Every mistake, in the order of the settings.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid phi-audit settings: {one}"),
            all => {
                write!(f, "invalid phi-audit settings ({} problems):", all.len())?;
                for p in all {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Debug for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for SettingsError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_characters() {
        let o = Origin::env("PHI_AUDIT_SINK").nth(2);
        let p = o.at_chars("é:x", 4, 3..4).problem("bad");
        assert_eq!(p.to_string(), "PHI_AUDIT_SINK (sink 2, character 7): bad");
        #[cfg(feature = "toml")]
        let p = Origin::file("sink[1]", 7)
            .at_chars("abcdef", 0, 1..4)
            .problem("x");
        #[cfg(feature = "toml")]
        assert_eq!(
            p.to_string(),
            "[phi_audit].sink[1] (line 7 of the PHI_AUDIT_CONFIG file, characters 2-4): x"
        );
        // A span inside a character still gives a position.
        let p = Origin::key("sink").at_chars("é", 0, 1..2).problem("x");
        assert_eq!(p.to_string(), "sink (character 2): x");
    }
}
