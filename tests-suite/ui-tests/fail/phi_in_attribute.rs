use phi_audit::audited;

pub struct Person {
    pub first: String,
}

#[audited(action = "READ", resource = "Patient", id = name, patient = &person.first,
          actor = name.to_string(), name = name,
          metadata(len = name.len(), call = (|| name)(), text = format!("{name}"),
                   both = pseudonym(name), whole = person))]
fn read(#[phi] name: &str, #[phi] person: Person) {}

fn main() {
    read("Jane", Person { first: "Jane".into() });
}
