//! The JSON API against its own OpenAPI document: schemathesis (from
//! PyPI, installed by `ci/test.sh` into `target/venv`) generates requests
//! for every operation from `/v1/openapi.json` and checks that no answer
//! is a 5xx and every answer matches the document (status codes, content
//! types, bodies), with a token. The streaming operations (events, logs)
//! are left to `web.rs`: a followed stream does not end.

mod common;

use std::process::Command;

use common::Dev;

#[test]
fn schemathesis_finds_no_5xx_and_no_answer_outside_the_schema() {
    let mut dev = Dev::start();
    dev.agent("dgx1", "dgx-h100");
    dev.run_spec(
        "web",
        "name: web\nimage: busybox:latest\ninstances: 1\ncommand: [sleep, '1000']\n\
         resources: {cpu: 50m, memory: 16Mi}\n",
    );
    let st = common::repo().join("target/venv/bin/schemathesis");
    assert!(
        st.exists(),
        "{} is missing: ci/test.sh installs it (python3 -m venv target/venv; pip install schemathesis)",
        st.display()
    );
    let token = std::fs::read_to_string(dev.data.path().join("token")).unwrap();
    let out = Command::new(&st)
        .arg("--config-file")
        .arg(common::repo().join("ci/schemathesis.toml"))
        .arg("run")
        .arg(format!("https://{}/v1/openapi.json", dev.addr))
        .arg("--tls-verify")
        .arg(dev.data.path().join("ca.pem"))
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
        .args([
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--request-timeout",
            "10",
        ])
        .args(["--exclude-operation-id", "WatchEvents"])
        .args(["--exclude-operation-id", "Logs"])
        .env("NO_COLOR", "1")
        // Its example cache goes beside the cluster's data, not into the tree.
        .current_dir(dev.data.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("passed"), "{text}");
}
