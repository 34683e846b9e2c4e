use phi_audit::audited;

const ACTION: &str = "READ";

#[audited(action = ACTION, resource = "", name = format!("x"), classification = "phi",
          phi_touched = "yes")]
fn read() {}

#[audited(action = "READ", resource = "A resource type name that is far too long for the schema, which caps resource types at one hundred and twenty-eight characters")]
fn long() {}

fn main() {
    read();
    long();
}
