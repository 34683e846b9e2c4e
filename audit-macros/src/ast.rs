//! What the macro works on: the function as written ([`MaybeItemFn`]), the
//! arguments of `#[audited(..)]` once parsed ([`Args`]), and the vocabulary
//! of the attribute ([`Key`], [`ACTIONS`], [`CLASSIFICATIONS`]).
//!
//! Nothing here reports errors: [`crate::attr`] builds an [`Args`],
//! [`crate::valid`] checks it and the signature, [`crate::expand`] writes
//! code from both.

use proc_macro2::{TokenStream, TokenTree};
use quote::{quote, ToTokens};
use syn::parse::{Parse, ParseStream, Parser};
use syn::{AttrStyle, Attribute, Block, Expr, Ident, LitStr, Path, Signature, Visibility};

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

/// Most metadata keys one event can carry (bh-audit-schema).
pub const MAX_METADATA: usize = 20;
/// Longest metadata key accepted.
pub const MAX_KEY_LEN: usize = 64;

/// One argument of `#[audited(..)]`: the single list of what the attribute
/// accepts, how each is spelled, and an example value for error messages.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Key {
    Action,
    Resource,
    Id,
    Patient,
    Actor,
    Name,
    Classification,
    PhiTouched,
    Metadata,
    Crate,
}

impl Key {
    /// Every key, in the order error messages list them.
    pub const ALL: [Key; 10] = [
        Key::Action,
        Key::Resource,
        Key::Id,
        Key::Patient,
        Key::Actor,
        Key::Name,
        Key::Classification,
        Key::PhiTouched,
        Key::Metadata,
        Key::Crate,
    ];

    /// The key as written in the attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Key::Action => "action",
            Key::Resource => "resource",
            Key::Id => "id",
            Key::Patient => "patient",
            Key::Actor => "actor",
            Key::Name => "name",
            Key::Classification => "classification",
            Key::PhiTouched => "phi_touched",
            Key::Metadata => "metadata",
            Key::Crate => "crate",
        }
    }

    /// The key as error messages name the place a value goes
    /// (`metadata(..)` for a metadata value).
    pub fn place(self) -> &'static str {
        match self {
            Key::Metadata => "metadata(..)",
            k => k.as_str(),
        }
    }

    /// The key spelled `s`, if any.
    pub fn from_name(s: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Every key's name, for suggestions.
    pub fn names() -> impl Iterator<Item = &'static str> + Clone {
        Key::ALL.into_iter().map(Key::as_str)
    }

    /// An example value, for error messages.
    pub fn example(self) -> &'static str {
        match self {
            Key::Action => "\"READ\"",
            Key::Resource => "\"Patient\"",
            Key::Name => "\"read_chart\"",
            Key::Classification => "\"PHI\"",
            Key::PhiTouched => "true",
            Key::Crate => "::phi_audit",
            Key::Id | Key::Patient | Key::Actor | Key::Metadata => "<expression>",
        }
    }
}

/// A value that is stored in the event: a plain expression, or
/// `pseudonym(expr)` (a keyed token of the value).
pub enum Value {
    Plain(Expr),
    Pseudonym { call: Expr, inner: Expr },
}

impl Value {
    /// `expr`, recognizing `pseudonym(one_value)`.
    pub fn new(expr: Expr) -> Value {
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

impl ToTokens for Value {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        self.expr().to_tokens(tokens)
    }
}

/// One `key = value` of `metadata(...)`.
pub struct MetaArg {
    pub key_str: String,
    pub value: Value,
}

/// A parsed `#[audited(...)]`: what was given and passed its checks.
#[derive(Default)]
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

impl Args {
    /// The path of the runtime's hidden API, through the `crate = ..`
    /// argument.
    pub fn private_path(&self) -> TokenStream {
        match &self.krate {
            Some(p) => quote!(#p::__private),
            None => quote!(::phi_audit::__private),
        }
    }
}

/// `action.name` when the attribute gives none: the function's name.
pub fn default_name(sig: &Signature) -> String {
    let n = sig.ident.to_string();
    n.strip_prefix("r#").unwrap_or(&n).to_string()
}

/// A function as written. The body is kept as tokens too, so that a body
/// that does not parse (a half-typed function in an editor) still expands
/// and the compiler reports the real syntax error.
pub struct MaybeItemFn {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub sig: Signature,
    /// The braced body as written; `None` for a declaration (`fn f();`).
    pub body: Option<TokenStream>,
    pub block: Option<Block>,
}

impl Parse for MaybeItemFn {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let sig: Signature = input.parse()?;
        if input.peek(syn::Token![;]) {
            input.parse::<syn::Token![;]>()?;
            return Ok(MaybeItemFn {
                attrs,
                vis,
                sig,
                body: None,
                block: None,
            });
        }
        let group: proc_macro2::Group = input.parse()?;
        if group.delimiter() != proc_macro2::Delimiter::Brace {
            return Err(syn::Error::new(group.span(), "expected the function body"));
        }
        let body = TokenTree::Group(group).into_token_stream();
        let block = syn::parse2::<Block>(body.clone()).ok();
        Ok(MaybeItemFn {
            attrs,
            vis,
            sig,
            body: Some(body),
            block,
        })
    }
}

impl ToTokens for MaybeItemFn {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        for a in &self.attrs {
            a.to_tokens(tokens);
        }
        self.vis.to_tokens(tokens);
        self.sig.to_tokens(tokens);
        match &self.body {
            Some(b) => b.to_tokens(tokens),
            None => quote!(;).to_tokens(tokens),
        }
    }
}

impl MaybeItemFn {
    /// The contents of the body, split into its leading inner attributes
    /// (`#![..]`, returned as outer `#[..]` attributes of the same scope)
    /// and the rest, as written.
    pub fn split_body(&self) -> (Vec<Attribute>, TokenStream) {
        let Some(body) = &self.body else {
            return (Vec::new(), TokenStream::new());
        };
        let contents = match body.clone().into_iter().next() {
            Some(TokenTree::Group(g)) => g.stream(),
            _ => return (Vec::new(), body.clone()),
        };
        let split = |input: ParseStream| {
            let attrs = input.call(Attribute::parse_inner)?;
            let rest: TokenStream = input.parse()?;
            Ok((attrs, rest))
        };
        match split.parse2(contents.clone()) {
            Ok((mut attrs, rest)) => {
                for a in &mut attrs {
                    a.style = AttrStyle::Outer;
                }
                (attrs, rest)
            }
            // A malformed `#![..]`: left in place for rustc to report.
            Err(_) => (Vec::new(), contents),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_round_trips() {
        for k in Key::ALL {
            assert_eq!(Key::from_name(k.as_str()), Some(k));
        }
        assert_eq!(Key::from_name("patient_id"), None);
        assert_eq!(Key::names().count(), Key::ALL.len());
    }

    #[test]
    fn inner_attributes_become_outer() {
        let f: MaybeItemFn = syn::parse_quote! {
            fn f() {
                #![allow(unused)]
                #![doc = "x"]
                let x = 1;
            }
        };
        let (attrs, rest) = f.split_body();
        let attrs: Vec<String> = attrs
            .iter()
            .map(|a| a.to_token_stream().to_string())
            .collect();
        assert_eq!(attrs, ["# [allow (unused)]", "# [doc = \"x\"]"]);
        assert_eq!(rest.to_string(), "let x = 1 ;");

        let f: MaybeItemFn = syn::parse_quote!(
            fn g() {
                1
            }
        );
        let (attrs, rest) = f.split_body();
        assert!(attrs.is_empty());
        assert_eq!(rest.to_string(), "1");
    }
}
