//! The sink's connection lives on a thread of its own, and the sink waits
//! for each step (connect, migrate, insert) with a deadline.
//!
//! The blocking client cannot be interrupted: a server that stops answering
//! (its processes stopped, the socket still open, so TCP keepalives are
//! still acknowledged) or a listener that accepts and never speaks would
//! hold the calling thread forever. Here the call runs on the session
//! thread and the sink stops waiting at the deadline: the step is reported
//! as failed (counted in the sink's errors, with `last_error`), and the
//! sink's retry policy (`give_up_after`) and whatever sits in front of it
//! (a `Spool`, a `NonBlocking` queue) decide what happens next. The step
//! itself goes on; there is never more than one, so a hung server costs
//! one blocked thread, and when it answers, its result is picked up by the
//! next wait (a batch committed late is counted then).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Attempt, Conn, Done, PostgresError, Row};

/// What a step gives back.
pub(super) enum Output {
    /// A connection was opened (and prepared), or why not.
    Connected(Result<(), PostgresError>),
    /// An insert transaction: its rows back, and how it ended.
    Inserted {
        rows: Vec<Row>,
        result: Result<Done, Attempt>,
    },
}

type Step = Box<dyn FnOnce(&mut Option<Conn>) -> Output + Send>;

struct State {
    /// The connection, when no step holds it.
    conn: Option<Conn>,
    /// Whether a connection exists (held by a running step or not).
    connected: bool,
    step: Option<Step>,
    running: bool,
    done: Option<Output>,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

/// The session thread and its one step at a time.
pub(super) struct Session {
    shared: Arc<Shared>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Session {
    /// Starts the session thread (no connection yet).
    pub(super) fn start() -> Result<Session, PostgresError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                conn: None,
                connected: false,
                step: None,
                running: false,
                done: None,
                stop: false,
            }),
            cv: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("phi-audit-postgres".into())
            .spawn(move || run(&thread_shared))
            .map_err(|e| {
                PostgresError::Connect(format!("cannot start the connection thread: {e}"))
            })?;
        Ok(Session { shared })
    }

    /// Whether the session holds a connection.
    pub(super) fn connected(&self) -> bool {
        self.shared.lock().connected
    }

    /// Whether a step is queued or running.
    pub(super) fn busy(&self) -> bool {
        let st = self.shared.lock();
        st.running || st.step.is_some()
    }

    /// Hands `step` to the session thread. The session must be idle (see
    /// [`Session::busy`]).
    pub(super) fn submit(&self, step: impl FnOnce(&mut Option<Conn>) -> Output + Send + 'static) {
        let mut st = self.shared.lock();
        st.done = None;
        st.step = Some(Box::new(step));
        self.shared.cv.notify_all();
    }

    /// Waits up to `limit` for the step under way to end; its output, or
    /// `None` when it is still running (or none was submitted).
    pub(super) fn wait(&self, limit: Duration) -> Option<Output> {
        let deadline = Instant::now() + limit;
        let mut st = self.shared.lock();
        loop {
            if let Some(out) = st.done.take() {
                return Some(out);
            }
            if !st.running && st.step.is_none() {
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = self
                .shared
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for Session {
    /// Stops the thread once its step (if any) ends; the connection is
    /// closed there. Never waits.
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.stop = true;
        self.shared.cv.notify_all();
    }
}

fn run(shared: &Shared) {
    let mut st = shared.lock();
    loop {
        if let Some(step) = st.step.take() {
            st.running = true;
            let mut conn = st.conn.take();
            drop(st);
            let out = step(&mut conn);
            st = shared.lock();
            st.connected = conn.is_some();
            st.conn = conn;
            st.running = false;
            st.done = Some(out);
            shared.cv.notify_all();
            continue;
        }
        if st.stop {
            let conn = st.conn.take();
            drop(st);
            drop(conn);
            return;
        }
        st = shared.cv.wait(st).unwrap_or_else(|p| p.into_inner());
    }
}
