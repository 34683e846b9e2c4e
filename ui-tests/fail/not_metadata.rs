use phi_audit::{audited, Phi};

pub struct Visit {
    pub room: u32,
}

#[audited(action = "READ", resource = "Patient", id = name, actor = 42u8,
          metadata(rows = rows, visit = visit, secret = name))]
fn read(rows: Vec<u32>, visit: Visit, name: Phi<String>) {
    phi_audit::record!(again = name);
}

fn main() {
    read(vec![1], Visit { room: 1 }, Phi::new("Jane".into()));
}
