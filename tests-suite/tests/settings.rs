//! Settings from the environment, the settings file and serde: every sink
//! scheme and option, every mistake (all reported at once, positioned, never
//! with a secret), and the sinks they open. The environment is passed as a
//! map (`Settings::from_env_map`), so these tests never touch the process's
//! variables; `tests/settings_init_env.rs` calls the real `init_from_env`.

use std::path::{Path, PathBuf};

use phi_audit::settings::{Delivery, JsonlSpec, LedgerSpec, SinkKind};
use phi_audit::{
    with_dispatch, ActionType, CheckpointSigner, EventBuilder, FsyncPolicy, FullPolicy, HashAlg,
    PseudonymKey, SchemaVersion, Settings, SettingsError, SinkSpec,
};

fn from_env(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    Settings::from_env_map(pairs.iter().copied())
}

fn with_service<'a>(more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![("PHI_AUDIT_SERVICE", "chart-service")];
    v.extend_from_slice(more);
    v
}

fn sink(spec: &str) -> SinkSpec {
    match spec.parse::<SinkSpec>() {
        Ok(s) => s,
        Err(e) => panic!("{spec}: {e}"),
    }
}

/// The problems of a sink spec as `PHI_AUDIT_SINK`, as strings.
fn sink_problems(spec: &str) -> Vec<String> {
    match from_env(&with_service(&[("PHI_AUDIT_SINK", spec)])) {
        Ok(s) => panic!("{spec} was accepted: {s:?}"),
        Err(e) => e.problems().iter().map(|p| p.to_string()).collect(),
    }
}

fn one_problem(spec: &str) -> String {
    let p = sink_problems(spec);
    assert_eq!(p.len(), 1, "{spec}: {p:#?}");
    p.into_iter().next().unwrap()
}

fn jsonl(spec: &SinkSpec) -> &JsonlSpec {
    match &spec.kind {
        SinkKind::Jsonl(j) => j,
        other => panic!("not jsonl: {other:?}"),
    }
}

fn ledger(spec: &SinkSpec) -> &LedgerSpec {
    match &spec.kind {
        SinkKind::Ledger(l) => l,
        other => panic!("not a ledger: {other:?}"),
    }
}

fn write(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

const DEFAULT_QUEUE: Delivery = Delivery::Queued {
    capacity: 4096,
    full: FullPolicy::Block,
};

// ---------------------------------------------------------------- schemes

#[test]
fn the_service_alone_gives_the_defaults() {
    let s = from_env(&with_service(&[])).unwrap();
    assert_eq!(s.service, "chart-service");
    assert_eq!(s.environment, None);
    assert_eq!(s.version, None);
    assert_eq!(s.schema, SchemaVersion::V1_1);
    assert_eq!(s.pseudonym_key_file, None);
    assert_eq!(s.sinks, vec![sink("stdout")]);
    assert_eq!(s.sinks[0].kind, SinkKind::Stdout);
    assert_eq!(s.sinks[0].delivery, DEFAULT_QUEUE);
}

#[test]
fn every_variable_is_read() {
    let s = from_env(&[
        ("PHI_AUDIT_SERVICE", "chart-service"),
        ("PHI_AUDIT_ENVIRONMENT", "staging"),
        ("PHI_AUDIT_VERSION", "1.4.2"),
        ("PHI_AUDIT_SCHEMA", "2.0"),
        ("PHI_AUDIT_PSEUDONYM_KEY_FILE", "/run/secrets/pseudonym"),
        ("PHI_AUDIT_SINK", "tracing"),
        ("UNRELATED", "x"),
        ("PHI_AUDIT_PG_URL", "postgres://elsewhere/db"),
    ])
    .unwrap();
    assert_eq!(s.environment.as_deref(), Some("staging"));
    assert_eq!(s.version.as_deref(), Some("1.4.2"));
    assert_eq!(s.schema, SchemaVersion::V2_0);
    assert_eq!(
        s.pseudonym_key_file.as_deref(),
        Some(Path::new("/run/secrets/pseudonym"))
    );
    assert_eq!(s.sinks[0].kind, SinkKind::Tracing);
    for v in ["1.0", "1.1", "2.0"] {
        let s = from_env(&with_service(&[("PHI_AUDIT_SCHEMA", v)])).unwrap();
        assert_eq!(s.schema.as_str(), v);
    }
}

#[test]
fn an_empty_variable_counts_as_unset() {
    let s = from_env(&with_service(&[
        ("PHI_AUDIT_SINK", ""),
        ("PHI_AUDIT_ENVIRONMENT", ""),
    ]))
    .unwrap();
    assert_eq!(s.sinks, vec![sink("stdout")]);
    assert_eq!(s.environment, None);
}

#[test]
fn every_scheme_parses() {
    assert_eq!(sink("stdout").kind, SinkKind::Stdout);
    assert_eq!(sink("tracing").kind, SinkKind::Tracing);

    let j = sink("jsonl:/var/log/audit.jsonl");
    assert_eq!(j.delivery, DEFAULT_QUEUE);
    assert_eq!(jsonl(&j), &JsonlSpec::new("/var/log/audit.jsonl"));
    assert_eq!(jsonl(&j).fsync, FsyncPolicy::EveryEvent);
    assert_eq!(jsonl(&j).rotate_bytes, None);
    assert_eq!(
        jsonl(&sink("jsonl:relative/a.jsonl")).path,
        Path::new("relative/a.jsonl")
    );

    let l = sink("ledger:/var/log/ledger.jsonl");
    assert_eq!(ledger(&l), &LedgerSpec::new("/var/log/ledger.jsonl"));
    assert_eq!(ledger(&l).alg, HashAlg::Sha256);
    assert_eq!(ledger(&l).checkpoint_key, None);
    assert_eq!(ledger(&l).checkpoint_every, 1000);
    assert_eq!(l.scheme(), "ledger");

    let s = from_env(&with_service(&[(
        "PHI_AUDIT_SINK",
        " stdout , tracing,jsonl:/a.jsonl , ledger:/b.jsonl",
    )]))
    .unwrap();
    let schemes: Vec<_> = s.sinks.iter().map(SinkSpec::scheme).collect();
    assert_eq!(schemes, ["stdout", "tracing", "jsonl", "ledger"]);
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_urls_parse_with_phi_audit_options_taken_out() {
    use phi_audit::settings::PostgresSpec;
    let pg = |s: &str| -> PostgresSpec {
        match sink(s).kind {
            SinkKind::Postgres(p) => p,
            other => panic!("{other:?}"),
        }
    };
    let p = pg("postgres://audit@db.internal/app");
    assert_eq!(p.url(), "postgres://audit@db.internal/app");
    // The issue's `postgres:URL` form names the same sink.
    assert_eq!(pg("postgres:postgres://audit@db.internal/app"), p);
    assert_eq!(
        pg("postgres:postgresql://audit@db.internal/app?schema=a").schema,
        "a"
    );
    assert_eq!(
        (p.schema.as_str(), p.integrity, p.batch_size),
        ("public", false, 1000)
    );

    let spec = sink("postgresql://audit@db:5433/app?sslmode=disable&schema=audit_1&integrity&batch=250&connect_timeout=7&application_name=svc&queue=64");
    assert_eq!(
        spec.delivery,
        Delivery::Queued {
            capacity: 64,
            full: FullPolicy::Block
        }
    );
    let SinkKind::Postgres(p) = &spec.kind else {
        unreachable!()
    };
    // The driver's parameters stay in the URL, in order; phi-audit's leave it.
    assert_eq!(
        p.url(),
        "postgresql://audit@db:5433/app?sslmode=disable&connect_timeout=7&application_name=svc"
    );
    assert_eq!(
        (p.schema.as_str(), p.integrity, p.batch_size),
        ("audit_1", true, 250)
    );
    // The URL's connect_timeout is the sink's.
    assert!(
        format!("{:?}", p.options()).contains("connect_timeout: 7s"),
        "{:?}",
        p.options()
    );
    assert_eq!(sink("postgres://h/db?sync").delivery, Delivery::Sync);
}

#[cfg(not(feature = "postgres"))]
#[test]
fn a_postgres_sink_without_the_feature_names_the_feature() {
    let m = one_problem("stdout,postgres://audit:S3cr3tPw@db/app");
    assert!(
        m.contains("`postgres` feature") && m.contains("features = [\"postgres\"]"),
        "{m}"
    );
    assert!(
        m.starts_with("PHI_AUDIT_SINK (sink 2, characters 8-15)"),
        "{m}"
    );
    assert!(!m.contains("S3cr3tPw"), "{m}");
}

// ---------------------------------------------------------------- options

#[test]
fn delivery_options() {
    assert_eq!(sink("stdout?sync").delivery, Delivery::Sync);
    assert_eq!(sink("jsonl:/a?sync").delivery, Delivery::Sync);
    assert_eq!(
        sink("tracing?queue=10&full=drop").delivery,
        Delivery::Queued {
            capacity: 10,
            full: FullPolicy::Drop
        }
    );
    assert_eq!(
        sink("ledger:/a?full=block").delivery,
        Delivery::Queued {
            capacity: 4096,
            full: FullPolicy::Block
        }
    );
    assert_eq!(
        sink("jsonl:/a?queue=1048576").delivery,
        Delivery::Queued {
            capacity: 1 << 20,
            full: FullPolicy::Block
        }
    );
}

#[test]
fn jsonl_options() {
    let j = sink("jsonl:/a.jsonl?fsync=never&rotate=500MB");
    assert_eq!(jsonl(&j).fsync, FsyncPolicy::Never);
    assert_eq!(jsonl(&j).rotate_bytes, Some(500_000_000));
    assert_eq!(jsonl(&j).options().fsync, FsyncPolicy::Never);
    assert_eq!(jsonl(&j).options().rotate_bytes, Some(500_000_000));
    let j = sink("jsonl:/a.jsonl?fsync=100&rotate=1GiB");
    assert_eq!(jsonl(&j).fsync, FsyncPolicy::EveryN(100));
    assert_eq!(jsonl(&j).rotate_bytes, Some(1 << 30));
    assert_eq!(
        jsonl(&sink("jsonl:/a?fsync=always")).fsync,
        FsyncPolicy::EveryEvent
    );
    for (size, bytes) in [
        ("4096", 4096),
        ("1B", 1),
        ("2KB", 2000),
        ("3KiB", 3072),
        ("1MiB", 1 << 20),
        ("2GB", 2_000_000_000),
    ] {
        let j = sink(&format!("jsonl:/a?rotate={size}"));
        assert_eq!(jsonl(&j).rotate_bytes, Some(bytes), "{size}");
    }
}

#[test]
fn ledger_options() {
    let l = sink("ledger:/l.jsonl?alg=sha384&checkpoint_key=/run/secrets/ckpt.key&every=500&fsync=never&sync");
    assert_eq!(l.delivery, Delivery::Sync);
    let l = ledger(&l);
    assert_eq!(l.alg, HashAlg::Sha384);
    assert_eq!(
        l.checkpoint_key.as_deref(),
        Some(Path::new("/run/secrets/ckpt.key"))
    );
    assert_eq!(l.checkpoint_every, 500);
    assert_eq!(l.fsync, FsyncPolicy::Never);
    assert_eq!(ledger(&sink("ledger:/l?alg=sha512")).alg, HashAlg::Sha512);
    assert_eq!(
        ledger(&sink("ledger:/l?checkpoint_key=/k&every=0")).checkpoint_every,
        0
    );
}

#[test]
fn percent_escapes_in_paths_and_values() {
    let j = sink("jsonl:/var/log/a%2Cb%3Fc%26d%25.jsonl");
    assert_eq!(jsonl(&j).path, Path::new("/var/log/a,b?c&d%.jsonl"));
    let l = sink("ledger:/l?checkpoint_key=/keys/a%26b");
    assert_eq!(
        ledger(&l).checkpoint_key.as_deref(),
        Some(Path::new("/keys/a&b"))
    );
    // A comma written as %2C does not split the list.
    let s = from_env(&with_service(&[("PHI_AUDIT_SINK", "jsonl:/a%2Cb,stdout")])).unwrap();
    assert_eq!(s.sinks.len(), 2);
    let m = one_problem("jsonl:/data/100%/a.jsonl");
    assert!(m.contains("%25") && m.contains("characters 16-18"), "{m}");
}

// ---------------------------------------------------------------- mistakes

#[test]
fn an_unknown_scheme_lists_the_accepted_forms() {
    let m = one_problem("jsnl:/var/log/a.jsonl");
    assert!(
        m.starts_with("PHI_AUDIT_SINK (characters 1-4): unknown sink `jsnl`"),
        "{m}"
    );
    for form in [
        "stdout",
        "tracing",
        "jsonl:PATH",
        "ledger:PATH",
        "postgres://",
    ] {
        assert!(m.contains(form), "{m}");
    }
    let m = one_problem("stdout,kafka://broker/topic");
    assert!(
        m.starts_with("PHI_AUDIT_SINK (sink 2, characters 8-12): unknown sink `kafka`"),
        "{m}"
    );
    // A bare path: the format is missing.
    let m = one_problem("/var/log/audit.jsonl");
    assert!(m.contains("jsonl:PATH or ledger:PATH"), "{m}");
    // Not shown as it is when it is not a plain word.
    let m = one_problem("\u{1b}[31mx:y");
    assert!(!m.contains('\u{1b}'), "{m}");
    assert!(m.contains("not a sink spec"), "{m}");
    // A typo in the error's own words is an error too (error, not stdout).
    let e = "stdot".parse::<SinkSpec>().unwrap_err();
    assert!(e.to_string().contains("unknown sink `stdot`"), "{e}");
}

#[test]
fn bad_paths_are_errors() {
    let m = one_problem("jsonl:");
    assert!(m.contains("needs a file path: jsonl:PATH"), "{m}");
    let m = one_problem("ledger");
    assert!(m.contains("needs a file: ledger:PATH"), "{m}");
    let m = one_problem("ledger:?alg=sha384");
    assert!(m.contains("needs a file path"), "{m}");
    let m = one_problem("stdout:/dev/null");
    assert!(m.contains("takes no path"), "{m}");
    let m = one_problem("postgres:db/app");
    assert!(m.contains("postgres://USER@HOST/DB"), "{m}");
}

#[test]
fn bad_paths_fail_at_start_up_not_at_emit_time() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = write(dir.path(), "file", b"");
    let cases = [
        format!("jsonl:{}", dir.path().display()), // a directory
        format!("jsonl:{}/sub/a.jsonl", blocker.display()), // under a file
        format!("ledger:{}/sub/l.jsonl", blocker.display()),
    ];
    for spec in &cases {
        let s = from_env(&with_service(&[("PHI_AUDIT_SINK", spec)])).unwrap();
        let e = s.dispatch().unwrap_err();
        assert_eq!(e.problems().len(), 1, "{e}");
        let p = &e.problems()[0];
        assert_eq!(p.setting(), "PHI_AUDIT_SINK");
        assert!(p.message().starts_with("cannot open the"), "{p}");
        assert!(s.open_sink().is_err());
    }
}

#[test]
fn unknown_and_bad_options_are_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "stdout?colour",
            "unknown option `colour`; accepted here: sync, queue, full",
        ),
        (
            "jsonl:/a?alg=sha384",
            "unknown option `alg`; accepted here: sync, queue, full, fsync, rotate",
        ),
        // Ledgers rotate (`rotate=SIZE,daily`); a bad value is still an error.
        ("ledger:/a?rotate=weekly", "`rotate` takes a size"),
        (
            "ledger:/a?names=dated",
            "`names` sets how rotated files are named",
        ),
        (
            "ledger:/a?alg=sha1",
            "`alg` must be one of sha256, sha384, sha512",
        ),
        ("ledger:/a?every=10", "it needs `checkpoint_key=FILE`"),
        ("ledger:/a?checkpoint_key", "`checkpoint_key` needs a value"),
        (
            "ledger:/a?checkpoint_key=",
            "`checkpoint_key=` needs a key file path",
        ),
        (
            "ledger:/a?checkpoint_key=/k&every=-1",
            "`every` must be a whole number",
        ),
        (
            "jsonl:/a?fsync=0",
            "`fsync` must be always, never, or a number of events",
        ),
        ("jsonl:/a?fsync=sometimes", "`fsync` must be always, never"),
        (
            "jsonl:/a?rotate=0",
            "`rotate` must be a size of at least 1 byte",
        ),
        ("jsonl:/a?rotate=1TB", "units B, KB, MB, GB, KiB, MiB, GiB"),
        ("jsonl:/a?rotate=99999999999GiB", "`rotate` must be a size"),
        (
            "stdout?queue=0",
            "`queue` must be a whole number from 1 to 1048576",
        ),
        (
            "stdout?queue=1048577",
            "`queue` must be a whole number from 1 to 1048576",
        ),
        ("stdout?full=wait", "`full` must be one of block, drop"),
        ("stdout?sync=true", "`sync` is a flag"),
        (
            "stdout?sync&queue=8",
            "`queue` and `full` set the queue that `sync` turns off",
        ),
        ("stdout?sync&sync", "option `sync` is given twice"),
        ("stdout?&sync", "empty option"),
        ("jsonl:/a?fsync=never&", "empty option"),
    ];
    for (spec, expected) in cases {
        let m = one_problem(spec);
        assert!(m.contains(expected), "{spec}: {m}");
        assert!(m.starts_with("PHI_AUDIT_SINK (character"), "{spec}: {m}");
    }
    // The position is the option's.
    let m = one_problem("ledger:/a.jsonl?alg=sha1");
    assert!(m.starts_with("PHI_AUDIT_SINK (characters 21-24)"), "{m}");
}

#[cfg(feature = "postgres")]
#[test]
fn bad_postgres_options_are_errors() {
    let m = one_problem("postgres://h/db?schema=Audit");
    assert!(m.contains("`schema` must be 1-63 characters"), "{m}");
    let m = one_problem("postgres://h/db?batch=0");
    assert!(
        m.contains("`batch` must be a whole number from 1 to 100000"),
        "{m}"
    );
    let m = one_problem("postgres://h/db?integrity=yes");
    assert!(m.contains("`integrity` is a flag"), "{m}");
    // An unknown key is the driver's to refuse, and the message says whose
    // options are whose.
    let m = one_problem("postgres://h/db?sslmod=require");
    assert!(m.contains("unknown option `sslmod`"), "{m}");
    assert!(
        m.contains("phi-audit's own options here are sync, queue, full, schema, integrity, batch"),
        "{m}"
    );
    let m = one_problem("postgres://h:notaport/db");
    assert!(m.contains("not a PostgreSQL connection URL"), "{m}");
}

#[test]
fn missing_service_is_an_error() {
    let e = from_env(&[("PHI_AUDIT_SINK", "stdout")]).unwrap_err();
    assert_eq!(e.problems().len(), 1);
    assert_eq!(e.problems()[0].setting(), "PHI_AUDIT_SERVICE");
    assert_eq!(
        e.to_string(),
        "invalid phi-audit settings: PHI_AUDIT_SERVICE: is not set: the service's name is required (1 to 128 characters)"
    );
    let e = from_env(&[("PHI_AUDIT_SERVICE", "   ")]).unwrap_err();
    assert!(e.to_string().contains("must not be empty"), "{e}");
    let long = "s".repeat(129);
    let e = from_env(&[("PHI_AUDIT_SERVICE", &long)]).unwrap_err();
    assert!(
        e.to_string().contains("at most 128 characters (has 129)"),
        "{e}"
    );
}

#[test]
fn a_bad_schema_version_is_an_error() {
    for bad in ["3.0", "1", "v1.1", "1.1.0", "latest"] {
        let e = from_env(&with_service(&[("PHI_AUDIT_SCHEMA", bad)])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid phi-audit settings: PHI_AUDIT_SCHEMA: must be one of 1.0, 1.1, 2.0",
            "{bad}"
        );
    }
}

#[test]
fn too_long_environment_and_version_are_errors() {
    let long = "e".repeat(65);
    let e = from_env(&with_service(&[
        ("PHI_AUDIT_ENVIRONMENT", &long),
        ("PHI_AUDIT_VERSION", &long),
    ]))
    .unwrap_err();
    let settings: Vec<_> = e.problems().iter().map(|p| p.setting()).collect();
    assert_eq!(settings, ["PHI_AUDIT_ENVIRONMENT", "PHI_AUDIT_VERSION"]);
    assert!(e.problems()[0].message().contains("at most 64 characters"));
}

#[test]
fn every_mistake_is_reported_at_once() {
    let e = from_env(&[
        ("PHI_AUDIT_SCHEMA", "3.0"),
        ("PHI_AUDIT_SINK", "stdout,jsnl:/a,ledger:/b?alg=md5&colour,"),
        ("PHI_AUDIT_SINKS", "stdout"),
    ])
    .unwrap_err();
    let all: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(all.len(), 7, "{all:#?}");
    assert!(
        all[0].starts_with(
            "PHI_AUDIT_SINKS: is not a phi-audit variable: did you mean PHI_AUDIT_SINK?"
        ),
        "{all:#?}"
    );
    assert!(
        all[1].starts_with("PHI_AUDIT_SERVICE: is not set"),
        "{all:#?}"
    );
    assert!(
        all[2].starts_with("PHI_AUDIT_SCHEMA: must be one of"),
        "{all:#?}"
    );
    assert!(
        all[3].starts_with("PHI_AUDIT_SINK (sink 2, characters 8-11): unknown sink `jsnl`"),
        "{all:#?}"
    );
    assert!(
        all[4].starts_with("PHI_AUDIT_SINK (sink 3, characters 30-32): `alg` must be one of"),
        "{all:#?}"
    );
    assert!(
        all[5].starts_with("PHI_AUDIT_SINK (sink 3, characters 34-39): unknown option `colour`"),
        "{all:#?}"
    );
    assert!(
        all[6].starts_with("PHI_AUDIT_SINK (sink 4, character 41): empty sink spec"),
        "{all:#?}"
    );
    let shown = e.to_string();
    assert!(
        shown.starts_with("invalid phi-audit settings (7 problems):\n  - PHI_AUDIT_SINKS"),
        "{shown}"
    );
}

#[test]
fn the_same_destination_twice_is_an_error() {
    let p = sink_problems("jsonl:/a,ledger:/a,stdout,stdout?sync");
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(p[0].starts_with("PHI_AUDIT_SINK (sink 2"), "{p:#?}");
    assert!(
        p[0].contains("writes where sink 1 already writes"),
        "{p:#?}"
    );
    assert!(
        p[1].contains("writes where sink 3 already writes"),
        "{p:#?}"
    );
}

#[test]
fn a_key_in_the_environment_and_near_misses_are_errors() {
    let secret = "0123456789abcdef0123456789abcdef";
    let e = from_env(&with_service(&[
        ("PHI_AUDIT_PSEUDONYM_KEY", secret),
        ("PHI_AUDIT_ENV", "prod"),
        ("PHI_AUDIT_SERVICE_NAME", "x"),
    ]))
    .unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains(secret));
    let settings: Vec<_> = e.problems().iter().map(|p| p.setting()).collect();
    assert_eq!(
        settings,
        [
            "PHI_AUDIT_ENV",
            "PHI_AUDIT_PSEUDONYM_KEY",
            "PHI_AUDIT_SERVICE_NAME"
        ]
    );
    assert!(e.problems()[1]
        .message()
        .contains("PHI_AUDIT_PSEUDONYM_KEY_FILE"));
    assert!(e.problems()[0]
        .message()
        .contains("did you mean PHI_AUDIT_ENVIRONMENT?"));
}

#[cfg(unix)]
#[test]
fn a_variable_that_is_not_utf8_is_an_error() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let e = Settings::from_env_map([
        (
            OsString::from("PHI_AUDIT_SERVICE"),
            OsString::from_vec(vec![b's', 0xff]),
        ),
        // A path need not be UTF-8.
        (
            OsString::from("PHI_AUDIT_PSEUDONYM_KEY_FILE"),
            OsString::from_vec(vec![b'/', 0xff]),
        ),
    ])
    .unwrap_err();
    assert_eq!(e.problems().len(), 2, "{e}"); // not UTF-8, hence not set
    assert_eq!(e.to_string().matches("PHI_AUDIT_SERVICE").count(), 2, "{e}");
    assert!(e.to_string().contains("is not valid UTF-8"));
}

// ---------------------------------------------------------------- key files

#[test]
fn a_weak_pseudonym_key_file_is_rejected_without_showing_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let weak = write(dir.path(), "weak.key", b"Sh0rtK3y!\n");
    let path = weak.to_str().unwrap();
    let s = from_env(&with_service(&[("PHI_AUDIT_PSEUDONYM_KEY_FILE", path)])).unwrap();
    let e = s.dispatch().unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid phi-audit settings: PHI_AUDIT_PSEUDONYM_KEY_FILE: the key in the key file is too weak: \
         pseudonym key must be at least 16 bytes (32 random bytes recommended)"
    );
    assert!(!format!("{e:?}").contains("Sh0rtK3y"));
    let e = s.init().unwrap_err();
    assert!(e.settings_error().is_some() && !e.is_already_installed());
    assert!(!e.to_string().contains("Sh0rtK3y"));
    assert!(s.config_builder().is_err());

    // 15 bytes and a newline: still weak (the newline is not part of the key).
    let weak = write(dir.path(), "w2.key", b"0123456789abcde\r\n");
    let mut s2 = s.clone();
    s2.pseudonym_key_file = Some(weak);
    assert!(s2.config_builder().is_err());

    for (name, contents, expected) in [
        ("missing.key", None, "cannot open the key file"),
        ("dir", Some(&b""[..]), "not a regular file"),
        ("big.key", Some(&[7u8; 70 * 1024][..]), "larger than 64 KiB"),
    ] {
        let p = dir.path().join(name);
        match (name, contents) {
            ("dir", _) => std::fs::create_dir(&p).unwrap(),
            (_, Some(c)) => std::fs::write(&p, c).unwrap(),
            _ => {}
        }
        let mut s3 = s.clone();
        s3.pseudonym_key_file = Some(p);
        let e = s3.config_builder().unwrap_err();
        assert!(e.to_string().contains(expected), "{name}: {e}");
    }
}

#[test]
fn the_pseudonym_key_file_keys_the_pseudonyms() {
    let dir = tempfile::tempdir().unwrap();
    let key = b"k3y-0f-the-chart-service-32bytes";
    let path = write(dir.path(), "pseudonym.key", &[&key[..], b"\n"].concat());
    let out = dir.path().join("events.jsonl");
    let s = from_env(&with_service(&[
        ("PHI_AUDIT_PSEUDONYM_KEY_FILE", path.to_str().unwrap()),
        ("PHI_AUDIT_SINK", &format!("jsonl:{}?sync", out.display())),
    ]))
    .unwrap();
    let config = s.config_builder().unwrap().build().unwrap();
    assert!(format!("{config:?}").contains("PseudonymKey([secret])"));
    let expected = PseudonymKey::new(key).unwrap().pseudonym("MRN-0042");
    #[phi_audit::audited(action = "READ", resource = "Patient", id = pseudonym(mrn), crate = phi_audit)]
    fn by_mrn(#[phi] mrn: &str) -> usize {
        mrn.len()
    }
    let d = s.dispatch().unwrap();
    with_dispatch(&d, || by_mrn("MRN-0042"));
    d.flush().unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains(expected.as_str()), "{text}");
    assert!(!text.contains("MRN-0042"));
}

#[test]
fn a_checkpoint_key_file_signs_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let seed = [9u8; 32];
    let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    let key = write(dir.path(), "ckpt.key", format!("{hex}\n").as_bytes());
    let ledger_path = dir.path().join("ledger.jsonl");
    let spec = format!(
        "ledger:{}?alg=sha384&checkpoint_key={}&every=2",
        ledger_path.display(),
        key.display()
    );
    let s = from_env(&with_service(&[("PHI_AUDIT_SINK", &spec)])).unwrap();
    let d = s.dispatch().unwrap();
    with_dispatch(&d, || {
        for i in 0..5 {
            EventBuilder::access(ActionType::Read, "Patient", format!("p-{i}")).emit();
        }
    });
    d.flush().unwrap();
    drop(d);
    let text = std::fs::read_to_string(&ledger_path).unwrap();
    assert_eq!(text.lines().count(), 5);
    assert!(
        text.lines().all(|l| l.contains("\"hash_alg\":\"sha384\"")),
        "{text}"
    );
    let checkpoints =
        std::fs::read_to_string(phi_audit::checkpoint::checkpoint_path(&ledger_path)).unwrap();
    let public = CheckpointSigner::from_seed(seed).verifying_key();
    assert!(checkpoints.contains(&public.key_id()), "{checkpoints}");
    let options = phi_audit::VerifyOptions::new().public_key(Some(public));
    let report = phi_audit::verify_path(&ledger_path, &options).unwrap();
    assert!(report.passed(), "{report:?}");
    assert_eq!(report.chain_length, 5, "{report:?}");
    assert!(report.checkpoints.verified >= 1, "{report:?}");

    // A bad key file names the sink, never the key.
    let bad = write(dir.path(), "bad.key", b"not-a-key-SECRETSECRET");
    let spec = format!(
        "stdout,ledger:{}?checkpoint_key={}",
        dir.path().join("l2.jsonl").display(),
        bad.display()
    );
    let s = from_env(&with_service(&[("PHI_AUDIT_SINK", &spec)])).unwrap();
    let e = s.dispatch().unwrap_err();
    assert_eq!(e.problems().len(), 1, "{e}");
    assert!(
        e.to_string()
            .starts_with("invalid phi-audit settings: PHI_AUDIT_SINK (sink 2): `checkpoint_key`: "),
        "{e}"
    );
    assert!(!e.to_string().contains("SECRET"));
    // Nothing was opened: the ledger file does not exist.
    assert!(!dir.path().join("l2.jsonl").exists());
}

// ---------------------------------------------------------------- sinks opened

#[test]
fn jsonl_sinks_write_rotate_and_fan_out() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    let spec = format!(
        "jsonl:{}?fsync=never&rotate=2KiB,jsonl:{}?sync&fsync=2",
        a.display(),
        b.display()
    );
    let s = from_env(&with_service(&[
        ("PHI_AUDIT_SINK", &spec),
        ("PHI_AUDIT_ENVIRONMENT", "staging"),
        ("PHI_AUDIT_VERSION", "9.9.9"),
        ("PHI_AUDIT_SCHEMA", "1.0"),
    ]))
    .unwrap();
    let d = s.dispatch().unwrap();
    with_dispatch(&d, || {
        for i in 0..40 {
            EventBuilder::access(ActionType::Read, "Patient", format!("p-{i}")).emit();
        }
    });
    d.flush().unwrap();
    assert_eq!(d.stats().emitted, 40);
    assert_eq!(d.stats().failed, 0);
    let b_text = std::fs::read_to_string(&b).unwrap();
    assert_eq!(b_text.lines().count(), 40);
    let first: serde_json::Value = serde_json::from_str(b_text.lines().next().unwrap()).unwrap();
    assert_eq!(first["schema_version"], "1.0");
    assert_eq!(first["service"]["name"], "chart-service");
    assert_eq!(first["service"]["environment"], "staging");
    assert_eq!(first["service"]["version"], "9.9.9");
    // `a` rotated at 2 KiB: several files, 40 lines in all.
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("a."))
        .collect();
    assert!(files.len() > 2, "{files:?}");
    let lines: usize = files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap().lines().count())
        .sum();
    assert_eq!(lines, 40);
}

#[test]
fn a_sync_sink_has_written_when_emit_returns() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    let s = from_env(&with_service(&[(
        "PHI_AUDIT_SINK",
        &format!("jsonl:{}?sync", a.display()),
    )]))
    .unwrap();
    let d = s.dispatch().unwrap();
    with_dispatch(&d, || EventBuilder::new(ActionType::Read, "Patient").emit());
    // No flush: the line is in the file already (fsync=always, on this thread).
    assert_eq!(std::fs::read_to_string(&a).unwrap().lines().count(), 1);
}

#[test]
fn stdout_and_tracing_sinks_open_and_take_events() {
    for spec in ["stdout", "tracing", "stdout?sync,tracing?queue=2&full=drop"] {
        let s = from_env(&with_service(&[("PHI_AUDIT_SINK", spec)])).unwrap();
        let d = s.dispatch().unwrap();
        with_dispatch(&d, || {
            EventBuilder::new(ActionType::Login, "Session").emit()
        });
        d.flush().unwrap();
        assert_eq!(d.stats().emitted, 1, "{spec}");
    }
}

#[cfg(feature = "postgres")]
#[test]
fn a_postgres_sink_from_a_spec_writes_rows() {
    let Some(url) = phi_audit_test_env::server(
        phi_audit_test_env::PG_URL,
        "settings::a_postgres_sink_from_a_spec_writes_rows",
        "PostgreSQL URL, e.g. postgres://postgres@127.0.0.1:5432/test",
    ) else {
        return;
    };
    let schema = format!("t_settings_{}", std::process::id());
    let sep = if url.contains('?') { '&' } else { '?' };
    let spec = format!("{url}{sep}schema={schema}&integrity&batch=7&connect_timeout=5&application_name=settings-test");
    let s = from_env(&with_service(&[("PHI_AUDIT_SINK", &spec)])).unwrap();
    let d = s.dispatch().unwrap();
    with_dispatch(&d, || {
        for i in 0..20 {
            EventBuilder::access(ActionType::Read, "Patient", format!("p-{i}")).emit();
        }
    });
    d.flush().unwrap();
    let mut store = phi_audit::PostgresStore::connect(&url, &schema).unwrap();
    let chain = store.read_chain("chart-service").unwrap();
    assert_eq!(chain.verify().unwrap(), 20);
    drop(d);
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .unwrap();

    // A server that is not there: an error at start-up, without the password.
    let s = from_env(&with_service(&[(
        "PHI_AUDIT_SINK",
        "postgres://audit:Pa55w0rdXYZ@127.0.0.1:1/app?connect_timeout=2",
    )]))
    .unwrap();
    assert!(!format!("{s:?}").contains("Pa55w0rdXYZ"), "{s:?}");
    let e = s.dispatch().unwrap_err();
    assert!(
        e.to_string().contains("cannot connect to PostgreSQL"),
        "{e}"
    );
    assert!(!format!("{e} {e:?}").contains("Pa55w0rdXYZ"));
}

// ---------------------------------------------------------------- the settings file

#[cfg(feature = "toml")]
mod file {
    use super::*;

    fn with_file(
        toml: &str,
        env: &[(&str, &str)],
    ) -> (tempfile::TempDir, Result<Settings, SettingsError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "app.toml", toml.as_bytes());
        let mut vars = vec![("PHI_AUDIT_CONFIG", path.to_str().unwrap())];
        vars.extend_from_slice(env);
        let r = from_env(&vars);
        (dir, r)
    }

    #[test]
    fn the_file_gives_every_setting() {
        let (_dir, s) = with_file(
            r#"
[server]
listen = "0.0.0.0:8080"

[phi_audit]
service = "chart-service"
environment = "prod"
version = "2.3.4"
schema = "2.0"
pseudonym_key_file = "/run/secrets/pseudonym"
sink = ["ledger:/var/log/a,b.jsonl?alg=sha512", "stdout?sync"]
"#,
            &[],
        );
        let s = s.unwrap();
        assert_eq!(s.service, "chart-service");
        assert_eq!(s.environment.as_deref(), Some("prod"));
        assert_eq!(s.version.as_deref(), Some("2.3.4"));
        assert_eq!(s.schema, SchemaVersion::V2_0);
        assert_eq!(
            s.pseudonym_key_file.as_deref(),
            Some(Path::new("/run/secrets/pseudonym"))
        );
        // Array elements are not split at commas.
        assert_eq!(ledger(&s.sinks[0]).path, Path::new("/var/log/a,b.jsonl"));
        assert_eq!(ledger(&s.sinks[0]).alg, HashAlg::Sha512);
        assert_eq!(s.sinks[1], sink("stdout?sync"));

        let (_dir, s) = with_file(
            "[phi_audit]\nservice = \"x\"\nsink = \"stdout, tracing\"\n",
            &[],
        );
        assert_eq!(s.unwrap().sinks.len(), 2);
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let toml = "[phi_audit]\nservice = \"from-file\"\nenvironment = \"prod\"\nsink = \"tracing\"\nschema = \"1.0\"\n";
        let (_dir, s) = with_file(
            toml,
            &[
                ("PHI_AUDIT_SERVICE", "from-env"),
                ("PHI_AUDIT_SINK", "stdout,jsonl:/x"),
            ],
        );
        let s = s.unwrap();
        assert_eq!(s.service, "from-env");
        assert_eq!(s.sinks.len(), 2);
        assert_eq!(s.sinks[0].kind, SinkKind::Stdout);
        // What the environment does not set comes from the file.
        assert_eq!(s.environment.as_deref(), Some("prod"));
        assert_eq!(s.schema, SchemaVersion::V1_0);
        // An empty variable does not override.
        let (_dir, s) = with_file(toml, &[("PHI_AUDIT_SINK", "")]);
        assert_eq!(s.unwrap().sinks[0].kind, SinkKind::Tracing);
        // A bad value in the file that the environment overrides is no mistake.
        let (_dir, s) = with_file(
            "[phi_audit]\nservice = \"x\"\nschema = \"9\"\n",
            &[("PHI_AUDIT_SCHEMA", "2.0")],
        );
        assert_eq!(s.unwrap().schema, SchemaVersion::V2_0);
    }

    #[test]
    fn mistakes_in_the_file_name_the_key_and_line() {
        let (_dir, r) = with_file(
            r#"[phi_audit]
service = 42
schema = 1.1
sink = ["stdout", 7, "jsnl:/a"]
colour = "blue"
environment = "prod"
"#,
            &[],
        );
        let e = r.unwrap_err();
        let all: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
        // No "service is not set": its key is there, with a problem of its own.
        assert_eq!(all.len(), 5, "{all:#?}");
        assert_eq!(
            all[0],
            "[phi_audit].service (line 2 of the PHI_AUDIT_CONFIG file): must be a string"
        );
        assert_eq!(all[1], "[phi_audit].schema (line 3 of the PHI_AUDIT_CONFIG file): write the version as a string: schema = \"1.1\"");
        assert_eq!(all[2], "[phi_audit].sink[1] (line 4 of the PHI_AUDIT_CONFIG file): must be a string: one sink spec");
        assert!(all[3].starts_with("[phi_audit].colour (line 5 of the PHI_AUDIT_CONFIG file): unknown key; accepted: service, environment, version, schema, pseudonym_key_file, sink"), "{all:#?}");
        assert!(all[4].starts_with("[phi_audit].sink[2] (line 4 of the PHI_AUDIT_CONFIG file, characters 1-4): unknown sink `jsnl`"), "{all:#?}");
    }

    #[test]
    fn a_file_that_is_not_settings_is_an_error() {
        let (_dir, r) = with_file(
            "[phi_audit]\nservice = \"x\nsink = \"postgres://u:Hunter2Pw@h/db\"\n",
            &[],
        );
        let e = r.unwrap_err();
        assert!(e.to_string().starts_with("invalid phi-audit settings: PHI_AUDIT_CONFIG (line 2 of the PHI_AUDIT_CONFIG file, character 13): not valid TOML: invalid basic string"), "{e}");
        assert_eq!(e.problems().len(), 1, "{e}");
        let (_dir, r) = with_file(
            "[phi_audit]\nsink = \"postgres://u:Hunter2Pw@h/db\" x\n",
            &[],
        );
        let e = r.unwrap_err();
        assert!(!format!("{e} {e:?}").contains("Hunter2Pw"), "{e}");

        let (_dir, r) = with_file(
            "[server]\nservice = \"x\"\n",
            &[("PHI_AUDIT_SERVICE", "svc")],
        );
        assert!(r
            .unwrap_err()
            .to_string()
            .contains("the file has no [phi_audit] table"));
        let (_dir, r) = with_file("phi_audit = \"stdout\"\n", &[("PHI_AUDIT_SERVICE", "svc")]);
        assert!(r
            .unwrap_err()
            .to_string()
            .contains("`phi_audit` must be a table"));

        let e = from_env(&[("PHI_AUDIT_CONFIG", "/nonexistent/phi-audit.toml")]).unwrap_err();
        let settings: Vec<_> = e.problems().iter().map(|p| p.setting()).collect();
        assert_eq!(settings, ["PHI_AUDIT_CONFIG"]);
        assert!(e.problems()[0]
            .message()
            .starts_with("cannot open the file"));

        let dir = tempfile::tempdir().unwrap();
        let e = from_env(&[("PHI_AUDIT_CONFIG", dir.path().to_str().unwrap())]).unwrap_err();
        assert!(e.problems()[0].message().contains("not a regular file"));
        let big = write(dir.path(), "big.toml", &vec![b'#'; 2 << 20]);
        let e = from_env(&[("PHI_AUDIT_CONFIG", big.to_str().unwrap())]).unwrap_err();
        assert!(e.problems()[0].message().contains("larger than 1 MiB"));
        let bin = write(dir.path(), "bin.toml", &[0xff, 0xfe, 0x00]);
        let e = from_env(&[("PHI_AUDIT_CONFIG", bin.to_str().unwrap())]).unwrap_err();
        assert!(
            e.problems()[0]
                .message()
                .starts_with("cannot read the file"),
            "{e}"
        );
    }
}

#[cfg(not(feature = "toml"))]
#[test]
fn a_settings_file_without_the_toml_feature_names_the_feature() {
    let e = from_env(&with_service(&[("PHI_AUDIT_CONFIG", "/etc/app.toml")])).unwrap_err();
    assert_eq!(e.problems().len(), 1);
    assert!(e.to_string().contains("`toml` feature"), "{e}");
}

// ---------------------------------------------------------------- serde

#[derive(serde::Deserialize)]
struct AppConfig {
    #[allow(dead_code)]
    listen: String,
    phi_audit: Settings,
}

#[test]
fn settings_embed_in_a_service_config() {
    let app: AppConfig = serde_json::from_str(
        r#"{"listen": ":8080", "phi_audit": {"service": "chart-service", "schema": "1.0",
            "environment": "prod", "sink": ["stdout?sync", "jsonl:/var/log/a,b.jsonl"]}}"#,
    )
    .unwrap();
    let s = app.phi_audit;
    assert_eq!(
        (s.service.as_str(), s.schema),
        ("chart-service", SchemaVersion::V1_0)
    );
    assert_eq!(jsonl(&s.sinks[1]).path, Path::new("/var/log/a,b.jsonl"));

    let app: AppConfig = toml::from_str(
        "listen = \":8080\"\n[phi_audit]\nservice = \"svc\"\nsink = \"tracing,stdout\"\n",
    )
    .unwrap();
    assert_eq!(app.phi_audit.sinks.len(), 2);

    // Every mistake in one message, named by key.
    let e = serde_json::from_str::<AppConfig>(
        r#"{"listen": "", "phi_audit": {"schema": "9", "sink": "stdout,jsnl:x"}}"#,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("service: is required"), "{e}");
    assert!(e.contains("schema: must be one of 1.0, 1.1, 2.0"), "{e}");
    assert!(
        e.contains("sink (sink 2, characters 8-11): unknown sink `jsnl`"),
        "{e}"
    );
    let e = serde_json::from_str::<AppConfig>(
        r#"{"listen": "", "phi_audit": {"service": "x", "sinks": "stdout"}}"#,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("unknown field `sinks`"), "{e}");
    let e = serde_json::from_str::<Settings>(
        r#"{"service": "x", "sink": ["postgres://u:Pw0rdSecret@h/db?bogus=1"]}"#,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("sink[0]"), "{e}");
    assert!(!e.contains("Pw0rdSecret"), "{e}");

    // A single spec deserializes too.
    let spec: SinkSpec = serde_json::from_str("\"ledger:/l?alg=sha384\"").unwrap();
    assert_eq!(ledger(&spec).alg, HashAlg::Sha384);
}

#[test]
fn settings_built_in_code_are_checked_at_start_up() {
    let mut s = Settings::new("");
    assert_eq!(s.sinks, vec![sink("stdout")]);
    s.sinks.clear();
    let e = s.dispatch().unwrap_err();
    let all: Vec<_> = e.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(all[0].starts_with("service: must not be empty"), "{all:#?}");
    assert!(all[1].starts_with("sink: lists no sink"), "{all:#?}");
    let mut s = Settings::new("svc");
    s.sinks = vec![SinkSpec::new(SinkKind::Tracing)];
    s.schema = SchemaVersion::V2_0;
    let d = s.dispatch().unwrap();
    assert_eq!(d.config().target(), SchemaVersion::V2_0);
}

// ---------------------------------------------------------------- secrets

#[test]
fn error_messages_never_contain_a_key_or_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let key = "PSEUDO-KEY-7f3a";
    let key_file = write(dir.path(), "p.key", key.as_bytes());
    let ckpt_secret = "CKPT-SECRET-MATERIAL-0123456789";
    let ckpt = write(dir.path(), "c.key", ckpt_secret.as_bytes());
    let password = "Pa55-w0rd-9d1e";
    let specs = [
        format!("postgres://audit:{password}@db/app?bogus=1"),
        format!("postgres://audit:{password}@db/app?password={password}&schema=BAD"),
        format!("postgresql://audit:{password}@db:notaport/app"),
        format!("postgres:audit:{password}@db/app"),
        format!("jsnl://audit:{password}@db/app"),
        format!(
            "ledger:{}/l.jsonl?checkpoint_key={}",
            dir.path().display(),
            ckpt.display()
        ),
    ];
    let mut seen = String::new();
    for spec in &specs {
        for vars in [
            vec![("PHI_AUDIT_SINK", spec.as_str())],
            with_service(&[
                ("PHI_AUDIT_SINK", spec.as_str()),
                ("PHI_AUDIT_PSEUDONYM_KEY_FILE", key_file.to_str().unwrap()),
            ]),
        ] {
            match from_env(&vars) {
                Err(e) => seen.push_str(&format!("{e}\n{e:?}\n")),
                Ok(s) => {
                    seen.push_str(&format!("{s:?}\n"));
                    if let Err(e) = s.dispatch() {
                        seen.push_str(&format!("{e}\n{e:?}\n"));
                    }
                    if let Err(e) = s.init() {
                        seen.push_str(&format!("{e}\n{e:?}\n"));
                    }
                }
            }
            if let Err(e) = spec.parse::<SinkSpec>() {
                seen.push_str(&format!("{e}\n{e:?}\n"));
            }
        }
    }
    assert!(seen.contains("too weak"), "{seen}");
    assert!(seen.contains("checkpoint_key"), "{seen}");
    for secret in [key, ckpt_secret, password] {
        assert!(!seen.contains(secret), "{secret} in:\n{seen}");
    }
}

#[test]
fn settings_debug_hides_no_more_than_secrets() {
    let s = from_env(&with_service(&[(
        "PHI_AUDIT_SINK",
        "jsonl:/var/log/a.jsonl?fsync=never",
    )]))
    .unwrap();
    let d = format!("{s:?}");
    assert!(
        d.contains("chart-service") && d.contains("/var/log/a.jsonl") && d.contains("Never"),
        "{d}"
    );
}
