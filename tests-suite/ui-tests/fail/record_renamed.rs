use phi_audit::audited;
use phi_audit::record as remember;

#[audited(action = "READ", resource = "Patient")]
fn read(#[phi] name: &str) {
    // A renamed import is not recognized: it would escape the check.
    remember!(initial = name.len());
}

fn main() {
    read("Jane");
}
