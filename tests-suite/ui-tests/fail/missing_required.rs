use phi_audit::audited;

#[audited(id = id)]
fn read(id: u64) {}

fn main() {
    read(1);
}
