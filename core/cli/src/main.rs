//! `berth`: the control plane, the node agent, the shim and the CLI in one binary.
#![forbid(unsafe_code)]

mod access;
mod acl;
mod client;
mod daemon;
mod deploy;
mod endpoints;
mod exec;
mod image;
mod job;
mod loadgen;
mod logs;
mod output;
mod pki;
mod plugin;
mod plugin_local;
mod probe;
mod scaffold;
mod servercmd;
mod sim;
mod snapshot;
mod tls;
mod volume;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Berth: a container orchestrator that puts work on the right hardware.
#[derive(Parser)]
#[command(name = "berth", version, about, after_help = output::EXIT_CODES)]
struct Cli {
    /// Control-plane servers: host:port, or a comma-separated list (the
    /// leader is found and followed).
    #[arg(
        long,
        global = true,
        env = "BERTH_ADDR",
        default_value = "127.0.0.1:7700"
    )]
    addr: String,
    /// Serve reads from whichever server answers, without confirming with
    /// a quorum that its state is current (default: linearizable reads).
    #[arg(long, global = true)]
    stale: bool,
    /// How lists print: table, wide (every field), json or yaml.
    #[arg(
        short = 'o',
        long,
        global = true,
        env = "BERTH_OUTPUT",
        value_enum,
        default_value_t
    )]
    output: output::Format,
    #[command(flatten)]
    access: access::AccessFlags,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a single-server control plane and a node agent in one process.
    Dev {
        /// Where state, images and task files live.
        #[arg(long, env = "BERTH_DATA_DIR", default_value = "/var/lib/berth")]
        data_dir: PathBuf,
        /// Node name of the embedded agent.
        #[arg(long)]
        node_name: Option<String>,
        /// Placement policy: binpack, spread, random, bestfit, dotprod,
        /// gpupacking, fgd, fgd-pack or default (= fgd-pack).
        #[arg(long, env = "BERTH_POLICY", default_value = "default")]
        policy: String,
        /// A node silent this long is marked down and its tasks replaced.
        #[arg(long, env = "BERTH_HEARTBEAT_TIMEOUT", default_value = "10s")]
        heartbeat_timeout: String,
        /// The host ports dynamic ports (`host: 0`) come from, FIRST-LAST.
        #[arg(long, env = "BERTH_DYNAMIC_PORTS", default_value = "20000-32000")]
        dynamic_ports: String,
        /// The range node bridge subnets come from, one /24 per node.
        #[arg(long, env = "BERTH_NODE_SUBNETS", default_value = berth_model::node::NODE_SUBNETS)]
        node_subnets: String,
        /// Where the node's DNS listens besides its bridge address (`off`: only there).
        #[arg(long, env = "BERTH_DNS_LISTEN", default_value = "127.0.0.1:53")]
        dns_listen: String,
        #[command(flatten)]
        registry: image::RegistryFlags,
        /// Host-path volumes must be under this directory (none: refused).
        #[arg(long, env = "BERTH_HOST_VOLUME_ROOT")]
        host_volume_root: Option<PathBuf>,
    },
    /// Run a control-plane server (one member of a raft cluster), or
    /// manage the members.
    #[command(args_conflicts_with_subcommands = true)]
    Server {
        #[command(subcommand)]
        cmd: Option<servercmd::ServerCmd>,
        #[command(flatten)]
        opts: servercmd::ServerOpts,
    },
    /// Run a node agent.
    Agent {
        /// Where images and task files live.
        #[arg(long, env = "BERTH_DATA_DIR", default_value = "/var/lib/berth")]
        data_dir: PathBuf,
        #[command(flatten)]
        opts: daemon::AgentOpts,
    },
    /// Show this machine's hardware (or a fixture's) as a tree.
    Probe {
        /// Print the inventory as JSON.
        #[arg(long)]
        json: bool,
        /// Show a built-in fixture or an inventory file instead.
        #[arg(long, conflicts_with_all = ["synthetic", "xml"])]
        fixture: Option<String>,
        /// An hwloc synthetic topology, e.g. "Package:2 NUMANode:2 Core:8 PU:2".
        #[arg(long, conflicts_with = "xml")]
        synthetic: Option<String>,
        /// An `lstopo --of xml` file.
        #[arg(long)]
        xml: Option<PathBuf>,
        /// Print how long each probe backend took (stderr).
        #[arg(long)]
        timings: bool,
    },
    /// Run the real scheduler on simulated clusters.
    Sim {
        #[command(subcommand)]
        cmd: SimCmd,
    },
    /// Show, drain or undrain a node.
    Node {
        #[command(subcommand)]
        cmd: NodeCmd,
    },
    /// Benchmark: a concurrent write load on the control plane.
    #[command(hide = true)]
    Loadgen(loadgen::LoadArgs),
    /// Internal: the single-threaded parent of one container.
    #[command(hide = true)]
    Shim {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        run: PathBuf,
        #[arg(long)]
        id: String,
        #[arg(long)]
        state_root: PathBuf,
    },
    /// Internal: runs one process in a running container (for `berth exec`).
    #[command(hide = true)]
    ExecShim {
        #[arg(long)]
        bundle: PathBuf,
        #[arg(long)]
        state_root: PathBuf,
        #[arg(long)]
        id: String,
        #[arg(long)]
        uid: u32,
        #[arg(long)]
        gid: u32,
        #[arg(long = "env")]
        env: Vec<String>,
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// Run a command in a task's running container (`-- CMD...`); exits
    /// with its exit code.
    Exec(exec::ExecArgs),
    /// Submit an app spec (YAML or JSON).
    Run {
        /// The spec file (`-` for standard input).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Return once the spec is committed instead of waiting for the
        /// deployment to end.
        #[arg(long, short = 'd')]
        detach: bool,
    },
    /// The ready instances of an app: node, address, ports, DNS name.
    Endpoints {
        /// App name.
        app: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Jobs: their runs; start one now.
    Job {
        #[command(subcommand)]
        cmd: job::JobCmd,
    },
    /// Deployments: status, history, pause, resume.
    Deploy {
        #[command(subcommand)]
        cmd: deploy::DeployCmd,
    },
    /// Roll an app back to an earlier version (by default the last one
    /// that succeeded), as a rolling deployment.
    Rollback {
        /// App name.
        app: String,
        /// The version to go back to (see `berth deploy history`).
        #[arg(long)]
        to: Option<u64>,
        /// Return at once instead of waiting for the rollback to end.
        #[arg(long, short = 'd')]
        detach: bool,
    },
    /// List apps.
    Apps {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List tasks.
    Ps {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
        /// Only this app's tasks.
        #[arg(long)]
        app: Option<String>,
    },
    /// Print a task's output (a task id, or an app name for its first
    /// task): stdout and stderr interleaved by time.
    Logs(logs::LogsArgs),
    /// Why a task went where it went, or why it waits (a task id, or an app name).
    Explain {
        task: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change an app's instance count (its version and running instances stay).
    Scale { app: String, instances: u32 },
    /// Stop an app's tasks (kept, with their logs).
    Stop { app: String },
    /// Remove an app, its tasks and their files.
    Rm { app: String },
    /// List nodes.
    Nodes {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What happens in the cluster: nodes up, down and drained,
    /// deployments, preemptions, plugin rollouts, quota refusals and failed
    /// tasks; the kept history, then live. Each line has the event's id:
    /// `--since ID` resumes after it (on any server).
    Events {
        /// Only this app's events.
        #[arg(long)]
        app: Option<String>,
        /// Every task change too, not only failures.
        #[arg(long)]
        all: bool,
        /// Resume after this event id (`now`: only new events).
        #[arg(long)]
        since: Option<String>,
        /// Print the kept events and exit.
        #[arg(long)]
        no_follow: bool,
        /// One JSON object per event.
        #[arg(long)]
        json: bool,
        /// Instead: every task record as it changes (the current ones
        /// first), one JSON object per line, as scripts consume them.
        #[arg(long, conflicts_with_all = ["all", "since", "no_follow"])]
        tasks: bool,
    },
    /// Images: import into the nodes' stores, list them, push to a registry.
    Image {
        #[command(subcommand)]
        cmd: image::ImageCmd,
    },
    /// Print a shell completion script: `source <(berth completion bash)`,
    /// or into zsh's `$fpath` / fish's completions directory.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the HTTP/JSON API's OpenAPI document (what the servers serve
    /// at `/v1/openapi.json`).
    Openapi,
    /// ACLs: the management token, policies, tokens.
    Acl {
        #[command(subcommand)]
        cmd: acl::AclCmd,
    },
    /// The audit log: every denial and every write (who, what, when, outcome).
    Audit {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Only the last N entries.
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Quotas per namespace: set, remove, list use against limits.
    Quota {
        #[command(subcommand)]
        cmd: acl::QuotaCmd,
    },
    /// The cluster CA and the certificates of servers, agents and clients.
    Tls {
        #[command(subcommand)]
        cmd: tls::TlsCmd,
    },
    /// Backups of the cluster state: `berth snapshot save FILE` (restore
    /// with `berth server --restore FILE`).
    Snapshot {
        #[command(subcommand)]
        cmd: snapshot::SnapshotCmd,
    },
    /// Persistent volumes: where each instance's data lives; remove one.
    Volume {
        #[command(subcommand)]
        cmd: volume::VolumeCmd,
    },
    /// Registry credentials kept by the cluster.
    Registry {
        #[command(subcommand)]
        cmd: image::RegistryCmd,
    },
    /// Wasm plugins: install and roll out, or build, scaffold and try locally.
    Plugin {
        #[command(subcommand)]
        cmd: plugin::PluginCmd,
    },
}

#[derive(Subcommand)]
enum SimCmd {
    /// Replay an Alibaba openb GPU trace (ATC'23 FGD method) and print the
    /// allocation curve and the section-6 table.
    Openb(sim::OpenbArgs),
    /// Placement throughput on a synthetic cluster built from the fixtures.
    Scale(sim::ScaleArgs),
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Take no new work on a node and move its tasks elsewhere (each is
    /// replaced by a pending instance, then stopped on this node).
    Drain { name: String },
    /// Let a drained node take work again.
    Undrain { name: String },
    /// Join tokens: `create` makes one a new agent exchanges for its
    /// certificate (`berth agent --join-token`).
    Token {
        #[command(subcommand)]
        cmd: NodeTokenCmd,
    },
    /// Print a node's hardware tree.
    Show {
        name: String,
        /// Print its inventory as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum NodeTokenCmd {
    /// Make a join token, valid for --ttl (default 1h, at most 1 week).
    Create {
        #[arg(long)]
        ttl: Option<String>,
        /// Print JSON (`{"secret": ...}`).
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Cmd::Shim {
        dir,
        run,
        id,
        state_root,
    } = &cli.cmd
    {
        // No async runtime, no threads: libcontainer forks from here.
        daemon::shim_logging();
        std::process::exit(berth_runtime::shim::run(dir, run, id, state_root));
    }
    if let Cmd::ExecShim {
        bundle,
        state_root,
        id,
        uid,
        gid,
        env,
        args,
    } = &cli.cmd
    {
        // Single-threaded, like the shim: libcontainer forks from here.
        let env = env
            .iter()
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        std::process::exit(berth_runtime::exec::run(
            bundle,
            state_root,
            id,
            (*uid, *gid),
            env,
            args.clone(),
        ));
    }
    let daemon = matches!(
        cli.cmd,
        Cmd::Dev { .. } | Cmd::Server { .. } | Cmd::Agent { .. }
    );
    init_logging(if daemon { "info" } else { "warn" });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(dispatch(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(output::exit_code(&e));
    }
}

fn init_logging(default: &str) {
    // rustls-platform-verifier logs every refused certificate as an error;
    // Berth reports the refusal itself, with what to do.
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default},rustls_platform_verifier=off"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let addr = cli.addr;
    output::set(cli.output);
    client::allow_stale(cli.stale);
    access::init(cli.access)?;
    match cli.cmd {
        Cmd::Dev {
            data_dir,
            node_name,
            policy,
            heartbeat_timeout,
            dynamic_ports,
            dns_listen,
            node_subnets,
            registry,
            host_volume_root,
        } => {
            let net = daemon::DevNet {
                dynamic_ports,
                dns_listen,
                node_subnets,
                registry,
                host_volume_root,
            };
            daemon::dev(
                &addr,
                &data_dir,
                node_name,
                &policy,
                &heartbeat_timeout,
                net,
            )
            .await
        }
        Cmd::Server { cmd: None, opts } => servercmd::run(&addr, opts).await,
        Cmd::Server { cmd: Some(c), .. } => servercmd::command(&addr, c).await,
        Cmd::Agent { data_dir, opts } => daemon::agent(&addr, &data_dir, opts).await,
        Cmd::Probe {
            json,
            fixture,
            synthetic,
            xml,
            timings,
        } => probe::run(json, fixture, synthetic, xml, timings),
        Cmd::Sim {
            cmd: SimCmd::Openb(a),
        } => a.run(),
        Cmd::Sim {
            cmd: SimCmd::Scale(a),
        } => a.run(),
        Cmd::Node {
            cmd: NodeCmd::Show { name, json },
        } => client::node_show(&addr, &name, json).await,
        Cmd::Node {
            cmd: NodeCmd::Drain { name },
        } => client::drain(&addr, &name, true).await,
        Cmd::Node {
            cmd: NodeCmd::Undrain { name },
        } => client::drain(&addr, &name, false).await,
        Cmd::Loadgen(a) => loadgen::run(&addr, a).await,
        // Handled in main before the async runtime starts.
        Cmd::Shim { .. } | Cmd::ExecShim { .. } => Ok(()),
        Cmd::Exec(a) => exec::run(&addr, a).await,
        Cmd::Run { file, detach } => client::run(&addr, &file, detach).await,
        Cmd::Deploy { cmd } => deploy::run(&addr, cmd).await,
        Cmd::Job { cmd } => job::run(&addr, cmd).await,
        Cmd::Endpoints { app, json } => endpoints::run(&addr, &app, json).await,
        Cmd::Rollback { app, to, detach } => deploy::rollback(&addr, &app, to, detach).await,
        Cmd::Apps { json } => client::apps(&addr, json).await,
        Cmd::Ps { json, app } => client::ps(&addr, json, app).await,
        Cmd::Logs(a) => logs::run(&addr, a).await,
        Cmd::Explain { task, json } => client::explain(&addr, &task, json).await,
        Cmd::Scale { app, instances } => client::scale(&addr, &app, instances).await,
        Cmd::Stop { app } => client::stop(&addr, &app).await,
        Cmd::Rm { app } => client::rm(&addr, &app).await,
        Cmd::Nodes { json } => client::nodes(&addr, json).await,
        Cmd::Events {
            app, tasks: true, ..
        } => client::task_events(&addr, app).await,
        Cmd::Events {
            app,
            all,
            since,
            no_follow,
            json,
            tasks: false,
        } => {
            let req = berth_proto::WatchEventsRequest {
                since: since.unwrap_or_default(),
                all,
                app: app.unwrap_or_default(),
                no_follow,
            };
            client::events(&addr, req, json).await
        }
        Cmd::Plugin { cmd } => plugin::run(&addr, cmd).await,
        Cmd::Image { cmd } => image::run(&addr, cmd).await,
        Cmd::Registry { cmd } => image::registry(&addr, cmd).await,
        Cmd::Volume { cmd } => volume::run(&addr, cmd).await,
        Cmd::Snapshot { cmd } => snapshot::run(&addr, cmd).await,
        Cmd::Tls { cmd } => tls::run(cmd),
        Cmd::Openapi => {
            println!("{}", berth_server::web::openapi_json());
            Ok(())
        }
        Cmd::Completion { shell } => {
            // Into a buffer first: clap_complete panics on a write error,
            // and `berth completion bash | head` closes the pipe early.
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "berth", &mut buf);
            match std::io::Write::write_all(&mut std::io::stdout().lock(), &buf) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                r => r.map_err(Into::into),
            }
        }
        Cmd::Acl { cmd } => acl::run(&addr, cmd).await,
        Cmd::Audit { json, limit } => acl::audit(&addr, json, limit).await,
        Cmd::Quota { cmd } => acl::quota(&addr, cmd).await,
        Cmd::Node {
            cmd:
                NodeCmd::Token {
                    cmd: NodeTokenCmd::Create { ttl, json },
                },
        } => acl::node_token(&addr, ttl.as_deref(), json).await,
    }
}
