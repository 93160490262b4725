//! Images from a real registry (Debian's docker-registry, TLS with a CA made
//! by the test, htpasswd auth): pushed with `berth image push`, pinned to a
//! digest by the servers, pulled by two agents with no import, and every
//! failure a clear reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::registry::{PASSWORD, Registry, USER};
use common::{Dev, wait_for};
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

/// A demo image whose /www/index.html says `word`.
fn image_saying(word: &str) -> PathBuf {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("registry-{}-{word}", std::process::id()));
    let www = base.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), format!("{word}\n")).unwrap();
    let out = base.join("layout");
    let ok = Command::new(common::repo().join("ci/make-demo-image.sh"))
        .arg(&out)
        .arg(&www)
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    out
}

/// The digests of a layout's (only) manifest and its layers.
fn layout_digests(layout: &Path) -> (String, Vec<String>) {
    let blob = |d: &str| {
        let hex = d.strip_prefix("sha256:").unwrap();
        serde_json::from_slice::<Value>(
            &std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap(),
        )
        .unwrap()
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let layers = blob(&m)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    (m, layers)
}

fn login(dev: &Dev, host: &str, password: &str) {
    let args = ["registry", "login", host, "-u", USER, "--password-stdin"];
    let out = common::berth_stdin(Some(dev), &args, format!("{password}\n").as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Submits a spec and returns the CLI's output (success or not).
fn submit(dev: &Dev, name: &str, yaml: &str) -> std::process::Output {
    let path = dev.data.path().join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    dev.berth(&["run", "--detach", "-f", path.to_str().unwrap()])
}

fn spec(name: &str, image: &str, extra: &str) -> String {
    format!(
        "name: {name}\nimage: {image}\nrestart: always\nstop_grace: 1s\n\
         resources: {{cpu: 0.05, memory: 16Mi}}\n\
         command: [/bin/sh, -c, 'cat /www/index.html; exec sleep 3600']\n{extra}"
    )
}

fn logs(dev: &Dev, task: &str) -> String {
    dev.ok(&["logs", task])
}

fn tasks_of(dev: &Dev, app: &str) -> Vec<Value> {
    dev.ps().into_iter().filter(|t| t["app"] == app).collect()
}

#[test]
fn images_come_from_a_registry_pinned_and_every_failure_says_why() {
    let reg = Registry::start();
    let ca = reg.ca.to_str().unwrap().to_string();
    let a = image_saying("alpha");
    reg.push(&a, "shop/web:1");
    // A wrong password is refused by the registry at push time.
    let out = reg.push_with(&a, "shop/web:1", "wrong");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unauthorized"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut dev = Dev::start_env(&[("BERTH_REGISTRY_CA", ca.as_str())]);
    // A second node with its own data dir and no image at all.
    dev.agent_bare("n2", "cpu-2s", &["--registry-ca", &ca]);
    let host = reg.host.clone();
    let image = format!("{host}/shop/web:1");

    // Without credentials the servers cannot pin the tag: refused at
    // submit, naming the field and the cause; nothing is stored.
    let out = submit(&dev, "web", &spec("web", &image, "instances: 2\n"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("image:") && err.contains("unauthorized"),
        "{err}"
    );
    assert!(tasks_of(&dev, "web").is_empty());

    // A wrong password: the same.
    login(&dev, &host, "wrong");
    let out = submit(&dev, "web", &spec("web", &image, "instances: 2\n"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"));

    login(&dev, &host, PASSWORD);
    let listed = dev.ok(&["registry", "ls", "--json"]);
    assert!(
        listed.contains(USER) && !listed.contains(PASSWORD),
        "{listed}"
    );
    // At rest, only ciphertext: the raft log and snapshot never hold the
    // password; the key is beside them, outside the state.
    for f in std::fs::read_dir(dev.data.path().join("server"))
        .unwrap()
        .flatten()
    {
        if f.path().is_file() && f.file_name() != "secret.key" {
            let bytes = std::fs::read(f.path()).unwrap();
            assert!(
                !bytes
                    .windows(PASSWORD.len())
                    .any(|w| w == PASSWORD.as_bytes()),
                "{} holds the password",
                f.path().display()
            );
        }
    }

    // A tag the registry does not have.
    let out = submit(
        &dev,
        "web",
        &spec("web", &format!("{host}/shop/web:nope"), ""),
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && err.contains("not found"), "{err}");

    // Two instances, one per node, pulled by each agent.
    let out = submit(
        &dev,
        "web",
        &spec(
            "web",
            &image,
            "instances: 2\nconstraints: [[hostname, UNIQUE]]\n",
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (digest_a, _) = layout_digests(&a);
    let apps: Value = serde_json::from_str(&dev.ok(&["apps", "--json"])).unwrap();
    let pinned = apps.to_string();
    assert!(
        pinned.contains(&format!("{image}@{digest_a}")),
        "the servers pin the tag to its digest: {pinned}"
    );
    wait_for("both instances running", T, || {
        let t = tasks_of(&dev, "web");
        (t.len() == 2 && t.iter().all(|t| t["state"] == "running")).then_some(())
    });
    let nodes: Vec<String> = tasks_of(&dev, "web")
        .iter()
        .map(|t| t["node"].as_str().unwrap().to_string())
        .collect();
    assert!(nodes.contains(&"n2".to_string()), "{nodes:?}");
    for t in tasks_of(&dev, "web") {
        let id = t["id"].as_str().unwrap();
        wait_for("the page in the log", T, || {
            (logs(&dev, id) == "alpha\n").then_some(())
        });
    }
    let images = dev.ok(&["image", "ls", "--json"]);
    let images: Value = serde_json::from_str(&images).unwrap();
    let on: Vec<&str> = images
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["name"].as_str().unwrap().starts_with(&image))
        .map(|i| i["node"].as_str().unwrap())
        .collect();
    assert_eq!(on.len(), 2, "each node pulled the image: {images}");

    // A rolling update (a new env) while the tag moves to another image:
    // the rollout runs the digest pinned when it started.
    let out = submit(
        &dev,
        "web",
        &spec(
            "web",
            &image,
            "instances: 2\nconstraints: [[hostname, UNIQUE]]\nenv: {V: '2'}\n\
             update: {max_surge: 0, max_unavailable: 1, min_ready_time: 2s}\n",
        ),
    );
    assert!(out.status.success());
    let b = image_saying("bravo");
    reg.push(&b, "shop/web:1");
    wait_for("the rollout to finish", Duration::from_secs(90), || {
        let s = dev.ok(&["deploy", "status", "web", "--json"]);
        let v: Value = serde_json::from_str(&s).ok()?;
        (v["phase"] == "succeeded").then_some(())
    });
    for t in tasks_of(&dev, "web")
        .iter()
        .filter(|t| t["state"] == "running")
    {
        assert_eq!(logs(&dev, t["id"].as_str().unwrap()), "alpha\n", "{t}");
    }
    // The next deployment pins the tag anew.
    let out = submit(&dev, "web2", &spec("web2", &image, ""));
    assert!(out.status.success());
    let t = dev.wait_task("web2", T, |t| t["state"] == "running");
    wait_for("web2's page", T, || {
        (logs(&dev, t["id"].as_str().unwrap()) == "bravo\n").then_some(())
    });

    // Failures at pull time are the task's reason, retried with backoff.
    // A digest the registry does not have:
    let missing = format!("{host}/shop/web@sha256:{}", "0".repeat(64));
    assert!(
        submit(&dev, "gone", &spec("gone", &missing, ""))
            .status
            .success()
    );
    dev.wait_task("gone", T, |t| {
        let m = t["message"].as_str().unwrap_or("");
        m.contains("image pull failed") && m.contains("not found")
    });
    // A corrupted blob (the registry's storage edited behind its back):
    let c = image_saying("charlie");
    reg.push(&c, "shop/web:corrupt");
    let (digest_c, layers_c) = layout_digests(&c);
    let hex = layers_c[0].strip_prefix("sha256:").unwrap();
    let data = reg
        .storage
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let corrupt = format!("{host}/shop/web:corrupt");
    assert!(
        submit(&dev, "bad", &spec("bad", &corrupt, ""))
            .status
            .success()
    );
    let t = dev.wait_task("bad", T, |t| {
        t["message"]
            .as_str()
            .unwrap_or("")
            .contains("digest mismatch")
    });
    assert_eq!(t["state"], "pending", "{t}");
    let apps = dev.ok(&["apps", "--json"]);
    assert!(apps.contains(&digest_c), "pinned before the pull failed");
    // Wrong credentials on the agent's side (changed after the servers
    // pinned the tag): the reason is the registry's refusal.
    login(&dev, &host, "wrong");
    let out = submit(
        &dev,
        "late",
        &spec(
            "late",
            &format!("{image}@{}", layout_digests(&b).0),
            "constraints: [[hostname, CLUSTER, n3]]\n",
        ),
    );
    assert!(out.status.success());
    dev.agent_bare("n3", "cpu-2s", &["--registry-ca", &ca]);
    dev.wait_task("late", T, |t| {
        t["message"].as_str().unwrap_or("").contains("unauthorized")
    });
    // Fixed: the next retry pulls it.
    login(&dev, &host, PASSWORD);
    dev.wait_task("late", T, |t| t["state"] == "running");
}
