//! `berth scale`: an app's instance count changes, its version does not.
//! Running instances are not touched: scaling up adds pending instances
//! with the lowest free instance numbers; scaling down retires the highest
//! ones. After a scale to N the live instances are exactly 0..N.

use berth_model::deploy::{Deployment, Trigger};
use berth_model::spec::MAX_INSTANCES;
use berth_model::task::{Desired, Task, task_id};

use crate::state::{ClusterState, Event, Outcome};

impl ClusterState {
    /// Why `name` cannot be scaled to `instances`, if it cannot (checked
    /// before proposing and again at apply).
    pub fn scale_refusal(&self, name: &str, instances: u32) -> Option<String> {
        if instances > MAX_INSTANCES {
            return Some(format!(
                "instances: {instances} is more than the maximum of {MAX_INSTANCES}"
            ));
        }
        let Some(app) = self.apps.get(name) else {
            return Some(format!("no app named {name}"));
        };
        if app.stopped {
            return Some(format!(
                "app {name} is stopped: berth run its spec to start it again"
            ));
        }
        if app.spec.gang {
            return Some(format!(
                "app {name} is a gang (placed all or none): change instances in its spec and berth run it"
            ));
        }
        None
    }

    pub(crate) fn scale_app(
        &mut self,
        index: u64,
        at: u64,
        name: &str,
        instances: u32,
        events: &mut Vec<Event>,
    ) -> Outcome {
        if let Some(why) = self.scale_refusal(name, instances) {
            return Outcome::Rejected(why);
        }
        let Some(app) = self.apps.get(name) else {
            return Outcome::Rejected(format!("no app named {name}"));
        };
        let version = app.version;
        let from = app.spec.instances;
        // A job's count applies from its next run.
        if app.spec.kind == berth_model::spec::Kind::Job {
            if let Some(app) = self.apps.get_mut(name) {
                app.spec.instances = instances;
            }
            events.push(Event::AppChanged(name.to_string()));
            return Outcome::App {
                version,
                changed: from != instances,
            };
        }
        if from == instances {
            return Outcome::App {
                version,
                changed: false,
            };
        }
        // Mid-rollout the controller owns the instances: only the count
        // it works towards changes.
        let rolling = app.deployment().is_some_and(|d| {
            d.phase.is_active() && matches!(d.trigger, Trigger::Update | Trigger::Rollback { .. })
        });
        if rolling {
            if let Some(app) = self.apps.get_mut(name) {
                app.spec.instances = instances;
                if let Some(d) = app.history.last_mut() {
                    d.spec.instances = instances;
                }
            }
            events.push(Event::AppChanged(name.to_string()));
            return Outcome::App {
                version,
                changed: true,
            };
        }
        let live: Vec<(u32, String, bool)> = self
            .tasks_of(name)
            .filter(|t| t.version == version && t.desired == Desired::Run)
            .map(|t| (t.instance, t.id.clone(), t.node.is_none()))
            .collect();
        // Down: the highest instances go (never placed ones at once).
        for (instance, id, unplaced) in &live {
            if *instance < instances {
                continue;
            }
            if *unplaced {
                if let Some(t) = self.tasks.remove(id) {
                    events.push(Event::TaskRemoved(Box::new(t)));
                }
                continue;
            }
            self.tasks.update(id, |t| {
                t.desired = Desired::Remove;
                t.message = format!("scaled down to {instances}");
                events.push(Event::TaskUpdated(Box::new(t.clone())));
            });
        }
        // Up: the lowest free instance numbers, under a new id where an
        // older task of that number is still leaving.
        let used: std::collections::BTreeSet<u32> = live.iter().map(|(i, _, _)| *i).collect();
        for instance in (0..instances).filter(|i| !used.contains(i)) {
            let mut id = task_id(name, version, instance);
            if self.tasks.contains_key(&id) {
                id = format!("{id}-s{index}");
            }
            let task = Task::pending(
                id,
                name,
                instance,
                version,
                format!("scaled up to {instances}; waiting for the scheduler"),
            );
            events.push(Event::TaskUpdated(Box::new(task.clone())));
            self.tasks.insert(task);
        }
        let Some(app) = self.apps.get_mut(name) else {
            return Outcome::Rejected(format!("no app named {name}"));
        };
        app.spec.instances = instances;
        let spec = app.spec.clone();
        let d = Deployment::start(index, version, spec, Trigger::Scale { from }, at);
        self.begin(name, d);
        events.push(Event::AppChanged(name.to_string()));
        Outcome::App {
            version,
            changed: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use berth_model::spec::AppSpec;
    use berth_model::task::TaskState;

    use crate::state::{ClusterState, Command, Envelope};

    fn apply(s: &mut ClusterState, index: u64, cmd: Command) -> crate::state::Outcome {
        let env = Envelope {
            at_ms: 0,
            request_id: None,
            command: cmd,
        };
        s.apply(index, env, &mut Vec::new())
    }

    fn live(s: &ClusterState) -> Vec<(u32, String)> {
        let mut v: Vec<_> = s
            .tasks_of("web")
            .filter(|t| t.desired == berth_model::task::Desired::Run)
            .map(|t| (t.instance, t.id.clone()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn scaling_keeps_the_survivors_and_the_version() {
        let mut s = ClusterState::default();
        let mut spec = AppSpec::new("web", "busybox:latest");
        spec.instances = 4;
        apply(
            &mut s,
            10,
            Command::PutApp {
                spec: Box::new(spec),
            },
        );
        let before = live(&s);
        apply(
            &mut s,
            11,
            Command::ScaleApp {
                name: "web".into(),
                instances: 6,
            },
        );
        let after = live(&s);
        assert_eq!(after.len(), 6);
        assert_eq!(&after[..4], &before[..], "the four survive untouched");
        assert_eq!(s.apps["web"].version, 10);
        assert_eq!(s.apps["web"].spec.instances, 6);
        apply(
            &mut s,
            12,
            Command::ScaleApp {
                name: "web".into(),
                instances: 2,
            },
        );
        assert_eq!(live(&s), before[..2].to_vec());
        // The unplaced ones went at once; none is left pending.
        assert_eq!(s.tasks_of("web").count(), 2);
        assert!(s.tasks_of("web").all(|t| t.state == TaskState::Pending));
    }

    #[test]
    fn refusals_name_the_cause() {
        let mut s = ClusterState::default();
        assert!(
            s.scale_refusal("web", 1)
                .unwrap()
                .contains("no app named web")
        );
        let mut spec = AppSpec::new("web", "busybox:latest");
        spec.gang = true;
        apply(
            &mut s,
            10,
            Command::PutApp {
                spec: Box::new(spec),
            },
        );
        assert!(s.scale_refusal("web", 3).unwrap().contains("gang"));
        assert!(
            s.scale_refusal("web", 5000)
                .unwrap()
                .starts_with("instances:")
        );
    }
}
