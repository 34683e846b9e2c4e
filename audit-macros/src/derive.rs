//! `#[derive(AuditError)]`: an error type's audit outcome from string
//! literals only, so that no message can carry a value.

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Expr, Ident, Lit, LitStr, Meta, Path};

use crate::Errors;

const KEYS: &[&str] = &["denied", "error_type", "message", "crate"];

/// What one `#[audit(..)]` says.
#[derive(Default)]
struct Audit {
    denied: bool,
    error_type: Option<LitStr>,
    message: Option<LitStr>,
    krate: Option<Path>,
}

/// Where an `#[audit(..)]` stands, for what it may say.
#[derive(Clone, Copy, PartialEq)]
enum At {
    Struct,
    Enum,
    Variant,
}

fn parse_audit(attrs: &[syn::Attribute], at: At, errors: &mut Errors) -> Audit {
    let mut out = Audit::default();
    let mut seen: Vec<String> = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("audit")) {
        let list = match &attr.meta {
            Meta::List(l) => l,
            other => {
                errors.push(syn::Error::new_spanned(
                    other,
                    "expected `#[audit(..)]`, e.g. `#[audit(denied)]` or `#[audit(error_type = \"NotFound\", message = \"no such chart\")]`",
                ));
                continue;
            }
        };
        let parsed = list
            .parse_args_with(syn::punctuated::Punctuated::<Meta, syn::Token![,]>::parse_terminated);
        let items = match parsed {
            Ok(items) => items,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for item in items {
            let Some(key) = item.path().get_ident().map(|i| i.unraw().to_string()) else {
                errors.push(syn::Error::new_spanned(item.path(), "expected a key"));
                continue;
            };
            let span = item.path().span();
            if !KEYS.contains(&key.as_str()) {
                let mut msg = format!("unknown key `{key}` in #[audit(..)]");
                if let Some(s) = crate::valid::suggest(&key, KEYS.iter().copied(), false) {
                    msg.push_str(&format!("; did you mean `{s}`?"));
                }
                msg.push_str(&format!("\nvalid keys: {}", KEYS.join(", ")));
                errors.push(syn::Error::new(span, msg));
                continue;
            }
            if seen.contains(&key) {
                errors.push(syn::Error::new(
                    span,
                    format!("`{key}` is given more than once"),
                ));
                continue;
            }
            seen.push(key.clone());
            let allowed = match key.as_str() {
                "crate" => at != At::Variant,
                _ => at != At::Enum,
            };
            if !allowed {
                let place = if at == At::Enum {
                    "`denied`, `error_type` and `message` go on each variant of an enum"
                } else {
                    "`crate` goes on the type, not on a variant"
                };
                errors.push(syn::Error::new(span, place));
                continue;
            }
            match (key.as_str(), &item) {
                ("denied", Meta::Path(_)) => out.denied = true,
                ("denied", other) => errors.push(syn::Error::new_spanned(
                    other,
                    "write `denied` on its own: `#[audit(denied)]`",
                )),
                ("crate", Meta::NameValue(nv)) => match &nv.value {
                    Expr::Path(p) if p.qself.is_none() => out.krate = Some(p.path.clone()),
                    other => errors.push(syn::Error::new_spanned(
                        other,
                        "`crate` must be a path to the phi-audit crate, e.g. `crate = ::my_audit`",
                    )),
                },
                (k, Meta::NameValue(nv)) => match &nv.value {
                    Expr::Lit(syn::ExprLit {
                        lit: Lit::Str(s), ..
                    }) => {
                        if let Some(problem) = text_problem(k, &s.value()) {
                            errors.push(syn::Error::new(s.span(), problem));
                        } else if k == "error_type" {
                            out.error_type = Some(s.clone());
                        } else {
                            out.message = Some(s.clone());
                        }
                    }
                    other => errors.push(syn::Error::new_spanned(
                        other,
                        format!(
                            "`{k}` must be a string literal: a fixed text can never carry PHI, a value from the error could\nhelp: write `{k} = \"..\"`"
                        ),
                    )),
                },
                (k, other) => errors.push(syn::Error::new_spanned(
                    other,
                    format!("expected `{k} = \"..\"`"),
                )),
            }
        }
    }
    out
}

/// Why `value` cannot be the `key` of an outcome, if it cannot.
fn text_problem(key: &str, value: &str) -> Option<String> {
    let (min, max) = if key == "error_type" {
        (1, 128)
    } else {
        (1, 500)
    };
    let n = value.chars().count();
    if n < min || n > max {
        return Some(format!(
            "`{key}` must be {min} to {max} characters long (bh-audit-schema), this one has {n}"
        ));
    }
    if value.chars().any(crate::valid::is_bad_char) {
        return Some(format!(
            "`{key}` must not hold control, bidirectional-formatting or line-separator characters"
        ));
    }
    None
}

/// The outcome expression of one type or variant named `name`.
fn outcome(a: &Audit, name: &Ident, krate: &TokenStream) -> TokenStream {
    let ty = a
        .error_type
        .as_ref()
        .map(LitStr::value)
        .unwrap_or_else(|| name.unraw().to_string());
    let text = |s: &str| quote!(#krate::Text::from_static(#s));
    let ty_text = text(&ty);
    match (&a.message, a.denied) {
        (None, true) => quote!(#krate::Outcome::denied(#ty_text)),
        (Some(m), true) => {
            let m = text(&m.value());
            quote!(#krate::Outcome::denied(#ty_text).with_message(#m))
        }
        (m, false) => {
            let m = text(&m.as_ref().map(LitStr::value).unwrap_or(ty));
            quote!(#krate::Outcome::failure(#ty_text, #m))
        }
    }
}

pub fn derive(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error(),
    };
    let mut errors = Errors::default();
    let name = &input.ident;
    let (krate, body) = match &input.data {
        Data::Struct(s) => {
            let a = parse_audit(&input.attrs, At::Struct, &mut errors);
            no_field_attrs(s.fields.iter(), &mut errors);
            let krate = krate(&a);
            let o = outcome(&a, name, &krate);
            (krate, o)
        }
        Data::Enum(e) => {
            let a = parse_audit(&input.attrs, At::Enum, &mut errors);
            let krate = krate(&a);
            let mut arms = TokenStream::new();
            for v in &e.variants {
                let va = parse_audit(&v.attrs, At::Variant, &mut errors);
                no_field_attrs(v.fields.iter(), &mut errors);
                let vn = &v.ident;
                let o = outcome(&va, vn, &krate);
                arms.extend(quote!(Self::#vn { .. } => #o,));
            }
            let body = if e.variants.is_empty() {
                quote!(match *self {})
            } else {
                quote!(match self { #arms })
            };
            (krate, body)
        }
        Data::Union(u) => {
            errors.push(syn::Error::new(
                u.union_token.span,
                "#[derive(AuditError)] is for structs and enums",
            ));
            (quote!(::phi_audit), TokenStream::new())
        }
    };
    if let Some(e) = errors.0 {
        return e.to_compile_error();
    }
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        #[automatically_derived]
        impl #impl_generics #krate::AuditError for #name #ty_generics #where_clause {
            fn audit_outcome(&self) -> #krate::Outcome {
                #body
            }
        }
    }
}

fn krate(a: &Audit) -> TokenStream {
    match &a.krate {
        Some(p) => p.to_token_stream(),
        None => quote!(::phi_audit),
    }
}

fn no_field_attrs<'a>(fields: impl Iterator<Item = &'a syn::Field>, errors: &mut Errors) {
    for f in fields {
        for a in f.attrs.iter().filter(|a| a.path().is_ident("audit")) {
            errors.push(syn::Error::new_spanned(
                a,
                "#[audit(..)] goes on the error type or its variants, not on fields: no field's value is ever read",
            ));
        }
    }
}
