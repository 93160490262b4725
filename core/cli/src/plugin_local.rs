//! The local half of `berth plugin`: build a C plugin, scaffold a new one,
//! and run one outside a cluster on fixture nodes.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use berth_sched::{Cluster, NodeState, Pipeline, TaskRequest};
use berth_wasm::{
    AdmissionVerdict, Kind, OnError, Plugin, PluginSpec, WasmAdmission, WasmAllocate, WasmFilter,
    WasmScore,
};

/// The C SDK's JSON reader, shipped inside the binary.
const BERTH_JSON_H: &str = include_str!("../../../sdk/c/include/berth_json.h");

/// `berth plugin build`.
#[derive(clap::Args)]
pub struct BuildArgs {
    /// C sources.
    #[arg(required = true)]
    sources: Vec<PathBuf>,
    /// The world: admission, filter, score, allocate or policy (score + allocate).
    #[arg(long)]
    world: String,
    /// Where to write the component (`--out`; `-o` is the output format
    /// of every command).
    #[arg(long)]
    out: PathBuf,
    /// Extra compiler flags (e.g. -lm).
    #[arg(long = "cflag", allow_hyphen_values = true)]
    cflags: Vec<String>,
}

impl BuildArgs {
    /// Runs it.
    pub fn run(self) -> anyhow::Result<()> {
        if !berth_sdk_c::WORLDS.contains(&self.world.as_str()) {
            bail!(
                "--world: {:?} is not one of {}",
                self.world,
                berth_sdk_c::WORLDS.join(", ")
            );
        }
        let work = tempfile::tempdir()?;
        let include = work.path().join("include");
        std::fs::create_dir_all(&include)?;
        std::fs::write(include.join("berth_json.h"), BERTH_JSON_H)?;
        let mut b = berth_sdk_c::Build::new(&self.world, work.path())
            .contract(berth_sdk_c::contract_dir())
            .include(include);
        for s in self.sources {
            b = b.source(s);
        }
        for f in self.cflags {
            b = b.flag(f);
        }
        let wasm = b.compile()?;
        std::fs::write(&self.out, &wasm)
            .with_context(|| format!("writing {}", self.out.display()))?;
        println!("{} ({} bytes)", self.out.display(), wasm.len());
        Ok(())
    }
}

/// `berth plugin componentize`.
#[derive(clap::Args)]
pub struct ComponentizeArgs {
    /// A core module with its world embedded (e.g. a Rust plugin built for
    /// wasm32-unknown-unknown with berth-sdk).
    module: PathBuf,
    /// Where to write the component (`--out`; `-o` is the output format
    /// of every command).
    #[arg(long)]
    out: PathBuf,
}

impl ComponentizeArgs {
    /// Runs it.
    pub fn run(self) -> anyhow::Result<()> {
        let module = std::fs::read(&self.module)
            .with_context(|| format!("reading {}", self.module.display()))?;
        let wasm = berth_sdk_c::componentize(&module)?;
        std::fs::write(&self.out, &wasm)
            .with_context(|| format!("writing {}", self.out.display()))?;
        println!("{} ({} bytes)", self.out.display(), wasm.len());
        Ok(())
    }
}

/// `berth plugin new`.
#[derive(clap::Args)]
pub struct NewArgs {
    /// The plugin's name (a directory of that name is made).
    name: String,
    /// c or rust.
    #[arg(long, default_value = "c")]
    lang: String,
    /// admission, filter, score or allocate.
    #[arg(long, default_value = "score")]
    kind: String,
    /// Where to make it.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

impl NewArgs {
    /// Runs it.
    pub fn run(self) -> anyhow::Result<()> {
        if !berth_model::spec::valid_name(&self.name) {
            bail!("name: {:?} is not a-z, 0-9 and '-'", self.name);
        }
        if Kind::parse(&self.kind).is_none() {
            bail!(
                "--kind: {:?} is not admission, filter, score or allocate",
                self.kind
            );
        }
        let root = self.dir.join(&self.name);
        if root.exists() {
            bail!("{} exists already", root.display());
        }
        std::fs::create_dir_all(&root)?;
        let files = match self.lang.as_str() {
            "c" => crate::scaffold::c(&self.name, &self.kind),
            "rust" => crate::scaffold::rust(&self.name, &self.kind),
            l => bail!("--lang: {l:?} is not c or rust"),
        };
        for (path, text) in files {
            let p = root.join(path);
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d)?;
            }
            std::fs::write(&p, text)?;
            println!("{}", p.display());
        }
        Ok(())
    }
}

/// `berth plugin test`.
#[derive(clap::Args)]
pub struct TestArgs {
    /// The component.
    file: PathBuf,
    /// admission, filter, score or allocate.
    #[arg(long)]
    kind: String,
    /// Nodes: fixture names or inventory files (repeatable).
    #[arg(long = "nodes", num_args = 1.., default_values = ["dgx-h100", "a100-pcie-4x", "cpu-2s"])]
    nodes: Vec<String>,
    /// The app spec whose first task is decided (YAML or JSON file).
    #[arg(long)]
    task: PathBuf,
    /// JSON configuration handed to the plugin's init.
    #[arg(long, default_value = "{}")]
    config: String,
}

impl TestArgs {
    /// Runs it.
    pub fn run(self) -> anyhow::Result<()> {
        let kind = Kind::parse(&self.kind).with_context(|| {
            format!(
                "--kind: {:?} is not admission, filter, score or allocate",
                self.kind
            )
        })?;
        let text = std::fs::read_to_string(&self.task)
            .with_context(|| format!("reading {}", self.task.display()))?;
        let spec = berth_model::spec::parse_spec(&text)?;
        let bytes = std::fs::read(&self.file)
            .with_context(|| format!("reading {}", self.file.display()))?;
        let mut ps = PluginSpec::new("plugin", kind);
        ps.config = self.config;
        ps.on_error = OnError::Fail;
        let plugin = Arc::new(Plugin::load(&bytes, ps, None)?);
        if kind == Kind::Admission {
            match WasmAdmission::new(plugin.clone()).admit(&spec) {
                AdmissionVerdict::Accept => println!("accept"),
                AdmissionVerdict::Reject(why) => println!("reject: {why}"),
                AdmissionVerdict::Mutated(s) => {
                    println!("mutate:\n{}", serde_yaml::to_string(&*s)?);
                }
            }
            return report(&plugin);
        }
        let mut nodes = Vec::new();
        for (i, f) in self.nodes.iter().enumerate() {
            let inv = berth_hostprobe::load_fixture(f).with_context(|| format!("--nodes {f}"))?;
            let name = format!(
                "{}-{i}",
                f.trim_end_matches(".json").rsplit('/').next().unwrap_or(f)
            );
            let mut n = NodeState::from_inventory(&name, &inv);
            n.attributes.insert("hostname".into(), n.name.clone());
            nodes.push(n);
        }
        let cluster = Cluster::new(nodes);
        let base = Pipeline::default();
        let pipe = match kind {
            Kind::Filter => base.filter(Box::new(WasmFilter::new(plugin.clone()))),
            Kind::Score => base.score(Box::new(WasmScore::new(plugin.clone())), 1.0),
            _ => base.allocator(Box::new(WasmAllocate::new(plugin.clone()))),
        };
        let d = pipe.decide(
            &cluster,
            &TaskRequest::for_spec(&format!("{}-0", spec.name), &spec),
        );
        println!("{}", d.summary);
        for n in &d.nodes {
            match &n.filtered {
                Some((by, r)) => println!(
                    "  {:<20} filtered by {by}: {} ({})",
                    n.node, r.reason, r.detail
                ),
                None => {
                    let s: Vec<String> = n
                        .scores
                        .iter()
                        .map(|(p, v)| format!("{p} {v:.1}"))
                        .collect();
                    println!("  {:<20} total {:.1}: {}", n.node, n.total, s.join(", "));
                }
            }
        }
        if let Some((node, a)) = &d.placement {
            println!("allocation on {node}: {}", serde_json::to_string(a)?);
        }
        report(&plugin)
    }
}

fn report(p: &Plugin) -> anyhow::Result<()> {
    println!(
        "plugin: loaded in {:.1} ms, instantiated in {:.2} ms; {}",
        p.load_time().as_secs_f64() * 1000.0,
        p.instantiate_time().as_secs_f64() * 1000.0,
        serde_json::to_string(&p.metrics())?
    );
    Ok(())
}
