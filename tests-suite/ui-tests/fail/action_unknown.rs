use phi_audit::audited;

#[audited(action = "Read", resource = "Patient")]
fn read() {}

#[audited(action = "VIEW", resource = "Patient")]
fn view() {}

fn main() {
    read();
    view();
}
