//! The real `init_from_env`, reading the process's environment. Its own test
//! binary with one test: it sets variables and installs the global
//! dispatcher, both once per process.

use std::path::Path;

use phi_audit::{audited, init_from_env, PseudonymKey, Settings};

#[audited(action = "READ", resource = "Patient", id = pseudonym(mrn), patient = patient_id, crate = phi_audit)]
fn read_patient(patient_id: &str, #[phi] mrn: &str) -> usize {
    patient_id.len() + mrn.len()
}

/// Names of this process's threads (Linux; empty elsewhere).
fn thread_names() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

fn set(vars: &[(&str, &Path)]) {
    for (k, v) in vars {
        std::env::set_var(k, v);
    }
}

#[test]
fn init_from_env_reports_everything_then_installs_once() {
    let dir = tempfile::tempdir().unwrap();
    let weak = dir.path().join("weak.key");
    std::fs::write(&weak, b"W3akK3y\n").unwrap();

    // 1. Every mistake at once, the key file's included; nothing installed.
    std::env::remove_var("PHI_AUDIT_SERVICE");
    set(&[
        ("PHI_AUDIT_SINK", Path::new("stdout,jsnl:/tmp/x")),
        ("PHI_AUDIT_PSEUDONYM_KEY_FILE", &weak),
    ]);
    let e = init_from_env().unwrap_err();
    assert!(!e.is_already_installed());
    let settings: Vec<_> = e
        .settings_error()
        .unwrap()
        .problems()
        .iter()
        .map(|p| p.setting())
        .collect();
    assert_eq!(
        settings,
        [
            "PHI_AUDIT_SERVICE",
            "PHI_AUDIT_SINK",
            "PHI_AUDIT_PSEUDONYM_KEY_FILE"
        ],
        "{e}"
    );
    assert!(e.to_string().contains("too weak"), "{e}");
    assert!(!e.to_string().contains("W3akK3y"), "{e}");
    assert!(phi_audit::current().is_none());

    // 2. The file, the environment over it.
    let key = b"0123456789abcdef-pseudonym-key-!";
    let key_file = dir.path().join("pseudonym.key");
    std::fs::write(&key_file, key).unwrap();
    let config = dir.path().join("app.toml");
    std::fs::write(
        &config,
        "[phi_audit]\nservice = \"from-file\"\nenvironment = \"prod\"\nsink = \"tracing\"\n",
    )
    .unwrap();
    let events = dir.path().join("events.jsonl");
    let ledger = dir.path().join("ledger.jsonl");
    let sink = format!(
        "jsonl:{},ledger:{}?sync",
        events.display(),
        ledger.display()
    );
    set(&[
        ("PHI_AUDIT_CONFIG", &config),
        ("PHI_AUDIT_SERVICE", Path::new("from-env")),
        ("PHI_AUDIT_SINK", Path::new(&sink)),
        ("PHI_AUDIT_PSEUDONYM_KEY_FILE", &key_file),
    ]);
    let guard = init_from_env().unwrap();
    for i in 0..10 {
        read_patient(&format!("pat-{i}"), "MRN-0042");
    }
    // The JSONL sink runs behind its queue's worker (which has named itself
    // once it has answered a flush); the `?sync` ledger has none.
    phi_audit::flush().unwrap();
    if cfg!(target_os = "linux") {
        let names = thread_names();
        assert!(names.iter().any(|n| n == "phi-audit-jsonl"), "{names:?}");
        assert!(
            !names.iter().any(|n| n.starts_with("phi-audit-ledge")),
            "{names:?}"
        );
    }

    // 3. A second call is an error and opens nothing.
    let other = dir.path().join("other.jsonl");
    std::env::set_var("PHI_AUDIT_SINK", format!("jsonl:{}", other.display()));
    let again = init_from_env().unwrap_err();
    assert!(again.is_already_installed(), "{again}");
    assert!(again.to_string().contains("already installed"), "{again}");
    assert!(!other.exists());
    let s = Settings::from_env().unwrap();
    assert!(s.init().unwrap_err().is_already_installed());
    assert!(!other.exists());

    drop(guard);
    let text = std::fs::read_to_string(&events).unwrap();
    assert_eq!(text.lines().count(), 10, "{text}");
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["service"]["name"], "from-env");
    assert_eq!(first["service"]["environment"], "prod");
    let token = PseudonymKey::new(key).unwrap().pseudonym("MRN-0042");
    assert_eq!(first["resource"]["id"], token.as_str());
    assert!(!text.contains("MRN-0042"));
    let chained = std::fs::read_to_string(&ledger).unwrap();
    assert_eq!(chained.lines().count(), 10);
    assert!(chained.contains("\"event_hash\""));
}
