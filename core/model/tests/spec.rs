//! Integration tests for the app spec contract: parsing, validation, errors,
//! the JSON Schema twin, and property tests.

use std::collections::{BTreeMap, BTreeSet};

use berth_model::spec::{MAX_INSTANCES, MAX_YAML_FLOW_OPENERS, WHOLE_SPEC};
use berth_model::{
    AppSpec, Bytes, DurationMs, MilliCpu, PortSpec, Resources, RestartPolicy, SpecError,
    parse_spec, valid_name,
};
use proptest::prelude::*;

const EXAMPLE: &str = r#"
name: hello                  # comment
image: busybox:latest
command: ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
env: {GREETING: hi}
resources: {cpu: 0.25, memory: 64Mi}
instances: 1
ports: [{host: 8080}]
restart: on-failure
stop_grace: 5s
"#;

fn example() -> AppSpec {
    AppSpec {
        name: "hello".into(),
        image: "busybox:latest".into(),
        command: ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
            .map(String::from)
            .to_vec(),
        env: BTreeMap::from([("GREETING".to_owned(), "hi".to_owned())]),
        resources: Resources {
            cpu: MilliCpu(250),
            memory: Bytes(64 << 20),
            ..Default::default()
        },
        instances: 1,
        ports: vec![PortSpec {
            name: None,
            host: Some(8080),
            container: None,
        }],
        restart: RestartPolicy::OnFailure,
        stop_grace: DurationMs(5000),
        constraints: Vec::new(),
        gang: false,
        priority: 0,
        labels: BTreeMap::new(),
        ..AppSpec::new("", "")
    }
}

/// Parses `text`, expecting failure; returns (path, message) pairs.
fn problems(text: &str) -> Vec<(String, String)> {
    let err: SpecError = parse_spec(text).expect_err("spec should be rejected");
    err.problems
        .into_iter()
        .map(|p| (p.path, p.message))
        .collect()
}

/// A minimal valid YAML spec with `extra` appended.
fn with(extra: &str) -> String {
    format!("name: hello\nimage: busybox:latest\n{extra}\n")
}

#[test]
fn example_parses_to_expected_struct() {
    assert_eq!(parse_spec(EXAMPLE).unwrap(), example());
}

#[test]
fn minimal_spec_gets_defaults() {
    let spec = parse_spec(&with("")).unwrap();
    assert_eq!(spec, AppSpec::new("hello", "busybox:latest"));
    assert_eq!(spec.resources.cpu, MilliCpu(100));
    assert_eq!(spec.resources.memory, Bytes(64 << 20));
    assert_eq!(spec.instances, 1);
    assert_eq!(spec.restart, RestartPolicy::OnFailure);
    assert_eq!(spec.stop_grace, DurationMs(5000));
    let spec = parse_spec(&with("resources: {cpu: 250m}")).unwrap();
    assert_eq!(spec.resources.memory, Bytes(64 << 20));
}

#[test]
fn json_form_works() {
    let json = r#"{
        "name": "hello", "image": "busybox:latest",
        "command": ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"],
        "env": {"GREETING": "hi"},
        "resources": {"cpu": "250m", "memory": 67108864},
        "instances": 1, "ports": [{"host": 8080}],
        "restart": "on-failure", "stop_grace": "5s"
    }"#;
    assert_eq!(parse_spec(json).unwrap(), example());
    // The serialized form parses back, and uses canonical quantities.
    let text = serde_json::to_string(&example()).unwrap();
    assert!(text.contains(r#""cpu":"250m""#), "{text}");
    assert!(text.contains(r#""memory":"64Mi""#), "{text}");
    assert!(text.contains(r#""restart":"on-failure""#), "{text}");
    assert_eq!(parse_spec(&text).unwrap(), example());
}

#[test]
fn unknown_fields_are_rejected_with_their_path() {
    let p = problems(&with("foo: 1"));
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0, "foo");
    assert!(
        p[0].1
            .starts_with("unknown field (expected one of: name, image, "),
        "{p:?}"
    );

    let p = problems(&with("resources: {cpu: 1, gpu: 1}"));
    assert_eq!(p[0].0, "resources.gpu");
    assert_eq!(
        p[0].1,
        "unknown field (expected one of: cpu, memory, cores, gpus, nics, numa, devices)"
    );

    let p = problems(&with("ports: [{host: 80, proto: tcp}]"));
    assert_eq!(p[0].0, "ports[0].proto");

    let p = problems(r#"{"name": "hello", "image": "busybox:latest", "resources": {"gpu": 1}}"#);
    assert_eq!(p[0].0, "resources.gpu");
}

#[test]
fn bad_memory_names_the_field() {
    let p = problems(&with("resources: {memory: lots}"));
    assert_eq!(
        p,
        [(
            "resources.memory".to_owned(),
            r#""lots" is not a quantity (expected e.g. 64Mi, 1Gi, 512M)"#.to_owned()
        )]
    );
    let err = parse_spec(&with("resources: {memory: lots}")).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"resources.memory: "lots" is not a quantity (expected e.g. 64Mi, 1Gi, 512M)"#
    );
    let p = problems(r#"{"name":"hello","image":"busybox:latest","resources":{"memory":"lots"}}"#);
    assert_eq!(p[0].0, "resources.memory");
    assert!(
        !p[0].1.contains("line"),
        "position is dropped when a path is known: {p:?}"
    );

    let p = problems(&with("resources: {memory: 99999999999Ti}"));
    assert_eq!(p[0].0, "resources.memory");
    assert!(p[0].1.contains("too large"), "{p:?}");
    assert_eq!(
        problems(&with("resources: {memory: 1Mi}"))[0].0,
        "resources.memory"
    );
    assert_eq!(
        problems(&with("resources: {memory: 17Ti}"))[0].0,
        "resources.memory"
    );
}

#[test]
fn bad_cpu_names_the_field() {
    for cpu in ["abc", "-1", "0", "0.0001", "1025", "2000000m"] {
        let p = problems(&with(&format!("resources: {{cpu: {cpu}}}")));
        assert_eq!(p[0].0, "resources.cpu", "{cpu}: {p:?}");
    }
    let p = problems(&with("resources: {cpu: abc}"));
    assert_eq!(
        p[0].1,
        r#""abc" is not a cpu quantity (expected cores like 0.5 or millicores like 500m)"#
    );
    assert!(parse_spec(&with("resources: {cpu: 1024}")).is_ok());
}

#[test]
fn bad_name_is_rejected() {
    for name in [
        "Hello",
        "-hello",
        "hello-",
        "hel_lo",
        "\"\"",
        &"a".repeat(64),
        "héllo",
    ] {
        let p = problems(&format!("name: {name}\nimage: busybox:latest\n"));
        assert_eq!(p[0].0, "name", "{name}: {p:?}");
    }
    assert!(valid_name("a"));
    assert!(valid_name("hello-world-2"));
    assert!(valid_name(&"a".repeat(63)));
    assert!(!valid_name(""));
    assert!(!valid_name("a.b"));
}

#[test]
fn bad_image_is_rejected() {
    for image in [
        "busybox",
        "Busybox:latest",
        ":latest",
        "busybox:",
        "a:b:c",
        "busybox:lat!est",
    ] {
        let p = problems(&format!("name: hello\nimage: \"{image}\"\n"));
        assert_eq!(p[0].0, "image", "{image}: {p:?}");
    }
    let long_tag = format!("busybox:{}", "t".repeat(129));
    assert_eq!(
        problems(&format!("name: a\nimage: {long_tag}\n"))[0].0,
        "image"
    );
    assert!(parse_spec("name: a\nimage: registry.example/lib/busy_box-1:v1.2_rc-3\n").is_ok());
}

#[test]
fn missing_required_field_is_named() {
    assert_eq!(
        problems("name: hello\n"),
        [("image".to_owned(), "is required".to_owned())]
    );
    assert_eq!(problems("image: busybox:latest\n")[0].0, "name");
    assert_eq!(problems(&with("ports: [{}]"))[0].0, "ports[0].host");
}

#[test]
fn bad_restart_is_rejected() {
    let p = problems(&with("restart: sometimes"));
    assert_eq!(p[0].0, "restart");
    assert!(p[0].1.contains("always, on-failure, never"), "{p:?}");
    for (text, want) in [
        ("always", RestartPolicy::Always),
        ("on-failure", RestartPolicy::OnFailure),
        ("never", RestartPolicy::Never),
    ] {
        assert_eq!(
            parse_spec(&with(&format!("restart: {text}")))
                .unwrap()
                .restart,
            want
        );
        assert_eq!(want.to_string(), text);
    }
}

#[test]
fn duplicate_ports_are_rejected() {
    let p = problems(&with("ports: [{host: 80}, {host: 81}, {host: 80}]"));
    assert_eq!(
        p,
        [(
            "ports[2].host".to_owned(),
            "80 is already used by ports[0]".to_owned()
        )]
    );
}

#[test]
fn port_range_is_checked() {
    // 0 is a dynamic port; several may be asked for.
    assert!(parse_spec(&with("ports: [{host: 0}, {host: 0, name: b}]")).is_ok());
    assert_eq!(
        problems(&with("ports: [{host: 1}, {host: 65536}]"))[0].0,
        "ports[1].host"
    );
    assert_eq!(problems(&with("ports: [{host: -1}]"))[0].0, "ports[0].host");
    assert!(parse_spec(&with("ports: [{host: 1}, {host: 65535}]")).is_ok());
}

#[test]
fn instances_out_of_range() {
    let p = problems(&with("instances: 1001"));
    assert_eq!(
        p,
        [(
            "instances".to_owned(),
            format!("1001 is more than the maximum of {MAX_INSTANCES}")
        )]
    );
    assert_eq!(problems(&with("instances: -1"))[0].0, "instances");
    assert_eq!(problems(&with("instances: 1.5"))[0].0, "instances");
    assert_eq!(problems(&with("instances: 99999999999"))[0].0, "instances");
    assert_eq!(parse_spec(&with("instances: 0")).unwrap().instances, 0);
    assert_eq!(
        parse_spec(&with("instances: 1000")).unwrap().instances,
        1000
    );
}

#[test]
fn stop_grace_is_checked() {
    assert_eq!(
        parse_spec(&with("stop_grace: 500ms")).unwrap().stop_grace,
        DurationMs(500)
    );
    assert_eq!(
        parse_spec(&with("stop_grace: 10m")).unwrap().stop_grace,
        DurationMs(600_000)
    );
    assert_eq!(problems(&with("stop_grace: 11m"))[0].0, "stop_grace");
    assert_eq!(problems(&with("stop_grace: soon"))[0].0, "stop_grace");
}

#[test]
fn env_and_command_rules() {
    let p = problems(&with("env: {1BAD: x, GOOD: y, \"A B\": z}"));
    let paths: Vec<_> = p.iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(paths, [r#"env["1BAD"]"#, r#"env["A B"]"#]);
    assert_eq!(problems(&with("env: {PORT: 8080}"))[0].0, "env.PORT");
    let p = problems(r#"{"name":"a","image":"b:c","env":{"A":"x","A":"y"}}"#);
    assert_eq!(p[0].0, "env");
    assert_eq!(problems(&with("command: [sh, \"\"]"))[0].0, "command[1]");
    assert_eq!(problems(&with("command: [\"a\\0b\"]"))[0].0, "command[0]");
}

#[test]
fn multiple_problems_are_reported_together() {
    let text = "name: Bad_Name\nimage: busybox\ninstances: 5000\n\
                ports: [{host: 80}, {host: 80}]\nresources: {cpu: 0, memory: 1Mi}\nstop_grace: 1h\n";
    let err = parse_spec(text).unwrap_err();
    let paths: Vec<_> = err.problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "name",
            "image",
            "resources.cpu",
            "resources.memory",
            "instances",
            "ports[1].host",
            "stop_grace"
        ]
    );
    // Display: one `path: message` line per problem.
    let shown = err.to_string();
    assert_eq!(shown.lines().count(), paths.len());
    assert!(shown.lines().all(|l| l.contains(": ")));
}

#[test]
fn whole_document_problems_use_spec_path() {
    for text in [
        "",
        "   \n\t",
        "# only a comment\n",
        "~",
        "hello",
        "- a\n- b",
        "42",
        "a: [",
        "{",
        r#"{"name": "a", "image": "b:c"} x"#,
    ] {
        let p = problems(text);
        assert_eq!(p.len(), 1, "{text:?}: {p:?}");
        assert_eq!(p[0].0, WHOLE_SPEC, "{text:?}: {p:?}");
    }
    assert!(
        problems("a: [")[0].1.contains("line"),
        "syntax errors keep their position"
    );
}

#[test]
fn hostile_inputs_are_errors_not_crashes() {
    // Deep YAML flow nesting is refused up front (the scanner is quadratic).
    let start = std::time::Instant::now();
    let deep_yaml = format!("name: {}", "[".repeat(1_000_000));
    assert_eq!(problems(&deep_yaml)[0].0, WHOLE_SPEC);
    let deep_yaml = format!("name: {}", "[".repeat(MAX_YAML_FLOW_OPENERS));
    assert_eq!(problems(&deep_yaml)[0].0, WHOLE_SPEC);
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    let brackets = with(&format!("command: [\"{}\"]", "[".repeat(1000)));
    assert!(parse_spec(&brackets).is_ok());
    let deep_json = format!("{{\"name\": {}", "[".repeat(100_000));
    assert!(parse_spec(&deep_json).is_err());
    let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 0..12 {
        let prev = if i == 0 {
            "a".to_owned()
        } else {
            format!("l{}", i - 1)
        };
        laughs.push_str(&format!("l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    assert!(parse_spec(&laughs).is_err());
    assert!(parse_spec("\u{feff}name: a\nimage: b:c\n").is_ok());
    let long = format!("name: {}\nimage: b:c\n", "x".repeat(1_000_000));
    let err = parse_spec(&long).unwrap_err();
    assert!(
        err.to_string().len() < 300,
        "long input is shortened in messages"
    );
}

#[test]
fn schema_matches_the_struct() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/app-spec.schema.json"
    );
    let text = std::fs::read_to_string(path).expect("schema file");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
    let keys = |v: &serde_json::Value| -> BTreeSet<String> {
        v.as_object().expect("an object").keys().cloned().collect()
    };

    // Every field, set: a service and a job (some fields are one kind's).
    let service = parse_spec(
        "name: x\nimage: busybox:latest\nnetwork: bridge\nnamespace: shop\nvolumes: [{name: d, path: /d, size: 1Gi}]\nlogs: {max_size: 1Mi}\nuser: \"1000\"\nread_only_root: true\nseccomp: unconfined\nports: [{name: http, host: 80, container: 8080}]\nhealth: {tcp: {port: http}}\nready: {http: {port: 8080}}\nupdate: {max_surge: 25%}\nrestart_limit: {count: 3}\n",
    )
    .unwrap();
    let job = parse_spec(
        "name: x\nimage: busybox:latest\nkind: job\nretries: 1\ndeadline: 1m\nschedule: \"@every 1m\"\nconcurrency: allow\n",
    )
    .unwrap();
    let mut all = keys(&serde_json::to_value(&service).unwrap());
    all.extend(keys(&serde_json::to_value(&job).unwrap()));
    assert_eq!(keys(&schema["properties"]), all);
    for check in ["health", "ready"] {
        let c = &schema["properties"][check];
        assert_eq!(c["additionalProperties"], false);
        let full = serde_json::to_value(service.health.clone().unwrap()).unwrap();
        let mut want = keys(&full);
        want.extend(["http", "exec"].map(String::from));
        assert_eq!(keys(&c["properties"]), want, "{check}");
    }
    let update = serde_json::to_value(service.update()).unwrap();
    assert_eq!(
        keys(&schema["properties"]["update"]["properties"]),
        keys(&update)
    );
    let limit = serde_json::to_value(service.restart_limit()).unwrap();
    assert_eq!(
        keys(&schema["properties"]["restart_limit"]["properties"]),
        keys(&limit)
    );
    assert_eq!(schema["required"], serde_json::json!(["name", "image"]));
    assert_eq!(schema["additionalProperties"], false);

    let resources = &schema["properties"]["resources"];
    // Optional hardware fields are left out when unset; set them all.
    let full = parse_spec(
        "name: x\nimage: busybox:latest\nresources: {cores: 1, gpus: {count: 1}, nics: {count: 1}, numa: restricted, devices: {example.com/fpga: 1}}\n",
    )
    .unwrap();
    let full = serde_json::to_value(full).unwrap();
    assert_eq!(keys(&resources["properties"]), keys(&full["resources"]));
    assert_eq!(resources["additionalProperties"], false);
    let port = &schema["properties"]["ports"]["items"];
    let port_value = serde_json::to_value(PortSpec {
        name: Some("http".into()),
        host: Some(1),
        container: Some(2),
    })
    .unwrap();
    assert_eq!(keys(&port["properties"]), keys(&port_value));
    assert_eq!(port["additionalProperties"], false);
    let restarts: Vec<_> = [
        RestartPolicy::Always,
        RestartPolicy::OnFailure,
        RestartPolicy::Never,
    ]
    .iter()
    .map(|r| serde_json::to_value(r).unwrap())
    .collect();
    assert_eq!(
        schema["properties"]["restart"]["enum"],
        serde_json::Value::Array(restarts)
    );
}

fn arb_spec() -> impl Strategy<Value = AppSpec> {
    let restart = prop_oneof![
        Just(RestartPolicy::Always),
        Just(RestartPolicy::OnFailure),
        Just(RestartPolicy::Never),
    ];
    let ports = proptest::collection::btree_set(1u16..=65535, 0..6)
        .prop_map(|set| {
            set.into_iter()
                .map(|host| PortSpec {
                    name: None,
                    host: Some(host),
                    container: None,
                })
                .collect::<Vec<_>>()
        })
        .prop_shuffle();
    (
        "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?",
        "[a-z0-9][a-z0-9_-]{0,10}(/[a-z0-9][a-z0-9._-]{0,10}){0,2}:[A-Za-z0-9._-]{1,128}",
        proptest::collection::vec("[^\\x00]{1,12}", 0..5),
        proptest::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,12}", "[^\\x00]{0,12}", 0..5),
        (1u64..=1_024_000, (4u64 << 20)..=(16u64 << 40)),
        0u32..=1000,
        ports,
        restart,
        0u64..=600_000,
    )
        .prop_map(
            |(name, image, command, env, (cpu, memory), instances, ports, restart, grace)| {
                AppSpec {
                    name,
                    image,
                    command,
                    env,
                    resources: Resources {
                        cpu: MilliCpu(cpu),
                        memory: Bytes(memory),
                        ..Default::default()
                    },
                    instances,
                    ports,
                    restart,
                    stop_grace: DurationMs(grace),
                    constraints: Vec::new(),
                    gang: false,
                    priority: 0,
                    labels: BTreeMap::new(),
                    ..AppSpec::new("", "")
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_specs_round_trip(spec in arb_spec()) {
        prop_assert_eq!(spec.validate(), Ok(()));
        let json = serde_json::to_string(&spec).unwrap();
        prop_assert_eq!(&parse_spec(&json).unwrap(), &spec);
        let pretty = serde_json::to_string_pretty(&spec).unwrap();
        prop_assert_eq!(&parse_spec(&pretty).unwrap(), &spec);
        let yaml = serde_yaml::to_string(&spec).unwrap();
        prop_assert_eq!(&parse_spec(&yaml).unwrap(), &spec);
    }

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        let _ = parse_spec(&text);
    }

    #[test]
    fn spec_like_strings_never_panic(text in "[a-z_:{}\\[\\], \"'&*!|>#0-9.\\-\\n-]{0,200}") {
        let _ = parse_spec(&text);
    }

    #[test]
    fn damaged_specs_never_panic(at in 0usize..400, junk in any::<String>()) {
        let mut text = serde_yaml::to_string(&example()).unwrap();
        let mut cut = at.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.insert_str(cut, &junk);
        let _ = parse_spec(&text);
        let mut json = serde_json::to_string(&example()).unwrap();
        json.insert_str(at.min(json.len()), &junk);
        let _ = parse_spec(&json);
    }
}

#[test]
fn hardware_requests_parse_and_bad_ones_name_the_field() {
    let spec = parse_spec(
        "name: train\nimage: busybox:latest\nresources:\n  cores: 32\n  memory: 1Gi\n  gpus: {count: 4, model: [H100], min_memory: 40Gi, interconnect: nvlink}\n  nics: {count: 1, min_speed: 400, rdma: true}\n  numa: single-numa-node\n",
    )
    .unwrap();
    let g = spec.resources.gpus.as_ref().unwrap();
    assert_eq!((g.count, g.milli), (4, 1000));
    assert_eq!(g.min_memory, Some(Bytes(40 << 30)));
    assert_eq!(spec.resources.cores, 32);
    assert_eq!(
        spec.resources.numa,
        berth_model::hardware::NumaPolicy::SingleNumaNode
    );
    let back = serde_json::to_string(&spec).unwrap();
    assert_eq!(parse_spec(&back).unwrap(), spec);
    let fpga = parse_spec(
        "name: x\nimage: busybox:latest\nresources: {devices: {example.com/fpga: 2, acme.io/npu_v2: 1}}\n",
    )
    .unwrap();
    assert_eq!(fpga.resources.devices["example.com/fpga"], 2);
    assert_eq!(fpga.resources.devices["acme.io/npu_v2"], 1);

    let cases = [
        ("gpus: {count: 0}", "resources.gpus.count"),
        ("gpus: {count: 2, milli: 500}", "resources.gpus.milli"),
        ("gpus: {mig_profile: big}", "resources.gpus.mig_profile"),
        ("gpus: {interconnect: pcie}", "resources.gpus.interconnect"),
        ("gpus: {count: 1, colour: red}", "resources.gpus"),
        ("nics: {count: 99}", "resources.nics.count"),
        ("devices: {fpga: 1}", "resources.devices.fpga:"),
        (
            "devices: {Example.com/fpga: 1}",
            "resources.devices[\"Example.com/fpga\"]",
        ),
        ("devices: {example.com/fpga: 0}", "not between 1 and 64"),
        (
            "devices: {nvidia.com/gpu: 1}",
            "requested with resources.gpus",
        ),
        ("devices: {example.com/fpga: lots}", "resources.devices"),
        ("numa: strict", "resources.numa"),
        ("cores: 4\n  cpu: 2", "resources.cpu"),
    ];
    for (yaml, field) in cases {
        let text = format!("name: x\nimage: busybox:latest\nresources:\n  {yaml}\n");
        let err = parse_spec(&text).unwrap_err().to_string();
        assert!(err.contains(field), "{yaml}: {err}");
    }
}

#[test]
fn constraints_gangs_and_priority() {
    let spec = parse_spec(
        "name: x\nimage: busybox:latest\ngang: true\npriority: 10\nconstraints: [[hostname, UNIQUE], [gpu.model, LIKE, \".*H100.*\"], [rack, MAX_PER, \"2\"]]\n",
    )
    .unwrap();
    assert!(spec.gang);
    assert_eq!(spec.priority, 10);
    assert_eq!(spec.constraints.len(), 3);
    assert_eq!(
        parse_spec(&serde_json::to_string(&spec).unwrap()).unwrap(),
        spec
    );
    for (yaml, field) in [
        ("constraints: [[hostname, SOMETIMES]]", "constraints[0]"),
        ("constraints: [[rack, MAX_PER]]", "constraints[0]"),
        ("constraints: [[rack, LIKE, \"(\"]]", "constraints[0]"),
        ("constraints: [[hostname, UNIQUE, x]]", "constraints[0]"),
        ("priority: 5000", "priority"),
        ("labels: {\"Bad Key\": x}", "labels[\"Bad Key\"]"),
        ("labels: {team: \"a b\"}", "labels.team"),
    ] {
        let err = parse_spec(&format!("name: x\nimage: busybox:latest\n{yaml}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{yaml}: {err}");
    }
}

#[test]
fn every_example_spec_parses() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let mut n = 0;
    let mut dirs = vec![std::path::PathBuf::from(root)];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                let text = std::fs::read_to_string(&p).unwrap();
                parse_spec(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
    }
    assert!(n >= 4, "found {n} example specs");
}

#[test]
fn network_rules_name_their_field() {
    use berth_model::spec::Network;
    let bridge = parse_spec(&with(
        "ports: [{name: http, container: 8080, host: 0}, {container: 9100}]",
    ))
    .unwrap();
    assert_eq!(
        bridge.network(),
        Network::Bridge,
        "a container port means bridge"
    );
    assert_eq!(bridge.namespace, "default");
    assert_eq!(
        parse_spec(&with("ports: [{host: 80}]")).unwrap().network(),
        Network::Host
    );
    let cases = [
        (
            "ports: [{container: 80}, {container: 80}]",
            "ports[1].container",
            "80 is already used by ports[0]",
        ),
        (
            "ports: [{container: 0}]",
            "ports[0].container",
            "between 1 and 65535",
        ),
        ("ports: [{container: 70000}]", "ports[0].container", ""),
        (
            "network: host\nports: [{host: 80, container: 80}]",
            "ports[0].container",
            "only with network: bridge",
        ),
        (
            "network: host\nports: [{container: 80}]",
            "ports[0].host",
            "required with network: host",
        ),
        (
            "network: bridge\nports: [{host: 80}]",
            "ports[0].container",
            "required with network: bridge",
        ),
        (
            "network: none\nports: [{container: 80}]",
            "ports",
            "network: none has no ports",
        ),
        ("namespace: Bad_NS", "namespace", "not a valid namespace"),
        ("network: overlay", "network", ""),
        (
            "ports: [{name: a, container: 1}, {name: a, container: 2}]",
            "ports[1].name",
            "already the name",
        ),
    ];
    for (yaml, field, msg) in cases {
        let p = problems(&with(yaml));
        assert!(
            p.iter().any(|(f, m)| f == field && m.contains(msg)),
            "{yaml}: {p:?}"
        );
    }
}
