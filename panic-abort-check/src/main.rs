//! Built with `panic = "abort"` by `tests/panic_abort.rs`
//! (`cargo run -p panic-abort-check --profile panic-abort -- OUT.jsonl`):
//! writes one finished call, then panics inside two nested audited calls.
//! With `flush_on_panic()` installed, the file must hold all three events,
//! the panicking calls' FAILURE `Panic` included, although nothing unwinds.

use phi_audit::{audited, flush_on_panic, init, Config, JsonlFileSink, NonBlocking};

#[audited(action = "READ", resource = "Patient", id = id)]
fn finished(id: &str) -> usize {
    id.len()
}

#[audited(action = "READ", resource = "Chart", id = id)]
fn outer(id: &str, #[phi] name: &str) -> usize {
    phi_audit::record!(step = "before the inner call");
    inner(id, name)
}

#[audited(action = "UPDATE", resource = "Note", id = id)]
fn inner(id: &str, #[phi] name: &str) -> usize {
    // The payload holds PHI: it must never reach the event.
    panic!("chart of {name} ({id}) unreadable");
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: panic-abort-check OUT.jsonl");
    let sink = JsonlFileSink::open(&path).expect("open the output file");
    let _guard = init(
        Config::new("panic-abort-check").build().expect("config"),
        NonBlocking::new(sink),
    )
    .expect("init");
    flush_on_panic();
    assert_eq!(finished("p-1"), 3);
    let n = outer("p-2", "Jane Doe");
    // Not reached: the panic aborts the process.
    println!("{n}");
}
