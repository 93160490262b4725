//! The service and job fields of the spec (issue 13): what parses, the
//! defaults, and every refusal naming its field.

use berth_model::quantity::DurationMs;
use berth_model::spec::{Amount, Concurrency, Kind, PortRef, parse_spec};

const SERVICE: &str = r#"
name: web
image: busybox:latest
instances: 4
ports: [{name: http, host: 8080}, {name: admin, host: 9090}]
health:
  http: {port: http, path: /healthz}
  interval: 10s
  timeout: 2s
  grace: 30s
  failures: 3
ready:
  tcp: {port: 9090}
update:
  max_surge: 1
  max_unavailable: 25%
  min_ready_time: 5s
  deadline: 5m
  auto_rollback: true
restart_limit: {count: 10, window: 10m}
"#;

/// The spec with `extra` lines appended (a later key replaces nothing:
/// duplicates are errors, so tests append only new keys).
fn service_with(extra: &str) -> String {
    format!("{SERVICE}{extra}\n")
}

fn paths(text: &str) -> Vec<String> {
    match parse_spec(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.problems.into_iter().map(|p| p.path).collect(),
    }
}

#[test]
fn a_service_with_every_field_parses_and_round_trips() {
    let s = parse_spec(SERVICE).unwrap();
    let h = s.health.as_ref().unwrap();
    assert_eq!(h.http.as_ref().unwrap().port, PortRef::Name("http".into()));
    assert_eq!(h.http.as_ref().unwrap().path, "/healthz");
    assert_eq!(
        s.ready.as_ref().unwrap().tcp.as_ref().unwrap().port,
        PortRef::Number(9090)
    );
    let u = s.update();
    assert_eq!(
        (u.max_surge, u.max_unavailable),
        (Amount::Count(1), Amount::Percent(25))
    );
    assert_eq!(u.min_ready_time, DurationMs(5_000));
    assert_eq!(s.restart_limit().count, 10);
    assert_eq!(s.kind, Kind::Service);
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(parse_spec(&json).unwrap(), s);
}

#[test]
fn defaults_apply_when_fields_are_left_out() {
    let s = parse_spec("name: a\nimage: busybox:latest\nhealth: {exec: [/bin/true]}\n").unwrap();
    let h = s.health.as_ref().unwrap();
    assert_eq!(
        (h.interval, h.timeout, h.grace, h.failures),
        (DurationMs(10_000), DurationMs(2_000), DurationMs(30_000), 3)
    );
    // Readiness defaults to the health check.
    assert_eq!(s.readiness(), Some(h));
    let u = s.update();
    assert_eq!(
        (u.max_surge, u.max_unavailable, u.auto_rollback),
        (Amount::Count(1), Amount::Count(0), true)
    );
    assert_eq!(
        (s.restart_limit().count, s.restart_limit().window),
        (10, DurationMs(600_000))
    );
    // Fields at their defaults are not written back.
    let plain = parse_spec("name: a\nimage: busybox:latest\n").unwrap();
    let json = serde_json::to_string(&plain).unwrap();
    assert!(!json.contains("kind") && !json.contains("health"), "{json}");
}

#[test]
fn percentages_round_like_kubernetes() {
    assert_eq!(Amount::Percent(25).of(10, true), 3);
    assert_eq!(Amount::Percent(25).of(10, false), 2);
    assert_eq!(Amount::Count(2).of(10, true), 2);
}

#[test]
fn a_periodic_job_parses() {
    for schedule in ["\"@every 30s\"", "\"*/5 * * * *\"", "\"0 3 * * MON-FRI\""] {
        let s = parse_spec(&format!(
            "name: j\nimage: busybox:latest\nkind: job\nretries: 3\ndeadline: 10m\nschedule: {schedule}\nconcurrency: forbid\n"
        ))
        .unwrap();
        assert_eq!(s.kind, Kind::Job);
        assert_eq!(s.concurrency, Some(Concurrency::Forbid));
    }
}

#[test]
fn bad_service_fields_are_named() {
    let cases: &[(&str, &str)] = &[
        ("update: {max_surge: 0, max_unavailable: 0}", "update"),
        ("update: {max_surge: 101%}", "update.max_surge"),
        ("update: {deadline: 0s}", "update.deadline"),
        ("update: {max_unavailable: -1}", "update.max_unavailable"),
        ("restart_limit: {count: 0}", "restart_limit.count"),
        ("retries: 3", "retries"),
        ("schedule: \"@every 1m\"", "schedule"),
        ("deadline: 5m", "deadline"),
        ("kind: daemon", "kind"),
    ];
    for (extra, path) in cases {
        let text = format!("name: a\nimage: busybox:latest\n{extra}\n");
        assert!(
            paths(&text).contains(&path.to_string()),
            "{extra}: {:?}",
            paths(&text)
        );
    }
}

#[test]
fn bad_checks_are_named() {
    let cases: &[(&str, &str)] = &[
        ("health: {http: {port: web}}", "health.http.port"),
        ("health: {tcp: {port: 0}}", "health.tcp.port"),
        ("health: {tcp: {port: 70000}}", "health.tcp.port"),
        ("health: {interval: 5s}", "health"),
        ("health: {tcp: {port: 80}, exec: [/bin/true]}", "health"),
        ("health: {exec: []}", "health.exec"),
        (
            "health: {tcp: {port: 80}, interval: 1s, timeout: 2s}",
            "health.timeout",
        ),
        ("health: {tcp: {port: 80}, failures: 0}", "health.failures"),
        ("ready: {http: {port: 80, path: nope}}", "ready.http.path"),
        ("ready: {http: {port: 80}, flaky: true}", "ready"),
    ];
    for (extra, path) in cases {
        let text = format!("name: a\nimage: busybox:latest\n{extra}\n");
        let got = paths(&text);
        assert!(
            got.iter()
                .any(|p| p == path || p.starts_with(&format!("{path}."))),
            "{extra}: {got:?}"
        );
    }
}

#[test]
fn bad_port_names_are_named() {
    let text = "name: a\nimage: busybox:latest\nports: [{name: http, host: 80}, {name: http, host: 81}, {name: Bad_Name, host: 82}]\n";
    let got = paths(text);
    assert!(got.contains(&"ports[1].name".to_string()), "{got:?}");
    assert!(got.contains(&"ports[2].name".to_string()), "{got:?}");
}

#[test]
fn bad_job_fields_are_named() {
    let job = "name: j\nimage: busybox:latest\nkind: job\n";
    let cases: &[(&str, &str)] = &[
        ("schedule: \"61 * * * *\"", "schedule"),
        ("schedule: \"* * *\"", "schedule"),
        ("schedule: \"@every 10ms\"", "schedule"),
        ("schedule: \"@every soon\"", "schedule"),
        ("concurrency: allow", "concurrency"),
        ("update: {max_surge: 1}", "update"),
        ("restart: always", "restart"),
        ("retries: 1000", "retries"),
        ("deadline: 0s", "deadline"),
        (
            "schedule: \"@every 1m\"\nconcurrency: sometimes",
            "concurrency",
        ),
    ];
    for (extra, path) in cases {
        let text = format!("{job}{extra}\n");
        assert!(
            paths(&text).contains(&path.to_string()),
            "{extra}: {:?}",
            paths(&text)
        );
    }
}

#[test]
fn health_port_by_name_needs_the_name() {
    // A name that exists passes; the same spec without the name fails.
    assert!(parse_spec(&service_with("")).is_ok());
    let unnamed = SERVICE.replace("{name: http, host: 8080}", "{host: 8080}");
    assert!(paths(&unnamed).contains(&"health.http.port".to_string()));
}

#[test]
fn schedules_say_when_they_are_next_due() {
    use berth_model::spec::Schedule;
    let every = Schedule("@every 5s".into());
    assert_eq!(every.next_after(1_000), Some(6_000));
    // 2026-12-02 14:03:20 UTC; hourly at :30 -> 14:30:00.
    let t = 1_796_220_200_000;
    let hourly = Schedule("30 * * * *".into());
    assert_eq!(hourly.next_after(t), Some(1_796_221_800_000));
    assert_eq!(Schedule("nope".into()).next_after(t), None);
}
