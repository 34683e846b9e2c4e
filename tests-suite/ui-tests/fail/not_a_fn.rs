use phi_audit::audited;

#[audited(action = "READ", resource = "Patient")]
struct Patient {
    id: u64,
}

fn main() {}
