//! The rules of the contract: [`AppSpec::validate`] reports every problem
//! at once, each naming its field.

use std::collections::BTreeMap;

use super::*;
use crate::quantity::DurationMs;

impl AppSpec {
    /// Checks every rule of the contract and reports all problems at once.
    pub fn validate(&self) -> Result<(), SpecError> {
        let mut problems = Vec::new();
        let mut problem = |path: String, message: String| {
            problems.push(FieldError { path, message });
        };

        if !valid_name(&self.name) {
            problem(
                "name".into(),
                format!(
                    "{} is not a valid name (1-{MAX_NAME_LEN} characters of a-z, 0-9 and '-', starting and ending with a letter or digit)",
                    quoted(&self.name)
                ),
            );
        }
        if let Err(message) = check_image(&self.image) {
            problem("image".into(), message);
        }
        if self.command.len() > MAX_ARGS {
            problem(
                "command".into(),
                format!("{} arguments, more than {MAX_ARGS}", self.command.len()),
            );
        }
        if self.env.len() > MAX_ENV {
            problem(
                "env".into(),
                format!("{} variables, more than {MAX_ENV}", self.env.len()),
            );
        }
        for (k, v) in &self.env {
            if v.len() > MAX_VALUE_LEN {
                problem(
                    format!("env.{k}"),
                    format!("{} bytes, more than {MAX_VALUE_LEN}", v.len()),
                );
            }
        }
        for (i, arg) in self.command.iter().enumerate() {
            if arg.len() > MAX_VALUE_LEN {
                problem(
                    format!("command[{i}]"),
                    format!("{} bytes, more than {MAX_VALUE_LEN}", arg.len()),
                );
            }
            if arg.is_empty() {
                problem(format!("command[{i}]"), "must not be empty".into());
            } else if arg.contains('\0') {
                problem(
                    format!("command[{i}]"),
                    "must not contain a NUL character".into(),
                );
            }
        }
        for (key, value) in &self.env {
            if !valid_env_name(key) {
                problem(
                    format!("env[{}]", quoted(key)),
                    "is not a valid variable name (expected [A-Za-z_][A-Za-z0-9_]*)".into(),
                );
            } else if key.starts_with(BERTH_ENV_PREFIX) {
                problem(
                    format!("env.{key}"),
                    format!("names starting with {BERTH_ENV_PREFIX} are set by Berth"),
                );
            } else if value.contains('\0') {
                problem(
                    format!("env.{key}"),
                    "must not contain a NUL character".into(),
                );
            }
        }

        let cpu = self.resources.cpu;
        if cpu.0 == 0 {
            problem("resources.cpu".into(), "must be more than 0".into());
        } else if cpu > MAX_CPU {
            problem(
                "resources.cpu".into(),
                format!("{cpu} is more than the maximum of {MAX_CPU} cores"),
            );
        }
        let memory = self.resources.memory;
        if memory < MIN_MEMORY {
            problem(
                "resources.memory".into(),
                format!("{memory} is less than the minimum of {MIN_MEMORY}"),
            );
        } else if memory > MAX_MEMORY {
            problem(
                "resources.memory".into(),
                format!("{memory} is more than the maximum of {MAX_MEMORY}"),
            );
        }

        if self.resources.cores > 0 && self.resources.cpu != DEFAULT_CPU {
            problem(
                "resources.cpu".into(),
                "give either cpu (shared) or cores (exclusive), not both".into(),
            );
        }
        if self.instances > MAX_INSTANCES {
            problem(
                "instances".into(),
                format!(
                    "{} is more than the maximum of {MAX_INSTANCES}",
                    self.instances
                ),
            );
        }

        let mut first_use: BTreeMap<u16, usize> = BTreeMap::new();
        let mut names: Vec<&str> = Vec::new();
        for (i, port) in self.ports.iter().enumerate() {
            if let Some(name) = &port.name {
                if !valid_port_name(name) {
                    problem(
                        format!("ports[{i}].name"),
                        format!(
                            "{} is not a port name (1-15 characters of a-z, 0-9 and '-', starting with a letter)",
                            quoted(name)
                        ),
                    );
                } else if names.contains(&name.as_str()) {
                    problem(
                        format!("ports[{i}].name"),
                        format!("{} is already the name of another port", quoted(name)),
                    );
                } else {
                    names.push(name);
                }
            }
            match port.host {
                // None: no host port; 0: a dynamic one, picked per instance.
                None | Some(0) => {}
                Some(h) => {
                    if let Some(first) = first_use.get(&h) {
                        problem(
                            format!("ports[{i}].host"),
                            format!("{h} is already used by ports[{first}]"),
                        );
                    } else {
                        first_use.insert(h, i);
                    }
                }
            }
        }

        if self.stop_grace > MAX_STOP_GRACE {
            problem(
                "stop_grace".into(),
                format!(
                    "{} is more than the maximum of {MAX_STOP_GRACE}",
                    self.stop_grace
                ),
            );
        }

        if !(-1000..=1000).contains(&self.priority) {
            problems.push(FieldError::new(
                "priority",
                format!("{} is not between -1000 and 1000", self.priority),
            ));
        }
        if self.labels.len() > crate::labels::MAX_LABELS {
            problems.push(FieldError::new(
                "labels",
                format!("more than {} labels", crate::labels::MAX_LABELS),
            ));
        }
        for (k, v) in &self.labels {
            if let Err(why) = crate::labels::check(k, v) {
                problems.push(FieldError::new(
                    format!("labels{}", parse::key_segment(k)),
                    why,
                ));
            }
        }
        self.validate_service(&names, &mut problems);
        self.validate_network(&mut problems);
        self.validate_volumes(&mut problems);
        self.validate_logs(&mut problems);
        self.validate_security(&mut problems);
        crate::placement::validate(&self.constraints, &mut problems);
        crate::hardware::validate(
            self.resources.cores,
            self.resources.gpus.as_ref(),
            self.resources.nics.as_ref(),
            &self.resources.devices,
            &mut problems,
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SpecError { problems })
        }
    }

    /// The rules of checks, rollouts, restart limits and jobs.
    fn validate_service(&self, port_names: &[&str], p: &mut Vec<FieldError>) {
        if let Some(c) = &self.health {
            service::validate_check(p, "health", c, port_names);
        }
        if let Some(c) = &self.ready {
            service::validate_check(p, "ready", c, port_names);
        }
        if let Some(u) = &self.update {
            service::validate_update(p, u);
        }
        if let Some(l) = &self.restart_limit {
            service::validate_restart_limit(p, l);
        }
        match self.kind {
            Kind::Service => {
                let job_only = [
                    ("retries", self.retries.is_some()),
                    ("deadline", self.deadline.is_some()),
                    ("schedule", self.schedule.is_some()),
                    ("concurrency", self.concurrency.is_some()),
                ];
                for (field, given) in job_only {
                    if given {
                        p.push(FieldError::new(
                            field,
                            "only a job has this (add kind: job); a service runs until stopped",
                        ));
                    }
                }
            }
            Kind::Job => {
                if self.update.is_some() {
                    p.push(FieldError::new(
                        "update",
                        "a job does not roll out: a new version applies from its next run",
                    ));
                }
                if self.restart == RestartPolicy::Always {
                    p.push(FieldError::new(
                        "restart",
                        "a job runs to completion: use on-failure or never (retries counts the attempts)",
                    ));
                }
                if let Some(r) = self.retries
                    && r > 100
                {
                    p.push(FieldError::new(
                        "retries",
                        format!("{r} is more than the maximum of 100"),
                    ));
                }
                if let Some(d) = self.deadline
                    && !(DurationMs(1_000)..=DurationMs(7 * 24 * 3_600_000)).contains(&d)
                {
                    p.push(FieldError::new(
                        "deadline",
                        format!("{d} is not between 1s and 168h"),
                    ));
                }
                if let Some(s) = &self.schedule {
                    service::validate_schedule(p, s);
                }
                if self.concurrency.is_some() && self.schedule.is_none() {
                    p.push(FieldError::new(
                        "concurrency",
                        "only a periodic job (with a schedule) has this",
                    ));
                }
            }
        }
    }
}
