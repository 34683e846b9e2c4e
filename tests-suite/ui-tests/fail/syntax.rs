use phi_audit::audited;

#[audited(action = "READ", resource = "Patient", metadata(reason))]
fn read(reason: &str) {}

#[audited(action: "READ")]
fn other() {}

fn main() {
    read("x");
    other();
}
