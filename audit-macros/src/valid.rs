//! Checks of what the user wrote: the function's signature, and each
//! argument of the attribute on its own, so that one compile reports every
//! mistake. Each check returns or pushes a `syn::Error`; nothing here
//! generates code. The PHI checks are in [`crate::taint`].

use proc_macro2::Span;
use syn::{Ident, LitStr, ReturnType, Signature, Type};

use crate::ast::{
    default_name, Args, Key, MaybeItemFn, MetaArg, ACTIONS, MAX_KEY_LEN, MAX_METADATA,
};
use crate::Errors;

/// Signatures `#[audited]` cannot wrap, and a default `action.name` the
/// schema would refuse.
pub fn check_signature(f: &MaybeItemFn, args: &Args, errors: &mut Errors) {
    let sig = &f.sig;
    if let Some(c) = &sig.constness {
        errors.push(syn::Error::new(
            c.span,
            "#[audited] cannot be used on a `const fn`: an audit event is emitted at run time\nhelp: remove `const`, or audit the run-time function that calls it",
        ));
    }
    if f.body.is_none() {
        errors.push(syn::Error::new(
            sig.fn_token.span,
            "#[audited] needs a function body: put it on the function's implementation, not on a declaration",
        ));
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        if let Type::ImplTrait(t) = &**ty {
            let into_future = t.bounds.iter().any(|b| matches!(b, syn::TypeParamBound::Trait(t) if t.path.segments.last().is_some_and(|s| s.ident == "IntoFuture")));
            if into_future && sig.asyncness.is_none() {
                errors.push(syn::Error::new_spanned(
                    ty,
                    "#[audited] cannot see when an `impl IntoFuture` completes, so it cannot record how the call ended\nhelp: return `impl Future<Output = ..>` (call `.into_future()` in the body), or make the function an `async fn`",
                ));
            }
        }
    }
    if args.name.is_none() {
        check_default_name(sig, errors);
    }
}

fn check_default_name(sig: &Signature, errors: &mut Errors) {
    let n = default_name(sig).chars().count();
    if n > 128 {
        errors.push(syn::Error::new(
            sig.ident.span(),
            format!(
                "the function's name ({n} characters) is longer than `action.name` may be (128, bh-audit-schema)\nhelp: give the event a shorter name with `name = \"..\"` in #[audited]"
            ),
        ));
    }
}

/// `k`, an argument name that is not one of [`Key::ALL`].
pub fn unknown_key(key: &Ident, k: &str) -> syn::Error {
    let mut msg = format!("unknown argument `{k}` of #[audited]");
    if let Some(s) = suggest(k, Key::names(), false) {
        msg.push_str(&format!("; did you mean `{s}`?"));
    }
    let all: Vec<&str> = Key::names().collect();
    msg.push_str(&format!("\nvalid arguments: {}", all.join(", ")));
    syn::Error::new(key.span(), msg)
}

/// The arguments every `#[audited]` needs, when `given` lacks them.
pub fn check_required(given: &[Key], errors: &mut Errors) {
    if !given.contains(&Key::Action) {
        errors.push(syn::Error::new(
            Span::call_site(),
            format!(
                "#[audited] needs `action = \"..\"`, one of {}",
                quoted_list(ACTIONS.iter().map(|a| a.0))
            ),
        ));
    }
    if !given.contains(&Key::Resource) {
        errors.push(syn::Error::new(
            Span::call_site(),
            "#[audited] needs `resource = \"..\"`, the resource type (e.g. `resource = \"Patient\"`)",
        ));
    }
}

/// Why the text of `resource = ".."` or `name = ".."` is not a valid
/// bh-audit-schema string, if it is not.
pub fn check_text(k: Key, lit: &LitStr) -> Result<(), syn::Error> {
    let k = k.as_str();
    let n = lit.value().chars().count();
    if lit.value().chars().any(is_bad_char) {
        Err(syn::Error::new(
            lit.span(),
            format!(
                "`{k}` must not hold control, bidirectional-formatting or line-separator characters: readers of the audit trail would be misled by them"
            ),
        ))
    } else if n == 0 || n > 128 {
        Err(syn::Error::new(
            lit.span(),
            format!("`{k}` must be 1 to 128 characters long (bh-audit-schema), this one has {n}"),
        ))
    } else {
        Ok(())
    }
}

/// The runtime variant of `lit` in `table` (`"READ"` → `Read`), or an error
/// naming the valid values and the nearest one.
pub fn enum_value(lit: &LitStr, what: &str, table: &[(&str, &str)]) -> Result<Ident, syn::Error> {
    let v = lit.value();
    if let Some((_, variant)) = table.iter().find(|(s, _)| *s == v) {
        return Ok(Ident::new(variant, lit.span()));
    }
    let mut msg = format!("unknown {what} \"{v}\"");
    if let Some(s) = suggest(&v, table.iter().map(|t| t.0), true) {
        msg.push_str(&format!("; did you mean \"{s}\"?"));
    }
    msg.push_str(&format!(
        "\nvalid values: {}",
        quoted_list(table.iter().map(|t| t.0))
    ));
    Err(syn::Error::new(lit.span(), msg))
}

/// Checks the `position`-th (from 1) key of `metadata(..)` against the
/// schema's limits and the keys before it. Returns whether the item is kept
/// (a repeated key is dropped).
pub fn check_metadata_key(
    key: &Ident,
    key_str: &str,
    position: usize,
    earlier: &[MetaArg],
    errors: &mut Errors,
) -> bool {
    if position == MAX_METADATA + 1 {
        errors.push(syn::Error::new(
            key.span(),
            format!(
                "too many metadata keys: an event carries at most {MAX_METADATA} (bh-audit-schema)"
            ),
        ));
    }
    if let Some(problem) = key_problem(key_str) {
        errors.push(syn::Error::new(
            key.span(),
            format!("invalid metadata key `{key_str}`: {problem}"),
        ));
    } else if earlier.iter().any(|m| m.key_str == key_str) {
        errors.push(syn::Error::new(
            key.span(),
            format!("metadata key `{key_str}` is given more than once"),
        ));
        return false;
    }
    true
}

pub fn quoted_list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::CLASSIFICATIONS;

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
        assert_eq!(suggest("metdata", Key::names(), false), Some("metadata"));
        assert_eq!(suggest("patient_id", Key::names(), false), Some("patient"));
        assert_eq!(
            suggest("resource_id", Key::names(), false),
            Some("resource")
        );
        assert_eq!(suggest("zzz", Key::names(), false), None);
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
