//! Deployments in the state machine: a new spec starts one, steps are
//! re-checked when applied (a step applied twice, or for a deployment
//! that moved on, does nothing more), a failure rolls back by itself.

use berth_model::deploy::{Phase, Trigger};
use berth_model::spec::parse_spec;
use berth_model::task::Desired;
use berth_store::{ClusterState, Command, DeployCommand, Envelope, Outcome, deploy::HISTORY};

fn apply(s: &mut ClusterState, index: u64, at_ms: u64, command: Command) -> Outcome {
    let env = Envelope {
        at_ms,
        request_id: None,
        command,
    };
    s.apply(index, env, &mut Vec::new())
}

fn put(s: &mut ClusterState, index: u64, label: &str) -> Outcome {
    let spec = parse_spec(&format!(
        "name: web\nimage: busybox:latest\ninstances: 2\nenv: {{L: {label}}}\nupdate: {{deadline: 1m}}\n"
    ))
    .unwrap();
    apply(
        s,
        index,
        1_000 * index,
        Command::PutApp {
            spec: Box::new(spec),
        },
    )
}

fn step(s: &mut ClusterState, index: u64, id: u64, start: &[u32], retire: &[&str]) -> Outcome {
    let cmd = DeployCommand::Step {
        app: "web".into(),
        id,
        start: start.to_vec(),
        retire: retire.iter().map(|r| r.to_string()).collect(),
    };
    apply(s, index, 0, Command::Deploy(cmd))
}

fn live(s: &ClusterState) -> Vec<String> {
    s.tasks_of("web")
        .filter(|t| t.desired == Desired::Run)
        .map(|t| t.id.clone())
        .collect()
}

#[test]
fn an_update_is_stepped_and_each_step_is_checked_again() {
    let mut s = ClusterState::default();
    put(&mut s, 10, "one");
    assert_eq!(
        live(&s),
        ["web-10-0", "web-10-1"],
        "a first spec starts all"
    );
    let d = s.apps["web"].deployment().unwrap().clone();
    assert_eq!(
        (d.trigger, d.phase, d.started_ms),
        (Trigger::Create, Phase::Running, 10_000)
    );
    assert_eq!(d.deadline_ms, 70_000);

    put(&mut s, 20, "two");
    assert_eq!(
        live(&s),
        ["web-10-0", "web-10-1"],
        "an update starts nothing itself"
    );
    assert_eq!(s.apps["web"].history[0].phase, Phase::Superseded);
    assert_eq!(s.rolling().collect::<Vec<_>>(), ["web"]);

    // The same step twice (a new leader re-deciding): one new task.
    step(&mut s, 21, 20, &[0], &[]);
    step(&mut s, 22, 20, &[0], &[]);
    assert_eq!(live(&s), ["web-10-0", "web-10-1", "web-20-0"]);
    // Instances past the count are not started; tasks of the current
    // version under the count are not retired.
    step(&mut s, 23, 20, &[5], &["web-20-0", "web-10-1"]);
    assert_eq!(live(&s), ["web-10-0", "web-20-0"]);
    // A step for a deployment that is not the current one is refused.
    let stale = step(&mut s, 24, 10, &[1], &["web-10-0"]);
    assert!(
        matches!(stale, Outcome::Rejected(ref m) if m.contains("not running")),
        "{stale:?}"
    );
    assert_eq!(live(&s), ["web-10-0", "web-20-0"]);
    // The old version's spec is kept while its tasks run.
    assert_eq!(s.apps["web"].spec_of(10).unwrap().env["L"], "one");

    let done = DeployCommand::Finish {
        app: "web".into(),
        id: 20,
        failure: None,
    };
    apply(&mut s, 25, 30_000, Command::Deploy(done));
    let d = s.apps["web"].deployment().unwrap();
    assert_eq!((d.phase, d.ended_ms), (Phase::Succeeded, Some(30_000)));
    assert_eq!(s.rolling().count(), 0);
}

#[test]
fn a_failed_update_rolls_back_to_the_last_good_version() {
    let mut s = ClusterState::default();
    put(&mut s, 10, "one");
    let ok = DeployCommand::Finish {
        app: "web".into(),
        id: 10,
        failure: None,
    };
    apply(&mut s, 11, 0, Command::Deploy(ok));
    put(&mut s, 20, "two");
    step(&mut s, 21, 20, &[0], &[]);
    let fail = DeployCommand::Finish {
        app: "web".into(),
        id: 20,
        failure: Some("deadline of 1m passed".into()),
    };
    apply(&mut s, 30, 90_000, Command::Deploy(fail));
    let app = &s.apps["web"];
    let failed = &app.history[app.history.len() - 2];
    assert_eq!(failed.phase, Phase::RolledBack);
    assert_eq!(
        failed.message,
        "deadline of 1m passed; rolled back to version 10"
    );
    let back = app.deployment().unwrap();
    assert_eq!(back.trigger, Trigger::Rollback { of: 20, auto: true });
    assert_eq!(
        (back.id, back.version, back.phase),
        (30, 10, Phase::Running)
    );
    assert_eq!((app.version, app.spec.env["L"].as_str()), (10, "one"));
    // The old tasks are the rollback's own: nothing restarts; the new
    // version's task is what the controller retires.
    let v: Vec<(String, u64)> = s
        .tasks_of("web")
        .map(|t| (t.id.clone(), t.version))
        .collect();
    assert_eq!(v.len(), 3);

    // A rollback fails without rolling back again.
    let fail = DeployCommand::Finish {
        app: "web".into(),
        id: 30,
        failure: Some("x".into()),
    };
    apply(&mut s, 31, 0, Command::Deploy(fail));
    assert_eq!(s.apps["web"].deployment().unwrap().phase, Phase::Failed);
}

#[test]
fn rollback_pause_and_history_rules() {
    let mut s = ClusterState::default();
    put(&mut s, 10, "one");
    assert!(
        s.rollback_target("web", None)
            .unwrap_err()
            .contains("no earlier version")
    );
    assert!(
        s.rollback_target("web", Some(10))
            .unwrap_err()
            .contains("already at version 10")
    );
    assert!(
        s.rollback_target("web", Some(7))
            .unwrap_err()
            .starts_with("--to: version 7")
    );
    assert!(
        s.rollback_target("nope", None)
            .unwrap_err()
            .contains("no app named nope")
    );

    let pause = |paused| {
        Command::Deploy(DeployCommand::Pause {
            app: "web".into(),
            paused,
        })
    };
    apply(&mut s, 11, 0, pause(true));
    assert_eq!(s.apps["web"].deployment().unwrap().phase, Phase::Paused);
    apply(&mut s, 12, 500_000, pause(false));
    let d = s.apps["web"].deployment().unwrap();
    assert_eq!(
        (d.phase, d.deadline_ms),
        (Phase::Running, 560_000),
        "the deadline starts again"
    );

    // Many versions: the history keeps HISTORY, and every version with tasks.
    for i in 0..15 {
        put(&mut s, 100 + i, &format!("v{i}"));
    }
    let app = &s.apps["web"];
    assert!(app.history.len() <= HISTORY + 1, "{}", app.history.len());
    assert!(app.spec_of(10).is_some(), "version 10 still has tasks");
    // An explicit rollback to a kept version.
    let to = app.history[app.history.len() - 3].version;
    let r = apply(
        &mut s,
        200,
        0,
        Command::Deploy(DeployCommand::Rollback {
            app: "web".into(),
            to: Some(to),
        }),
    );
    assert_eq!(
        r,
        Outcome::App {
            version: to,
            changed: true
        }
    );
    let d = s.apps["web"].deployment().unwrap();
    assert_eq!(
        (d.version, d.trigger),
        (
            to,
            Trigger::Rollback {
                of: 114,
                auto: false
            }
        )
    );
}
