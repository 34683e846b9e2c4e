use phi_audit::audited;

#[audited(action = "READ", resource = "Patient", id = id)]
fn type_error(id: u64) -> Result<u32, String> {
    let n: u32 = "not a number";
    Ok(n + id)
}

#[audited(action = "READ", resource = "Patient", id = id)]
async fn async_type_error(id: u64) -> u32 {
    id
}

#[audited(action = "READ", resource = "Patient", id = id)]
fn half_typed(id: u64, #[phi] name: &str) -> u32 {
    let x = ;
    1
}

fn main() {
    let _ = type_error(1);
    let _ = async_type_error(1);
    let _ = half_typed(1, "Jane");
}
