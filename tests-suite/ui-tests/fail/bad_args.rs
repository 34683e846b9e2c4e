use phi_audit::audited;

#[audited(action = "READ", resource = "Patient", patient_id = id, id = id, id = id,
          metadata = id, name, crate = "phi_audit", actor = pseudonym(id), patient = pseudonym(id, id))]
fn read(id: u64) {}

fn main() {
    read(1);
}
