//! Every review rule on planted data (the finding's subject, count, first,
//! last and evidence), no findings on clean data, thresholds from TOML, the
//! evidence cap, the subject cap, and hostile lines.

use phi_audit_runtime::review::{
    scan_jsonl, EvidenceRef, Finding, ReviewReport, Reviewer, Rule, Rules, DEFAULT_RULES_TOML,
};
use serde_json::{json, Value};

/// One schema-shaped event line at `ts` by `actor`; `f` adjusts it.
fn ev(ts: &str, actor: &str, f: impl FnOnce(&mut Value)) -> String {
    let mut v = json!({
        "schema_version": "1.1",
        "event_id": uuid::Uuid::new_v4().to_string(),
        "timestamp": ts,
        "service": {"name": "chart"},
        "actor": {"subject_id": actor, "subject_type": "human", "org_id": "org-a", "owner_org_id": "org-a"},
        "action": {"type": "READ", "data_classification": "NONE"},
        "resource": {"type": "Chart"},
        "outcome": {"status": "SUCCESS"},
    });
    f(&mut v);
    v.to_string()
}

fn denied(v: &mut Value) {
    v["outcome"] = json!({"status": "DENIED", "error_type": "RoleDenied"});
}

fn login_failed(ip: &'static str) -> impl FnOnce(&mut Value) {
    move |v| {
        v["action"]["type"] = json!("LOGIN");
        v["outcome"] =
            json!({"status": "FAILURE", "error_type": "BadCredentials", "error_message": "bad"});
        v["http"] = json!({"client_ip": ip});
    }
}

fn export(v: &mut Value) {
    v["action"]["type"] = json!("EXPORT");
}

fn phi(patient: String) -> impl FnOnce(&mut Value) {
    move |v| {
        v["action"] = json!({"type": "READ", "phi_touched": true, "data_classification": "PHI"});
        v["resource"] = json!({"type": "Patient", "id": patient, "patient_id": patient});
    }
}

/// `HH:MM` minutes after `base` (an RFC 3339 prefix `YYYY-MM-DDT`), as a
/// timestamp on that day (minutes < 24h).
fn at(day: &str, minutes: u32) -> String {
    format!(
        "{day}T{:02}:{:02}:{:02}.000Z",
        minutes / 60,
        minutes % 60,
        0
    )
}

/// Clean office traffic on Monday 2026-03-02 and Tuesday 2026-03-03: four
/// clinicians reading their own ten patients, a few denials, exports and
/// failed logins, all under every default threshold.
fn clean() -> Vec<String> {
    let mut lines = Vec::new();
    for day in ["2026-03-02", "2026-03-03"] {
        for minute in (9 * 60..16 * 60).step_by(7) {
            for a in 0..4 {
                let actor = format!("dr-{a}");
                let p = format!("pat-{a}-{}", minute % 10);
                lines.push(ev(&at(day, minute + a), &actor, phi(p)));
            }
        }
        for a in 0..4 {
            let actor = format!("dr-{a}");
            for k in 0..3 {
                lines.push(ev(&at(day, 10 * 60 + 20 * k + a), &actor, denied));
                lines.push(ev(&at(day, 11 * 60 + 30 * k + a), &actor, export));
            }
            lines.push(ev(
                &at(day, 12 * 60 + a),
                "anon",
                login_failed("198.51.100.7"),
            ));
        }
    }
    lines.sort_by_key(|l| serde_json::from_str::<Value>(l).unwrap()["timestamp"].to_string());
    lines
}

fn review(lines: &[String], toml: &str) -> ReviewReport {
    let rules = Rules::from_toml_str(toml).unwrap();
    let mut r = Reviewer::new(rules).unwrap();
    let src = r.add_source("t.jsonl");
    let text = lines.join("\n");
    let counts = scan_jsonl(
        text.as_bytes(),
        |e, line| r.observe(e, EvidenceRef::line(src, line, e.event_id)),
        |line, reason| panic!("line {line}: {reason}"),
    )
    .unwrap();
    assert_eq!(counts.events, lines.len() as u64);
    r.finish()
}

fn only(report: &ReviewReport, rule: Rule) -> Vec<&Finding> {
    report.findings.iter().filter(|f| f.rule == rule).collect()
}

fn lines_of(f: &Finding) -> Vec<u64> {
    f.evidence.iter().map(|e| e.line.unwrap()).collect()
}

/// Appends `planted` to `base` and returns the 1-based line numbers of the
/// planted lines.
fn plant(base: &mut Vec<String>, planted: Vec<String>) -> Vec<u64> {
    let start = base.len() as u64 + 1;
    let n = planted.len() as u64;
    base.extend(planted);
    (start..start + n).collect()
}

#[test]
fn clean_data_has_no_findings() {
    let lines = clean();
    let r = review(&lines, "");
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert_eq!(r.events, lines.len() as u64);
    // First-time access too, after a one-day baseline: Tuesday's patients
    // are Monday's.
    let r = review(&lines, "[new_patient]\nenabled = true\nbaseline = \"1d\"");
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    assert!(r.rules.iter().all(|s| s.enabled && s.subjects_evicted == 0));
}

#[test]
fn denials_over_threshold_in_a_window() {
    let mut lines = clean();
    // Day 3 (Wednesday): dr-x gets 11 DENIED within 50 minutes; dr-y exactly
    // 10 (not more than the threshold); dr-z 11 spread over 5 hours.
    let x: Vec<String> = (0..11)
        .map(|i| ev(&at("2026-03-04", 600 + 5 * i), "dr-x", denied))
        .collect();
    let want = plant(&mut lines, x);
    plant(
        &mut lines,
        (0..10)
            .map(|i| ev(&at("2026-03-04", 700 + i), "dr-y", denied))
            .collect(),
    );
    plant(
        &mut lines,
        (0..11)
            .map(|i| ev(&at("2026-03-04", 800 + 30 * i), "dr-z", denied))
            .collect(),
    );
    let r = review(&lines, "");
    let f = only(&r, Rule::Denials);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].subject, "dr-x");
    assert_eq!(f[0].count, 11);
    assert_eq!(f[0].first.to_string(), "2026-03-04T10:00:00.000Z");
    assert_eq!(f[0].last.to_string(), "2026-03-04T10:50:00.000Z");
    assert_eq!(lines_of(f[0]), want);
    assert!(f[0].evidence.iter().all(|e| e.event_id.is_some()));
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
}

#[test]
fn overlapping_windows_are_one_finding_and_distant_bursts_two() {
    let toml = "[denials]\nthreshold = 2\nwindow = \"10m\"";
    let mut lines = Vec::new();
    // 0, 1, 2 (over), 9 (over with 1, 2), 12 (not over), 13 (over with 9,
    // 12: the windows overlap, so the same finding), then 60, 61, 62.
    for m in [0, 1, 2, 9, 12, 13, 60, 61, 62] {
        lines.push(ev(&at("2026-03-04", 600 + m), "dr-x", denied));
    }
    let r = review(&lines, toml);
    let f = only(&r, Rule::Denials);
    assert_eq!(f.len(), 2, "{f:#?}");
    assert_eq!((f[0].count, lines_of(f[0])), (6, vec![1, 2, 3, 4, 5, 6]));
    assert_eq!(f[0].last.to_string(), "2026-03-04T10:13:00.000Z");
    assert_eq!((f[1].count, lines_of(f[1])), (3, vec![7, 8, 9]));
}

#[test]
fn failed_logins_per_ip_in_a_window() {
    let mut lines = clean();
    let want = plant(
        &mut lines,
        (0..6)
            .map(|i| {
                ev(
                    &at("2026-03-04", 120 + 2 * i),
                    "anon",
                    login_failed("203.0.113.9"),
                )
            })
            .collect(),
    );
    // Five from another IP (not more than 5), and successful logins.
    plant(
        &mut lines,
        (0..5)
            .map(|i| {
                ev(
                    &at("2026-03-04", 130 + i),
                    "anon",
                    login_failed("203.0.113.10"),
                )
            })
            .collect(),
    );
    plant(
        &mut lines,
        (0..9)
            .map(|i| {
                ev(&at("2026-03-04", 140 + i), "dr-0", |v: &mut Value| {
                    v["action"]["type"] = json!("LOGIN");
                    v["http"] = json!({"client_ip": "203.0.113.11"});
                })
            })
            .collect(),
    );
    let r = review(&lines, "");
    let f = only(&r, Rule::FailedLogins);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].subject, "203.0.113.9");
    assert_eq!(f[0].count, 6);
    assert_eq!(f[0].first.to_string(), "2026-03-04T02:00:00.000Z");
    assert_eq!(f[0].last.to_string(), "2026-03-04T02:10:00.000Z");
    assert_eq!(lines_of(f[0]), want);
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
}

#[test]
fn exports_per_actor_per_day_in_the_time_zone() {
    let mut lines = clean();
    // 21 exports between 20:00 UTC on the 4th and 00:40 UTC on the 5th: two
    // UTC days (12 + 9), but one day in New York (15:00-19:40 local).
    let want = plant(
        &mut lines,
        (0..21)
            .map(|i| {
                let m = 20 * 60 + 14 * i;
                let (day, m) = if m >= 1440 {
                    ("2026-03-05", m - 1440)
                } else {
                    ("2026-03-04", m)
                };
                ev(&at(day, m), "dr-exp", export)
            })
            .collect(),
    );
    // Failed and denied exports are not volume.
    plant(
        &mut lines,
        (0..30)
            .map(|i| {
                ev(&at("2026-03-06", 600 + i), "dr-exp", |v: &mut Value| {
                    export(v);
                    denied(v);
                })
            })
            .collect(),
    );
    let r = review(&lines, "");
    assert!(only(&r, Rule::Exports).is_empty(), "{:#?}", r.findings);
    let r = review(&lines, "time_zone = \"America/New_York\"");
    let f = only(&r, Rule::Exports);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].subject, "dr-exp");
    assert_eq!(f[0].count, 21);
    assert!(f[0].detail.starts_with("2026-03-04: "), "{}", f[0].detail);
    assert_eq!(f[0].first.to_string(), "2026-03-04T20:00:00.000Z");
    assert_eq!(f[0].last.to_string(), "2026-03-05T00:40:00.000Z");
    assert_eq!(f[0].evidence.len(), 20); // max_evidence
    assert_eq!(f[0].evidence_omitted, 1);
    assert_eq!(lines_of(f[0]), want[..20]);
}

#[test]
fn phi_access_outside_office_hours() {
    let mut lines = clean();
    // Monday 23:30 UTC, PHI: outside hours in UTC. Saturday noon: not an
    // office day. Non-PHI at night: not counted.
    let night = plant(
        &mut lines,
        vec![ev(
            "2026-03-02T23:30:00.000Z",
            "night-owl",
            phi("pat-9".into()),
        )],
    );
    let saturday = plant(
        &mut lines,
        vec![
            ev("2026-03-07T12:00:00.000Z", "weekender", phi("pat-8".into())),
            ev("2026-03-07T12:05:00.000Z", "weekender", phi("pat-7".into())),
        ],
    );
    plant(
        &mut lines,
        vec![ev("2026-03-02T23:45:00.000Z", "janitor", |_| {})],
    );
    let r = review(&lines, "");
    let f = only(&r, Rule::OffHours);
    assert_eq!(f.len(), 2, "{f:#?}");
    assert_eq!((f[0].subject.as_str(), f[0].count), ("night-owl", 1));
    assert_eq!(lines_of(f[0]), night);
    assert_eq!(f[0].first.to_string(), "2026-03-02T23:30:00.000Z");
    assert_eq!((f[1].subject.as_str(), f[1].count), ("weekender", 2));
    assert_eq!(lines_of(f[1]), saturday);
    assert_eq!(f[1].last.to_string(), "2026-03-07T12:05:00.000Z");
    // In Tokyo, Monday 23:30 UTC is Tuesday 08:30: office hours. (The clean
    // traffic, 09:00-16:00 UTC, is then 18:00-01:00 local: configure hours
    // that cover it.)
    let r = review(
        &lines,
        "time_zone = \"Asia/Tokyo\"\n[off_hours]\nstart = \"08:00\"\nend = \"02:00\"\ndays = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\"]",
    );
    let f = only(&r, Rule::OffHours);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].subject, "weekender");
}

#[test]
fn cross_organization_access() {
    let mut lines = clean();
    let want = plant(
        &mut lines,
        (0..2)
            .map(|i| {
                ev(&at("2026-03-04", 600 + i), "dr-visit", |v: &mut Value| {
                    v["actor"]["org_id"] = json!("org-b");
                })
            })
            .collect(),
    );
    // An actor without an owner org is not cross-org.
    plant(
        &mut lines,
        vec![ev(&at("2026-03-04", 610), "dr-solo", |v: &mut Value| {
            v["actor"] =
                json!({"subject_id": "dr-solo", "subject_type": "human", "org_id": "org-z"});
        })],
    );
    let r = review(&lines, "");
    let f = only(&r, Rule::CrossOrg);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!((f[0].subject.as_str(), f[0].count), ("dr-visit", 2));
    assert!(f[0].detail.contains("org-b") && f[0].detail.contains("org-a"));
    assert_eq!(lines_of(f[0]), want);
    assert_eq!(r.findings.len(), 1);
}

#[test]
fn many_distinct_patients_in_an_hour() {
    let mut lines = clean();
    // 51 patients in 51 minutes (with repeats of the first ones in between).
    let mut planted = Vec::new();
    for i in 0..51u32 {
        planted.push(ev(
            &at("2026-03-04", 600 + i),
            "dr-snoop",
            phi(format!("q-{i}")),
        ));
    }
    let want = plant(&mut lines, planted);
    plant(
        &mut lines,
        (0..5)
            .map(|i| {
                ev(
                    &at("2026-03-04", 652 + i),
                    "dr-snoop",
                    phi(format!("q-{i}")),
                )
            })
            .collect(),
    );
    // 50 patients in an hour, and 60 spread over five hours: not findings.
    plant(
        &mut lines,
        (0..50)
            .map(|i| ev(&at("2026-03-05", 600 + i), "dr-busy", phi(format!("r-{i}"))))
            .collect(),
    );
    plant(
        &mut lines,
        (0..60)
            .map(|i| {
                ev(
                    &at("2026-03-06", 540 + 5 * i),
                    "dr-slow",
                    phi(format!("s-{i}")),
                )
            })
            .collect(),
    );
    let r = review(&lines, "[new_patient]\nenabled = false");
    let f = only(&r, Rule::DistinctPatients);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].subject, "dr-snoop");
    assert_eq!(f[0].count, 51);
    assert_eq!(f[0].first.to_string(), "2026-03-04T10:00:00.000Z");
    assert_eq!(f[0].last.to_string(), "2026-03-04T10:56:00.000Z");
    assert_eq!(lines_of(f[0]), want[..20]);
    assert_eq!(f[0].evidence_omitted, 31);
}

#[test]
fn first_time_patient_access_is_opt_in() {
    let mut lines = clean();
    // Wednesday: dr-1 opens two charts it never touched before.
    let want = plant(
        &mut lines,
        vec![
            ev(&at("2026-03-04", 600), "dr-1", phi("pat-0-1".into())),
            ev(&at("2026-03-04", 601), "dr-1", phi("pat-3-3".into())),
            ev(&at("2026-03-04", 602), "dr-1", phi("pat-new".into())),
            ev(&at("2026-03-04", 603), "dr-1", phi("pat-3-3".into())),
        ],
    );
    let r = review(&lines, "");
    assert!(only(&r, Rule::NewPatient).is_empty());
    assert!(
        !r.rules
            .iter()
            .find(|s| s.rule == Rule::NewPatient)
            .unwrap()
            .enabled
    );
    let r = review(&lines, "[new_patient]\nenabled = true\nbaseline = \"1d\"");
    let f = only(&r, Rule::NewPatient);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!((f[0].subject.as_str(), f[0].count), ("dr-1", 3));
    assert_eq!(lines_of(f[0]), want[..3]);
    assert_eq!(f[0].first.to_string(), "2026-03-04T10:00:00.000Z");
    assert_eq!(f[0].last.to_string(), "2026-03-04T10:02:00.000Z");
    // With a threshold of 3 first-time patients a day, none.
    let r = review(
        &lines,
        "[new_patient]\nenabled = true\nbaseline = \"1d\"\nthreshold = 3",
    );
    assert!(only(&r, Rule::NewPatient).is_empty());
}

#[test]
fn thresholds_from_toml_override_the_defaults() {
    let lines = clean();
    // Lower thresholds turn the clean day's traffic into findings.
    let r = review(
        &lines,
        "[denials]\nthreshold = 2\nwindow = \"2h\"\n[exports]\nthreshold = 2\n[failed_logins]\nthreshold = 3\nwindow = \"1h\"",
    );
    assert_eq!(only(&r, Rule::Denials).len(), 8, "{:#?}", r.findings);
    assert!(only(&r, Rule::Denials).iter().all(|f| f.count == 3));
    assert_eq!(only(&r, Rule::Exports).len(), 8);
    assert_eq!(only(&r, Rule::FailedLogins).len(), 2);
    assert_eq!(only(&r, Rule::FailedLogins)[0].count, 4);
    // A disabled rule finds nothing.
    let r = review(
        &lines,
        "[denials]\nenabled = false\nthreshold = 0\n[exports]\nenabled = false\nthreshold = 0",
    );
    assert!(r.findings.is_empty());
    // Mistakes are errors that name the key, never silently ignored.
    for (bad, says) in [
        ("[denials]\nthreshhold = 3", "threshhold"),
        ("[denial]\nthreshold = 3", "denial"),
        ("time_zone = \"Mars/Olympus\"", "unknown time zone"),
        ("[denials]\nwindow = \"soon\"", "invalid duration"),
        ("[off_hours]\nstart = \"7am\"", "time of day"),
        ("[off_hours]\ndays = [\"funday\"]", "funday"),
        ("[denials]\nthreshold = -1", "[denials]"),
        ("denials = 3", "table"),
        ("not toml [", "line 1"),
        (
            "[distinct_patients]\nthreshold = 10\nmax_tracked = 5",
            "max_tracked",
        ),
    ] {
        let e = Rules::from_toml_str(bad).unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
    // The printed defaults are the defaults.
    assert_eq!(
        Rules::from_toml_str(DEFAULT_RULES_TOML).unwrap(),
        Rules::default()
    );
}

#[test]
fn subjects_past_the_cap_are_evicted_and_counted() {
    // 2,000 actors with one denial each within a minute, then one actor over
    // the threshold: with max_subjects = 16 the map is cut, counted, and the
    // burst is still found.
    let mut lines = Vec::new();
    for i in 0..2000 {
        lines.push(ev("2026-03-04T10:00:00.000Z", &format!("a-{i}"), denied));
    }
    for i in 0..11 {
        lines.push(ev(&at("2026-03-04", 601 + i), "dr-x", denied));
    }
    let r = review(&lines, "max_subjects = 16");
    let s = r.rules.iter().find(|s| s.rule == Rule::Denials).unwrap();
    assert!(s.subjects_evicted > 0);
    let f = only(&r, Rule::Denials);
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].subject.as_str(), f[0].count), ("dr-x", 11));
}

#[test]
fn hostile_lines_are_skipped_without_panic() {
    let good = ev("2026-03-04T10:00:00.000Z", "dr-a", |_| {});
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let inputs: Vec<Vec<u8>> = vec![
        b"\xff\xfe not utf-8".to_vec(),
        deep.into_bytes(),
        br#"{"timestamp":"2026-03-04T10:00:00Z","actor":{"subject_id":"a"},"action":{"type":"READ"},"resource":{"type":"P"},"outcome":{"status":"SUCCESS"},"outcome":{"status":"DENIED"}}"#.to_vec(),
        br#"{"timestamp":"9999999-99-99T99:99:99Z","actor":{"subject_id":"a"},"action":{"type":"READ"},"resource":{"type":"P"},"outcome":{"status":"SUCCESS"}}"#.to_vec(),
        br#"{"timestamp":1e999}"#.to_vec(),
        b"null".to_vec(),
        good.clone().into_bytes(),
        good.as_bytes()[..good.len() / 2].to_vec(),
    ];
    let text = inputs.join(&b'\n');
    let mut r = Reviewer::new(Rules::default()).unwrap();
    let src = r.add_source("x");
    let mut bad = Vec::new();
    let counts = scan_jsonl(
        &text[..],
        |e, line| r.observe(e, EvidenceRef::line(src, line, e.event_id)),
        |line, reason| bad.push((line, reason.to_string())),
    )
    .unwrap();
    assert_eq!(counts.events, 1);
    assert_eq!(counts.invalid, 7);
    assert_eq!(bad.last().unwrap().0, 8);
    assert!(bad.last().unwrap().1.contains("unterminated"));
    assert_eq!(r.finish().events, 1);
}
