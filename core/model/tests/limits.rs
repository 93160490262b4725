//! Every part of a spec has a size limit, and going over it names the field.

use berth_model::spec::{MAX_ARGS, MAX_ENV, MAX_VALUE_LEN, parse_spec};

fn paths(text: &str) -> Vec<String> {
    parse_spec(text)
        .expect_err("spec should be rejected")
        .problems
        .into_iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect()
}

#[test]
fn too_many_env_entries_or_args_and_too_long_values_are_refused() {
    let env: String = (0..=MAX_ENV).map(|i| format!("  V{i}: x\n")).collect();
    let p = paths(&format!("name: a\nimage: busybox:latest\nenv:\n{env}"));
    assert!(
        p.iter().any(|m| m.starts_with("env: 1025 variables")),
        "{p:?}"
    );

    let args: String = (0..=MAX_ARGS).map(|_| "  - x\n").collect();
    let p = paths(&format!("name: a\nimage: busybox:latest\ncommand:\n{args}"));
    assert!(
        p.iter().any(|m| m.starts_with("command: 1025 arguments")),
        "{p:?}"
    );

    let long = "y".repeat(MAX_VALUE_LEN + 1);
    let p = paths(&format!(
        "name: a\nimage: busybox:latest\nenv: {{BIG: {long}}}\n"
    ));
    assert!(
        p.iter().any(|m| m.starts_with("env.BIG: 32769 bytes")),
        "{p:?}"
    );

    // At the limits, fine.
    let env: String = (0..MAX_ENV).map(|i| format!("  V{i}: x\n")).collect();
    assert!(parse_spec(&format!("name: a\nimage: busybox:latest\nenv:\n{env}")).is_ok());
}
