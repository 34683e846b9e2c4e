//! `#[audited]` on functions returning `Pin<Box<dyn Future>>` (also through
//! an alias) or `impl Future`, in a crate that denies warnings.

#![deny(warnings)]
#![deny(unused, nonstandard_style, rust_2018_idioms, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;

use phi_audit::{audited, record, Phi};

/// A boxed future, as the `futures` crate names it.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The error.
#[derive(Debug)]
pub struct NotFound;

/// Exactly `Box::pin(async move { .. })`.
#[audited(action = "READ", resource = "Chart", id = id)]
pub fn boxed(id: &str) -> Pin<Box<dyn Future<Output = Result<usize, NotFound>> + Send + '_>> {
    Box::pin(async move {
        record!(len = id.len());
        Ok(id.len())
    })
}

/// Work before the future, early returns of different futures, `?`.
#[audited(action = "READ", resource = "Chart", id = id)]
pub fn aliased<'a>(id: &'a str, #[phi] name: &'a str) -> BoxFuture<'a, Result<usize, NotFound>> {
    let n = name.len();
    record!(before = true);
    if n == 0 {
        return Box::pin(async { Err(NotFound) });
    }
    Box::pin(async move {
        let parsed: usize = id.parse().map_err(|_| NotFound)?;
        Ok(parsed + n)
    })
}

/// `impl Future` with a lifetime and a generic.
#[audited(action = "READ", resource = "Chart", id = id)]
pub fn unboxed<'a, T: Send + 'a>(id: &'a str, extra: T) -> impl Future<Output = Result<T, NotFound>> + Send + 'a {
    async move {
        record!(len = id.len());
        if id.is_empty() { Err(NotFound) } else { Ok(extra) }
    }
}

/// `impl Future` without a `Result`, taking `Phi<T>`.
#[audited(action = "UPDATE", resource = "Note")]
pub fn note(text: Phi<String>) -> impl Future<Output = usize> {
    async move { text.expose().len() }
}

/// A method returning a boxed future.
pub struct Repo;

impl Repo {
    /// Loads.
    #[audited(action = "READ", resource = "Chart", id = id)]
    pub fn load(&self, id: u64) -> Pin<Box<dyn Future<Output = Result<u64, NotFound>> + Send + '_>> {
        Box::pin(async move { Ok(id) })
    }
}

fn is_send<T: Send>(_: &T) {}

fn main() {
    is_send(&boxed("c"));
    is_send(&aliased("1", "Jane"));
    is_send(&unboxed("c", 1u8));
    drop(note(Phi::new("x".into())));
    is_send(&Repo.load(1));
}
