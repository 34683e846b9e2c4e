//! What the attribute emits when it cannot audit the function: the errors,
//! and the function as close to unchanged as compiles, so that its callers
//! and its body get no second wave of errors caused by the first.

use proc_macro2::TokenStream;
use quote::ToTokens;

use crate::ast::{Args, MaybeItemFn};
use crate::taint;

/// `#[audited]` on something that is not a function: the error, and the
/// item as written.
pub fn not_a_function(e: syn::Error, item: TokenStream) -> TokenStream {
    let e = syn::Error::new(
        e.span(),
        format!("#[audited] applies to functions and methods: {e}"),
    );
    let mut out = e.to_compile_error();
    out.extend(item);
    out
}

/// The errors, and the function unchanged: without its `#[phi]` tags, with
/// its body as written (`original_body`, before `record!` was rewritten) but
/// every `record!` in it emptied, so that a rejected value is not reported
/// a second time by the type check.
pub fn unchanged(
    errors: syn::Error,
    mut f: MaybeItemFn,
    original_body: Option<TokenStream>,
    args: &Args,
) -> TokenStream {
    let mut out = errors.to_compile_error();
    let pv = args.private_path();
    taint::strip_tags(&mut f.sig);
    f.body = original_body.map(|b| taint::erase_records(b, args.krate.as_ref(), &pv));
    // Arguments only the attribute used would now warn as unused: a second
    // wave of noise under the real errors.
    f.attrs.push(syn::parse_quote!(#[allow(unused_variables)]));
    f.to_tokens(&mut out);
    out
}
