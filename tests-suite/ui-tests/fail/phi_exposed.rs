use phi_audit::{audited, Phi};

/// The recommended pattern: PHI fields typed `Phi<T>`.
pub struct Patient {
    pub id: String,
    pub name: Phi<String>,
}

// No PHI parameter: the `Phi` is a field of one. A value taken out of it
// with `.expose()` is tainted wherever the `Phi` came from.
#[audited(action = "READ", resource = "Patient", id = patient.id.as_str(),
          metadata(name = patient.name.expose().as_str()))]
fn read(patient: &Patient) -> usize {
    let initial = patient.name.expose().chars().next();
    phi_audit::record!(initial = initial.map(|c| c.len_utf8()));
    phi_audit::record!(len = Phi::expose(&patient.name).len());
    0
}

fn main() {
    read(&Patient { id: "p-1".into(), name: Phi::new("Jane".into()) });
}
