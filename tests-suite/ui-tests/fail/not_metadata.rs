use phi_audit::{audited, Phi};

pub struct Visit {
    pub room: u32,
    pub name: Phi<String>,
}

// The type wall: a `Phi<T>` the macro cannot see (a field of a struct) is
// neither an identifier nor metadata.
#[audited(action = "READ", resource = "Patient", id = visit.name, actor = 42u8,
          metadata(rows = rows, visit = visit, secret = visit.name))]
fn read(rows: Vec<u32>, visit: Visit) {
    phi_audit::record!(again = visit.name);
}

fn main() {
    read(vec![1], Visit { room: 1, name: Phi::new("Jane".into()) });
}
