//! Writes the audited function from a checked [`Args`] and the function as
//! written. Generation only: every check has run before (in
//! [`crate::attr`], [`crate::valid`] and [`crate::taint`]), and this code is
//! reached only when none failed.
//!
//! The outcome of a call is chosen by the type of its value with autoref
//! specialization on stable Rust: `(&&&&Probe(&ret)).__phi_audit_outcome(..)`
//! picks the first of several `Via*` traits whose impl applies. How and why
//! is explained where those traits live, in the header of
//! `audit-runtime/src/call/outcome.rs` (`Probe`, `ViaFuture`,
//! `ViaAuditError`, `ViaDisplay`, `ViaAnyError`, `ViaValue`).

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{Block, Expr, Ident, Pat, ReturnType, Signature, Type};

use crate::ast::{default_name, Args, MaybeItemFn, Value};

/// Whether `ty` mentions `impl Trait` (which cannot be written in a `let`).
fn has_impl_trait(ty: &Type) -> bool {
    struct Finder(bool);
    impl<'ast> Visit<'ast> for Finder {
        fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
            self.0 = true;
        }
    }
    let mut f = Finder(false);
    f.visit_type(ty);
    f.0
}

/// How the function hands back its result.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// A plain value, when the body returns.
    Sync,
    /// `async fn`.
    Async,
    /// `-> Pin<Box<dyn Future<..>>>` (what `#[async_trait]` writes), or a
    /// `BoxFuture` alias.
    BoxedFuture,
    /// `-> impl Future<..>`.
    ImplFuture,
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        Type::Paren(p) => last_segment(&p.elem),
        Type::Group(g) => last_segment(&g.elem),
        _ => None,
    }
}

fn first_type_arg(seg: &syn::PathSegment) -> Option<&Type> {
    match &seg.arguments {
        syn::PathArguments::AngleBracketed(a) => a.args.iter().find_map(|a| match a {
            syn::GenericArgument::Type(t) => Some(t),
            _ => None,
        }),
        _ => None,
    }
}

fn bounds_name_future<'a>(mut bounds: impl Iterator<Item = &'a syn::TypeParamBound>) -> bool {
    bounds.any(|b| matches!(b, syn::TypeParamBound::Trait(t) if t.path.segments.last().is_some_and(|s| s.ident == "Future")))
}

/// `O` of `Future<Output = O>` among `bounds`.
fn output_in_bounds<'a>(
    mut bounds: impl Iterator<Item = &'a syn::TypeParamBound>,
) -> Option<&'a Type> {
    bounds.find_map(|b| {
        let syn::TypeParamBound::Trait(t) = b else {
            return None;
        };
        let seg = t.path.segments.last().filter(|s| s.ident == "Future")?;
        let syn::PathArguments::AngleBracketed(a) = &seg.arguments else {
            return None;
        };
        a.args.iter().find_map(|a| match a {
            syn::GenericArgument::AssocType(at) if at.ident == "Output" => Some(&at.ty),
            _ => None,
        })
    })
}

/// The output type of the future a function returns, when the signature
/// names it in a form a `let` can be annotated with.
fn future_output(sig: &Signature) -> Option<Type> {
    let ReturnType::Type(_, ty) = &sig.output else {
        return None;
    };
    let out = match &**ty {
        Type::ImplTrait(t) => output_in_bounds(t.bounds.iter()),
        ty => {
            let seg = last_segment(ty)?;
            if seg.ident == "BoxFuture" || seg.ident == "LocalBoxFuture" {
                match &seg.arguments {
                    syn::PathArguments::AngleBracketed(a) => {
                        a.args.iter().rev().find_map(|a| match a {
                            syn::GenericArgument::Type(t) => Some(t),
                            _ => None,
                        })
                    }
                    _ => None,
                }
            } else {
                match first_type_arg(seg)
                    .and_then(last_segment)
                    .filter(|b| b.ident == "Box")
                    .and_then(first_type_arg)
                {
                    Some(Type::TraitObject(o)) => output_in_bounds(o.bounds.iter()),
                    Some(Type::ImplTrait(t)) => output_in_bounds(t.bounds.iter()),
                    _ => None,
                }
            }
        }
    }?;
    (!has_impl_trait(out)).then(|| out.clone())
}

fn shape(sig: &Signature) -> Shape {
    if sig.asyncness.is_some() {
        return Shape::Async;
    }
    let ReturnType::Type(_, ty) = &sig.output else {
        return Shape::Sync;
    };
    if let Type::ImplTrait(t) = &**ty {
        if bounds_name_future(t.bounds.iter()) {
            return Shape::ImplFuture;
        }
    }
    let Some(seg) = last_segment(ty) else {
        return Shape::Sync;
    };
    if seg.ident == "BoxFuture" || seg.ident == "LocalBoxFuture" {
        return Shape::BoxedFuture;
    }
    if seg.ident == "Pin" {
        let boxed = first_type_arg(seg)
            .and_then(last_segment)
            .filter(|b| b.ident == "Box")
            .and_then(first_type_arg);
        let is_future = match boxed {
            Some(Type::TraitObject(o)) => bounds_name_future(o.bounds.iter()),
            Some(Type::ImplTrait(t)) => bounds_name_future(t.bounds.iter()),
            _ => false,
        };
        if is_future {
            return Shape::BoxedFuture;
        }
    }
    Shape::Sync
}

/// Every identifier the attribute's expressions mention.
fn attribute_idents(args: &Args) -> Vec<String> {
    fn idents(tokens: TokenStream, out: &mut Vec<String>) {
        for tt in tokens {
            match tt {
                TokenTree::Ident(i) => out.push(i.to_string()),
                TokenTree::Group(g) => idents(g.stream(), out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    for v in [&args.id, &args.patient].into_iter().flatten() {
        idents(v.to_token_stream(), &mut out);
    }
    if let Some(a) = &args.actor {
        idents(a.to_token_stream(), &mut out);
    }
    for m in &args.metadata {
        idents(m.value.to_token_stream(), &mut out);
    }
    out
}

/// `#[async_trait]` moves each by-value argument into its async block with
/// `let x = x;`. An argument only the attribute uses (read before the block)
/// is then unused there: those rebinding statements, and only those, get
/// `#[allow(unused_variables)]`.
fn allow_unused_rebinds(block: &mut syn::ExprAsync, used: &[String]) {
    for stmt in &mut block.block.stmts {
        let syn::Stmt::Local(local) = stmt else {
            continue;
        };
        let (Pat::Ident(p), Some(init)) = (&local.pat, &local.init) else {
            continue;
        };
        let rebind =
            matches!(&*init.expr, Expr::Path(e) if e.qself.is_none() && e.path.is_ident(&p.ident));
        if rebind && used.iter().any(|u| p.ident == u) {
            local
                .attrs
                .push(syn::parse_quote!(#[allow(unused_variables)]));
        }
    }
}

/// The async block of a body that is exactly `Box::pin(async move { .. })`
/// (what `#[async_trait]` writes), so it can run inside the audited future
/// without a second box.
fn boxed_async_block(body: &TokenStream) -> Option<syn::ExprAsync> {
    let block: Block = syn::parse2(body.clone()).ok()?;
    let [syn::Stmt::Expr(Expr::Call(call), None)] = &block.stmts[..] else {
        return None;
    };
    let Expr::Path(p) = &*call.func else {
        return None;
    };
    let segs: Vec<String> = p
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    let is_box_pin =
        segs.len() >= 2 && segs[segs.len() - 1] == "pin" && segs[segs.len() - 2] == "Box";
    if p.qself.is_some() || !is_box_pin || call.args.len() != 1 {
        return None;
    }
    match &call.args[0] {
        Expr::Async(a) if a.capture.is_some() => Some(a.clone()),
        _ => None,
    }
}

/// `tokens` with every span set to `span`, so that a diagnostic about
/// generated code (a missing trait bound) points at the user's expression.
pub(crate) fn respan(tokens: &TokenStream, span: Span) -> TokenStream {
    tokens
        .clone()
        .into_iter()
        .map(|tt| match tt {
            TokenTree::Group(g) => {
                let mut n = proc_macro2::Group::new(g.delimiter(), respan(&g.stream(), span));
                n.set_span(span);
                TokenTree::Group(n)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}

fn site_ident() -> Ident {
    Ident::new("__PHI_AUDIT_SITE", Span::mixed_site())
}

/// The audited function.
pub fn expand(args: &Args, f: &MaybeItemFn, has_phi: bool) -> TokenStream {
    let pv = args.private_path();
    let call = format_ident!("__phi_audit_call", span = Span::mixed_site());
    let ret = format_ident!("__phi_audit_ret", span = Span::mixed_site());
    let fut = format_ident!("__phi_audit_future", span = Span::mixed_site());
    let outcome = format_ident!("__phi_audit_outcome", span = Span::mixed_site());
    let site = site_ident();

    // The call site: constants only, built at compile time.
    let action = args
        .action
        .clone()
        .unwrap_or_else(|| Ident::new("Other", Span::call_site()));
    let resource = args
        .resource
        .as_ref()
        .map(|r| r.value())
        .unwrap_or_default();
    let name = match &args.name {
        Some(n) => n.value(),
        None => default_name(&f.sig),
    };
    let phi_touched = match args.phi_touched {
        Some(b) => quote!(::core::option::Option::Some(#b)),
        None if has_phi => quote!(::core::option::Option::Some(true)),
        None => quote!(::core::option::Option::None),
    };
    let classification = match (&args.classification, has_phi) {
        (Some(c), _) => quote!(::core::option::Option::Some(#pv::DataClassification::#c)),
        (None, true) => quote!(::core::option::Option::Some(#pv::DataClassification::Phi)),
        (None, false) => quote!(::core::option::Option::None),
    };
    let shape = shape(&f.sig);
    let start = match shape {
        Shape::Sync => quote!(start),
        Shape::Async => quote!(start_async),
        Shape::BoxedFuture | Shape::ImplFuture => quote!(defer),
    };

    // The prologue: attribute expressions, evaluated once, before the body,
    // by reference so that the body may still move the arguments.
    let mut prologue = TokenStream::new();
    let set_id = |setter: &str, v: &Value| -> TokenStream {
        let setter = Ident::new(setter, Span::mixed_site());
        match v {
            Value::Plain(e) => {
                let pv = respan(&pv, e.span());
                let arg = quote_spanned!(e.span()=> #pv::id(&(#e)));
                quote!(#call.#setter(#arg);)
            }
            Value::Pseudonym { inner, .. } => {
                let arg = quote_spanned!(inner.span()=> #call.pseudonym(&(#inner)));
                quote!(#call.#setter(#arg);)
            }
        }
    };
    if let Some(v) = &args.id {
        prologue.extend(set_id("set_resource_id", v));
    }
    if let Some(v) = &args.patient {
        prologue.extend(set_id("set_patient_id", v));
    }
    if let Some(e) = &args.actor {
        let pv = respan(&pv, e.span());
        let arg = quote_spanned!(e.span()=> #pv::actor(&(#e)));
        prologue.extend(quote!(#call.set_actor(#arg);));
    }
    for m in &args.metadata {
        let key = &m.key_str;
        let value = match &m.value {
            Value::Plain(e) => {
                let pv = respan(&pv, e.span());
                quote_spanned!(e.span()=> #pv::meta(&(#e)))
            }
            Value::Pseudonym { inner, .. } => {
                quote_spanned!(inner.span()=> #call.pseudonym_meta(&(#inner)))
            }
        };
        prologue.extend(quote!(#call.set_meta(#key, #value);));
    }

    // A never-taken return of the declared type fixes the type of the body
    // (so `?` knows its error type) without annotating the closure or the
    // async block, which `impl Trait` returns would forbid.
    let fake_return = match &f.sig.output {
        ReturnType::Type(_, ty) if has_impl_trait(ty) => TokenStream::new(),
        output => {
            let (ty, span) = match output {
                ReturnType::Default => (quote!(()), Span::call_site()),
                ReturnType::Type(_, ty) => (ty.to_token_stream(), ty.span()),
            };
            // Hygienic, but located at the return type: rustc names this
            // `return` when the body returns the wrong type.
            let span = Span::mixed_site().located_at(span);
            let fake = Ident::new("__phi_audit_fake", span);
            quote_spanned! {span=>
                #[allow(
                    unreachable_code,
                    clippy::diverging_sub_expression,
                    clippy::empty_loop,
                    clippy::let_unit_value,
                    clippy::needless_return,
                    clippy::unreachable
                )]
                if false {
                    let #fake: #ty = loop {};
                    return #fake;
                }
            }
        }
    };
    // The body's contents go into the closure's (or async block's) own
    // braces: a body nested as a block would trip `unused_braces` in the
    // user's crate when it is a single expression. Its inner attributes
    // (`#![allow(..)]`, which a closure body cannot hold) become outer
    // attributes of the function: the same scope.
    let (inner_attrs, body) = f.split_body();

    // Spanned on the return type: what rustc names as "return type inferred
    // here" when the body returns the wrong type.
    let ret_span = match &f.sig.output {
        ReturnType::Default => Span::call_site(),
        ReturnType::Type(_, ty) => ty.span(),
    };

    // How the value is classified: the first `Via*` trait whose impl applies
    // (see `Probe` in the runtime). Only a synchronous function's value can
    // itself be a future, which is refused (`ViaFuture`).
    let (probe, via_future) = if shape == Shape::Sync {
        (quote!(&&&&&#pv::Probe(&#ret)), quote!(ViaFuture as _,))
    } else {
        (quote!(&&&&#pv::Probe(&#ret)), TokenStream::new())
    };
    let method = Ident::new(
        "__phi_audit_outcome",
        Span::call_site().located_at(ret_span),
    );
    let classify = quote! {
        {
            #[allow(unused_imports)]
            use #pv::{
                ViaAnyError as _, ViaAuditError as _, ViaDisplay as _, #via_future
                ViaValue as _,
            };
            let #outcome = (#probe).#method(&#call, #has_phi);
            #call.finish(#outcome);
        }
    };

    let attrs = &f.attrs;
    let vis = &f.vis;
    let sig = &f.sig;
    let head = quote! {
        static #site: #pv::CallSite = #pv::CallSite {
            action: #pv::ActionType::#action,
            resource: #resource,
            name: #name,
            phi_touched: #phi_touched,
            classification: #classification,
        };
        let mut #call = #pv::Call::#start(&#site);
        #prologue
    };

    let inner = match shape {
        Shape::Sync | Shape::Async => {
            let run = if shape == Shape::Async {
                let async_block = quote_spanned!(ret_span=> async move { #fake_return #body });
                quote! {
                    let #ret = #call.instrument(#async_block).await;
                }
            } else {
                quote! {
                    let #ret = #call.run(move || { #fake_return #body });
                }
            };
            // With `impl Trait` in the return type the body's type cannot be
            // named up front; a never-taken `return` of the value ties it to
            // the declared return type (e.g. the error type of `Result<impl
            // Trait, E>` that `?` left open) before the outcome is classified.
            let tie_return = if fake_return.is_empty() {
                quote! {
                    let #ret = if false { return #ret; } else { #ret };
                }
            } else {
                TokenStream::new()
            };
            quote! {
                #head
                #run
                #tie_return
                #classify
                #ret
            }
        }
        Shape::BoxedFuture | Shape::ImplFuture => {
            // The body makes the future (under the call, so that a panic
            // there is recorded and `record!` there counts); the returned
            // future runs it under the call and records the outcome when it
            // completes. Dropped before that: `Cancelled`.
            // The output type, where the signature names it: the future's
            // value is then typed before it is classified, as the declared
            // return type would type it (`Ok(..)` leaves the error type open).
            let output = future_output(&f.sig);
            let typed_ret = match &output {
                Some(o) => quote!(#ret: #o),
                None => ret.to_token_stream(),
            };
            let fast = match (&output, shape) {
                (Some(_), Shape::BoxedFuture) => {
                    boxed_async_block(&f.body.clone().unwrap_or_default())
                }
                _ => None,
            };
            let (make, inner_future) = match fast {
                // `Box::pin(async move { .. })`, what `#[async_trait]`
                // writes: the async block itself runs inside the returned
                // future, boxed once.
                Some(mut block) => {
                    allow_unused_rebinds(&mut block, &attribute_idents(args));
                    (TokenStream::new(), block.to_token_stream())
                }
                None => (
                    quote! {
                        let #fut = #call.run(move || { #fake_return #body });
                    },
                    fut.to_token_stream(),
                ),
            };
            let audited = quote! {
                async move {
                    let mut #call = #call;
                    #call.resume();
                    let #typed_ret = #call.instrument(#inner_future).await;
                    #classify
                    #ret
                }
            };
            let wrap = if shape == Shape::BoxedFuture {
                quote!(::std::boxed::Box::pin(#audited))
            } else {
                audited
            };
            quote! {
                #head
                #make
                #wrap
            }
        }
    };

    quote! {
        #(#attrs)*
        #(#inner_attrs)*
        #vis #sig {
            #inner
        }
    }
}
