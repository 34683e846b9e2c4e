use phi_audit::audited;

pub struct Patient {
    pub mrn: String,
}

impl Patient {
    #[audited(action = "READ", resource = "Patient", id = self.mrn)]
    pub fn read(#[phi] &self) -> usize {
        self.mrn.len()
    }
}

#[audited(action = "READ", resource = "Patient")]
fn tagged_with_args(#[phi(strict)] name: &str) {}

fn main() {
    let _ = Patient { mrn: "m".into() }.read();
    tagged_with_args("Jane");
}
