//! The rolling-update controller: given a deployment, the app's tasks and
//! the time, which instances of the new version to start, which tasks to
//! retire, and whether the deployment has ended.
//!
//! The rules are Kubernetes' Deployment rules, with readiness as Berth's
//! agents report it:
//! - at most `instances + max_surge` tasks are meant to run at once;
//! - at least `instances - max_unavailable` are *available*: an old task
//!   that is ready, or a new one ready for `min_ready_time`;
//! - old tasks that are not ready go first, then the oldest version, then
//!   the highest instance number;
//! - a new instance given up on (a crash loop) fails the deployment at
//!   once; one not done by its deadline fails then.
//!
//! A first deployment has no old tasks, so all its instances start at
//! once; a scale is a deployment of the same version with a new count.

use berth_model::deploy::{Deployment, Phase};
use berth_model::spec::Update;
use berth_model::task::{Desired, Task};

/// A deployment's `update` resolved against its instance count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Tasks allowed above the count.
    pub surge: u32,
    /// Available tasks allowed below the count.
    pub unavailable: u32,
    /// How long a new task must have been ready to count (ms).
    pub min_ready_ms: u64,
}

impl Limits {
    /// Percentages round up for the surge and down for unavailability; if
    /// both come to 0 (a small count), the surge is 1 so the rollout can
    /// move, as Kubernetes does.
    pub fn new(update: &Update, instances: u32) -> Limits {
        let mut surge = update.max_surge.of(instances, true);
        let unavailable = update.max_unavailable.of(instances, false).min(instances);
        if surge == 0 && unavailable == 0 {
            surge = 1;
        }
        Limits {
            surge,
            unavailable,
            min_ready_ms: update.min_ready_time.0,
        }
    }
}

/// Counts for `berth deploy status` and `berth run`'s progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Instances wanted.
    pub wanted: u32,
    /// Tasks of the new version meant to run.
    pub new_total: u32,
    /// Of those, the available ones (ready for `min_ready_time`).
    pub new_ready: u32,
    /// Tasks of other versions still meant to run.
    pub old_total: u32,
    /// Of those, the ready ones.
    pub old_ready: u32,
}

/// What the leader should commit for a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do now.
    Wait,
    /// Start these instance numbers of the new version and retire these
    /// task ids.
    Act {
        /// Instance numbers to start.
        start: Vec<u32>,
        /// Task ids to retire.
        retire: Vec<String>,
    },
    /// Every wanted instance is available and no other task is left.
    Succeed,
    /// The deployment failed, for this reason.
    Fail(String),
}

/// Decides the next step of deployment `d` over the app's tasks at
/// `now_ms`. Tasks not meant to run are ignored.
pub fn decide(d: &Deployment, tasks: &[&Task], now_ms: u64) -> (Progress, Decision) {
    let wanted = d.spec.instances;
    let limits = Limits::new(&d.spec.update(), wanted);
    let live = tasks.iter().filter(|t| t.desired == Desired::Run);
    let (mut new, mut old): (Vec<&Task>, Vec<&Task>) = live.partition(|t| t.version == d.version);
    let available = |t: &Task| {
        t.ready_since
            .is_some_and(|s| now_ms >= s.saturating_add(limits.min_ready_ms))
    };
    let mut p = Progress {
        wanted,
        new_total: new.len() as u32,
        new_ready: new.iter().filter(|t| available(t)).count() as u32,
        old_total: old.len() as u32,
        old_ready: old.iter().filter(|t| t.ready_since.is_some()).count() as u32,
    };
    if d.phase != Phase::Running {
        return (p, Decision::Wait);
    }
    if p.new_total == wanted && p.new_ready == wanted && p.old_total == 0 {
        return (p, Decision::Succeed);
    }
    if let Some(t) = new.iter().find(|t| t.given_up) {
        let why = format!(
            "instance {} of version {} ({}) was given up: {}",
            t.instance, d.version, t.id, t.message
        );
        return (p, Decision::Fail(why));
    }
    if now_ms >= d.deadline_ms {
        let why = format!(
            "deadline of {} passed with {}/{} new instances ready and {} old left",
            d.spec.update().deadline,
            p.new_ready,
            wanted,
            p.old_total
        );
        return (p, Decision::Fail(why));
    }

    let mut retire = Vec::new();
    // New instances above the count (a scale down mid-rollout): the
    // unready and highest go.
    new.sort_by_key(|t| (available(t), std::cmp::Reverse(t.instance)));
    while new.len() as u32 > wanted {
        let t = new.remove(0);
        retire.push(t.id.clone());
        p.new_total -= 1;
        p.new_ready -= u32::from(available(t));
    }
    // Old tasks, while enough stay available: unready first, then the
    // oldest version, then the highest instance.
    old.sort_by_key(|t| {
        (
            t.ready_since.is_some(),
            t.version,
            std::cmp::Reverse(t.instance),
        )
    });
    let min_available = wanted - limits.unavailable;
    let mut removable = (p.new_ready + p.old_total).saturating_sub(min_available);
    for t in &old {
        if removable == 0 {
            break;
        }
        retire.push(t.id.clone());
        removable -= 1;
        p.old_total -= 1;
        p.old_ready -= u32::from(t.ready_since.is_some());
    }
    // New instances, as far as the count and the surge allow.
    let room = (wanted + limits.surge).saturating_sub(p.new_total + p.old_total);
    let count = wanted.saturating_sub(p.new_total).min(room);
    let used: std::collections::BTreeSet<u32> = new.iter().map(|t| t.instance).collect();
    // Numbers whose old task is gone or going come first, so an instance
    // is replaced by its namesake (a persistent volume pins the number to
    // its node; an old task still there would share it).
    let kept: std::collections::BTreeSet<u32> = old
        .iter()
        .filter(|t| !retire.contains(&t.id))
        .map(|t| t.instance)
        .collect();
    let bound = wanted + limits.surge + old.len() as u32 + new.len() as u32;
    let (free, held): (Vec<u32>, Vec<u32>) = (0..bound)
        .filter(|i| !used.contains(i))
        .partition(|i| !kept.contains(i));
    let mut start: Vec<u32> = free
        .into_iter()
        .take_while(|i| *i < wanted || kept.is_empty())
        .chain(held)
        .take(count as usize)
        .collect();
    start.sort_unstable();
    if start.is_empty() && retire.is_empty() {
        return (p, Decision::Wait);
    }
    (p, Decision::Act { start, retire })
}

#[cfg(test)]
mod tests {
    use berth_model::DurationMs;
    use berth_model::deploy::Trigger;
    use berth_model::spec::{Amount, AppSpec, Update};
    use berth_model::task::Task;

    use super::*;

    const NOW: u64 = 100_000;

    fn deployment(
        instances: u32,
        surge: Amount,
        unavailable: Amount,
        min_ready: u64,
    ) -> Deployment {
        let mut spec = AppSpec::new("web", "busybox:latest");
        spec.instances = instances;
        spec.update = Some(Update {
            max_surge: surge,
            max_unavailable: unavailable,
            min_ready_time: DurationMs(min_ready),
            deadline: DurationMs(60_000),
            auto_rollback: true,
        });
        Deployment::start(20, 20, spec, Trigger::Update, NOW - 1_000)
    }

    /// A task of `version`, instance `i`, ready since `ready` ms ago.
    fn task(version: u64, i: u32, ready: Option<u64>) -> Task {
        let mut t = Task::pending(
            format!("web-{version}-{i}"),
            "web",
            i,
            version,
            String::new(),
        );
        t.ready = ready.is_some();
        t.ready_since = ready.map(|ago| NOW - ago);
        t
    }

    fn run(d: &Deployment, tasks: &[Task]) -> (Progress, Decision) {
        let refs: Vec<&Task> = tasks.iter().collect();
        decide(d, &refs, NOW)
    }

    fn act(start: &[u32], retire: &[&str]) -> Decision {
        Decision::Act {
            start: start.to_vec(),
            retire: retire.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn rolling_steps_table() {
        let c = Amount::Count;
        let old4 = || (0..4).map(|i| task(10, i, Some(9_000))).collect::<Vec<_>>();
        let with = |mut v: Vec<Task>, extra: Vec<Task>| {
            v.extend(extra);
            v
        };
        let cases: Vec<(&str, Deployment, Vec<Task>, Decision)> = vec![
            (
                "first deployment: all at once",
                deployment(4, c(1), c(0), 0),
                vec![],
                act(&[0, 1, 2, 3], &[]),
            ),
            (
                "surge 1: one new, no old retired",
                deployment(4, c(1), c(0), 0),
                old4(),
                act(&[0], &[]),
            ),
            (
                "new one ready: one old goes, its namesake starts",
                deployment(4, c(1), c(0), 0),
                with(old4(), vec![task(20, 0, Some(10))]),
                act(&[3], &["web-10-3"]),
            ),
            (
                "new one not ready yet: wait",
                deployment(4, c(1), c(0), 0),
                with(old4(), vec![task(20, 0, None)]),
                Decision::Wait,
            ),
            (
                "ready but not for min_ready_time: wait",
                deployment(4, c(1), c(0), 5_000),
                with(old4(), vec![task(20, 0, Some(1_000))]),
                Decision::Wait,
            ),
            (
                "unavailable 1, surge 0: retire first, then start its namesake",
                deployment(4, c(0), c(1), 0),
                old4(),
                act(&[3], &["web-10-3"]),
            ),
            (
                "an unready old task goes before a ready one",
                deployment(4, c(1), c(1), 0),
                vec![
                    task(10, 0, Some(1)),
                    task(10, 1, None),
                    task(10, 2, Some(1)),
                    task(10, 3, Some(1)),
                ],
                act(&[0, 1], &["web-10-1"]),
            ),
            (
                "25% of 8: two at a time",
                deployment(8, Amount::Percent(25), c(0), 0),
                (0..8).map(|i| task(10, i, Some(1))).collect(),
                act(&[0, 1], &[]),
            ),
            (
                "scaled down mid-rollout: extra new go, highest first",
                deployment(2, c(1), c(0), 0),
                (0..4).map(|i| task(20, i, Some(1))).collect(),
                act(&[], &["web-20-3", "web-20-2"]),
            ),
            (
                "all new ready, none old: done",
                deployment(4, c(1), c(0), 0),
                (0..4).map(|i| task(20, i, Some(1))).collect(),
                Decision::Succeed,
            ),
        ];
        for (name, d, tasks, want) in cases {
            assert_eq!(run(&d, &tasks).1, want, "{name}");
        }
    }

    #[test]
    fn availability_never_drops_below_the_floor() {
        // Simulate a rollout where new tasks become ready one step after
        // they start; check the invariant at every step.
        for (surge, unavailable) in [(1, 0), (0, 1), (2, 2), (3, 0)] {
            let d = deployment(5, Amount::Count(surge), Amount::Count(unavailable), 0);
            let mut tasks: Vec<Task> = (0..5).map(|i| task(10, i, Some(1))).collect();
            for step in 0..50 {
                let (_, dec) = run(&d, &tasks);
                match dec {
                    Decision::Succeed => break,
                    Decision::Act { start, retire } => {
                        tasks.retain(|t| !retire.contains(&t.id));
                        tasks.extend(start.into_iter().map(|i| task(20, i, None)));
                    }
                    other => panic!("step {step}: {other:?}"),
                }
                // Right after the step, before the new ones are ready.
                let ready = tasks.iter().filter(|t| t.ready_since.is_some()).count() as u32;
                assert!(ready + unavailable >= 5, "step {step}: {ready} ready");
                assert!(tasks.len() as u32 <= 5 + surge.max(1));
                // By the next step, the new ones are ready.
                for t in &mut tasks {
                    t.ready_since.get_or_insert(NOW - 1);
                }
                assert!(step < 49, "no end");
            }
            assert!(tasks.iter().all(|t| t.version == 20) && tasks.len() == 5);
        }
    }

    #[test]
    fn failures_name_the_cause() {
        let d = deployment(2, Amount::Count(1), Amount::Count(0), 0);
        let mut bad = task(20, 0, None);
        bad.given_up = true;
        bad.message = "crash loop: 11 restarts in 10m".into();
        let (_, dec) = run(&d, &[task(10, 0, Some(1)), task(10, 1, Some(1)), bad]);
        assert_eq!(
            dec,
            Decision::Fail(
                "instance 0 of version 20 (web-20-0) was given up: crash loop: 11 restarts in 10m"
                    .into()
            )
        );
        let mut late = deployment(2, Amount::Count(1), Amount::Count(0), 0);
        late.deadline_ms = NOW;
        let (p, dec) = run(
            &late,
            &[
                task(10, 0, Some(1)),
                task(10, 1, Some(1)),
                task(20, 0, None),
            ],
        );
        assert_eq!(
            dec,
            Decision::Fail(
                "deadline of 1m passed with 0/2 new instances ready and 2 old left".into()
            )
        );
        assert_eq!((p.new_total, p.old_total, p.old_ready), (1, 2, 2));
        let mut paused = deployment(2, Amount::Count(1), Amount::Count(0), 0);
        paused.phase = Phase::Paused;
        assert_eq!(run(&paused, &[]).1, Decision::Wait);
    }

    #[test]
    fn limits_resolve_percentages() {
        let u = |s, n| Update {
            max_surge: s,
            max_unavailable: n,
            ..Default::default()
        };
        let l = Limits::new(&u(Amount::Percent(25), Amount::Percent(25)), 10);
        assert_eq!((l.surge, l.unavailable), (3, 2));
        let l = Limits::new(&u(Amount::Percent(10), Amount::Percent(10)), 3);
        assert_eq!((l.surge, l.unavailable), (1, 0));
        let l = Limits::new(&u(Amount::Percent(0), Amount::Percent(50)), 1);
        assert_eq!((l.surge, l.unavailable), (1, 0), "both 0: surge 1");
    }
}
