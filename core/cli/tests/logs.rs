//! Container logs kept by the shim: stdout and stderr apart (and
//! interleaved by time), rotated at `logs.max_size`, and `berth logs`
//! selecting with --tail, --since, --stderr and --stdout.

mod common;

use std::time::Duration;

use common::{Dev, wait_for};

const T: Duration = Duration::from_secs(60);

#[test]
fn logs_rotate_and_select_by_stream_time_and_count() {
    let dev = Dev::start();
    dev.run_spec(
        "chatty",
        "name: chatty\nimage: busybox:latest\nrestart: never\n\
         logs: {max_size: 4Ki, files: 3}\n\
         command: [/bin/sh, -c, 'for i in $(seq 1 400); do echo out-$i; echo err-$i >&2; usleep 2000; done; \
         sleep 3; echo late; exec sleep 3600']\n",
    );
    let t = dev.wait_task("chatty", T, |t| t["state"] == "running");
    let id = t["id"].as_str().unwrap().to_string();
    wait_for("the late line", T, || {
        dev.ok(&["logs", &id, "--tail", "1"])
            .eq("late\n")
            .then_some(())
    });
    // Rotated at 4Ki, three files kept.
    let dir = dev.task_dir(&id);
    for n in ["container.log", "container.log.1", "container.log.2"] {
        let len = std::fs::metadata(dir.join(n)).unwrap().len();
        assert!(len > 0 && len <= 4096, "{n}: {len}");
    }
    assert!(!dir.join("container.log.3").exists());
    // Each stream alone, the last lines.
    assert_eq!(
        dev.ok(&["logs", &id, "--stderr", "--tail", "2"]),
        "err-399\nerr-400\n"
    );
    assert_eq!(
        dev.ok(&["logs", &id, "--stdout", "--tail", "2"]),
        "out-400\nlate\n"
    );
    // Both, in time order: what was written last comes last.
    let all = dev.ok(&["logs", &id]);
    assert!(all.ends_with("late\n"), "{all}");
    let lines: Vec<&str> = all.lines().collect();
    let pos = |l: &str| lines.iter().position(|x| *x == l).unwrap();
    assert!(pos("out-399") < pos("out-400") && pos("err-399") < pos("err-400"));
    // Only what the kept files hold (older lines rotated away).
    assert!(!lines.contains(&"out-1"), "rotated away");
    // --since: only the line written after the pause.
    assert_eq!(dev.ok(&["logs", &id, "--since", "2s"]), "late\n");
    // --timestamps: time and stream in front.
    let stamped = dev.ok(&["logs", &id, "--tail", "2", "--timestamps", "--stderr"]);
    for l in stamped.lines() {
        let parts: Vec<&str> = l.splitn(3, ' ').collect();
        assert_eq!(parts[1], "stderr", "{l}");
        assert!(parts[0].ends_with('Z') && parts[0].contains('T'), "{l}");
    }
    // Bad flags are refused, naming them.
    let out = dev.berth(&["logs", &id, "--since", "yesterday"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
}
