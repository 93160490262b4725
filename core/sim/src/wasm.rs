//! Wasm plugins in a simulation: a policy component in place of the
//! native policy (`--wasm-plugin`), and extra plugins beside it, so the
//! same replay measures native and Wasm side by side.

use std::path::PathBuf;
use std::sync::Arc;

use berth_sched::Pipeline;
use berth_sched::policy::{self, FastFit, PolicyContext};
use berth_wasm::{Kind, Plugin, PluginError, PluginSpec, WasmAllocate, WasmFilter, WasmScore};
use serde_json::json;

use crate::SimError;

/// An extra plugin: its kind, component and JSON configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraPlugin {
    /// Filter or score.
    pub kind: Kind,
    /// The component.
    pub path: PathBuf,
    /// Its configuration.
    pub config: String,
    /// Declared class-pure (asked once per node class).
    pub class_pure: bool,
}

impl ExtraPlugin {
    /// Parses `KIND:FILE`, `KIND:FILE:JSON` or `KIND:FILE:workload` (kind
    /// `filter` or `score`; `workload`: the configuration a policy plugin
    /// gets, see [`context_config`]), each optionally followed by
    /// `:class-pure` (the plugin's install setting of that name).
    pub fn parse(s: &str) -> Result<ExtraPlugin, SimError> {
        let bad = |m: &str| SimError::Invalid(format!("--extra-plugin {s:?}: {m}"));
        let (spec, class_pure) = match s.strip_suffix(":class-pure") {
            Some(rest) => (rest, true),
            None => (s, false),
        };
        let (kind, rest) = spec
            .split_once(':')
            .ok_or_else(|| bad("expected KIND:FILE[:JSON]"))?;
        let kind = match Kind::parse(kind) {
            Some(k @ (Kind::Filter | Kind::Score)) => k,
            _ => return Err(bad("the kind is filter or score")),
        };
        let (path, config) = match (rest.find(":{"), rest.strip_suffix(":workload")) {
            (Some(i), _) => (&rest[..i], &rest[i + 1..]),
            (None, Some(p)) => (p, WORKLOAD),
            (None, None) => (rest, "{}"),
        };
        Ok(ExtraPlugin {
            kind,
            path: PathBuf::from(path),
            config: config.to_string(),
            class_pure,
        })
    }
}

/// The configuration word that stands for the workload's context.
const WORKLOAD: &str = "workload";

/// The Wasm side of a simulation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WasmPlugins {
    /// A policy component (score, and allocate if it exports it) used in
    /// place of the native policy.
    pub policy: Option<PathBuf>,
    /// Plugins added to the chain.
    pub extra: Vec<ExtraPlugin>,
    /// The policy component is declared class-pure.
    pub policy_class_pure: bool,
    /// Decide node by node (the scan every decision made before node
    /// classes) instead of once per node class: the same decisions, for
    /// checking that and comparing speed.
    pub per_node: bool,
}

/// The configuration a policy plugin gets in a simulation: the workload's
/// typical shapes (FGD's input), the seed and the GPU capacity per model.
pub fn context_config(ctx: &PolicyContext) -> String {
    json!({
        "typical": ctx.typical.iter().map(|t| json!(
            [t.shape.cpu, t.shape.milli, t.shape.count, t.weight, t.shape.spec]
        )).collect::<Vec<_>>(),
        "seed": ctx.seed,
        "capacity": ctx.capacity,
    })
    .to_string()
}

fn try_load(
    path: &PathBuf,
    name: &str,
    kind: Kind,
    config: &str,
    class_pure: bool,
) -> Result<Result<Plugin, PluginError>, SimError> {
    let bytes = std::fs::read(path).map_err(|source| SimError::Io {
        path: path.clone(),
        source,
    })?;
    let mut spec = PluginSpec::new(name, kind);
    spec.config = config.to_string();
    spec.on_error = berth_wasm::OnError::Fail;
    spec.class_pure = class_pure;
    Ok(Plugin::load(&bytes, spec, None))
}

fn load(
    path: &PathBuf,
    name: &str,
    kind: Kind,
    config: &str,
    class_pure: bool,
) -> Result<Plugin, SimError> {
    try_load(path, name, kind, config, class_pure)?
        .map_err(|e| SimError::Invalid(format!("{}: {e}", path.display())))
}

/// The pipeline of a simulation: [`FastFit`], the policy's scorer (native
/// `policy_name`, or the Wasm policy) and allocator (the Wasm policy's when
/// it exports `allocate`, else the native one), and the extra plugins.
pub fn pipeline(
    policy_name: &str,
    wasm: &WasmPlugins,
    ctx: &PolicyContext,
) -> Result<Pipeline, SimError> {
    let (native_score, native_alloc) = policy::policy(policy_name, ctx)?;
    let mut pipe = match &wasm.policy {
        None => Pipeline::new(native_alloc)
            .filter(Box::new(FastFit))
            .score(native_score, 1.0),
        Some(path) => {
            let cfg = context_config(ctx);
            let pure = wasm.policy_class_pure;
            let score = load(path, "wasm-policy", Kind::Score, &cfg, pure)?;
            let alloc = match try_load(path, "wasm-policy", Kind::Allocate, &cfg, pure)? {
                Ok(p) => Some(p),
                Err(PluginError::World { .. }) => None,
                Err(e) => return Err(SimError::Invalid(format!("{}: {e}", path.display()))),
            };
            let pipe = match alloc {
                Some(a) => Pipeline::new(Box::new(WasmAllocate::new(Arc::new(a)))),
                None => Pipeline::new(native_alloc),
            };
            pipe.filter(Box::new(FastFit))
                .score(Box::new(WasmScore::new(Arc::new(score))), 1.0)
        }
    };
    for (i, x) in wasm.extra.iter().enumerate() {
        let name = format!("extra-{i}");
        let config = if x.config == WORKLOAD {
            context_config(ctx)
        } else {
            x.config.clone()
        };
        let p = Arc::new(load(&x.path, &name, x.kind, &config, x.class_pure)?);
        pipe = match x.kind {
            Kind::Filter => pipe.filter(Box::new(WasmFilter::new(p))),
            _ => pipe.score(Box::new(WasmScore::new(p)), 1.0),
        };
    }
    Ok(if wasm.per_node {
        pipe.by_class(false)
    } else {
        pipe
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_plugins_parse() {
        let x = ExtraPlugin::parse("filter:/p/f.wasm:{\"key\":\"a\"}").unwrap();
        assert_eq!(
            (x.kind, x.config.as_str()),
            (Kind::Filter, "{\"key\":\"a\"}")
        );
        assert_eq!(x.path, PathBuf::from("/p/f.wasm"));
        assert_eq!(ExtraPlugin::parse("score:s.wasm").unwrap().config, "{}");
        let w = ExtraPlugin::parse("score:/a/fgd.wasm:workload").unwrap();
        assert_eq!(
            (w.path, w.config.as_str()),
            (PathBuf::from("/a/fgd.wasm"), "workload")
        );
        let p = ExtraPlugin::parse("filter:/p/f.wasm:{\"k\":1}:class-pure").unwrap();
        assert_eq!((p.config.as_str(), p.class_pure), ("{\"k\":1}", true));
        assert!(!w.class_pure);
        assert!(ExtraPlugin::parse("admission:a.wasm").is_err());
        assert!(ExtraPlugin::parse("s.wasm").is_err());
    }
}
