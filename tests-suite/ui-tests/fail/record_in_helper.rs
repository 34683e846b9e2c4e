use phi_audit::audited;

// A helper the audited body calls with a PHI value: the check cannot see
// where `name` comes from, so `record!` is refused here.
fn helper(name: &str) {
    phi_audit::record!(initial = name.len());
}

#[audited(action = "READ", resource = "Patient")]
fn read(#[phi] name: &str) {
    helper(name);
    // A nested fn is not the audited body either.
    fn nested(n: usize) {
        phi_audit::record!(nested = n);
    }
    nested(name.len());
}

fn main() {
    read("Jane");
}
