//! `berth plugin`: install, upgrade, roll back, remove, list and show the
//! cluster's Wasm plugins; build, scaffold and try them locally
//! (`plugin_local`).

use std::path::PathBuf;

use anyhow::Context;
use berth_proto as pb;

use crate::client::ctl;
use crate::output::table;

/// How a plugin runs (install sets them; upgrade changes the ones given).
#[derive(clap::Args)]
pub struct Settings {
    /// Weight of a score plugin (0-100; default 1).
    #[arg(long)]
    weight: Option<f64>,
    /// JSON configuration handed to the plugin's init.
    #[arg(long)]
    config: Option<String>,
    /// enforce (part of the pipeline) or shadow (decide beside it, report the difference).
    #[arg(long)]
    mode: Option<String>,
    /// What a failure means: ignore (carry on without it) or fail.
    #[arg(long)]
    on_error: Option<String>,
    /// Time budget per call, ms (default 50).
    #[arg(long)]
    budget_ms: Option<u64>,
    /// Memory cap, MiB (default 64).
    #[arg(long)]
    memory_mib: Option<u64>,
    /// Filter and score plugins: declare that the answer for a node depends
    /// only on what the plugin is given about it other than its position,
    /// name and hostname label; the scheduler then asks once per node class
    /// (default false).
    #[arg(long)]
    class_pure: Option<bool>,
}

/// `berth plugin ...`.
#[derive(clap::Subcommand)]
pub enum PluginCmd {
    /// Install a plugin into the cluster (stored in the replicated state).
    Install {
        /// The component (.wasm).
        file: PathBuf,
        #[arg(long)]
        name: String,
        /// admission, filter, score or allocate.
        #[arg(long)]
        kind: String,
        #[command(flatten)]
        settings: Settings,
    },
    /// Add a version (a new component and/or new settings); the old one is kept for rollback.
    Upgrade {
        name: String,
        /// The new component (omit to change settings only).
        file: Option<PathBuf>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Go back to the previous version.
    Rollback { name: String },
    /// Remove a plugin.
    Remove { name: String },
    /// The installed plugins.
    #[command(visible_alias = "ls")]
    List {
        #[arg(long)]
        json: bool,
    },
    /// One plugin: versions, settings, metrics, and in shadow mode how its decisions differ.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Build a C plugin into a component (bindings from the plugin contract, clang-14).
    Build(crate::plugin_local::BuildArgs),
    /// Wrap a core module (a Rust plugin built for wasm32-unknown-unknown) into a component.
    Componentize(crate::plugin_local::ComponentizeArgs),
    /// Scaffold a new plugin.
    New(crate::plugin_local::NewArgs),
    /// Run a plugin outside a cluster on fixture nodes and print its decisions.
    Test(crate::plugin_local::TestArgs),
}

fn request(name: String, wasm: Vec<u8>, kind: Option<String>, s: Settings) -> pb::PutPluginRequest {
    pb::PutPluginRequest {
        request_id: crate::client::request_id(),
        name,
        wasm,
        kind,
        weight: s.weight,
        config: s.config,
        mode: s.mode,
        on_error: s.on_error,
        budget_ms: s.budget_ms,
        memory_mib: s.memory_mib,
        class_pure: s.class_pure,
    }
}

fn read(file: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("reading {}", file.display()))
}

/// Runs a plugin command.
pub async fn run(addr: &str, cmd: PluginCmd) -> anyhow::Result<()> {
    match cmd {
        PluginCmd::Install {
            file,
            name,
            kind,
            settings,
        } => {
            let req = request(name, read(&file)?, Some(kind), settings);
            let info = ctl!(addr, install_plugin, req)?.into_inner();
            println!(
                "installed {} ({}, {})",
                info.name,
                info.kind,
                short(&info.digest)
            );
        }
        PluginCmd::Upgrade {
            name,
            file,
            settings,
        } => {
            let wasm = match &file {
                Some(f) => read(f)?,
                None => Vec::new(),
            };
            let req = request(name, wasm, None, settings);
            let info = ctl!(addr, upgrade_plugin, req)?.into_inner();
            println!(
                "upgraded {} to version {} ({})",
                info.name,
                info.version,
                short(&info.digest)
            );
        }
        PluginCmd::Rollback { name } => {
            let info = ctl!(
                addr,
                rollback_plugin,
                pb::PluginRequest {
                    name,
                    request_id: crate::client::request_id(),
                }
            )?
            .into_inner();
            println!(
                "rolled {} back to version {} ({})",
                info.name,
                info.version,
                short(&info.digest)
            );
        }
        PluginCmd::Remove { name } => {
            ctl!(
                addr,
                remove_plugin,
                pb::PluginRequest {
                    name: name.clone(),
                    request_id: crate::client::request_id(),
                }
            )?;
            println!("removed {name}");
        }
        PluginCmd::List { json } => {
            let list = ctl!(addr, list_plugins, pb::ListPluginsRequest {})?
                .into_inner()
                .plugins;
            if crate::output::structured(json) {
                let v: Vec<_> = list.iter().map(info_json).collect();
                crate::output::print(&v)?;
            } else {
                table(
                    &[
                        "NAME", "KIND", "MODE", "ON-ERROR", "VERSION", "DIGEST", "LOADED",
                    ],
                    list.iter()
                        .map(|p| {
                            vec![
                                p.name.clone(),
                                p.kind.clone(),
                                p.mode.clone(),
                                p.on_error.clone(),
                                format!("{}/{}", p.version, p.versions.len()),
                                short(&p.digest),
                                p.loaded.clone(),
                            ]
                        })
                        .collect(),
                );
            }
        }
        PluginCmd::Show { name, json } => {
            let p = ctl!(
                addr,
                get_plugin,
                pb::PluginRequest {
                    name,
                    request_id: String::new(),
                }
            )?
            .into_inner();
            if crate::output::structured(json) {
                crate::output::print(&info_json(&p))?;
            } else {
                show(&p);
            }
        }
        PluginCmd::Build(a) => return a.run(),
        PluginCmd::New(a) => return a.run(),
        PluginCmd::Componentize(a) => return a.run(),
        PluginCmd::Test(a) => return a.run(),
    }
    Ok(())
}

fn short(digest: &str) -> String {
    digest.chars().take(12).collect()
}

fn parse_json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or(serde_json::Value::Null)
}

fn info_json(p: &pb::PluginInfo) -> serde_json::Value {
    serde_json::json!({
        "name": p.name, "kind": p.kind, "mode": p.mode, "on_error": p.on_error,
        "weight": p.weight, "config": parse_json(&p.config), "digest": p.digest,
        "version": p.version, "versions": p.versions, "budget_ms": p.budget_ms,
        "memory_mib": p.memory_mib, "class_pure": p.class_pure, "loaded": p.loaded,
        "metrics": p.metrics.as_ref().map(|m| serde_json::json!({
            "calls": m.calls, "failures": m.failures, "mean_us": m.mean_us, "p50_us": m.p50_us,
            "p99_us": m.p99_us, "instances": m.instances, "logs_dropped": m.logs_dropped,
            "load_ms": m.load_ms, "instantiate_ms": m.instantiate_ms,
        })),
        "shadow": p.shadow.as_ref().map(|s| serde_json::json!({
            "decisions": s.decisions, "differed": s.differed, "recent": s.recent,
        })),
    })
}

fn show(p: &pb::PluginInfo) {
    println!(
        "{} ({} plugin, {}, on error: {}{})",
        p.name,
        p.kind,
        p.mode,
        p.on_error,
        if p.class_pure {
            ", class-pure: asked once per node class"
        } else {
            ""
        }
    );
    println!(
        "  version {} of {}: {}",
        p.version,
        p.versions.len(),
        p.digest
    );
    println!(
        "  weight {}, budget {} ms, memory {} MiB, config {}",
        p.weight, p.budget_ms, p.memory_mib, p.config
    );
    println!("  loaded on this server: {}", p.loaded);
    if let Some(m) = &p.metrics {
        let failures: std::collections::BTreeMap<_, _> = m.failures.iter().collect();
        println!(
            "  calls {}, failures {failures:?}, latency mean {:.1} µs, p99 <= {} µs, logs dropped {}, instances {}",
            m.calls, m.mean_us, m.p99_us, m.logs_dropped, m.instances
        );
    }
    if let Some(s) = &p.shadow {
        println!(
            "  shadow: {} of {} decisions would differ",
            s.differed, s.decisions
        );
        for r in &s.recent {
            println!("    {r}");
        }
    }
}
