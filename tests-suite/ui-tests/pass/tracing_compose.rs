//! `#[audited]` composes with `#[tracing::instrument]` in either order.

use phi_audit::audited;

#[tracing::instrument(skip(name))]
#[audited(action = "READ", resource = "Patient", id = id)]
pub fn instrument_outside(id: u64, #[phi] name: &str) -> Result<usize, std::io::Error> {
    Ok(name.len() + id as usize)
}

#[audited(action = "READ", resource = "Patient", id = id)]
#[tracing::instrument(skip(name))]
pub fn instrument_inside(id: u64, #[phi] name: &str) -> Result<usize, std::io::Error> {
    Ok(name.len() + id as usize)
}

#[tracing::instrument]
#[audited(action = "READ", resource = "Patient", id = id)]
pub async fn async_outside(id: u64) -> u64 {
    id
}

#[audited(action = "READ", resource = "Patient", id = id)]
#[tracing::instrument]
pub async fn async_inside(id: u64) -> u64 {
    id
}

fn main() {
    let _ = instrument_outside(1, "Jane");
    let _ = instrument_inside(1, "Jane");
    drop(async_outside(1));
    drop(async_inside(1));
}
