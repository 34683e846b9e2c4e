use phi_audit::{audited, Phi};

// Parameters typed `Phi<..>` (directly, behind `&`, `&mut`, `Option` or
// `Box`) are tainted like `#[phi]` ones, even through `.expose()`.
#[audited(action = "READ", resource = "Patient", id = name.expose().as_str(),
          metadata(n = maybe.as_ref().map(|p| p.expose().len()), b = boxed.expose().len(),
                   r = by_ref.expose().len()))]
fn read(
    name: Phi<String>,
    maybe: Option<Phi<String>>,
    boxed: Box<Phi<String>>,
    by_ref: &Phi<String>,
    by_mut: &mut Phi<u32>,
) {
    let shown = by_mut.expose().to_string();
    phi_audit::record!(derived = shown);
    phi_audit::record!(direct = name.expose().len());
}

fn main() {
    let mut n = Phi::new(1);
    read(
        Phi::new("Jane".into()),
        None,
        Box::new(Phi::new("Doe".into())),
        &Phi::new("J".into()),
        &mut n,
    );
}
