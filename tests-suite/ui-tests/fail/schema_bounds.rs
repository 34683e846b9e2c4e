use phi_audit::audited;

// The function's name becomes `action.name`, at most 128 characters.
#[audited(action = "READ", resource = "Patient")]
fn read_the_chart_of_a_patient_with_a_name_so_long_that_it_no_longer_fits_the_schema_bound_for_action_names_of_one_hundred_twenty_eight() {}

// Control and bidi characters in constants would mislead readers.
#[audited(action = "READ", resource = "Pat\tient")]
fn tab() {}

#[audited(action = "READ", resource = "Patient", name = "read\u{202e}trahc")]
fn bidi() {}

fn main() {}
