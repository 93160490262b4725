//! `berth exec TASK [-i] [-t] -- CMD...`: a process in a task's running
//! container, through the servers to its node's agent; exits with the
//! process's code.

use std::io::{IsTerminal as _, Read as _, Write as _};

use anyhow::bail;
use berth_proto::{self as pb, exec_input, exec_output};
use tokio::sync::mpsc;

use crate::client::status;

/// The flags of `berth exec`.
#[derive(clap::Args)]
pub struct ExecArgs {
    /// A task id, or an app name for its first task.
    pub task: String,
    /// Forward standard input.
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the process a terminal (resized with this one).
    #[arg(short, long)]
    pub tty: bool,
    /// Extra environment, KEY=value (repeatable).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// This terminal's size, if stdin is one.
fn size() -> Option<pb::TermSize> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdin()).ok()?;
    Some(pb::TermSize {
        rows: u32::from(ws.ws_row),
        cols: u32::from(ws.ws_col),
    })
}

/// Puts the terminal in raw mode until dropped.
struct Raw(Option<rustix::termios::Termios>);

impl Raw {
    fn enter() -> Raw {
        let stdin = std::io::stdin();
        let Ok(saved) = rustix::termios::tcgetattr(&stdin) else {
            return Raw(None);
        };
        let mut raw = saved.clone();
        raw.make_raw();
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw);
        Raw(Some(saved))
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                t,
            );
        }
    }
}

/// `berth exec`.
pub async fn run(addr: &str, a: ExecArgs) -> anyhow::Result<()> {
    let mut env = std::collections::HashMap::new();
    for e in &a.env {
        let Some((k, v)) = e.split_once('=') else {
            bail!("--env: {e:?} is not KEY=value");
        };
        env.insert(k.to_string(), v.to_string());
    }
    let (id, mut agent) = crate::logs::task_client(addr, &a.task).await?;
    let tty = a.tty;
    let (tx, rx) = mpsc::channel::<pb::ExecInput>(16);
    let send = |msg| pb::ExecInput { msg: Some(msg) };
    tx.send(send(exec_input::Msg::Start(pb::ExecStart {
        task: id,
        command: a.command.clone(),
        tty,
        size: if tty { size() } else { None },
        env,
        stdin: a.interactive,
    })))
    .await?;
    let mut out = agent
        .exec(crate::client::request(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .await
        .map_err(status)?
        .into_inner();
    let raw = (tty && std::io::stdin().is_terminal()).then(Raw::enter);
    if a.interactive {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            let mut stdin = std::io::stdin().lock();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.blocking_send(send(exec_input::Msg::CloseStdin(true)));
                        return;
                    }
                    Ok(n) => {
                        let msg = send(exec_input::Msg::Stdin(buf[..n].to_vec()));
                        if tx.blocking_send(msg).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    if tty {
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(mut winch) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some(s) = size()
                    && tx.send(send(exec_input::Msg::Resize(s))).await.is_err()
                {
                    return;
                }
            }
        });
    }
    let mut code = None;
    while let Some(msg) = out.message().await.map_err(status)? {
        match msg.msg {
            Some(exec_output::Msg::Stdout(b)) => {
                let mut o = std::io::stdout().lock();
                o.write_all(&b)?;
                o.flush()?;
            }
            Some(exec_output::Msg::Stderr(b)) => {
                let mut e = std::io::stderr().lock();
                e.write_all(&b)?;
                e.flush()?;
            }
            Some(exec_output::Msg::Exit(c)) => {
                code = Some(c);
                break;
            }
            None => {}
        }
    }
    drop(raw);
    match code {
        Some(c) => std::process::exit(c),
        None => bail!("the agent ended the exec without an exit code"),
    }
}
