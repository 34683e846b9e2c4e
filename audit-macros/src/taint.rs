//! `#[phi]` and `Phi<T>` parameters and every place their values could reach
//! the event.
//!
//! The check is syntactic and conservative: a tagged parameter (`#[phi]`, or
//! a type that mentions `Phi<..>`: `Phi<T>`, `&Phi<T>`, `Option<Phi<T>>`,
//! `Box<Phi<T>>`, ...), or any binding whose value may come from one, must
//! not be mentioned in an attribute expression (outside `pseudonym(..)`) or
//! in a `record!` in the body. Taint follows `let` (with destructuring and
//! shadowing), `match`, `if let`, `for`, assignments, mutating method calls
//! and closures. The type wall (`Phi<T>` implements neither `MetadataValue`
//! nor `AuditId`) stands behind it.
//!
//! `record!` is only ever expanded here: every `record!(..)` (or
//! `phi_audit::record!(..)`) in the body's own code is rewritten to the
//! runtime call, where the check has seen its values; the public macro,
//! anywhere else, is a compile error.

use std::collections::BTreeMap;

use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::visit::Visit;
use syn::{Attribute, Block, Expr, FnArg, Ident, Pat, Signature};

use crate::ast::Key;
use crate::Errors;

/// Where a tainted name comes from.
#[derive(Clone)]
struct Origin {
    /// The `#[phi]` or `Phi<T>` parameter.
    param: String,
    /// Its `#[phi]` tag, or its type.
    tag: TokenStream,
    /// Tainted by its type (`Phi<..>`), not by a tag.
    by_type: bool,
}

/// The tainted names of one function.
#[derive(Default)]
pub struct Taint {
    names: BTreeMap<String, Origin>,
    /// Tags already pointed at in an error.
    noted: Vec<String>,
}

/// The taint of `.expose()` / `.expose_mut()` (and `Phi::expose(..)`): the
/// accessors that take a value out of a `Phi<T>`, wherever the `Phi` came
/// from (a struct field, a return value). Not an identifier, so it never
/// collides with a binding's name.
const EXPOSE: &str = "<expose>";

fn is_phi_attr(attr: &Attribute) -> bool {
    attr.path().is_ident("phi")
}

/// Whether `ty` mentions `Phi<..>` anywhere (`&Phi<T>`, `Option<Phi<T>>`,
/// `Box<Phi<T>>`, `Vec<Phi<T>>`, `(u32, Phi<T>)`, ...).
pub fn mentions_phi_type(ty: &syn::Type) -> bool {
    struct Finder(bool);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_path_segment(&mut self, seg: &'ast syn::PathSegment) {
            if seg.ident == "Phi" {
                self.0 = true;
            }
            syn::visit::visit_path_segment(self, seg);
        }
    }
    let mut f = Finder(false);
    f.visit_type(ty);
    f.0
}

/// Removes `#[phi]` from the parameters of `sig` and returns the taint of
/// every binding they introduce, and of every binding of a parameter whose
/// type mentions `Phi<..>`. Misused tags are reported.
pub fn take_tags(sig: &mut Signature, errors: &mut Errors) -> Taint {
    let mut taint = Taint::default();
    for input in sig.inputs.iter_mut() {
        let (attrs, bindings, phi_type) = match input {
            FnArg::Receiver(r) => {
                let b = vec![Ident::new("self", Span::call_site())];
                let phi_type = r.colon_token.is_some() && mentions_phi_type(&r.ty);
                let ty = phi_type.then(|| r.ty.to_token_stream());
                (&mut r.attrs, b, ty)
            }
            FnArg::Typed(t) => {
                let mut b = Vec::new();
                bindings(&t.pat, &mut b);
                let ty = mentions_phi_type(&t.ty).then(|| t.ty.to_token_stream());
                (&mut t.attrs, b, ty)
            }
        };
        let mut tag = None;
        attrs.retain(|a| {
            if is_phi_attr(a) {
                if !matches!(a.meta, syn::Meta::Path(_)) {
                    errors.push(syn::Error::new_spanned(
                        a,
                        "`#[phi]` takes no arguments: write `#[phi] name: Type`",
                    ));
                }
                tag = Some(a.to_token_stream());
                false
            } else {
                true
            }
        });
        let origin = match (tag, phi_type) {
            (Some(tag), _) => Some((tag, false)),
            (None, Some(ty)) => Some((ty, true)),
            (None, None) => None,
        };
        if let Some((tag, by_type)) = origin {
            for b in bindings {
                let name = b.to_string();
                taint.names.insert(
                    name.clone(),
                    Origin {
                        param: name,
                        tag: tag.clone(),
                        by_type,
                    },
                );
            }
        }
    }
    taint.names.insert(
        EXPOSE.to_string(),
        Origin {
            param: EXPOSE.to_string(),
            tag: TokenStream::new(),
            by_type: true,
        },
    );
    taint
}

/// Strips `#[phi]` from parameters without checking anything (for the
/// unchanged function emitted next to errors).
pub fn strip_tags(sig: &mut Signature) {
    for input in sig.inputs.iter_mut() {
        match input {
            FnArg::Receiver(r) => r.attrs.retain(|a| !is_phi_attr(a)),
            FnArg::Typed(t) => t.attrs.retain(|a| !is_phi_attr(a)),
        }
    }
}

/// The names a pattern binds (upper-case names are taken to be constants
/// and enum variants).
fn bindings(pat: &Pat, out: &mut Vec<Ident>) {
    match pat {
        Pat::Ident(p) => {
            let s = p.ident.to_string();
            if p.subpat.is_some() || !s.starts_with(|c: char| c.is_uppercase()) {
                out.push(p.ident.clone());
            }
            if let Some((_, sub)) = &p.subpat {
                bindings(sub, out);
            }
        }
        Pat::Tuple(t) => t.elems.iter().for_each(|p| bindings(p, out)),
        Pat::TupleStruct(t) => t.elems.iter().for_each(|p| bindings(p, out)),
        Pat::Struct(s) => s.fields.iter().for_each(|f| bindings(&f.pat, out)),
        Pat::Reference(r) => bindings(&r.pat, out),
        Pat::Slice(s) => s.elems.iter().for_each(|p| bindings(p, out)),
        Pat::Or(o) => o.cases.iter().for_each(|p| bindings(p, out)),
        Pat::Paren(p) => bindings(&p.pat, out),
        Pat::Type(t) => bindings(&t.pat, out),
        Pat::Verbatim(ts) => {
            // `box p` and other unparsed patterns: every lower-case ident.
            for tt in ts.clone() {
                if let TokenTree::Ident(i) = tt {
                    if i.to_string()
                        .starts_with(|c: char| c.is_lowercase() || c == '_')
                    {
                        out.push(i);
                    }
                }
            }
        }
        _ => {}
    }
}

/// A mention of a tainted name.
pub struct Mention {
    span: Span,
    name: String,
}

impl Taint {
    /// True when the function has no `#[phi]` or `Phi<T>` parameter.
    pub fn is_empty(&self) -> bool {
        self.names.keys().all(|k| k == EXPOSE)
    }

    /// Every mention of a tainted name in `tokens`. An identifier after `.`
    /// or `::` (a field, method or path segment) or before a single `:` (a
    /// field name in a struct literal) is not a mention; an inline format
    /// argument (`"{name}"`) inside a macro call is.
    pub fn mentions(&self, tokens: TokenStream) -> Vec<Mention> {
        let mut out = Vec::new();
        self.scan(tokens, false, &mut out);
        out
    }

    fn scan(&self, tokens: TokenStream, in_macro: bool, out: &mut Vec<Mention>) {
        let tts: Vec<TokenTree> = tokens.into_iter().collect();
        for (i, tt) in tts.iter().enumerate() {
            match tt {
                TokenTree::Ident(id) => {
                    let s = id.to_string();
                    let s = s.strip_prefix("r#").unwrap_or(&s);
                    let after_dot = i >= 1 && is_punct(&tts[i - 1], '.')
                        // `..name` is a range, not a field access.
                        && !(i >= 2 && is_punct(&tts[i - 2], '.'));
                    let after_path =
                        i >= 2 && is_punct(&tts[i - 1], ':') && is_punct(&tts[i - 2], ':');
                    // `x.expose()`, `Phi::expose(&x)`: a value out of a `Phi`.
                    let call_follows = matches!(tts.get(i + 1), Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Parenthesis);
                    if (s == "expose" || s == "expose_mut")
                        && (after_dot || after_path)
                        && call_follows
                        && self.names.contains_key(EXPOSE)
                    {
                        out.push(Mention {
                            span: id.span(),
                            name: EXPOSE.to_string(),
                        });
                        continue;
                    }
                    if !self.names.contains_key(s) {
                        continue;
                    }
                    let field_name =
                        is_punct_at(&tts, i + 1, ':') && !is_punct_at(&tts, i + 2, ':');
                    let macro_name = is_punct_at(&tts, i + 1, '!');
                    if !(after_dot || after_path || field_name || macro_name) {
                        out.push(Mention {
                            span: id.span(),
                            name: s.to_string(),
                        });
                    }
                }
                TokenTree::Group(g) => {
                    let mac = in_macro
                        || (i >= 1
                            && is_punct(&tts[i - 1], '!')
                            && g.delimiter() != Delimiter::Bracket);
                    self.scan(g.stream(), mac, out);
                }
                TokenTree::Literal(lit) if in_macro => {
                    for name in format_args_in(&lit.to_string()) {
                        if self.names.contains_key(&name) {
                            out.push(Mention {
                                span: lit.span(),
                                name,
                            });
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn taint(&mut self, target: &Ident, from: &Origin) -> bool {
        let s = target.to_string();
        let s = s.strip_prefix("r#").unwrap_or(&s).to_string();
        if self.names.contains_key(&s) {
            return false;
        }
        self.names.insert(s, from.clone());
        true
    }

    /// Reports each mention in `tokens` as a leak into `place`.
    pub fn check(&mut self, tokens: TokenStream, place: &Place, errors: &mut Errors) {
        let mut mentions = self.mentions(tokens);
        // `name.expose()` of a tainted `name`: one error, about `name`.
        if mentions.iter().any(|m| m.name != EXPOSE) {
            mentions.retain(|m| m.name != EXPOSE);
        }
        for m in mentions {
            self.report(&m, place, errors);
        }
    }

    fn report(&mut self, m: &Mention, place: &Place, errors: &mut Errors) {
        let Some(origin) = self.names.get(&m.name).cloned() else {
            return;
        };
        let exposed = origin.param == EXPOSE;
        let tagged = if origin.by_type {
            "holds PHI (its type is `Phi<..>`)"
        } else {
            "is tagged #[phi]"
        };
        let what = if exposed && m.name == EXPOSE {
            "a value taken out of a `Phi<..>` (`.expose()`) is PHI".to_string()
        } else if exposed {
            format!(
                "`{}` is derived from a value taken out of a `Phi<..>` (`.expose()`),",
                m.name
            )
        } else if origin.param == m.name {
            format!("`{}` {tagged}", m.name)
        } else {
            format!(
                "`{}` is derived from `{}`, which {tagged},",
                m.name, origin.param
            )
        };
        let source = if exposed {
            "the `Phi` value".to_string()
        } else {
            origin.param.clone()
        };
        let help = match place {
            Place::Attribute { arg, .. } if exposed => format!(
                "help: record `pseudonym(..)` of the `Phi` value instead (a keyed token), or remove it from `{}`",
                arg.place()
            ),
            Place::Attribute { arg, expr } => format!(
                "help: record `pseudonym({})` instead (a keyed token), or remove it from `{}`",
                expr.as_deref().unwrap_or(&m.name),
                arg.place()
            ),
            Place::NotStored(arg) => format!(
                "help: `{0} = ..` is a constant of the call site: write a literal, e.g. `{0} = {1}`",
                arg.as_str(),
                arg.example()
            ),
            Place::Actor => "help: name the actor with a value that is not PHI (a user id), or leave `actor` out to take it from the request context".to_string(),
            Place::Record if exposed => "help: record a value that does not come from a `Phi`; an identifier can go in the #[audited] attribute as `pseudonym(..)` of the `Phi` value".to_string(),
            Place::Record => format!(
                "help: record a value that does not come from `{source}`; an identifier can go in the #[audited] attribute as `pseudonym({source})`"
            ),
        };
        errors.push(syn::Error::new(
            m.span,
            format!("{what} and cannot be recorded in the audit event\n{help}"),
        ));
        if !exposed && !self.noted.contains(&origin.param) {
            self.noted.push(origin.param.clone());
            let note = if origin.by_type {
                format!("`{}` has a `Phi<..>` type here", origin.param)
            } else {
                format!("`{}` is tagged #[phi] here", origin.param)
            };
            errors.push(syn::Error::new_spanned(&origin.tag, note));
        }
    }

    /// Follows taint through the body, then checks the values of every
    /// `record!` in it (`records`, from [`rewrite_records`]).
    pub fn check_body(
        &mut self,
        parsed: Option<&Block>,
        records: &[TokenStream],
        errors: &mut Errors,
    ) {
        if let Some(block) = parsed {
            let mut flows = Flows::default();
            flows.visit_block(block);
            // Propagate to a fixed point: each round taints at least one new
            // name, so this ends.
            loop {
                let mut changed = false;
                for (sources, targets) in &flows.flows {
                    let Some(m) = self.mentions(sources.clone()).into_iter().next() else {
                        continue;
                    };
                    let Some(origin) = self.names.get(&m.name).cloned() else {
                        continue;
                    };
                    for t in targets {
                        changed |= self.taint(t, &origin);
                    }
                }
                if !changed {
                    break;
                }
            }
        }
        for values in records {
            self.check(values.clone(), &Place::Record, errors);
        }
    }
}

/// Where a value would go.
pub enum Place {
    /// `id`, `patient`, `metadata(..)`; with the expression to suggest
    /// wrapping in `pseudonym(..)` when it is a plain place (`person.mrn`).
    Attribute { arg: Key, expr: Option<String> },
    /// `name`, `phi_touched`, ...: must be literals anyway.
    NotStored(Key),
    /// `actor`.
    Actor,
    /// `record!` in the body.
    Record,
}

fn is_punct(tt: &TokenTree, c: char) -> bool {
    matches!(tt, TokenTree::Punct(p) if p.as_char() == c)
}

fn is_punct_at(tts: &[TokenTree], i: usize, c: char) -> bool {
    tts.get(i).is_some_and(|t| is_punct(t, c))
}

/// Identifiers captured by inline format arguments in a string literal
/// (`"{name}"`, `"{name:?}"`).
fn format_args_in(lit: &str) -> Vec<String> {
    if !(lit.starts_with('"') || lit.starts_with('r')) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let chars: Vec<char> = lit.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '{' {
            if chars.get(i + 1) == Some(&'{') {
                i += 2;
                continue;
            }
            let mut j = i + 1;
            let mut name = String::new();
            while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                name.push(chars[j]);
                j += 1;
            }
            if !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && matches!(chars.get(j), Some('}') | Some(':'))
            {
                out.push(name);
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// The body with every `record!(..)` of its own code rewritten to the
/// runtime call, and the value tokens of each (for the taint check).
///
/// A `record!` is recognized by its path: `record`, `phi_audit::record`
/// (with or without a leading `::`), or `<crate>::record` for `crate =
/// <crate>`; inside other macros' arguments too. One inside a nested item
/// (`fn`, `impl`, `mod`, `trait`, `macro_rules!`) is left alone: it is not
/// the audited body, and the public macro refuses it there.
pub struct Records {
    pub body: TokenStream,
    pub values: Vec<TokenStream>,
}

pub fn rewrite_records(
    body: TokenStream,
    krate: Option<&syn::Path>,
    pv: &TokenStream,
    errors: &mut Errors,
) -> Records {
    rewrite(body, krate, pv, errors, false)
}

/// The body with every recognized `record!` emptied: what is emitted next
/// to errors, so that a rejected value is not reported a second time by the
/// type check.
pub fn erase_records(
    body: TokenStream,
    krate: Option<&syn::Path>,
    pv: &TokenStream,
) -> TokenStream {
    rewrite(body, krate, pv, &mut Errors::default(), true).body
}

fn rewrite(
    body: TokenStream,
    krate: Option<&syn::Path>,
    pv: &TokenStream,
    errors: &mut Errors,
    erase: bool,
) -> Records {
    let krate_name = krate.map(|p| {
        p.segments
            .iter()
            .map(|s| s.ident.to_string())
            .collect::<Vec<_>>()
            .join("::")
    });
    let mut cx = RecordCx {
        krate_name,
        pv,
        values: Vec::new(),
        errors,
        erase,
    };
    let body = cx.rewrite(body);
    Records {
        body,
        values: cx.values,
    }
}

struct RecordCx<'a> {
    krate_name: Option<String>,
    pv: &'a TokenStream,
    values: Vec<TokenStream>,
    errors: &'a mut Errors,
    erase: bool,
}

impl RecordCx<'_> {
    fn rewrite(&mut self, tokens: TokenStream) -> TokenStream {
        let tts: Vec<TokenTree> = tokens.into_iter().collect();
        let mut out: Vec<TokenTree> = Vec::with_capacity(tts.len());
        // Set after an item keyword: the next group is that item's body.
        let mut item_ahead = false;
        let mut i = 0;
        while i < tts.len() {
            match &tts[i] {
                TokenTree::Ident(id) => {
                    let s = id.to_string();
                    let next_is_ident = matches!(tts.get(i + 1), Some(TokenTree::Ident(_)));
                    if ((s == "fn" || s == "mod" || s == "trait") && next_is_ident)
                        || s == "impl"
                        || (s == "macro_rules" && is_punct_at(&tts, i + 1, '!'))
                    {
                        item_ahead = true;
                    }
                    let record_call = match tts.get(i + 2) {
                        Some(TokenTree::Group(g))
                            if s == "record"
                                && is_punct_at(&tts, i + 1, '!')
                                && !(i >= 1 && is_punct(&tts[i - 1], '.'))
                                && self.is_ours(&tts, i) =>
                        {
                            Some(g.clone())
                        }
                        _ => None,
                    };
                    if let Some(g) = record_call {
                        // The path stays (an imported `record` is used), the
                        // arguments become the checked calls, which only
                        // this form of the macro expands.
                        out.push(tts[i].clone());
                        out.push(tts[i + 1].clone());
                        let mut n = proc_macro2::Group::new(
                            g.delimiter(),
                            self.expand(g.stream(), g.span()),
                        );
                        n.set_span(g.span());
                        out.push(TokenTree::Group(n));
                        i += 3;
                        continue;
                    }
                    out.push(tts[i].clone());
                }
                TokenTree::Group(g) => {
                    if item_ahead
                        && (g.delimiter() == Delimiter::Brace
                            || (i >= 2 && is_punct(&tts[i - 2], '!')))
                    {
                        // A nested item's body: not the audited body.
                        item_ahead = false;
                        out.push(tts[i].clone());
                    } else {
                        let mut n =
                            proc_macro2::Group::new(g.delimiter(), self.rewrite(g.stream()));
                        n.set_span(g.span());
                        out.push(TokenTree::Group(n));
                    }
                }
                TokenTree::Punct(p) => {
                    if p.as_char() == ';' {
                        item_ahead = false;
                    }
                    out.push(tts[i].clone());
                }
                TokenTree::Literal(_) => out.push(tts[i].clone()),
            }
            i += 1;
        }
        out.into_iter().collect()
    }

    /// Whether the path ending in the `record` at `at` names this crate's
    /// `record!`.
    fn is_ours(&self, tts: &[TokenTree], at: usize) -> bool {
        let mut start = at;
        let mut segments = vec!["record".to_string()];
        while start >= 2 && is_punct(&tts[start - 1], ':') && is_punct(&tts[start - 2], ':') {
            if start >= 3 {
                if let TokenTree::Ident(id) = &tts[start - 3] {
                    segments.insert(0, id.to_string());
                    start -= 3;
                    continue;
                }
            }
            // A leading `::`.
            break;
        }
        let path = segments[..segments.len() - 1].join("::");
        path.is_empty() || path == "phi_audit" || self.krate_name.as_deref() == Some(path.as_str())
    }

    /// The arguments of a checked `record!`: `@__phi_audit_checked` and the
    /// runtime calls of `key = value, ..`.
    fn expand(&mut self, args: TokenStream, span: Span) -> TokenStream {
        let calls = self.calls(args, span);
        let calls = if self.erase {
            TokenStream::new()
        } else {
            calls
        };
        quote::quote!(@__phi_audit_checked #calls)
    }

    /// `key = value, ..` as runtime calls.
    fn calls(&mut self, args: TokenStream, span: Span) -> TokenStream {
        use syn::parse::Parser;
        let parser = syn::punctuated::Punctuated::<crate::attr::RecordItem, syn::Token![,]>::parse_terminated;
        let items = match parser.parse2(args) {
            Ok(items) if !items.is_empty() => items,
            Ok(_) => {
                self.errors.push(syn::Error::new(
                    span,
                    "`record!` needs at least one `key = value`, e.g. `record!(rows = rows.len())`",
                ));
                return TokenStream::new();
            }
            Err(e) => {
                self.errors.push(e);
                return TokenStream::new();
            }
        };
        let mut calls = TokenStream::new();
        let mut values = TokenStream::new();
        for item in items {
            let key = syn::ext::IdentExt::unraw(&item.key).to_string();
            if let Some(problem) = crate::valid::key_problem(&key) {
                self.errors.push(syn::Error::new(
                    item.key.span(),
                    format!("invalid metadata key `{key}`: {problem}"),
                ));
            }
            let value = &item.value;
            if !values.is_empty() {
                values.extend(quote::quote!(,));
            }
            value.to_tokens(&mut values);
            let pv = crate::expand::respan(self.pv, syn::spanned::Spanned::span(value));
            calls.extend(quote::quote_spanned! {syn::spanned::Spanned::span(value)=>
                #pv::record(#key, #pv::meta(&(#value)));
            });
        }
        self.values.push(values);
        calls
    }
}

/// Value flows in a body: `sources` may reach every name in `targets`.
#[derive(Default)]
struct Flows {
    flows: Vec<(TokenStream, Vec<Ident>)>,
    /// Parameters of closures bound with `let f = |..| ..`.
    closures: BTreeMap<String, Vec<Ident>>,
}

fn root(expr: &Expr) -> Option<Ident> {
    match expr {
        Expr::Path(p) if p.qself.is_none() && p.path.segments.len() == 1 => {
            Some(p.path.segments[0].ident.clone())
        }
        Expr::Field(f) => root(&f.base),
        Expr::Index(i) => root(&i.expr),
        Expr::Unary(u) => root(&u.expr),
        Expr::Paren(p) => root(&p.expr),
        Expr::Reference(r) => root(&r.expr),
        Expr::MethodCall(m) => root(&m.receiver),
        _ => None,
    }
}

fn closure_params(expr: &Expr) -> Option<Vec<Ident>> {
    match expr {
        Expr::Closure(c) => {
            let mut out = Vec::new();
            c.inputs.iter().for_each(|p| bindings(p, &mut out));
            Some(out)
        }
        Expr::Paren(p) => closure_params(&p.expr),
        _ => None,
    }
}

impl Flows {
    fn add(&mut self, sources: TokenStream, targets: Vec<Ident>) {
        if !targets.is_empty() && !sources.is_empty() {
            self.flows.push((sources, targets));
        }
    }

    /// `let (a, b) = (x, y)` pairs element-wise; anything else taints every
    /// binding of the pattern from the whole value.
    fn destructure(&mut self, pat: &Pat, value: &Expr) {
        match (pat, value) {
            (Pat::Tuple(p), Expr::Tuple(t))
                if p.elems.len() == t.elems.len()
                    && !p.elems.iter().any(|e| matches!(e, Pat::Rest(_))) =>
            {
                for (p, e) in p.elems.iter().zip(t.elems.iter()) {
                    self.destructure(p, e);
                }
            }
            (Pat::Paren(p), _) => self.destructure(&p.pat, value),
            (_, Expr::Paren(e)) => self.destructure(pat, &e.expr),
            _ => self.pat(pat, value.to_token_stream()),
        }
    }

    fn pat(&mut self, pat: &Pat, sources: TokenStream) {
        let mut b = Vec::new();
        bindings(pat, &mut b);
        self.add(sources, b);
    }

    /// A call's arguments (and receiver): closures among them get the other
    /// values as parameters; `&mut` arguments receive the others.
    fn call<'a>(&mut self, mut sources: TokenStream, args: impl Iterator<Item = &'a Expr> + Clone) {
        for a in args.clone() {
            if closure_params(a).is_none() {
                a.to_tokens(&mut sources);
            }
        }
        for a in args {
            if let Some(params) = closure_params(a) {
                self.add(sources.clone(), params);
            }
            if let Expr::Reference(r) = a {
                if r.mutability.is_some() {
                    if let Some(t) = root(&r.expr) {
                        self.add(sources.clone(), vec![t]);
                    }
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Flows {
    fn visit_local(&mut self, local: &'ast syn::Local) {
        if let Some(init) = &local.init {
            match &init.diverge {
                None => self.destructure(&local.pat, &init.expr),
                Some((_, e)) => {
                    let mut src = init.expr.to_token_stream();
                    e.to_tokens(&mut src);
                    self.pat(&local.pat, src);
                }
            }
            if let (Pat::Ident(p), Some(params)) = (&local.pat, closure_params(&init.expr)) {
                self.closures.insert(p.ident.to_string(), params);
            }
        }
        syn::visit::visit_local(self, local);
    }

    fn visit_expr_let(&mut self, e: &'ast syn::ExprLet) {
        self.pat(&e.pat, e.expr.to_token_stream());
        syn::visit::visit_expr_let(self, e);
    }

    fn visit_expr_match(&mut self, e: &'ast syn::ExprMatch) {
        for arm in &e.arms {
            self.pat(&arm.pat, e.expr.to_token_stream());
        }
        syn::visit::visit_expr_match(self, e);
    }

    fn visit_expr_for_loop(&mut self, e: &'ast syn::ExprForLoop) {
        self.pat(&e.pat, e.expr.to_token_stream());
        syn::visit::visit_expr_for_loop(self, e);
    }

    fn visit_expr_assign(&mut self, e: &'ast syn::ExprAssign) {
        if let Some(t) = root(&e.left) {
            self.add(e.right.to_token_stream(), vec![t]);
        }
        syn::visit::visit_expr_assign(self, e);
    }

    fn visit_expr_binary(&mut self, e: &'ast syn::ExprBinary) {
        use syn::BinOp::*;
        let assigns = matches!(
            e.op,
            AddAssign(_)
                | SubAssign(_)
                | MulAssign(_)
                | DivAssign(_)
                | RemAssign(_)
                | BitXorAssign(_)
                | BitAndAssign(_)
                | BitOrAssign(_)
                | ShlAssign(_)
                | ShrAssign(_)
        );
        if assigns {
            if let Some(t) = root(&e.left) {
                self.add(e.right.to_token_stream(), vec![t]);
            }
        }
        syn::visit::visit_expr_binary(self, e);
    }

    fn visit_expr_method_call(&mut self, e: &'ast syn::ExprMethodCall) {
        // `v.push(name)`: the receiver may now hold the value.
        if let Some(t) = root(&e.receiver) {
            let mut src = TokenStream::new();
            e.args.iter().for_each(|a| a.to_tokens(&mut src));
            self.add(src, vec![t]);
        }
        self.call(e.receiver.to_token_stream(), e.args.iter());
        syn::visit::visit_expr_method_call(self, e);
    }

    fn visit_expr_call(&mut self, e: &'ast syn::ExprCall) {
        self.call(e.func.to_token_stream(), e.args.iter());
        if let Some(f) = root(&e.func) {
            if let Some(params) = self.closures.get(&f.to_string()).cloned() {
                let mut src = TokenStream::new();
                e.args.iter().for_each(|a| a.to_tokens(&mut src));
                self.add(src, params);
            }
        }
        syn::visit::visit_expr_call(self, e);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        // `write!(out, "{name}")`: the first argument may now hold the value.
        if !m.path.is_ident("record") {
            let tts: Vec<TokenTree> = m.tokens.clone().into_iter().collect();
            if let (Some(TokenTree::Ident(first)), true) = (tts.first(), is_punct_at(&tts, 1, ','))
            {
                let mut src = TokenStream::new();
                src.extend(tts[2..].iter().cloned());
                self.add(src, vec![first.clone()]);
            }
        }
        syn::visit::visit_macro(self, m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn taint_of(names: &[&str]) -> Taint {
        let mut t = Taint::default();
        for n in names {
            t.names.insert(
                n.to_string(),
                Origin {
                    param: n.to_string(),
                    tag: TokenStream::new(),
                    by_type: false,
                },
            );
        }
        t
    }

    fn mentioned(t: &Taint, ts: TokenStream) -> Vec<String> {
        t.mentions(ts).into_iter().map(|m| m.name).collect()
    }

    #[test]
    fn values_taken_out_of_phi_are_mentions() {
        let mut t = taint_of(&[]);
        t.names.insert(
            EXPOSE.to_string(),
            Origin {
                param: EXPOSE.to_string(),
                tag: TokenStream::new(),
                by_type: true,
            },
        );
        assert!(t.is_empty(), "no PHI parameter");
        assert_eq!(mentioned(&t, quote!(p.name.expose().len())), [EXPOSE]);
        assert_eq!(mentioned(&t, quote!(Phi::expose(&p.name))), [EXPOSE]);
        assert_eq!(mentioned(&t, quote!(n.expose_mut())), [EXPOSE]);
        assert!(mentioned(&t, quote!(p.expose)).is_empty(), "a field");
        assert!(mentioned(&t, quote!(expose(x))).is_empty(), "a free fn");
        let block: Block = syn::parse2(quote!({
            let n = p.name.expose().len();
            let m = n + 1;
        }))
        .unwrap();
        let mut errors = Errors::default();
        t.check_body(Some(&block), &[quote!(m)], &mut errors);
        assert!(errors.0.is_some(), "derived from `.expose()`");
    }

    #[test]
    fn mentions_are_uses_not_fields_or_paths() {
        let t = taint_of(&["name"]);
        assert_eq!(mentioned(&t, quote!(name)), ["name"]);
        assert_eq!(mentioned(&t, quote!(&name.first)), ["name"]);
        assert_eq!(mentioned(&t, quote!(name.len())), ["name"]);
        assert_eq!(mentioned(&t, quote!((|| name.len())())), ["name"]);
        assert_eq!(mentioned(&t, quote!(S { name })), ["name"]);
        assert!(mentioned(&t, quote!(session.name)).is_empty());
        assert!(mentioned(&t, quote!(session.name())).is_empty());
        assert!(mentioned(&t, quote!(a::name)).is_empty());
        assert!(mentioned(&t, quote!(S { name: 1 })).is_empty());
        assert!(mentioned(&t, quote!("{name}")).is_empty());
        assert_eq!(mentioned(&t, quote!(format!("{name}"))), ["name"]);
        assert_eq!(mentioned(&t, quote!(format!("{name:?}"))), ["name"]);
        assert!(mentioned(&t, quote!(format!("{{name}}"))).is_empty());
        assert_eq!(mentioned(&t, quote!(x[..name])), ["name"]);
    }

    fn derived(body: TokenStream) -> Vec<String> {
        let block: Block = syn::parse2(body).unwrap();
        let mut t = taint_of(&["name"]);
        let mut errors = Errors::default();
        t.check_body(Some(&block), &[], &mut errors);
        t.names.keys().filter(|k| *k != "name").cloned().collect()
    }

    #[test]
    fn taint_follows_bindings() {
        assert_eq!(
            derived(quote!({
                let a = name;
                let b = a.len();
                let c = 1;
            })),
            ["a", "b"]
        );
        assert_eq!(
            derived(quote!({
                let (x, S { y, .. }) = (name, other);
            })),
            ["x"]
        );
        assert_eq!(
            derived(quote!({
                let (x, S { y, .. }) = pair(name, other);
            })),
            ["x", "y"]
        );
        assert_eq!(
            derived(quote!({
                let S { y, .. } = name;
            })),
            ["y"]
        );
        assert_eq!(
            derived(quote!({
                let mut s = String::new();
                s.push_str(name);
            })),
            ["s"]
        );
        assert_eq!(
            derived(quote!({
                let mut s = 0;
                s = name.len();
            })),
            ["s"]
        );
        assert_eq!(
            derived(quote!({
                let f = || name.len();
            })),
            ["f"]
        );
        assert_eq!(
            derived(quote!({
                name.split(' ').for_each(|p| drop(p));
            })),
            ["p"]
        );
        assert_eq!(
            derived(quote!({
                let g = |q: &str| q.len();
                g(name);
            })),
            ["g", "q"]
        );
        assert_eq!(
            derived(quote!({ if let Some(z) = name.get(0..1) {} })),
            ["z"]
        );
        assert_eq!(
            derived(quote!({
                match name {
                    w => {}
                }
            })),
            ["w"]
        );
        assert_eq!(derived(quote!({ for c in name.chars() {} })), ["c"]);
        assert_eq!(
            derived(quote!({
                let mut o = String::new();
                write!(o, "{}", name);
            })),
            ["o"]
        );
        // Order does not matter: taint is flow-insensitive.
        assert_eq!(
            derived(quote!({
                let b = a;
                let a = name;
            })),
            ["a", "b"]
        );
    }

    fn rewritten(body: TokenStream) -> (String, Vec<String>, bool) {
        let mut errors = Errors::default();
        let r = rewrite_records(body, None, &quote!(::phi_audit::__private), &mut errors);
        (
            r.body.to_string(),
            r.values.iter().map(|v| v.to_string()).collect(),
            errors.0.is_some(),
        )
    }

    #[test]
    fn record_calls_are_rewritten_and_their_values_kept() {
        let t = taint_of(&["name"]);
        let mut errors = Errors::default();
        let r = rewrite_records(
            quote!({
                phi_audit::record!(name = 1, n = name.len());
            }),
            None,
            &quote!(::phi_audit::__private),
            &mut errors,
        );
        assert!(errors.0.is_none());
        assert_eq!(r.values.len(), 1);
        assert_eq!(mentioned(&t, r.values[0].clone()), ["name"]);
        let body = r.body.to_string();
        assert!(body.contains("record ! (@ __phi_audit_checked"), "{body}");
        assert!(body.contains("__private :: record (\"name\""), "{body}");

        // Every spelling of the path, inside other macros too.
        for call in [
            quote!(record!(a = 1)),
            quote!(::phi_audit::record!(a = 1)),
            quote!(println!("{}", {
                record![a = 1];
                2
            })),
            quote!(let f = |x: u8| record!{a = x};),
        ] {
            let (body, values, err) = rewritten(call.clone());
            assert!(body.contains("__phi_audit_checked"), "{call}: {body}");
            assert_eq!(values.len(), 1, "{call}");
            assert!(!err);
        }
        // Other paths, renamed imports and nested items are left alone (the
        // public macro refuses them).
        for call in [
            quote!(other::record!(a = 1)),
            quote!(remember!(a = 1)),
            quote!(
                fn helper(x: u8) {
                    record!(a = x)
                }
            ),
            quote!(impl S { fn f(&self) { record!(a = 1) } }),
            quote!(
                macro_rules! m {
                    () => {
                        record!(a = 1)
                    };
                }
            ),
            quote!(x.record!(a = 1)),
        ] {
            let (body, values, _) = rewritten(call.clone());
            assert!(values.is_empty(), "{call}: {body}");
            assert!(!body.contains("__phi_audit_checked"), "{call}: {body}");
        }
        // A closure's body after a nested fn is the audited body again.
        let (_, values, _) = rewritten(quote!({
            fn helper() {}
            let f = || record!(a = 1);
        }));
        assert_eq!(values.len(), 1);
        // Malformed: an error.
        assert!(rewritten(quote!(record!(a))).2);
        assert!(rewritten(quote!(record!())).2);
        assert!(rewritten(quote!(record!(café = 1))).2);
    }
}
