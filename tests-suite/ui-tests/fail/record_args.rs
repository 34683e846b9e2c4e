use phi_audit::{audited, record};

#[audited(action = "READ", resource = "Patient")]
fn read(rows: usize) {
    record!(rows);
    record!();
    record!(café = rows);
    record!(ok = rows, rows + 1);
}

fn main() {
    read(1);
}
