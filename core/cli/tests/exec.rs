//! `berth exec`: a process in a running container (its hostname, its
//! environment), the exit code back, stdin forwarded, and a terminal with
//! its size under a pseudo-terminal the test drives (`script`).

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BERTH, Dev};

#[test]
fn exec_runs_in_the_container_and_returns_its_exit_code() {
    let dev = Dev::start();
    dev.run_spec(
        "box",
        "name: box\nimage: busybox:latest\nenv: {GREETING: hello}\ncommand: [sleep, '3600']\n",
    );
    let t = dev.wait_task("box", Duration::from_secs(60), |t| t["state"] == "running");
    let id = t["id"].as_str().unwrap();
    assert_eq!(
        dev.ok(&["exec", id, "--", "cat", "/etc/hostname"]),
        format!("{id}\n")
    );
    assert_eq!(
        dev.ok(&["exec", "box", "--", "sh", "-c", "echo $GREETING"]),
        "hello\n"
    );
    let out = dev.berth(&["exec", id, "--", "sh", "-c", "echo oops >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    // An unknown command: 126, with the reason.
    let out = dev.berth(&["exec", id, "--", "no-such-command"]);
    assert_eq!(out.status.code(), Some(126));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    // stdin, with -i.
    let out = common::berth_stdin(
        Some(&dev),
        &["exec", "-i", id, "--", "tr", "a-z", "A-Z"],
        b"shout\n",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SHOUT\n");
    // -it under a pseudo-terminal of 30x100: an interactive shell sees a
    // terminal of that size and its exit code comes back.
    let mut child = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "stty rows 30 cols 100; {BERTH} exec -it {id} -- sh"
        ))
        .arg("/dev/null")
        .env("BERTH_ADDR", &dev.addr)
        .env("BERTH_DATA_DIR", dev.data.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"test -t 0 && stty size; echo hi-$((40+2)); exit 3\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("30 100"), "{text}");
    assert!(text.contains("hi-42"), "{text}");
    assert_eq!(out.status.code(), Some(3), "{text}");
    // A task that is not running has nothing to exec in.
    let out = dev.berth(&["exec", "nosuch", "--", "true"]);
    assert!(!out.status.success());
}
