//! `ConfigBuilder::build` reports every mistake at once, each with its
//! field, and the settings layer passes every one of them on.

use phi_audit_runtime::{Actor, Config};

#[test]
fn build_lists_every_mistake_in_the_order_checked() {
    let err = Config::new("chart\u{202e}service")
        .version("v".repeat(65))
        .default_actor(Actor::human(""))
        .max_error_message_len(0)
        .metadata_allowlist(["ok", ""])
        .build()
        .unwrap_err();
    let fields: Vec<&str> = err.problems().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        [
            "service.version",
            "service.name",
            "default_actor.subject_id",
            "metadata_allowlist",
            "max_error_message_len",
        ]
    );
    assert_eq!(err.field(), "service.version");
    let text = err.to_string();
    assert!(
        text.starts_with("invalid phi-audit config `service.version`: "),
        "{text}"
    );
    for f in &fields {
        assert!(text.contains(&format!("`{f}`")), "{text}");
    }
    assert_eq!(text.matches("; `").count(), fields.len() - 1, "{text}");
}

#[test]
fn one_mistake_reads_as_before() {
    let err = Config::new("  ").build().unwrap_err();
    assert_eq!(err.problems().count(), 1);
    assert_eq!(
        err.to_string(),
        "invalid phi-audit config `service.name`: must not be empty"
    );
}

#[test]
fn a_valid_config_builds() {
    assert!(Config::new("chart-service")
        .version("1.2.3")
        .build()
        .is_ok());
}
