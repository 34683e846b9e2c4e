//! JSON: the hand-written compact encoder of events and their pieces
//! ([`encode`]) and the canonical form chain hashes are taken over
//! ([`canonical`]).
//!
//! Imports the model ([`crate::model`]), never a record, config or context:
//! the record encoder, which copies a config's and a context's pre-rendered
//! pieces, lives in [`crate::record`].

pub(crate) mod bytes;
pub(crate) mod canonical;
pub(crate) mod encode;
