//! The CLI commands that talk to a server (and, for logs, to an agent).

use std::io::{Read, Write};
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, anyhow, bail};
use berth_model::spec::parse_spec;
use berth_proto as pb;
use berth_proto::servers::Servers;
use berth_proto::typed::node_status_text;

use crate::output::{node_rows, table, task_json, task_rows};

/// The control plane named by `--addr`/`BERTH_ADDR` (one address or a
/// comma-separated list), shared by every call of this process so the
/// leader found by one call is where the next goes.
static SERVERS: OnceLock<Servers> = OnceLock::new();

pub(crate) fn servers(addr: &str) -> anyhow::Result<&'static Servers> {
    if let Some(s) = SERVERS.get() {
        return Ok(s);
    }
    let s = Servers::parse(addr)
        .map_err(|e| anyhow!("--addr/BERTH_ADDR: {e}"))?
        .with_tls(crate::access::client_tls()?);
    Ok(SERVERS.get_or_init(|| s))
}

static STALE: AtomicBool = AtomicBool::new(false);

/// Lets reads be served from any server's applied state (`--stale`).
pub(crate) fn allow_stale(on: bool) {
    STALE.store(on, Ordering::Relaxed);
}

/// A request, marked for a stale read when `--stale` was given.
pub(crate) fn request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(ns) = crate::access::namespace().parse() {
        r.metadata_mut().insert("berth-namespace", ns);
    }
    berth_proto::servers::authorize(&mut r);
    if STALE.load(Ordering::Relaxed) {
        r.metadata_mut().insert(
            berth_proto::servers::STALE_HEADER,
            "1".parse().expect("ascii"),
        );
    }
    r
}

/// Calls a `Control` method on the control plane: on the leader, found
/// and followed through redirects, retried while servers are unreachable
/// or electing (writes carry request ids, so a retry applies once).
macro_rules! ctl {
    ($addr:expr, $method:ident, $req:expr) => {{
        let req = $req;
        $crate::client::servers($addr)?
            .call(|ch| {
                let r = $crate::client::request(req.clone());
                async move {
                    berth_proto::control_client::ControlClient::new(ch)
                        .max_decoding_message_size(berth_proto::MAX_MESSAGE)
                        .$method(r)
                        .await
                }
            })
            .await
            .map_err($crate::client::status)
    }};
}
pub(crate) use ctl;

/// Turns a gRPC status into a plain error message.
pub(crate) fn status(s: tonic::Status) -> anyhow::Error {
    use crate::output::Exit;
    if berth_proto::servers::retryable(&s) {
        let tried = SERVERS.get().map(|s| s.all().join(",")).unwrap_or_default();
        return Exit::Unreachable.with(format!(
            "no server could answer ({}; tried {tried}): is `berth dev` or a server running? \
             BERTH_ADDR or --addr lists the servers",
            s.message()
        ));
    }
    let exit = match s.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => Exit::Denied,
        tonic::Code::NotFound => Exit::NotFound,
        tonic::Code::InvalidArgument
        | tonic::Code::FailedPrecondition
        | tonic::Code::AlreadyExists
        | tonic::Code::OutOfRange => Exit::Refused,
        _ => Exit::Failed,
    };
    exit.with(s.message().to_string())
}

pub(crate) fn request_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("cli-{}-{t:x}", std::process::id())
}

/// `berth node drain|undrain NAME`.
pub async fn drain(addr: &str, name: &str, drain: bool) -> anyhow::Result<()> {
    ctl!(
        addr,
        drain_node,
        pb::DrainRequest {
            name: name.into(),
            drain,
            request_id: request_id(),
        }
    )?;
    if drain {
        println!("node {name}: drained; its tasks are being replaced elsewhere");
    } else {
        println!("node {name}: takes work again");
    }
    Ok(())
}

/// A file's text, or standard input's for `-`.
pub(crate) fn read_input(file: &Path) -> anyhow::Result<String> {
    if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))
    }
}

/// `berth run -f FILE`.
pub async fn run(addr: &str, file: &Path, detach: bool) -> anyhow::Result<()> {
    let text = read_input(file)?;
    // Check locally first for a fast, precise answer; the server checks again.
    let job = match parse_spec(&text) {
        Ok(s) => s.kind == berth_model::spec::Kind::Job,
        Err(e) => bail!("invalid spec {}:\n{e}", file.display()),
    };
    let resp = ctl!(
        addr,
        run_app,
        pb::RunAppRequest {
            spec: text,
            request_id: request_id(),
        }
    )?
    .into_inner();
    if resp.changed {
        println!(
            "app {} version {}: {} task(s): {}",
            resp.name,
            resp.version,
            resp.tasks.len(),
            resp.tasks.join(" ")
        );
    } else {
        println!("app {} unchanged (version {})", resp.name, resp.version);
    }
    if job {
        println!(
            "job {}: see its runs with berth job runs {}",
            resp.name, resp.name
        );
        return Ok(());
    }
    if detach || resp.deployment == 0 {
        return Ok(());
    }
    crate::deploy::wait(addr, &resp.name, resp.deployment).await
}

/// `berth apps`.
pub async fn apps(addr: &str, json: bool) -> anyhow::Result<()> {
    let apps = ctl!(addr, list_apps, pb::ListAppsRequest {})?
        .into_inner()
        .apps;
    if crate::output::structured(json) {
        let v = apps
            .iter()
            .map(|a| {
                let spec = a.spec.clone().map(berth_model::spec::AppSpec::try_from);
                let spec = spec
                    .transpose()
                    .map_err(|e| anyhow!("app {}: spec.{e}", a.name))?;
                Ok(serde_json::json!({
                    "name": a.name, "image": a.image, "instances": a.instances, "running": a.running,
                    "version": a.version, "stopped": a.stopped, "spec": spec,
                }))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        crate::output::print(&v)?;
        return Ok(());
    }
    let rows = apps
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                a.image.clone(),
                format!("{}/{}", a.running, a.instances),
                a.version.to_string(),
                if a.stopped {
                    "stopped".into()
                } else {
                    "active".into()
                },
            ]
        })
        .collect();
    table(&["NAME", "IMAGE", "RUNNING", "VERSION", "STATUS"], rows);
    Ok(())
}

/// Items a listing asks for at a time (the CLI reads every page).
const PAGE: u32 = 1000;

/// Every page of a listing: `page(token)` answers one page and the next
/// token (empty: the last page).
async fn all_pages<T, F, Fut>(mut page: F) -> anyhow::Result<Vec<T>>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Vec<T>, String)>>,
{
    let (mut all, mut token) = (Vec::new(), String::new());
    loop {
        let (items, next) = page(token).await?;
        all.extend(items);
        if next.is_empty() {
            return Ok(all);
        }
        token = next;
    }
}

pub(crate) async fn list_tasks(addr: &str, app: Option<String>) -> anyhow::Result<Vec<pb::Task>> {
    let app = app.unwrap_or_default();
    all_pages(|page_token| {
        let app = app.clone();
        async move {
            let r = ctl!(
                addr,
                list_tasks,
                pb::ListTasksRequest {
                    app,
                    page_size: PAGE,
                    page_token,
                }
            )?
            .into_inner();
            Ok((r.tasks, r.next_page_token))
        }
    })
    .await
}

/// `berth ps`.
pub async fn ps(addr: &str, json: bool, app: Option<String>) -> anyhow::Result<()> {
    let tasks = list_tasks(addr, app).await?;
    if crate::output::structured(json) {
        let v: Vec<serde_json::Value> = tasks.iter().map(task_json).collect();
        crate::output::print(&v)?;
    } else {
        table(
            &["ID", "APP", "NODE", "STATE", "EXIT", "RESTARTS", "MESSAGE"],
            task_rows(&tasks),
        );
    }
    Ok(())
}

/// A task by id, or an app's newest task (placed ones first).
pub(crate) fn find_task<'a>(tasks: &'a [pb::Task], name: &str) -> anyhow::Result<&'a pb::Task> {
    tasks
        .iter()
        .find(|t| t.id == name)
        .or_else(|| {
            tasks
                .iter()
                .filter(|t| t.app == name)
                .max_by_key(|t| (!t.node.is_empty(), t.version, std::cmp::Reverse(t.instance)))
        })
        .ok_or_else(|| {
            crate::output::Exit::NotFound
                .with(format!("no task or app named {name:?} (see `berth ps`)"))
        })
}

/// `berth explain TASK`.
pub async fn explain(addr: &str, name: &str, json: bool) -> anyhow::Result<()> {
    let tasks = list_tasks(addr, None).await?;
    let t = find_task(&tasks, name)?;
    let ex = ctl!(addr, explain, pb::ExplainRequest { task: t.id.clone() })?.into_inner();
    if crate::output::structured(json) {
        let nodes: Vec<serde_json::Value> = ex
            .nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "node": n.node, "filtered_by": n.filtered_by, "reason": n.reason, "detail": n.detail,
                    "scores": n.scores.iter().map(|s| (s.plugin.clone(), s.score)).collect::<std::collections::BTreeMap<_, _>>(),
                    "total": n.total,
                })
            })
            .collect();
        let v = serde_json::json!({"task": ex.task, "summary": ex.summary, "node": ex.node, "nodes": nodes,
            "allocation": task_json(t)["allocation"].clone()});
        crate::output::print(&v)?;
        return Ok(());
    }
    println!("task {}: {}", ex.task, ex.summary);
    if let Some(a) = &t.allocation {
        let gpus: Vec<String> = a
            .gpus
            .iter()
            .map(|g| {
                if g.milli == 1000 {
                    format!("{}", g.index)
                } else {
                    format!("{}({}m)", g.index, g.milli)
                }
            })
            .collect();
        println!(
            "allocation on {}: cpu {}m, memory {}, cores [{}], cpuset [{}], numa [{}], gpus [{}], nics [{}], devices [{}], ports {:?}",
            t.node,
            a.cpu_millis,
            crate::output::human_bytes(a.memory_bytes),
            join(&a.cores),
            join(&a.cpuset),
            join(&a.numa_nodes),
            gpus.join(","),
            a.nics.join(","),
            a.devices.join(","),
            a.ports
        );
    }
    if !ex.detail_available {
        println!("(per-node detail is held by the server that decided; it restarted since)");
        return Ok(());
    }
    let rows = ex
        .nodes
        .iter()
        .map(|n| {
            let verdict = if n.filtered_by.is_empty() {
                let scores: Vec<String> = n
                    .scores
                    .iter()
                    .map(|s| format!("{} {:.1}", s.plugin, s.score))
                    .collect();
                format!(
                    "feasible: {} (total {:.1}){}",
                    scores.join(", "),
                    n.total,
                    if n.node == ex.node { "  <- chosen" } else { "" }
                )
            } else {
                format!("filtered by {}: {} ({})", n.filtered_by, n.reason, n.detail)
            };
            vec![n.node.clone(), verdict]
        })
        .collect();
    table(&["NODE", "VERDICT"], rows);
    Ok(())
}

fn join(xs: &[u32]) -> String {
    xs.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `berth stop APP`.
pub async fn stop(addr: &str, app: &str) -> anyhow::Result<()> {
    ctl!(
        addr,
        stop_app,
        pb::AppRequest {
            name: app.into(),
            request_id: request_id(),
        }
    )?;
    println!("app {app}: stopping");
    Ok(())
}

/// `berth scale APP N`.
pub async fn scale(addr: &str, app: &str, instances: u32) -> anyhow::Result<()> {
    let r = ctl!(
        addr,
        scale_app,
        pb::ScaleRequest {
            name: app.into(),
            instances,
            request_id: request_id(),
        }
    )?
    .into_inner();
    if r.changed {
        println!("app {app}: {instances} instances (version {})", r.version);
    } else {
        println!(
            "app {app}: already {instances} instances (version {})",
            r.version
        );
    }
    Ok(())
}

/// `berth rm APP`.
pub async fn rm(addr: &str, app: &str) -> anyhow::Result<()> {
    ctl!(
        addr,
        remove_app,
        pb::AppRequest {
            name: app.into(),
            request_id: request_id(),
        }
    )?;
    println!("app {app}: removed");
    Ok(())
}

pub(crate) async fn list_nodes(addr: &str) -> anyhow::Result<Vec<pb::Node>> {
    all_pages(|page_token| async move {
        let r = ctl!(
            addr,
            list_nodes,
            pb::ListNodesRequest {
                page_size: PAGE,
                page_token,
                ..Default::default()
            }
        )?
        .into_inner();
        Ok((r.nodes, r.next_page_token))
    })
    .await
}

/// `berth nodes`.
pub async fn nodes(addr: &str, json: bool) -> anyhow::Result<()> {
    let nodes = list_nodes(addr).await?;
    if crate::output::structured(json) {
        let v: Vec<serde_json::Value> = nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "name": n.name, "status": node_status_text(n.state, n.drained), "address": n.address,
                    "cpu_millis": n.cpu_millis, "memory_bytes": n.memory_bytes,
                    "cpu_used": n.cpu_used, "memory_used": n.memory_used, "tasks": n.tasks,
                    "cores": n.cores, "numa_nodes": n.numa_nodes, "gpus": n.gpus, "gpu_model": n.gpu_model,
                    "labels": n.labels,
                })
            })
            .collect();
        crate::output::print(&v)?;
    } else {
        table(
            &[
                "NAME", "STATUS", "CORES", "NUMA", "GPUS", "CPU", "MEMORY", "TASKS", "ADDRESS",
            ],
            node_rows(&nodes),
        );
    }
    Ok(())
}

/// `berth node show NAME`: the node's hardware tree.
pub async fn node_show(addr: &str, name: &str, json: bool) -> anyhow::Result<()> {
    let node = ctl!(addr, get_node, pb::GetNodeRequest { name: name.into() })?.into_inner();
    let Some(wire) = node.inventory.clone() else {
        bail!("node {name} registered no hardware inventory");
    };
    let inv = berth_hostprobe::Inventory::try_from(wire)
        .map_err(|e| anyhow::anyhow!("node {name}: inventory.{e}"))?;
    if crate::output::structured(json) {
        crate::output::print(&inv)?;
        return Ok(());
    }
    println!(
        "node {} ({}), {} at {}; allocated cpu {}/{}, {} tasks",
        node.name,
        node_status_text(node.state, node.drained),
        if node.labels.is_empty() {
            "no labels".to_string()
        } else {
            node.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        },
        node.address,
        berth_model::quantity::MilliCpu(node.cpu_used),
        berth_model::quantity::MilliCpu(node.cpu_millis),
        node.tasks
    );
    print!("{}", berth_hostprobe::render::tree(&inv));
    Ok(())
}

/// `berth events`: one JSON line per committed task change.
/// `berth events`: the cluster's events, as lines or JSON.
pub async fn events(addr: &str, req: pb::WatchEventsRequest, json: bool) -> anyhow::Result<()> {
    let mut stream = ctl!(addr, watch_events, req)?.into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(e) = stream.message().await.map_err(status)? {
        if crate::output::structured(json) {
            writeln!(out, "{}", serde_json::to_string(&e)?)?;
        } else {
            let at = chrono::DateTime::from_timestamp_millis(e.at_ms as i64)
                .map(|t| t.format("%H:%M:%S%.3f").to_string())
                .unwrap_or_default();
            writeln!(
                out,
                "{:<14} {at}  {:<10} {:<24} {:<12} {}",
                e.id, e.kind, e.subject, e.action, e.message
            )?;
        }
        out.flush()?;
    }
    Ok(())
}

/// `berth events --tasks`: task records as they change.
pub async fn task_events(addr: &str, app: Option<String>) -> anyhow::Result<()> {
    let mut stream = ctl!(
        addr,
        watch_tasks,
        pb::WatchTasksRequest {
            app: app.unwrap_or_default(),
        }
    )?
    .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(ev) = stream.message().await.map_err(status)? {
        let Some(t) = ev.task else { continue };
        let mut v = task_json(&t);
        v["removed"] = serde_json::json!(ev.removed);
        writeln!(out, "{v}")?;
        out.flush()?;
    }
    Ok(())
}
