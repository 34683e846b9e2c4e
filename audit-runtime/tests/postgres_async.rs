//! PostgreSQL from async code: `PostgresSink::connect`, direct writes and
//! dropping the sink on a thread that drives a tokio runtime (the blocking
//! client used to panic there: "Cannot start a runtime from within a
//! runtime"). Against a real server (`PHI_AUDIT_PG_URL`).

use std::sync::Arc;

use phi_audit_runtime::{
    with_dispatch, ActionType, Actor, Config, Dispatch, EventBuilder, NonBlocking, PostgresOptions,
    PostgresSink, PostgresStore, Sink,
};

fn pg_url() -> Option<String> {
    phi_audit_test_env::server(
        phi_audit_test_env::PG_URL,
        "phi-audit-runtime --test postgres_async",
        "PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/test",
    )
}

fn schema_name(tag: &str) -> String {
    format!(
        "t_async_{tag}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

/// Counts the rows and drops the schema, on a blocking thread.
async fn count_and_drop(url: &str, schema: &str) -> i64 {
    let (url, schema) = (url.to_owned(), schema.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let n: i64 = c
            .query_one(&format!("SELECT count(*) FROM {schema}.audit_events"), &[])
            .unwrap()
            .get(0);
        c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .unwrap();
        n
    })
    .await
    .unwrap()
}

async fn connect_write_drop(tag: &str) {
    let Some(url) = pg_url() else { return };
    let schema = schema_name(tag);
    // Connect (and migrate) on a runtime thread.
    let pg = Arc::new(
        PostgresSink::connect(&url, PostgresOptions::new().schema(&schema)).expect("connect"),
    );
    let d = Dispatch::new(
        Config::new("async-svc").build().unwrap(),
        NonBlocking::new(pg.clone()),
    );
    let event = EventBuilder::access(ActionType::Read, "Patient", "p-1")
        .actor(Actor::human("dr-async"))
        .build(&d);
    // A synchronous write from the runtime thread.
    pg.write(&event).expect("direct write");
    // Behind NonBlocking, as documented.
    for i in 0..10 {
        with_dispatch(&d, || {
            EventBuilder::access(ActionType::Read, "Patient", format!("p-{i}")).emit()
        });
    }
    d.flush().expect("flush");
    // A store opened on the runtime thread too.
    let store = PostgresStore::connect(&url, &schema).expect("store");
    drop(store);
    // Dropping the last sink closes its connection on the runtime thread.
    drop(d);
    drop(pg);
    assert_eq!(count_and_drop(&url, &schema).await, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sink_inside_a_multi_thread_runtime() {
    connect_write_drop("mt").await;
}

#[tokio::test(flavor = "current_thread")]
async fn postgres_sink_inside_a_current_thread_runtime() {
    connect_write_drop("ct").await;
}

/// Connection errors are errors there as well, never panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_inside_a_runtime() {
    let e = PostgresSink::connect(
        "postgres://nobody@127.0.0.1:1/none?connect_timeout=1",
        PostgresOptions::new(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("cannot connect"), "{e}");
    let e = PostgresSink::connect("not a url ::", PostgresOptions::new()).unwrap_err();
    assert!(e.to_string().contains("invalid PostgreSQL URL"), "{e}");
}
