//! The `#[audited]` attribute of [phi-audit](https://docs.rs/phi-audit).
//!
//! Use it through the `phi-audit` facade (`phi_audit::audited`), which
//! documents it in full; this crate is pinned to the facade's exact version
//! because the code it generates calls the runtime's hidden `__private` API.
//!
//! The crate is laid out as thiserror's `impl/`:
//!
//! - `ast`: what the macro works on: the function as written
//!   (`MaybeItemFn`), the parsed arguments (`Args`), the `Key` enum (the one
//!   list of the attribute's arguments) and the schema's vocabularies.
//! - `attr`: parsing of `#[audited(..)]` (and of `record!`'s arguments).
//! - `valid`: checks of the signature and of each argument on its own.
//! - `taint`: `#[phi]` and `Phi<T>` parameters, every place their values
//!   could reach the event, and the rewriting of the body's `record!` calls.
//! - `expand`: generation of the audited function, once every check passed.
//! - `fallback`: what is emitted instead when a check failed.
//! - `derive`: `#[derive(AuditError)]`.
//!
//! Errors accumulate (`Errors`), so one compile shows every mistake.

#![warn(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;

mod ast;
mod attr;
mod derive;
mod expand;
mod fallback;
mod taint;
mod valid;

/// Emits one bh-audit-schema event per call of the function it is put on,
/// and rejects PHI (parameters tagged `#[phi]`) reaching the event at
/// compile time.
///
/// The full documentation, with examples, is on the re-export
/// `phi_audit::audited`.
#[proc_macro_attribute]
pub fn audited(attr: TokenStream, item: TokenStream) -> TokenStream {
    audited2(attr.into(), item.into()).into()
}

/// Implements `AuditError` from `#[audit(..)]` attributes holding string
/// literals only.
///
/// The full documentation, with examples, is on the re-export
/// `phi_audit::AuditError`.
#[proc_macro_derive(AuditError, attributes(audit))]
pub fn derive_audit_error(item: TokenStream) -> TokenStream {
    derive::derive(item.into()).into()
}

/// Accumulated errors.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
}

fn audited2(attr: TokenStream2, item: TokenStream2) -> TokenStream2 {
    let mut errors = Errors::default();
    let mut f = match syn::parse2::<ast::MaybeItemFn>(item.clone()) {
        Ok(f) => f,
        Err(e) => return fallback::not_a_function(e, item),
    };
    let mut taint = taint::take_tags(&mut f.sig, &mut errors);
    let has_phi = !taint.is_empty();
    let args = attr::parse(attr, &mut taint, &mut errors);
    valid::check_signature(&f, &args, &mut errors);
    // `record!` in the body becomes the runtime call here, and only here:
    // the public macro is a compile error everywhere else.
    let pv = args.private_path();
    let original_body = f.body.clone();
    if let Some(body) = f.body.take() {
        let records = taint::rewrite_records(body, args.krate.as_ref(), &pv, &mut errors);
        // Also without PHI parameters: a `Phi` from anywhere else, opened
        // with `.expose()`, is tainted too.
        taint.check_body(f.block.as_ref(), &records.values, &mut errors);
        f.body = Some(records.body);
    }

    match errors.0 {
        Some(e) => fallback::unchanged(e, f, original_body, &args),
        None => expand::expand(&args, &f, has_phi),
    }
}

#[cfg(test)]
mod tests {
    use super::{audited2, TokenStream2};
    use quote::quote;

    fn expand(attr: TokenStream2, item: TokenStream2) -> String {
        audited2(attr, item).to_string()
    }

    #[test]
    fn constants_become_one_static_call_site() {
        let out = expand(
            quote!(
                action = "READ",
                resource = "Patient",
                id = patient_id,
                metadata(page = page)
            ),
            quote!(
                fn read_chart(patient_id: &str, #[phi] name: &str, page: u32) -> u32 {
                    page
                }
            ),
        );
        let site = "static __PHI_AUDIT_SITE : :: phi_audit :: __private :: CallSite = :: phi_audit :: __private :: CallSite { action : :: phi_audit :: __private :: ActionType :: Read , resource : \"Patient\" , name : \"read_chart\" , phi_touched : :: core :: option :: Option :: Some (true) , classification : :: core :: option :: Option :: Some (:: phi_audit :: __private :: DataClassification :: Phi) , }";
        assert!(out.contains(site), "{out}");
        assert!(out.contains("Call :: start (& __PHI_AUDIT_SITE)"), "{out}");
        assert!(out.contains("set_meta (\"page\""), "{out}");
        assert!(out.contains(". run (move ||"), "{out}");
        assert!(!out.contains("# [phi]"), "the tag is removed: {out}");
        assert!(!out.contains("compile_error"), "{out}");
    }

    #[test]
    fn user_choices_and_renamed_crate() {
        let out = expand(
            quote!(
                action = "EXPORT",
                resource = "Report",
                name = "export_report",
                classification = "PII",
                phi_touched = false,
                crate = ::audit
            ),
            quote!(
                async fn export() {}
            ),
        );
        assert!(out.contains("ActionType :: Export"), "{out}");
        assert!(out.contains("name : \"export_report\""), "{out}");
        assert!(out.contains("Option :: Some (false)"), "{out}");
        assert!(
            out.contains(":: audit :: __private :: DataClassification :: Pii"),
            "{out}"
        );
        assert!(out.contains("Call :: start_async"), "{out}");
        assert!(out.contains(". instrument (async move"), "{out}");
        assert!(
            !out.contains(":: phi_audit ::"),
            "only the renamed path: {out}"
        );
    }

    #[test]
    fn futures_are_followed_to_completion_by_shape() {
        let count = |s: &str, pat: &str| s.matches(pat).count();
        // What #[async_trait] writes: the async block runs inside the
        // audited future, boxed once; the call begins at the first poll.
        let out = expand(
            quote!(action = "READ", resource = "Chart", id = id),
            quote!(
                fn load<'a>(
                    &'a self,
                    id: u64,
                ) -> ::core::pin::Pin<
                    Box<
                        dyn ::core::future::Future<Output = Result<u8, E>>
                            + ::core::marker::Send
                            + 'a,
                    >,
                > {
                    Box::pin(async move {
                        let id = id;
                        Ok(1)
                    })
                }
            ),
        );
        assert!(out.contains("Call :: defer (& __PHI_AUDIT_SITE)"), "{out}");
        assert!(out.contains(". resume ()"), "{out}");
        assert_eq!(count(&out, "Box :: pin"), 1, "{out}");
        assert!(!out.contains(". run (move ||"), "{out}");
        assert!(
            out.contains("__phi_audit_ret : Result < u8 , E > ="),
            "the output is typed: {out}"
        );
        assert!(
            out.contains("# [allow (unused_variables)] let id = id ;"),
            "the rebinding of an argument the attribute uses: {out}"
        );
        assert!(!out.contains("ViaFuture"), "{out}");

        // Anything else returning a boxed future: made under the call, then
        // wrapped.
        let out = expand(
            quote!(action = "READ", resource = "Chart"),
            quote!(
                fn load(x: u8) -> BoxFuture<'static, u8> {
                    let y = x + 1;
                    Box::pin(async move { y })
                }
            ),
        );
        assert!(out.contains(". run (move ||"), "{out}");
        assert!(
            out.contains(":: std :: boxed :: Box :: pin (async move"),
            "{out}"
        );
        assert!(out.contains("__phi_audit_ret : u8 ="), "{out}");

        // `impl Future`: not boxed.
        let out = expand(
            quote!(action = "READ", resource = "Chart"),
            quote!(
                fn load(x: u8) -> impl Future<Output = u8> + Send {
                    async move { x }
                }
            ),
        );
        assert!(out.contains("Call :: defer"), "{out}");
        assert!(!out.contains("Box :: pin"), "{out}");

        // A plain value: a named future type there is refused (ViaFuture).
        let out = expand(
            quote!(action = "READ", resource = "Chart"),
            quote!(
                fn load() -> u8 {
                    1
                }
            ),
        );
        assert!(out.contains("ViaFuture as _"), "{out}");
        assert!(
            out.contains("(&& && & :: phi_audit :: __private :: Probe"),
            "{out}"
        );
        assert!(out.contains("Call :: start (&"), "{out}");
    }

    #[test]
    fn without_phi_nothing_is_assumed() {
        let out = expand(
            quote!(action = "READ", resource = "Patient"),
            quote!(
                fn f() {}
            ),
        );
        assert!(
            out.contains("phi_touched : :: core :: option :: Option :: None , classification : :: core :: option :: Option :: None"),
            "{out}"
        );
    }

    #[test]
    fn on_error_the_function_is_kept_unchanged() {
        let out = expand(
            quote!(action = "Read", resource = "Patient"),
            quote!(
                /// Docs.
                pub fn f(#[phi] name: &str) -> usize {
                    name.len()
                }
            ),
        );
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.contains("did you mean \\\"READ\\\""), "{out}");
        assert!(
            out.contains("pub fn f (name : & str) -> usize { name . len () }"),
            "{out}"
        );
        assert!(!out.contains("__PHI_AUDIT_SITE"), "{out}");
    }
}
