use phi_audit::audited;

#[audited(action = "READ", resource = "Patient", metadata(
    k1 = 1, k2 = 2, k3 = 3, k4 = 4, k5 = 5, k6 = 6, k7 = 7, k8 = 8, k9 = 9, k10 = 10,
    k11 = 11, k12 = 12, k13 = 13, k14 = 14, k15 = 15, k16 = 16, k17 = 17, k18 = 18,
    k19 = 19, k20 = 20, k21 = 21,
    k1 = 0,
    clé = 1,
    a_key_name_that_goes_on_and_on_far_beyond_sixty_four_characters_in_total = 1,
))]
fn read() {}

fn main() {
    read();
}
