//! The operator's commands to a running station (`cartprep erase`, `retry`, `forget`): one JSON
//! line in, one JSON line out, on the unix socket `<state>/control.sock` (mode 0600, beside
//! `status.sock`). The daemon hands each request to the scheduler, which has one method per
//! command; the socket only carries them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// Which iPad a command is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Its serial number (any case).
    Serial(String),
    /// The slot it is plugged into, as the board names it.
    Slot(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Serial(s) => write!(f, "serial {s}"),
            Target::Slot(s) => write!(f, "slot {s}"),
        }
    }
}

/// A command from the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Erase the iPad (recorded with who asked and why), then prepare it.
    Erase {
        target: Target,
        reason: String,
        /// The user name the command line ran as (the socket adds the uid it sees).
        user: String,
    },
    /// Work on the iPad again now (after its attention was dealt with).
    Retry { target: Target },
    /// Drop the iPad's record from the ledger (the audit log keeps it).
    Forget { serial: String },
}

/// The station's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    pub message: String,
}

impl Reply {
    pub fn ok(message: impl Into<String>) -> Self {
        Reply {
            ok: true,
            message: message.into(),
        }
    }

    pub fn refused(message: impl Into<String>) -> Self {
        Reply {
            ok: false,
            message: message.into(),
        }
    }
}

/// A request as the daemon receives it: with the peer's uid and where to answer.
pub struct Command {
    pub request: Request,
    /// The uid of the process that sent it, as the kernel reports it.
    pub uid: Option<u32>,
    pub reply: oneshot::Sender<Reply>,
}

/// Why a command could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no station is running with state folder {folder} ({source})")]
    NotRunning {
        folder: PathBuf,
        source: std::io::Error,
    },
    #[error("the station did not answer within {} s", TIMEOUT.as_secs())]
    Timeout,
    #[error("talking to the station: {0}")]
    Io(#[from] std::io::Error),
    #[error("unreadable message: {0}")]
    Unreadable(#[from] serde_json::Error),
    #[error("message longer than {MAX_LINE} bytes")]
    TooLong,
}

/// Longest request or reply line.
pub const MAX_LINE: u64 = 64 * 1024;
/// How long either side waits for the other's line.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The control socket's path in a state folder.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("control.sock")
}

/// Reads one line, bounded in size and time.
async fn read_line<R: tokio::io::AsyncRead + Unpin>(r: R) -> Result<String, ControlError> {
    let mut line = String::new();
    let mut reader = BufReader::new(r.take(MAX_LINE + 1));
    tokio::time::timeout(TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| ControlError::Timeout)??;
    if line.len() as u64 > MAX_LINE {
        return Err(ControlError::TooLong);
    }
    Ok(line)
}

/// Serves the control socket: each connection sends one request and gets one reply.
pub async fn serve(path: &Path, commands: mpsc::Sender<Command>) -> std::io::Result<()> {
    // Erasing is for root (or whoever runs the station), not for every local user: the socket
    // is made 0600 under a temporary name and only then given its own, so it is never
    // reachable with looser permissions.
    let staging = path.with_extension(format!("sock.{}", std::process::id()));
    let _ = std::fs::remove_file(&staging);
    let listener = UnixListener::bind(&staging)?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&staging, path)?;
    loop {
        let (stream, _) = listener.accept().await?;
        let commands = commands.clone();
        tokio::spawn(async move {
            let _ = answer(stream, commands).await;
        });
    }
}

async fn answer(stream: UnixStream, commands: mpsc::Sender<Command>) -> Result<(), ControlError> {
    let uid = stream.peer_cred().ok().map(|c| c.uid());
    let (read, mut write) = stream.into_split();
    let reply = match read_line(read).await {
        Ok(line) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => {
                let (tx, rx) = oneshot::channel();
                let sent = commands
                    .send(Command {
                        request,
                        uid,
                        reply: tx,
                    })
                    .await;
                match sent {
                    Ok(()) => rx
                        .await
                        .unwrap_or_else(|_| Reply::refused("the station is stopping")),
                    Err(_) => Reply::refused("the station is stopping"),
                }
            }
            Err(e) => Reply::refused(format!("not a request: {e}")),
        },
        Err(e) => Reply::refused(e.to_string()),
    };
    let mut json = serde_json::to_vec(&reply)?;
    json.push(b'\n');
    tokio::time::timeout(TIMEOUT, write.write_all(&json))
        .await
        .map_err(|_| ControlError::Timeout)??;
    Ok(())
}

/// Sends a request to the station running with `state_dir` and returns its reply.
pub async fn send(state_dir: &Path, request: &Request) -> Result<Reply, ControlError> {
    let path = socket_path(state_dir);
    let stream = UnixStream::connect(&path)
        .await
        .map_err(|source| ControlError::NotRunning {
            folder: state_dir.to_owned(),
            source,
        })?;
    let (read, mut write) = stream.into_split();
    let mut json = serde_json::to_vec(request)?;
    json.push(b'\n');
    tokio::time::timeout(TIMEOUT, write.write_all(&json))
        .await
        .map_err(|_| ControlError::Timeout)??;
    let line = read_line(read).await?;
    Ok(serde_json::from_str(&line)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_reaches_the_station_and_its_reply_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path());
        let (tx, mut rx) = mpsc::channel(4);
        let serving = tokio::spawn({
            let path = path.clone();
            async move { serve(&path, tx).await }
        });
        let station = tokio::spawn(async move {
            let c = rx.recv().await.expect("a command");
            let echo = format!("{:?}", c.request);
            let _ = c.reply.send(Reply::ok(echo));
            c.uid
        });
        let request = Request::Erase {
            target: Target::Slot("3".into()),
            reason: "moving to the new MDM".into(),
            user: "technician".into(),
        };
        let mut reply = None;
        for _ in 0..100 {
            match send(dir.path(), &request).await {
                Ok(r) => {
                    reply = Some(r);
                    break;
                }
                Err(ControlError::NotRunning { .. }) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
        let reply = reply.expect("the socket answers");
        assert!(reply.ok);
        assert!(reply.message.contains("moving to the new MDM"), "{reply:?}");
        let uid = station.await.unwrap();
        assert!(uid.is_some(), "the peer's uid is known");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        serving.abort();
    }

    #[tokio::test]
    async fn garbage_is_refused_without_reaching_the_station() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path());
        let (tx, mut rx) = mpsc::channel(4);
        let serving = tokio::spawn({
            let path = path.clone();
            async move { serve(&path, tx).await }
        });
        let mut stream = None;
        for _ in 0..100 {
            if let Ok(s) = UnixStream::connect(&path).await {
                stream = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let stream = stream.expect("connects");
        let (read, mut write) = stream.into_split();
        write
            .write_all(b"{\"command\":\"format_disk\"}\n")
            .await
            .unwrap();
        let reply: Reply = serde_json::from_str(&read_line(read).await.unwrap()).unwrap();
        assert!(!reply.ok);
        assert!(reply.message.starts_with("not a request"), "{reply:?}");
        assert!(rx.try_recv().is_err(), "nothing reached the station");
        serving.abort();
    }
}
