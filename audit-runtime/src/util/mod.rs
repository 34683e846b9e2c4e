//! The bottom layer: building blocks with no knowledge of audit events.
//!
//! [`text`] (the string type of event fields), [`ids`] (fast event ids,
//! reseeded after `fork`) and [`cache`] (cache-line placement). Nothing here
//! imports another module of the crate.

pub(crate) mod cache;
pub(crate) mod hex;
pub(crate) mod ids;
pub(crate) mod stack;
pub(crate) mod text;
