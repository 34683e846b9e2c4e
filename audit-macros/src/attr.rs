//! Parsing of the `#[audited(...)]` arguments (and of `record!`'s).
//!
//! Syntax is parsed loosely (`key = expr` or `key(...)`), then every argument
//! is checked on its own ([`crate::valid`] for its form, [`crate::taint`] for
//! PHI) so that one compile reports every mistake, in source order.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, Ident, Lit, LitStr, Token};

use crate::ast::{Args, Key, MetaArg, Value, ACTIONS, CLASSIFICATIONS};
use crate::taint::{Place, Taint};
use crate::valid;
use crate::Errors;

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

    /// The value of a check, or `None` with its error added.
    fn ok<T>(&mut self, r: Result<T, syn::Error>) -> Option<T> {
        r.map_err(|e| self.errors.push(e)).ok()
    }

    /// `expr` is where a literal belongs. If it mentions a tagged parameter,
    /// that is the error that helps; otherwise `e`.
    fn misplaced(&mut self, key: Key, expr: &Expr, e: syn::Error) {
        if self.taint.mentions(expr.to_token_stream()).is_empty() {
            self.errors.push(e);
        } else {
            self.check(expr, &Place::NotStored(key));
        }
    }

    fn value(&mut self, arg: Key, value: &Value) {
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
                format!(
                    "expected `=` after `{k}`: write `{k} = {}`",
                    Key::from_name(&k).map_or("<expression>", Key::example)
                ),
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
    let mut args = Args::default();
    let raw = match syn::parse2::<RawArgs>(tokens) {
        Ok(r) => r.0,
        Err(e) => {
            cx.errors.push(e);
            return args;
        }
    };
    let mut seen: Vec<Key> = Vec::new();
    for arg in raw {
        let key = match &arg {
            RawArg::Assign { key, .. } | RawArg::List { key, .. } | RawArg::Bare { key } => {
                key.clone()
            }
        };
        let name = key.unraw().to_string();
        let Some(k) = Key::from_name(&name) else {
            cx.errors.push(valid::unknown_key(&key, &name));
            continue;
        };
        if seen.contains(&k) {
            cx.errors.push(syn::Error::new(
                key.span(),
                format!("`{name}` is given more than once; give each argument at most once"),
            ));
            continue;
        }
        seen.push(k);
        match (k, arg) {
            (Key::Metadata, RawArg::List { items, .. }) => check_metadata(items, &mut args, cx),
            (Key::Metadata, _) => cx.errors.push(syn::Error::new(
                key.span(),
                "expected `metadata(key = <expression>, ..)`",
            )),
            (_, RawArg::Assign { value, .. }) => assign(k, value, &mut args, cx),
            (_, _) => cx.errors.push(syn::Error::new(
                key.span(),
                format!("expected `{name} = {}`", k.example()),
            )),
        }
    }
    valid::check_required(&seen, cx.errors);
    args
}

fn assign(k: Key, value: Expr, args: &mut Args, cx: &mut Ctx<'_>) {
    match k {
        Key::Action => {
            if let Some(lit) = string_lit(k, &value, cx) {
                args.action = cx.ok(valid::enum_value(&lit, "action type", ACTIONS));
            }
        }
        Key::Classification => {
            if let Some(lit) = string_lit(k, &value, cx) {
                args.classification =
                    cx.ok(valid::enum_value(&lit, "classification", CLASSIFICATIONS));
            }
        }
        Key::Resource | Key::Name => {
            if let Some(lit) = string_lit(k, &value, cx) {
                if cx.ok(valid::check_text(k, &lit)).is_some() {
                    if k == Key::Resource {
                        args.resource = Some(lit);
                    } else {
                        args.name = Some(lit);
                    }
                }
            }
        }
        Key::PhiTouched => match &value {
            Expr::Lit(syn::ExprLit {
                lit: Lit::Bool(b), ..
            }) => args.phi_touched = Some(b.value),
            other => {
                let e = syn::Error::new_spanned(
                    other,
                    "`phi_touched` must be `true` or `false`: it is a constant of the call site",
                );
                cx.misplaced(k, &value, e);
            }
        },
        Key::Id | Key::Patient => {
            let v = Value::new(value);
            cx.value(k, &v);
            if k == Key::Id {
                args.id = Some(v);
            } else {
                args.patient = Some(v);
            }
        }
        Key::Actor => {
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
        Key::Crate => match value {
            Expr::Path(p) if p.qself.is_none() => args.krate = Some(p.path),
            other => cx.errors.push(syn::Error::new_spanned(
                other,
                "`crate` must be a path to the phi-audit crate, e.g. `crate = ::my_audit`",
            )),
        },
        // Parsed as a list by the caller.
        Key::Metadata => {}
    }
}

fn string_lit(k: Key, value: &Expr, cx: &mut Ctx<'_>) -> Option<LitStr> {
    if let Expr::Lit(syn::ExprLit {
        lit: Lit::Str(s), ..
    }) = value
    {
        return Some(s.clone());
    }
    let e = syn::Error::new_spanned(
        value,
        format!(
            "`{0}` must be a string literal, e.g. `{0} = {1}`: it is a constant of the call site, stored once as static data",
            k.as_str(),
            k.example()
        ),
    );
    cx.misplaced(k, value, e);
    None
}

fn check_metadata(items: Punctuated<MetaItem, Token![,]>, args: &mut Args, cx: &mut Ctx<'_>) {
    for (i, item) in items.into_iter().enumerate() {
        let key_str = item.key.unraw().to_string();
        if !valid::check_metadata_key(&item.key, &key_str, i + 1, &args.metadata, cx.errors) {
            continue;
        }
        let value = Value::new(item.value);
        cx.value(Key::Metadata, &value);
        args.metadata.push(MetaArg { key_str, value });
    }
}
