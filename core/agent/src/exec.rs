//! `Agent.Exec`: a process in a task's running container, through
//! `berth exec-shim`, with its stdin, output and exit code over one
//! stream; with a pseudo-terminal (resizable) when asked.

use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;

use berth_proto::{ExecInput, ExecOutput, TermSize, exec_input, exec_output};
use berth_runtime::Runtime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Status, Streaming};

/// The output stream of an exec.
pub type ExecStream = Pin<Box<dyn Stream<Item = Result<ExecOutput, Status>> + Send>>;

/// Most arguments a command may have.
pub const MAX_ARGS: usize = 1024;
/// Longest argument or environment value, in bytes.
pub const MAX_ARG: usize = 64 * 1024;

fn check(start: &berth_proto::ExecStart) -> Result<(), Status> {
    if start.task.is_empty() || start.task.contains('/') || start.task.starts_with('.') {
        return Err(Status::invalid_argument("task: not a task id"));
    }
    if start.command.is_empty() {
        return Err(Status::invalid_argument("command: empty"));
    }
    if start.command.len() > MAX_ARGS || start.env.len() > MAX_ARGS {
        return Err(Status::invalid_argument(format!(
            "command: at most {MAX_ARGS} arguments and variables"
        )));
    }
    if start
        .command
        .iter()
        .chain(start.env.values())
        .any(|a| a.len() > MAX_ARG || a.contains('\0'))
    {
        return Err(Status::invalid_argument(format!(
            "command: arguments are at most {MAX_ARG} bytes, without NUL"
        )));
    }
    if let Some(k) = start
        .env
        .keys()
        .find(|k| !berth_model::spec::valid_env_name(k))
    {
        return Err(Status::invalid_argument(format!(
            "env: {k:?} is not a variable name"
        )));
    }
    Ok(())
}

/// A pseudo-terminal: the master the agent keeps, the slave the process gets.
fn pty(size: Option<&TermSize>) -> Result<(OwnedFd, OwnedFd), Status> {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let err = |e: rustix::io::Errno| Status::internal(format!("pseudo-terminal: {e}"));
    let master =
        openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).map_err(err)?;
    grantpt(&master).map_err(err)?;
    unlockpt(&master).map_err(err)?;
    let name = ptsname(&master, Vec::new()).map_err(err)?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(std::ffi::OsStr::new(
            std::str::from_utf8(name.to_bytes()).unwrap_or_default(),
        ))
        .map_err(|e| Status::internal(format!("opening the terminal: {e}")))?;
    // An unknown size (no terminal on the client's side) is 24x80.
    let fallback = TermSize { rows: 24, cols: 80 };
    match size {
        Some(s) if s.rows > 0 && s.cols > 0 => resize(&master, s),
        _ => resize(&master, &fallback),
    }
    Ok((master, OwnedFd::from(slave)))
}

fn resize(master: &OwnedFd, s: &TermSize) {
    let ws = rustix::termios::Winsize {
        ws_row: s.rows.min(u32::from(u16::MAX)) as u16,
        ws_col: s.cols.min(u32::from(u16::MAX)) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let _ = rustix::termios::tcsetwinsize(master, ws);
}

/// Copies `r` into the output stream as `wrap` messages until EOF (or EIO:
/// a terminal whose process is gone).
async fn pump(
    mut r: impl AsyncRead + Unpin,
    tx: mpsc::Sender<Result<ExecOutput, Status>>,
    wrap: fn(Vec<u8>) -> exec_output::Msg,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let msg = ExecOutput {
                    msg: Some(wrap(buf[..n].to_vec())),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Starts the exec the first message asks for and wires its streams.
pub async fn exec(
    rt: &Arc<Runtime>,
    mut input: Streaming<ExecInput>,
) -> Result<ExecStream, Status> {
    let first = input
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("the stream ended before the start message"))?;
    let Some(exec_input::Msg::Start(start)) = first.msg else {
        return Err(Status::invalid_argument("the first message must be start"));
    };
    check(&start)?;
    let target = rt
        .exec_target(&start.task)
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
    let env = start.env.clone().into_iter().collect();
    let mut cmd = rt.exec_command(&target, &start.command, &env);
    cmd.kill_on_drop(true);
    let (tx, rx) = mpsc::channel(32);
    let mut master = None;
    if start.tty {
        let (m, slave) = pty(start.size.as_ref())?;
        let dup = |f: &OwnedFd| {
            f.try_clone()
                .map_err(|e| Status::internal(format!("terminal: {e}")))
        };
        cmd.stdin(Stdio::from(dup(&slave)?))
            .stdout(Stdio::from(dup(&slave)?))
            .stderr(Stdio::from(slave));
        master = Some(m);
    } else {
        cmd.stdin(if start.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Status::internal(format!("starting berth exec-shim: {e}")))?;
    drop(cmd);
    let mut pumps = Vec::new();
    let mut stdin: Option<Pin<Box<dyn AsyncWrite + Send>>> = None;
    let mut term = None;
    if let Some(m) = master {
        let w = m
            .try_clone()
            .map_err(|e| Status::internal(format!("terminal: {e}")))?;
        let r = tokio::fs::File::from_std(std::fs::File::from(
            m.try_clone()
                .map_err(|e| Status::internal(format!("terminal: {e}")))?,
        ));
        pumps.push(tokio::spawn(pump(r, tx.clone(), exec_output::Msg::Stdout)));
        if start.stdin {
            stdin = Some(Box::pin(tokio::fs::File::from_std(std::fs::File::from(w))));
        }
        term = Some(m);
    } else {
        if let Some(o) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(o, tx.clone(), exec_output::Msg::Stdout)));
        }
        if let Some(e) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(e, tx.clone(), exec_output::Msg::Stderr)));
        }
        if let Some(i) = child.stdin.take() {
            stdin = Some(Box::pin(i));
        }
    }
    // Input: stdin bytes and terminal sizes, until the client is done.
    let feeder = tokio::spawn(async move {
        while let Ok(Some(msg)) = input.message().await {
            match msg.msg {
                Some(exec_input::Msg::Stdin(b)) => {
                    if let Some(w) = stdin.as_mut()
                        && (w.write_all(&b).await.is_err() || w.flush().await.is_err())
                    {
                        stdin = None;
                    }
                }
                Some(exec_input::Msg::Resize(s)) => {
                    if let Some(m) = &term {
                        resize(m, &s);
                    }
                }
                Some(exec_input::Msg::CloseStdin(_)) => stdin = None,
                _ => {}
            }
        }
    });
    tokio::spawn(async move {
        let status = child.wait().await;
        // A terminal's reader ends with EIO once the process is gone; pipes
        // at EOF.
        for p in pumps {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), p).await;
        }
        feeder.abort();
        let code = match status {
            Ok(s) => s.code().unwrap_or(137),
            Err(_) => 125,
        };
        let _ = tx
            .send(Ok(ExecOutput {
                msg: Some(exec_output::Msg::Exit(code)),
            }))
            .await;
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}
