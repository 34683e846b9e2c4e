//! Time: the millisecond wall clock ([`clock`]) and [`timestamp::Timestamp`],
//! written as RFC 3339. Imports only [`crate::util`].

pub(crate) mod clock;
pub(crate) mod timestamp;
