//! The dashboard in a real browser: Debian's chromium, headless, driven
//! through chromedriver (WebDriver, the `fantoccini` client). It logs in
//! with a token, finds the DGX fixture's 8 GPUs in one NVLink island with
//! the task holding GPUs 0-3 marked, opens a pending task and reads its
//! reason, and follows a rolling deployment's progress live. Screenshots
//! go to `target/test-artifacts/`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Dev, free_port, wait_for};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// chromedriver, stopped when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser() -> (Driver, Client) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver; ci/setup.sh --test installs it)");
    let driver = Driver(child);
    let caps = json!({
        "acceptInsecureCerts": true,
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--window-size=1400,1100"],
        },
    });
    let caps = caps.as_object().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => return (driver, c),
            Err(e) if Instant::now() > deadline => panic!("chromedriver: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn screenshot(c: &Client, name: &str) {
    let dir = common::repo().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("dashboard-{name}.png")), png).unwrap();
}

/// Waits for `css` to match an element whose text satisfies `pred`.
async fn wait_text(c: &Client, css: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
        {
            if pred(&t) {
                return t;
            }
            last = t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css}: never matched; last text {last:?}");
}

fn web_spec(version: &str) -> String {
    format!(
        "name: web\nimage: busybox:latest\ninstances: 3\ncommand: [sleep, '1000']\n\
         env: {{V: '{version}'}}\nresources: {{cpu: 50m, memory: 16Mi}}\n\
         update: {{max_surge: 1, max_unavailable: 0, min_ready_time: 2s}}\n"
    )
}

/// The DGX node page: one NVLink island of 8 GPUs with 28 links, GPUs 0-3
/// held by `train_id`, a click on GPU 2 naming it, two NUMA nodes, the
/// NICs. `Err` when the page was redrawn under the checks (an element gone
/// stale, the panel closed by a redraw): try again.
async fn node_page(c: &Client, base: &str, train_id: &str) -> Result<(), String> {
    let e = |e: fantoccini::error::CmdError| e.to_string();
    c.goto(&format!("{base}/ui/#/nodes/dgx1"))
        .await
        .map_err(e)?;
    let island = c
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(".island"))
        .await
        .map_err(e)?;
    assert_eq!(
        island.attr("data-gpus").await.map_err(e)?.as_deref(),
        Some("8")
    );
    assert_eq!(
        c.find_all(Locator::Css(".island")).await.map_err(e)?.len(),
        1
    );
    assert_eq!(
        c.find_all(Locator::Css(".island .gpu"))
            .await
            .map_err(e)?
            .len(),
        8
    );
    assert_eq!(
        c.find_all(Locator::Css(".link")).await.map_err(e)?.len(),
        28
    );
    for i in 0..8 {
        let g = c.find(Locator::Id(&format!("gpu-{i}"))).await.map_err(e)?;
        let task = g.attr("data-task").await.map_err(e)?.unwrap_or_default();
        let class = g.attr("class").await.map_err(e)?.unwrap_or_default();
        if i < 4 {
            assert_eq!((task.as_str(), class.as_str()), (train_id, "gpu held"));
        } else {
            assert_eq!((task.as_str(), class.as_str()), ("", "gpu"));
        }
    }
    // Clicking a GPU names its task.
    c.find(Locator::Id("gpu-2"))
        .await
        .map_err(e)?
        .click()
        .await
        .map_err(e)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let shown = match c.find(Locator::Css("#panel-task")).await {
            Ok(p) => p.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if !shown.is_empty() {
            assert!(shown.contains(train_id), "{shown}");
            break;
        }
        if Instant::now() > deadline {
            return Err("the GPU's panel did not open (redrawn?)".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        c.find_all(Locator::Css(".numa")).await.map_err(e)?.len(),
        2,
        "two NUMA nodes"
    );
    assert!(c.find_all(Locator::Css(".nic")).await.map_err(e)?.len() >= 8);
    Ok(())
}

#[test]
fn the_dashboard_shows_the_hardware_pending_reasons_and_live_rollouts() {
    let mut dev = Dev::start();
    let cdi = dev.data.path().join("cdi");
    std::fs::create_dir_all(&cdi).unwrap();
    common::write_gpu_cdi(&cdi);
    dev.agent_with("dgx1", "dgx-h100", &["--cdi-dir", cdi.to_str().unwrap()]);
    let token = std::fs::read_to_string(dev.data.path().join("token")).unwrap();

    dev.run_spec(
        "train",
        "name: train\nimage: busybox:latest\ncommand: [sleep, '1000']\n\
         resources: {memory: 64Mi, gpus: {count: 4, model: [H100]}}\n",
    );
    let train = dev.wait_task("train", Duration::from_secs(30), |t| {
        t["state"] == "running"
    });
    let held: Vec<u64> = train["allocation"]["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["index"].as_u64().unwrap())
        .collect();
    assert_eq!(held, [0, 1, 2, 3], "{train}");
    let train_id = train["id"].as_str().unwrap().to_string();
    // Sixteen GPUs fit on no node: it stays pending with a reason.
    let p = dev.data.path().join("huge.yaml");
    std::fs::write(
        &p,
        "name: huge\nimage: busybox:latest\ncommand: [sleep, '1000']\n\
         resources: {memory: 64Mi, gpus: {count: 16}}\n",
    )
    .unwrap();
    dev.ok(&["run", "-d", "-f", p.to_str().unwrap()]);
    let huge = dev.wait_task("huge", Duration::from_secs(30), |t| {
        t["message"].as_str().is_some_and(|m| !m.is_empty())
    });
    let huge_id = huge["id"].as_str().unwrap().to_string();
    dev.run_spec("web", &web_spec("1"));
    wait_for("web's three instances", Duration::from_secs(60), || {
        (dev.ps()
            .iter()
            .filter(|t| t["app"] == "web" && t["state"] == "running")
            .count()
            == 3)
            .then_some(())
    });

    let base = format!("https://{}", dev.addr);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (_driver, c) = browser().await;

        // Not logged in: the API answers 401 and the page goes to the login.
        c.goto(&format!("{base}/ui/")).await.unwrap();
        c.wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Id("token"))
            .await
            .unwrap();
        screenshot(&c, "login").await;
        c.find(Locator::Id("token"))
            .await
            .unwrap()
            .send_keys(token.trim())
            .await
            .unwrap();
        c.find(Locator::Id("submit"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let pending = wait_text(&c, "#pending-count .big", |t| t == "1").await;
        assert_eq!(pending, "1");
        let reason = wait_text(&c, ".pending-task .reason", |t| !t.is_empty()).await;
        assert!(reason.contains("GPU") || reason.contains("gpu"), "{reason}");
        let gpu_row = wait_text(&c, "[data-resource^='gpu:']", |t| t.contains('8')).await;
        assert!(
            gpu_row.contains("4 GPUs") && gpu_row.contains("8 GPUs"),
            "{gpu_row}"
        );
        screenshot(&c, "overview").await;

        // The node list, a page at a time, searched by name prefix.
        c.goto(&format!("{base}/ui/#/nodes")).await.unwrap();
        wait_text(&c, "tr.node-row", |t| !t.is_empty()).await;
        // "dgx", then Enter (WebDriver's U+E007); live updates may redraw
        // the page under the input (the search is kept), so try again.
        for attempt in 0.. {
            let typed = match c.find(Locator::Id("nodes-prefix")).await {
                Ok(input) => input.send_keys("dgx\u{E007}").await,
                Err(e) => Err(e),
            };
            match typed {
                Ok(()) => break,
                Err(e) if attempt < 10 => eprintln!("typing the prefix: {e}"),
                Err(e) => panic!("typing the prefix: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let shown = wait_text(&c, "tr.node-row", |t| t.starts_with("dgx1")).await;
        assert!(shown.contains("8x"), "{shown}");
        screenshot(&c, "nodes").await;

        // The node page: one NVLink island of 8 GPUs, 0-3 held by train.
        // Live updates redraw the page; checks caught mid-redraw run again.
        for attempt in 0.. {
            match node_page(&c, &base, &train_id).await {
                Ok(()) => break,
                Err(e) if attempt < 5 => eprintln!("node page redrawn under the test ({e}); again"),
                Err(e) => panic!("node page: {e}"),
            }
        }
        screenshot(&c, "node").await;

        // The pending task's page reads its reason and every node's verdict.
        c.goto(&format!("{base}/ui/#/tasks/{huge_id}"))
            .await
            .unwrap();
        let summary = wait_text(&c, "#explain-summary", |t| !t.is_empty()).await;
        assert!(!summary.is_empty());
        let verdicts = c.find_all(Locator::Css(".verdict")).await.unwrap();
        assert!(verdicts.len() >= 2, "every node's verdict");
        screenshot(&c, "pending-task").await;

        // A rolling deployment, followed live on the app page (no reload:
        // a marker set on the page survives).
        c.goto(&format!("{base}/ui/#/apps/web")).await.unwrap();
        wait_text(&c, "#deploy-phase", |t| t == "succeeded").await;
        c.execute("window.__stay = 1;", vec![]).await.unwrap();
        dev.run_spec("web", &web_spec("2"));
        let mut seen: Vec<String> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            let phase = c.find(Locator::Id("deploy-phase")).await.ok();
            let (phase, progress) = match phase {
                Some(p) => (
                    p.text().await.unwrap_or_default(),
                    match c.find(Locator::Id("deploy-progress")).await {
                        Ok(e) => e.text().await.unwrap_or_default(),
                        Err(_) => String::new(),
                    },
                ),
                None => (String::new(), String::new()),
            };
            let now = format!("{phase} {progress}");
            if seen.last() != Some(&now) && !phase.is_empty() {
                seen.push(now);
                if seen.len() == 3 {
                    screenshot(&c, "rollout").await;
                }
            }
            if phase == "succeeded" && seen.iter().any(|s| s.starts_with("running")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let stayed: Value = c
            .execute("return window.__stay || 0;", vec![])
            .await
            .unwrap();
        assert_eq!(stayed, json!(1), "the page was not reloaded");
        let running: Vec<&String> = seen.iter().filter(|s| s.starts_with("running")).collect();
        assert!(running.len() >= 2, "progress moved while watched: {seen:?}");
        assert!(
            seen.last().unwrap().starts_with("succeeded 3/3"),
            "{seen:?}"
        );
        screenshot(&c, "rollout-done").await;
        c.close().await.unwrap();
    });
}
