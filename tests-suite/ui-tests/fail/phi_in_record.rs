use phi_audit::{audited, record};

#[audited(action = "READ", resource = "Patient", id = id)]
fn read(id: u64, #[phi] name: String, #[phi] (first, last): (&str, &str)) {
    record!(direct = name);
    let upper = name.to_uppercase();
    let initial = upper.chars().next();
    phi_audit::record!(through_let = initial);
    let (a, b) = (first.len(), 1);
    record!(through_tuple = a, fine = b);
    let shown = || last.len();
    record!(through_closure = shown());
    let mut out = String::new();
    out.push_str(&name);
    record!(through_mutation = out.len());
    let id = name.len(); // shadowing taints the new binding too
    record!(through_shadowing = id);
    for c in first.chars() {
        record!(through_loop = c);
    }
    record!(formatted = format!("{last}"));
}

fn main() {
    read(1, "Jane".into(), ("Jane", "Doe"));
}
