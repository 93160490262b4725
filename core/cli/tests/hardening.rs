//! Hardened containers by default: the default seccomp profile refuses
//! what Docker's refuses (`unshare -U`, `mount`) with EPERM, also to `berth
//! exec`; `seccomp: unconfined` is the explicit opt-out; `user:` overrides
//! the image's user; `read_only_root` makes `/` read-only.

mod common;

use std::time::Duration;

use common::Dev;

const T: Duration = Duration::from_secs(60);

fn run_to_exit(dev: &Dev, name: &str, extra: &str, script: &str) -> String {
    dev.run_spec(
        name,
        &format!(
            "name: {name}\nimage: busybox:latest\nrestart: never\n{extra}\
             command: [/bin/sh, -c, '{script}']\n"
        ),
    );
    let t = dev.wait_task(name, T, |t| t["state"] == "exited");
    dev.ok(&["logs", t["id"].as_str().unwrap()])
}

#[test]
fn containers_are_confined_by_default() {
    let dev = Dev::start();
    let probe = "unshare -U true 2>&1 | grep -o \"Operation not permitted\"; echo u=$?; \
                 mkdir -p /m; mount -t tmpfs none /m 2>/dev/null; echo m=$?";
    assert_eq!(
        run_to_exit(&dev, "confined", "", probe),
        "Operation not permitted\nu=0\nm=1\n"
    );
    // The opt-out is explicit: a user namespace can be made again.
    assert_eq!(
        run_to_exit(
            &dev,
            "loose",
            "seccomp: unconfined\n",
            "unshare -U true; echo u=$?"
        ),
        "u=0\n"
    );
    // The spec's user over the image's; a read-only root.
    assert_eq!(
        run_to_exit(
            &dev,
            "ro",
            "user: \"1000:1000\"\nread_only_root: true\n",
            "id -u; id -g; touch /x 2>&1 | grep -o Read-only"
        ),
        "1000\n1000\nRead-only\n"
    );
    // `berth exec` runs under the container's profile too.
    dev.run_spec(
        "box",
        "name: box\nimage: busybox:latest\ncommand: [sleep, '3600']\n",
    );
    dev.wait_task("box", T, |t| t["state"] == "running");
    let out = dev.berth(&["exec", "box", "--", "unshare", "-U", "true"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"));
    // A bad user is refused at submit, naming the field.
    let f = dev.data.path().join("bad.yaml");
    std::fs::write(&f, "name: bad\nimage: busybox:latest\nuser: 'a b'\n").unwrap();
    let out = dev.berth(&["run", "--detach", "-f", f.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("user"));
}
