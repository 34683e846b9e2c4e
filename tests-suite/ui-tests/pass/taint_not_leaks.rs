//! Things that look like PHI to a careless check but are not: fields,
//! methods and paths that share a `#[phi]` parameter's name, struct literal
//! field names, and values computed without it.

use phi_audit::audited;

pub struct Visit {
    pub name: &'static str,
}

pub mod name {
    pub const DEFAULT: u32 = 1;
}

fn count(v: &Visit) -> usize {
    v.name.len()
}

#[audited(action = "READ", resource = "Visit", id = visit.name,
          metadata(a = visit.name, b = count(&Visit { name: "x" }), c = self::name::DEFAULT))]
pub fn lookalikes(visit: &Visit, #[phi] name: &str) -> usize {
    let safe = visit.name.len();
    phi_audit::record!(safe = safe, other = Visit { name: "y" }.name);
    let derived = name.len();
    derived + safe
}

fn main() {
    let _ = lookalikes(&Visit { name: "clinic" }, "Jane");
}
