//! `#[audited]` on the methods of `#[async_trait]` impls (the attribute
//! order users write), in a crate that denies warnings: the event is
//! recorded when the returned future completes, and the future stays `Send`.

#![deny(warnings)]
#![deny(unused, nonstandard_style, rust_2018_idioms, unreachable_pub)]

use async_trait::async_trait;
use phi_audit::{audited, record, AuditError, Outcome, Phi};

/// An error that declares denials.
#[derive(Debug)]
pub enum RepoError {
    /// Not allowed.
    Forbidden,
}

impl AuditError for RepoError {
    fn audit_outcome(&self) -> Outcome {
        match self {
            RepoError::Forbidden => Outcome::denied("RoleDenied"),
        }
    }
}

/// A repository.
#[async_trait]
pub trait Repo {
    /// Loads a chart.
    async fn load(&self, id: &str, name: &str) -> Result<u32, RepoError>;
    /// Updates a chart.
    async fn update(&mut self, id: u64, note: Phi<String>) -> Result<(), RepoError>;
    /// A default method.
    async fn count(&self) -> usize {
        0
    }
    /// An audited default method.
    #[audited(action = "READ", resource = "Chart", id = id)]
    async fn first(&self, id: u64) -> Result<u64, RepoError> {
        Ok(id)
    }
}

/// An implementation.
pub struct Charts {
    rows: u32,
}

#[async_trait]
impl Repo for Charts {
    /// Docs stay.
    #[audited(action = "READ", resource = "Chart", id = id, patient = pseudonym(name))]
    async fn load(&self, id: &str, #[phi] name: &str) -> Result<u32, RepoError> {
        if name.is_empty() {
            return Err(RepoError::Forbidden);
        }
        record!(rows = self.rows);
        Ok(self.rows)
    }

    #[audited(action = "UPDATE", resource = "Chart", id = id)]
    async fn update(&mut self, id: u64, note: Phi<String>) -> Result<(), RepoError> {
        self.rows += note.expose().len() as u32;
        phi_audit::record!(updated = true);
        Ok(())
    }

    #[audited(action = "READ", resource = "Chart")]
    async fn count(&self) -> usize {
        self.rows as usize
    }
}

/// A repository whose futures need not be `Send`.
#[async_trait(?Send)]
pub trait LocalRepo {
    /// Loads.
    async fn load_local(&self, id: &str) -> Result<u32, RepoError>;
}

#[async_trait(?Send)]
impl LocalRepo for Charts {
    #[audited(action = "READ", resource = "Chart", id = id)]
    async fn load_local(&self, id: &str) -> Result<u32, RepoError> {
        let _ = std::rc::Rc::new(id.len());
        Ok(self.rows)
    }
}

fn is_send<T: Send>(_: &T) {}

fn main() {
    let mut c = Charts { rows: 1 };
    is_send(&c.load("c-1", "Jane"));
    is_send(&c.count());
    is_send(&c.first(1));
    is_send(&c.update(1, Phi::new("note".into())));
    drop(c.load_local("c-1"));
}
