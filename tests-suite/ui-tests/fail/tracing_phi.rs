//! Under `#[tracing::instrument]` the `#[phi]` tags still reach `#[audited]`.

use phi_audit::audited;

#[tracing::instrument(skip(name))]
#[audited(action = "READ", resource = "Patient", metadata(who = name))]
fn outside(#[phi] name: &str) {}

#[audited(action = "READ", resource = "Patient", metadata(who = name))]
#[tracing::instrument(skip(name))]
fn inside(#[phi] name: &str) {}

fn main() {
    outside("Jane");
    inside("Jane");
}
