//! Event ids stay unique across `fork()`: the child's id generator is
//! reseeded, so it never repeats the parent's ids (which a store keyed by
//! event id, such as the PostgreSQL sink's table, would otherwise drop).
#![cfg(unix)]

use std::collections::HashSet;

use phi_audit::{audited, with_dispatch, Config, Dispatch, MemorySink};
use uuid::Uuid;

#[audited(action = "READ", resource = "Patient", id = id)]
fn read(id: u32) -> u32 {
    id
}

/// Ids of `n` audited calls on this thread.
fn ids(n: u32) -> Vec<Uuid> {
    let sink = MemorySink::new();
    let d = Dispatch::new(Config::new("svc").build().unwrap(), sink.clone());
    with_dispatch(&d, || {
        for i in 0..n {
            read(i);
        }
    });
    sink.take().into_iter().map(|e| e.event_id).collect()
}

#[test]
fn a_forked_child_draws_ids_of_its_own() {
    // Seed this thread's generator before the fork: the child inherits it.
    assert_eq!(ids(1).len(), 1);
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors `pipe` writes.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only draws ids, writes them to the pipe and leaves
    // with `_exit`, never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let bytes: Vec<u8> = std::panic::catch_unwind(|| ids(200))
            .map(|ids| ids.iter().flat_map(|u| *u.as_bytes()).collect())
            .unwrap_or_default();
        // SAFETY: writes `bytes` to the pipe's write end, then ends the
        // child without running the parent's destructors or harness.
        unsafe {
            libc::write(fds[1], bytes.as_ptr().cast(), bytes.len());
            libc::_exit(0);
        }
    }
    // SAFETY: closes the parent's copy of the write end, so reading ends
    // when the child exits.
    unsafe { libc::close(fds[1]) };
    let mut child = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reads into `buf`, within its length.
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        child.extend_from_slice(&buf[..n as usize]);
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above; closes our read end.
    unsafe {
        libc::waitpid(pid, &mut status, 0);
        libc::close(fds[0]);
    }
    let child: Vec<Uuid> = child
        .chunks_exact(16)
        .map(|c| Uuid::from_slice(c).unwrap())
        .collect();
    assert_eq!(child.len(), 200, "the child drew its ids");
    let parent = ids(200);
    let parent: HashSet<Uuid> = parent.into_iter().collect();
    let shared = child.iter().filter(|id| parent.contains(id)).count();
    assert_eq!(shared, 0, "the child repeated {shared} of the parent's ids");
    assert!(child.iter().all(|u| u.get_version_num() == 4));
}
