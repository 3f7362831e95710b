//! The optional services a configuration switches on: the web page (`[web]`) and the webhook
//! (`[notify]`). Without either section nothing is started: no task, no timer, no socket.

use std::sync::Arc;

use crate::config::StationConfig;
use crate::ledger::Ledger;
use crate::notify::Notifier;
use crate::status::Board;
use crate::web::WebServer;

/// What runs beside the daemon; dropping it stops everything it started.
#[derive(Default)]
pub struct Services {
    pub web: Option<WebServer>,
    pub notifier: Option<Notifier>,
}

impl Services {
    /// Starts what `config` asks for. A service that cannot start is reported on the board and
    /// left off: the station's work, preparing iPads, goes on without it.
    pub async fn start(config: &StationConfig, board: &Board, ledger: &Arc<Ledger>) -> Services {
        let mut services = Services::default();
        if let Some(web) = &config.web {
            let token = web.token.as_ref().map(|t| t.expose());
            match WebServer::start(web.listen, token, board.clone(), ledger.clone()).await {
                Ok(server) => {
                    board.note(web_note(server.addr, token.is_some()));
                    services.web = Some(server);
                }
                Err(e) => board.note(format!("web page not served: {e}")),
            }
        }
        if let Some(notify) = &config.notify {
            match Notifier::start(notify, board) {
                Ok(n) => {
                    board.note(format!(
                        "notifications: events are posted to {}",
                        notify.webhook_host()
                    ));
                    services.notifier = Some(n);
                }
                Err(e) => board.note(format!("notifications off: {e}")),
            }
        }
        services
    }
}

/// The line that tells where the page is (never the token itself).
fn web_note(addr: std::net::SocketAddr, token: bool) -> String {
    let mut note = format!("web page: http://{addr}/");
    if token {
        note.push_str(" (with ?token= and the token in web.token_file)");
    } else if !addr.ip().is_loopback() {
        note.push_str(
            " — open to anyone who can reach this machine: set web.token_file to ask for a token",
        );
    }
    note
}
