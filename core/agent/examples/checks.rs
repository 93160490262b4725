//! Benchmark of the health checker (`ci/bench.sh health`): N HTTP checks
//! at a 1 s interval against a server on 127.0.0.1:PORT, on a runtime like
//! the agent's, for S seconds; prints checks per second and this process's
//! CPU as a share of one core.
//!
//! `cargo run --release -p berth-agent --example checks -- PORT N S [tcp]`

use std::time::{Duration, Instant};

use berth_agent::health::{CheckPlan, Probe, Which, spawn};

/// User plus system CPU seconds of this process, from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) end with ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (port, n, secs) = (arg(1, 8080) as u16, arg(2, 1000) as usize, arg(3, 10));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let plan = CheckPlan {
            probe: if args.get(4).is_some_and(|k| k == "tcp") {
                Probe::Tcp {
                    ip: std::net::Ipv4Addr::LOCALHOST,
                    port,
                }
            } else {
                Probe::Http {
                    ip: std::net::Ipv4Addr::LOCALHOST,
                    port,
                    path: "/".into(),
                }
            },
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            grace: Duration::ZERO,
            failures: 1,
        };
        // Checkers start spread over one interval, as containers start
        // apart; the measurement starts once all run.
        let mut checks = Vec::with_capacity(n);
        for _ in 0..n {
            checks.push(spawn(Which::Liveness, plan.clone(), 0, Instant::now(), tx.clone()));
            tokio::time::sleep(Duration::from_secs(1) / n as u32).await;
        }
        drop(tx);
        let started = Instant::now();
        let cpu0 = cpu_seconds();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let cpu = cpu_seconds() - cpu0;
        let wall = started.elapsed().as_secs_f64();
        for c in &checks {
            c.abort();
        }
        let (mut passing, mut failing) = (0, 0);
        while let Ok(ev) = rx.try_recv() {
            match ev.verdict {
                berth_agent::health::Verdict::Passing => passing += 1,
                berth_agent::health::Verdict::Failing => failing += 1,
                berth_agent::health::Verdict::Unknown => {}
            }
        }
        println!(
            "{{\"checkers\": {n}, \"seconds\": {wall:.1}, \"checks_per_sec\": {:.0}, \"cpu_percent_of_one_core\": {:.2}, \"cpu_percent_per_1000_checks_per_sec\": {:.2}, \"checkers_passing\": {passing}, \"failing_transitions\": {failing}}}",
            n as f64,
            100.0 * cpu / wall,
            100.0 * cpu / wall / (n as f64 / 1000.0),
        );
    });
}
