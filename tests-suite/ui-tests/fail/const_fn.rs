use phi_audit::audited;

#[audited(action = "READ", resource = "Patient")]
const fn read() -> u32 {
    1
}

trait Repo {
    #[audited(action = "READ", resource = "Patient")]
    fn load(&self) -> u32;
}

fn main() {
    let _ = read();
}
