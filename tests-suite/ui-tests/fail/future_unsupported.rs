use phi_audit::audited;

// A named future type: #[audited] cannot wrap it, so it cannot see how the
// call ends. A compile error, never a SUCCESS recorded when the future is made.
#[audited(action = "READ", resource = "Patient")]
fn ready() -> std::future::Ready<Result<u8, std::io::Error>> {
    std::future::ready(Ok(1))
}

fn main() {
    let _ = ready();
    let _ = later();
}

// `impl IntoFuture` is not a future yet: refused too.
#[audited(action = "READ", resource = "Patient")]
fn later() -> impl std::future::IntoFuture<Output = u8> {
    std::future::ready(1)
}
