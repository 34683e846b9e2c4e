//! The worker against a model: random interleavings of records, events,
//! flushes, pauses (so the worker takes batches at random points) and a
//! shutdown, some items refused by the inner sink. Checks that the inner
//! sink sees every item in the order queued, that each flush comes after
//! everything queued before it and reports exactly the failures since the
//! previous flush, and that nothing is accepted after the shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;

use super::NonBlocking;
use crate::model::event::{ActionType, AuditEvent, Outcome};
use crate::model::metadata::{MetaValue, Metadata};
use crate::record::{CallRecord, CallSite, ConfigRef, RecordRef};
use crate::sink::{BatchError, Sink, SinkError};

#[derive(Debug, Clone, Copy)]
enum Op {
    Record { fail: bool },
    Event { fail: bool },
    Flush,
    Pause(u8),
    Shutdown,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<bool>().prop_map(|f| Op::Record { fail: f && rand_fail(f) }),
        3 => any::<bool>().prop_map(|f| Op::Event { fail: f && rand_fail(f) }),
        2 => Just(Op::Flush),
        1 => (0u8..200).prop_map(Op::Pause),
        1 => Just(Op::Shutdown),
    ]
}

/// Keeps failures a minority of the items that could fail.
fn rand_fail(f: bool) -> bool {
    f
}

/// What the inner sink saw: item numbers, and flushes with the count of
/// items seen before them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Item(u64),
    Flush(usize),
}

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
}

/// The item number and whether to refuse it, from the metadata.
fn number(m: &Metadata) -> (u64, bool) {
    let n = match m.get("n") {
        Some(MetaValue::UInt(n)) => *n,
        other => panic!("no item number: {other:?}"),
    };
    (n, matches!(m.get("fail"), Some(MetaValue::Bool(true))))
}

impl Recorder {
    fn take<T>(
        &self,
        items: &mut Vec<T>,
        meta: impl Fn(&T) -> &Metadata,
    ) -> Result<(), BatchError> {
        let mut seen = self.seen.lock().unwrap();
        let mut failed = 0;
        for item in items.iter() {
            let (n, fail) = number(meta(item));
            seen.push(Seen::Item(n));
            failed += u64::from(fail);
        }
        items.clear();
        if failed > 0 {
            return Err(BatchError {
                failed,
                error: SinkError::Other("refused".into()),
            });
        }
        Ok(())
    }
}

impl Sink for Arc<Recorder> {
    fn write(&self, event: &AuditEvent) -> Result<(), SinkError> {
        let mut one = vec![event.clone()];
        self.write_batch(&mut one).map_err(|e| e.error)
    }
    fn write_batch(&self, events: &mut Vec<AuditEvent>) -> Result<(), BatchError> {
        self.take(events, |e| &e.metadata)
    }
    fn __takes_records(&self) -> bool {
        true
    }
    fn __write_records(&self, records: &mut Vec<CallRecord>) -> Result<(), BatchError> {
        self.take(records, |r| &r.metadata)
    }
    fn flush(&self) -> Result<(), SinkError> {
        let mut seen = self.seen.lock().unwrap();
        let before = seen.iter().filter(|s| matches!(s, Seen::Item(_))).count();
        seen.push(Seen::Flush(before));
        Ok(())
    }
}

static SITE: CallSite = CallSite {
    action: ActionType::Read,
    resource: "Patient",
    name: "read",
    phi_touched: None,
    classification: None,
};

fn metadata(n: u64, fail: bool) -> Metadata {
    let mut m = Metadata::new();
    m.insert_value("n".into(), MetaValue::UInt(n));
    if fail {
        m.insert_value("fail".into(), MetaValue::Bool(true));
    }
    m
}

fn event(n: u64, fail: bool) -> AuditEvent {
    let config = crate::Config::new("svc").build().unwrap();
    let record = CallRecord {
        site: &SITE,
        config: ConfigRef::Shared(config),
        context: None,
        started: crate::time::timestamp::Timestamp::from_unix_millis(0),
        resource_id: None,
        patient_id: None,
        actor: None,
        outcome: Outcome::SUCCESS,
        metadata: metadata(n, fail),
    };
    record.into_event()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 64 },
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_interleaving_keeps_order_and_every_flush_reports(
        ops in proptest::collection::vec(op(), 0..if cfg!(miri) { 12 } else { 60 }),
        capacity in 1usize..16,
    ) {
        let recorder = Arc::new(Recorder::default());
        let sink = NonBlocking::builder(recorder.clone())
            .capacity(capacity)
            .report_errors(false)
            .build();
        let config = crate::Config::new("svc").build().unwrap();
        let mut n = 0u64;
        let mut queued = Vec::new();
        let mut failed_since_flush = 0u64;
        let mut flushes = 0usize;
        let mut closed = false;
        for op in ops {
            match op {
                Op::Record { fail } | Op::Event { fail } => {
                    let r = if matches!(op, Op::Record { .. }) {
                        let record = CallRecord {
                            site: &SITE,
                            config: ConfigRef::Shared(config.clone()),
                            context: None,
                            started: crate::time::timestamp::Timestamp::from_unix_millis(0),
                            resource_id: None,
                            patient_id: None,
                            actor: None,
                            outcome: Outcome::SUCCESS,
                            metadata: metadata(n, fail),
                        };
                        RecordRef::pass(record, |r| sink.__write_record(r))
                    } else {
                        sink.write_owned(event(n, fail))
                    };
                    if closed {
                        prop_assert!(matches!(r, Err(SinkError::Closed)), "{r:?}");
                    } else {
                        prop_assert!(r.is_ok(), "{r:?}");
                        queued.push(n);
                        failed_since_flush += u64::from(fail);
                    }
                    n += 1;
                }
                Op::Flush => {
                    let r = sink.flush();
                    if closed {
                        prop_assert!(matches!(r, Err(SinkError::Closed)), "{r:?}");
                        continue;
                    }
                    match (failed_since_flush, r) {
                        (0, Ok(())) => {}
                        (k, Err(SinkError::Lost { events, .. })) if k > 0 => {
                            prop_assert_eq!(events, k);
                        }
                        (k, r) => prop_assert!(false, "{k} failed since the last flush, got {r:?}"),
                    }
                    failed_since_flush = 0;
                    flushes += 1;
                    // Everything queued before the flush was written before
                    // the inner sink was flushed.
                    let seen = recorder.seen.lock().unwrap().clone();
                    let last = seen.iter().rev().find_map(|s| match s {
                        Seen::Flush(before) => Some(*before),
                        Seen::Item(_) => None,
                    });
                    prop_assert!(last.is_some_and(|b| b >= queued.len()), "{last:?} {}", queued.len());
                }
                Op::Pause(us) => std::thread::sleep(Duration::from_micros(u64::from(us))),
                Op::Shutdown => {
                    let report = sink.shutdown(Duration::from_secs(60));
                    prop_assert!(report.completed);
                    if !closed {
                        prop_assert_eq!(report.stats.written + report.stats.failed, queued.len() as u64);
                    }
                    closed = true;
                }
            }
        }
        drop(sink);
        let seen = recorder.seen.lock().unwrap().clone();
        let items: Vec<u64> = seen
            .iter()
            .filter_map(|s| match s {
                Seen::Item(n) => Some(*n),
                Seen::Flush(_) => None,
            })
            .collect();
        prop_assert_eq!(items, queued);
        // Flush markers never go backwards.
        let marks: Vec<usize> = seen
            .iter()
            .filter_map(|s| match s {
                Seen::Flush(b) => Some(*b),
                Seen::Item(_) => None,
            })
            .collect();
        prop_assert!(marks.windows(2).all(|w| w[0] <= w[1]));
        prop_assert!(marks.len() >= flushes);
    }
}
