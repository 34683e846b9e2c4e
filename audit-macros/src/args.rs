//! Parsing and checking of the `#[audited(...)]` arguments.
//!
//! Syntax is parsed loosely (`key = expr` or `key(...)`), then every argument
//! is checked on its own so that one compile reports every mistake.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, Lit, LitStr, Path, Token};

use crate::phi::{Place, Taint};
use crate::Errors;

/// The schema's action types, as the attribute spells them, with the runtime
/// variant each maps to.
pub const ACTIONS: &[(&str, &str)] = &[
    ("READ", "Read"),
    ("CREATE", "Create"),
    ("UPDATE", "Update"),
    ("DELETE", "Delete"),
    ("EXPORT", "Export"),
    ("LOGIN", "Login"),
    ("LOGOUT", "Logout"),
    ("PRINT", "Print"),
    ("OVERRIDE", "Override"),
    ("OTHER", "Other"),
];

/// The schema's data classifications.
pub const CLASSIFICATIONS: &[(&str, &str)] = &[
    ("PHI", "Phi"),
    ("PII", "Pii"),
    ("NONE", "None"),
    ("UNKNOWN", "Unknown"),
];

const KEYS: &[&str] = &[
    "action",
    "resource",
    "id",
    "patient",
    "actor",
    "name",
    "classification",
    "phi_touched",
    "metadata",
    "crate",
];

/// Most metadata keys one event can carry (bh-audit-schema).
pub const MAX_METADATA: usize = 20;
/// Longest metadata key accepted.
pub const MAX_KEY_LEN: usize = 64;

/// A value that is stored in the event: a plain expression, or
/// `pseudonym(expr)` (a keyed token of the value).
pub enum Value {
    Plain(Expr),
    Pseudonym { call: Expr, inner: Expr },
}

impl Value {
    fn new(expr: Expr) -> Value {
        if let Expr::Call(call) = &expr {
            if let Expr::Path(p) = &*call.func {
                if p.qself.is_none() && p.path.is_ident("pseudonym") && call.args.len() == 1 {
                    let inner = call.args[0].clone();
                    return Value::Pseudonym { call: expr, inner };
                }
            }
        }
        Value::Plain(expr)
    }

    /// The whole expression as written.
    pub fn expr(&self) -> &Expr {
        match self {
            Value::Plain(e) => e,
            Value::Pseudonym { call, .. } => call,
        }
    }
}

/// One `key = value` of `metadata(...)`.
pub struct MetaArg {
    pub key_str: String,
    pub value: Value,
}

/// A checked `#[audited(...)]`.
pub struct Args {
    /// Runtime variant name of the action type (`Read`).
    pub action: Option<Ident>,
    pub resource: Option<LitStr>,
    pub id: Option<Value>,
    pub patient: Option<Value>,
    pub actor: Option<Expr>,
    pub name: Option<LitStr>,
    /// Runtime variant name of the classification (`Phi`).
    pub classification: Option<Ident>,
    pub phi_touched: Option<bool>,
    pub metadata: Vec<MetaArg>,
    pub krate: Option<Path>,
}

/// Where parsing reports to: the accumulated errors, and the taint of the
/// function's `#[phi]` parameters, checked against each expression as it is
/// read so that errors come out in source order.
struct Ctx<'a> {
    errors: &'a mut Errors,
    taint: &'a mut Taint,
}

impl Ctx<'_> {
    /// A tagged parameter in `expr`, which goes to `place`: report it.
    fn check(&mut self, expr: &Expr, place: &Place) {
        self.taint.check(expr.to_token_stream(), place, self.errors);
    }

    /// `expr` is where a literal belongs. If it mentions a tagged parameter,
    /// that is the error that helps; otherwise `e`.
    fn misplaced(&mut self, key: &'static str, expr: &Expr, e: syn::Error) {
        if self.taint.mentions(expr.to_token_stream()).is_empty() {
            self.errors.push(e);
        } else {
            self.check(expr, &Place::NotStored(key));
        }
    }

    fn value(&mut self, arg: &'static str, value: &Value) {
        if let Value::Plain(Expr::Call(call)) = value {
            if matches!(&*call.func, Expr::Path(p) if p.qself.is_none() && p.path.is_ident("pseudonym"))
            {
                self.errors.push(syn::Error::new_spanned(
                    call,
                    format!(
                        "`pseudonym(..)` takes exactly one value, here it has {}: write `pseudonym(value)`",
                        call.args.len()
                    ),
                ));
                return;
            }
        }
        if let Value::Plain(e) = value {
            let expr = matches!(e, Expr::Path(_) | Expr::Field(_) | Expr::Reference(_))
                .then(|| compact(e));
            self.check(e, &Place::Attribute { arg, expr });
        }
    }
}

/// An expression as a user would write it (`self.mrn`, not `self . mrn`).
fn compact(e: &Expr) -> String {
    let mut s = String::new();
    for tt in e.to_token_stream() {
        s.push_str(&tt.to_string());
    }
    s
}

/// One argument as written, before checking.
enum RawArg {
    Assign {
        key: Ident,
        value: Expr,
    },
    List {
        key: Ident,
        items: Punctuated<MetaItem, Token![,]>,
    },
    Bare {
        key: Ident,
    },
}

struct MetaItem {
    key: Ident,
    value: Expr,
}

impl Parse for MetaItem {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key = Ident::parse_any(input)?;
        if !input.peek(Token![=]) {
            return Err(syn::Error::new(
                key.span(),
                format!(
                    "expected `{key} = <expression>` in `metadata(..)`, e.g. `metadata({key} = {key})`"
                ),
            ));
        }
        input.parse::<Token![=]>()?;
        let value = input.parse()?;
        Ok(MetaItem { key, value })
    }
}

/// One `key = value` of `record!(..)`.
pub struct RecordItem {
    pub key: Ident,
    pub value: Expr,
}

impl Parse for RecordItem {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key = Ident::parse_any(input)?;
        if !input.peek(Token![=]) {
            return Err(syn::Error::new(
                key.span(),
                format!(
                    "expected `{key} = <expression>` in `record!(..)`, e.g. `record!({key} = {key})`"
                ),
            ));
        }
        input.parse::<Token![=]>()?;
        let value = input.parse()?;
        Ok(RecordItem { key, value })
    }
}

impl Parse for RawArg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let key = Ident::parse_any(input)?;
        if !(input.is_empty()
            || input.peek(Token![,])
            || input.peek(Token![=])
            || input.peek(syn::token::Paren))
        {
            let k = key.unraw().to_string();
            return Err(syn::Error::new(
                input.span(),
                format!("expected `=` after `{k}`: write `{k} = {}`", example(&k)),
            ));
        }
        if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            let value = input.parse()?;
            Ok(RawArg::Assign { key, value })
        } else if input.peek(syn::token::Paren) {
            let content;
            syn::parenthesized!(content in input);
            let items = content.parse_terminated(MetaItem::parse, Token![,])?;
            Ok(RawArg::List { key, items })
        } else {
            Ok(RawArg::Bare { key })
        }
    }
}

struct RawArgs(Punctuated<RawArg, Token![,]>);

impl Parse for RawArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        Ok(RawArgs(Punctuated::parse_terminated(input)?))
    }
}

/// Parses and checks the attribute arguments. Syntax errors end parsing;
/// every other mistake is added to `errors` and parsing goes on.
pub fn parse(tokens: TokenStream, taint: &mut Taint, errors: &mut Errors) -> Args {
    let mut cx = Ctx { errors, taint };
    let cx = &mut cx;
    let mut args = Args {
        action: None,
        resource: None,
        id: None,
        patient: None,
        actor: None,
        name: None,
        classification: None,
        phi_touched: None,
        metadata: Vec::new(),
        krate: None,
    };
    let raw = match syn::parse2::<RawArgs>(tokens) {
        Ok(r) => r.0,
        Err(e) => {
            cx.errors.push(e);
            return args;
        }
    };
    let mut seen: Vec<String> = Vec::new();
    let mut action_given = false;
    let mut resource_given = false;
    for arg in raw {
        let key = match &arg {
            RawArg::Assign { key, .. } | RawArg::List { key, .. } | RawArg::Bare { key } => {
                key.clone()
            }
        };
        let k = key.unraw().to_string();
        if !KEYS.contains(&k.as_str()) {
            let mut msg = format!("unknown argument `{k}` of #[audited]");
            if let Some(s) = suggest(&k, KEYS.iter().copied(), false) {
                msg.push_str(&format!("; did you mean `{s}`?"));
            }
            msg.push_str(&format!("\nvalid arguments: {}", KEYS.join(", ")));
            cx.errors.push(syn::Error::new(key.span(), msg));
            continue;
        }
        if seen.contains(&k) {
            cx.errors.push(syn::Error::new(
                key.span(),
                format!("`{k}` is given more than once; give each argument at most once"),
            ));
            continue;
        }
        seen.push(k.clone());
        if k == "action" {
            action_given = true;
        }
        if k == "resource" {
            resource_given = true;
        }
        match (k.as_str(), arg) {
            ("metadata", RawArg::List { items, .. }) => check_metadata(items, &mut args, cx),
            ("metadata", _) => cx.errors.push(syn::Error::new(
                key.span(),
                "expected `metadata(key = <expression>, ..)`",
            )),
            (_, RawArg::Assign { value, .. }) => assign(&k, &key, value, &mut args, cx),
            (_, _) => cx.errors.push(syn::Error::new(
                key.span(),
                format!("expected `{k} = {}`", example(&k)),
            )),
        }
    }
    if !action_given {
        cx.errors.push(syn::Error::new(
            Span::call_site(),
            format!(
                "#[audited] needs `action = \"..\"`, one of {}",
                quoted_list(ACTIONS.iter().map(|a| a.0))
            ),
        ));
    }
    if !resource_given {
        cx.errors.push(syn::Error::new(
            Span::call_site(),
            "#[audited] needs `resource = \"..\"`, the resource type (e.g. `resource = \"Patient\"`)",
        ));
    }
    args
}

/// An example value of argument `key`, for error messages.
pub fn example(key: &str) -> &'static str {
    match key {
        "action" => "\"READ\"",
        "resource" => "\"Patient\"",
        "name" => "\"read_chart\"",
        "classification" => "\"PHI\"",
        "phi_touched" => "true",
        "crate" => "::phi_audit",
        _ => "<expression>",
    }
}

fn assign(k: &str, key: &Ident, value: Expr, args: &mut Args, cx: &mut Ctx<'_>) {
    match k {
        "action" => {
            if let Some(lit) = string_lit(k, &value, cx) {
                args.action = enum_value(&lit, "action type", ACTIONS, cx.errors);
            }
        }
        "classification" => {
            if let Some(lit) = string_lit(k, &value, cx) {
                args.classification =
                    enum_value(&lit, "classification", CLASSIFICATIONS, cx.errors);
            }
        }
        "resource" | "name" => {
            if let Some(lit) = string_lit(k, &value, cx) {
                let n = lit.value().chars().count();
                if lit.value().chars().any(is_bad_char) {
                    cx.errors.push(syn::Error::new(
                        lit.span(),
                        format!(
                            "`{k}` must not hold control, bidirectional-formatting or line-separator characters: readers of the audit trail would be misled by them"
                        ),
                    ));
                } else if n == 0 || n > 128 {
                    cx.errors.push(syn::Error::new(
                        lit.span(),
                        format!(
                            "`{k}` must be 1 to 128 characters long (bh-audit-schema), this one has {n}"
                        ),
                    ));
                } else if k == "resource" {
                    args.resource = Some(lit);
                } else {
                    args.name = Some(lit);
                }
            }
        }
        "phi_touched" => match &value {
            Expr::Lit(syn::ExprLit {
                lit: Lit::Bool(b), ..
            }) => args.phi_touched = Some(b.value),
            other => {
                let e = syn::Error::new_spanned(
                    other,
                    "`phi_touched` must be `true` or `false`: it is a constant of the call site",
                );
                cx.misplaced("phi_touched", &value, e);
            }
        },
        "id" => {
            let v = Value::new(value);
            cx.value("id", &v);
            args.id = Some(v);
        }
        "patient" => {
            let v = Value::new(value);
            cx.value("patient", &v);
            args.patient = Some(v);
        }
        "actor" => {
            if let Value::Pseudonym { call, .. } = Value::new(value.clone()) {
                cx.errors.push(syn::Error::new_spanned(
                    call,
                    "`actor` cannot be a pseudonym: `pseudonym(..)` is for `id`, `patient` and `metadata(..)`\nhelp: give the actor's own identifier, or leave `actor` out to use the request context's actor",
                ));
            } else {
                cx.check(&value, &Place::Actor);
                args.actor = Some(value);
            }
        }
        "crate" => match value {
            Expr::Path(p) if p.qself.is_none() => args.krate = Some(p.path),
            other => cx.errors.push(syn::Error::new_spanned(
                other,
                "`crate` must be a path to the phi-audit crate, e.g. `crate = ::my_audit`",
            )),
        },
        _ => cx
            .errors
            .push(syn::Error::new(key.span(), "unexpected argument")),
    }
}

fn string_lit(k: &str, value: &Expr, cx: &mut Ctx<'_>) -> Option<LitStr> {
    if let Expr::Lit(syn::ExprLit {
        lit: Lit::Str(s), ..
    }) = value
    {
        return Some(s.clone());
    }
    let e = syn::Error::new_spanned(
        value,
        format!(
            "`{k}` must be a string literal, e.g. `{k} = {}`: it is a constant of the call site, stored once as static data",
            example(k)
        ),
    );
    let k = KEYS.iter().copied().find(|s| *s == k).unwrap_or("argument");
    cx.misplaced(k, value, e);
    None
}

fn enum_value(
    lit: &LitStr,
    what: &str,
    table: &[(&str, &str)],
    errors: &mut Errors,
) -> Option<Ident> {
    let v = lit.value();
    if let Some((_, variant)) = table.iter().find(|(s, _)| *s == v) {
        return Some(Ident::new(variant, lit.span()));
    }
    let mut msg = format!("unknown {what} \"{v}\"");
    if let Some(s) = suggest(&v, table.iter().map(|t| t.0), true) {
        msg.push_str(&format!("; did you mean \"{s}\"?"));
    }
    msg.push_str(&format!(
        "\nvalid values: {}",
        quoted_list(table.iter().map(|t| t.0))
    ));
    errors.push(syn::Error::new(lit.span(), msg));
    None
}

fn quoted_list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_metadata(items: Punctuated<MetaItem, Token![,]>, args: &mut Args, cx: &mut Ctx<'_>) {
    let mut count = 0usize;
    for item in items {
        count += 1;
        let key_str = item.key.unraw().to_string();
        if count == MAX_METADATA + 1 {
            cx.errors.push(syn::Error::new(
                item.key.span(),
                format!(
                    "too many metadata keys: an event carries at most {MAX_METADATA} (bh-audit-schema)"
                ),
            ));
        }
        if let Some(problem) = key_problem(&key_str) {
            cx.errors.push(syn::Error::new(
                item.key.span(),
                format!("invalid metadata key `{key_str}`: {problem}"),
            ));
        } else if args.metadata.iter().any(|m| m.key_str == key_str) {
            cx.errors.push(syn::Error::new(
                item.key.span(),
                format!("metadata key `{key_str}` is given more than once"),
            ));
            continue;
        }
        let value = Value::new(item.value);
        cx.value("metadata(..)", &value);
        args.metadata.push(MetaArg { key_str, value });
    }
}

/// Characters no event holds (as the runtime decides): C0 and C1 controls,
/// DEL, bidirectional formatting, line and paragraph separators.
pub fn is_bad_char(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{61c}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

/// Why `key` cannot be a metadata key, if it cannot.
pub fn key_problem(key: &str) -> Option<String> {
    if !key.is_ascii() {
        return Some("keys are ASCII letters, digits and `_`".to_string());
    }
    if key.len() > MAX_KEY_LEN {
        return Some(format!(
            "keys are at most {MAX_KEY_LEN} characters, this one has {}",
            key.len()
        ));
    }
    None
}

/// The nearest of `candidates` to `input`: an exact match ignoring case, or
/// the closest by edit distance when it is close enough.
pub fn suggest<'a>(
    input: &str,
    candidates: impl Iterator<Item = &'a str> + Clone,
    upper: bool,
) -> Option<&'a str> {
    let norm = |s: &str| {
        if upper {
            s.to_ascii_uppercase()
        } else {
            s.to_ascii_lowercase()
        }
    };
    let wanted = norm(input.trim());
    if let Some(c) = candidates.clone().find(|c| norm(c) == wanted) {
        return Some(c);
    }
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = distance(&wanted, &norm(c));
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    let (d, c) = best?;
    let limit = (wanted.chars().count().max(c.len()) / 3).max(1);
    (d <= limit).then_some(c)
}

/// Levenshtein distance over characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

impl ToTokens for Value {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        self.expr().to_tokens(tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions() -> impl Iterator<Item = &'static str> + Clone {
        ACTIONS.iter().map(|a| a.0)
    }

    #[test]
    fn suggests_the_schema_spelling() {
        assert_eq!(suggest("Read", actions(), true), Some("READ"));
        assert_eq!(suggest("read", actions(), true), Some("READ"));
        assert_eq!(suggest("VIEW", actions(), true), None);
        assert_eq!(suggest("DELET", actions(), true), Some("DELETE"));
        assert_eq!(suggest("UPDTAE", actions(), true), Some("UPDATE"));
        assert_eq!(suggest("EXPROT", actions(), true), Some("EXPORT"));
        assert_eq!(
            suggest("phi", CLASSIFICATIONS.iter().map(|c| c.0), true),
            Some("PHI")
        );
        assert_eq!(
            suggest("metdata", KEYS.iter().copied(), false),
            Some("metadata")
        );
        assert_eq!(
            suggest("patient_id", KEYS.iter().copied(), false),
            Some("patient")
        );
        assert_eq!(
            suggest("resource_id", KEYS.iter().copied(), false),
            Some("resource")
        );
        assert_eq!(suggest("zzz", KEYS.iter().copied(), false), None);
    }

    #[test]
    fn edit_distance() {
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("same", "same"), 0);
    }

    #[test]
    fn metadata_keys() {
        assert!(key_problem("reason").is_none());
        assert!(key_problem("raison_d_être").is_some());
        assert!(key_problem(&"k".repeat(65)).is_some());
    }
}
