//! Identifiers shared across modules. Each is a newtype so one kind of id is
//! never passed where another is expected.

use std::fmt;

/// A tenant: one customer organisation (or a reseller's customer).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct TenantId(pub i64);

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
