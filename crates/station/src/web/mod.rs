//! The read-only web page (`[web] listen`): the status board as tiles, live over server-sent
//! events, the same data as JSON, and `/metrics`.
//!
//! | path | what |
//! |---|---|
//! | `/` | the page (HTML, script and style embedded in the binary: no CDN) |
//! | `/events` | server-sent events: a `board` event with [`BoardView`] on every change |
//! | `/api/status` | the [`Snapshot`], as `cartprep status --json` prints it |
//! | `/api/devices` | every ledger record, as `cartprep ledger list --json` |
//! | `/api/devices/{serial}` | one record (serial or UDID), as `cartprep ledger show --json` |
//! | `/api/history` | the latest steps recorded, newest first |
//! | `/metrics` | Prometheus text ([`crate::metrics`]) |
//!
//! The server only reads: the board's snapshots and changes (`Board::subscribe`), and the
//! ledger. Nothing it serves is a secret (the board and ledger hold none); with
//! `token_file` every path but the script and style asks for the token.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use futures::Stream;
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::ledger::{Ledger, LedgerError};
use crate::record::{DeviceRecord, Step};
use crate::status::{Board, Snapshot};

pub mod auth;

/// Steps shown in the page's recent history.
pub const HISTORY_SHOWN: usize = 30;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// What the page shows, sent on each change.
#[derive(Debug, Clone, Serialize)]
pub struct BoardView {
    pub status: Snapshot,
    pub history: Vec<HistoryEntry>,
    pub usbmuxd: bool,
}

/// One step recorded in the ledger, for the page's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    pub at_ms: u64,
    pub serial: String,
    pub name: Option<String>,
    pub slot: Option<String>,
    pub step: Step,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The `n` latest history entries of all records, newest first.
pub fn recent_history(records: &[DeviceRecord], n: usize) -> Vec<HistoryEntry> {
    let mut all: Vec<HistoryEntry> = records
        .iter()
        .flat_map(|r| {
            r.history.iter().map(move |e| HistoryEntry {
                at_ms: e.at_ms,
                serial: r.serial.clone(),
                name: r.name.clone(),
                slot: r.slot.clone(),
                step: e.step,
                note: e.note.clone(),
                error: e.error.clone(),
            })
        })
        .collect();
    all.sort_by(|a, b| b.at_ms.cmp(&a.at_ms).then_with(|| b.step.cmp(&a.step)));
    all.truncate(n);
    all
}

/// A record by serial number or UDID, in any case (as `cartprep ledger show` finds it).
pub fn find_record<'a>(records: &'a [DeviceRecord], key: &str) -> Option<&'a DeviceRecord> {
    records
        .iter()
        .find(|r| r.serial.eq_ignore_ascii_case(key) || r.udid.eq_ignore_ascii_case(key))
}

#[derive(Clone)]
struct AppState {
    board: Board,
    ledger: Arc<Ledger>,
    token: Option<Arc<str>>,
    /// Becomes `true` when the server stops: open event streams end then.
    stopping: watch::Receiver<bool>,
}

impl AppState {
    fn view(&self) -> Result<BoardView, LedgerError> {
        let records = self.ledger.list()?;
        Ok(BoardView {
            status: self.board.snapshot(),
            history: recent_history(&records, HISTORY_SHOWN),
            usbmuxd: self.board.usbmuxd_up(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The page being served; dropping it stops the server: it accepts no more connections, and
/// open event streams end (so no connection outlives the station, holding its ledger).
pub struct WebServer {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Drop for WebServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl WebServer {
    /// Listens on `listen` and serves the page from `board` and `ledger`.
    pub async fn start(
        listen: SocketAddr,
        token: Option<&str>,
        board: Board,
        ledger: Arc<Ledger>,
    ) -> Result<WebServer, WebError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| WebError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| WebError::Bind {
            addr: listen,
            source,
        })?;
        let (stop, stopping) = watch::channel(false);
        let app = router(AppState {
            board,
            ledger,
            token: token.map(Arc::from),
            stopping: stopping.clone(),
        });
        let mut until_stopped = stopping;
        tokio::spawn(async move {
            let stopped = async move {
                let _ = until_stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!("the web page stopped: {e}");
            }
        });
        Ok(WebServer { addr, stop })
    }
}

fn router(state: AppState) -> Router {
    let guarded = Router::new()
        .route("/", get(index))
        .route("/events", get(events))
        .route("/api/status", get(api_status))
        .route("/api/devices", get(api_devices))
        .route("/api/devices/{serial}", get(api_device))
        .route("/api/history", get(api_history))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route(
            "/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/app.css",
            get(|| asset("text/css; charset=utf-8", APP_CSS)),
        )
        .merge(guarded)
        .layer(middleware::from_fn(common_headers))
        .with_state(state)
}

async fn require_token(State(s): State<AppState>, request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    if auth::authorized(s.token.as_deref(), header, request.uri().query()) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "this station's page needs its token: open the link with ?token=… (the token is in the file web.token_file names)\n",
    )
        .into_response()
}

/// Headers every answer gets: nothing cached (a board is always live), no referrer (a
/// `?token=` link must not travel on), scripts and styles from this server only.
async fn common_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    response
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML).await
}

fn ledger_failed(e: LedgerError) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the ledger could not be read: {e}\n"),
    )
        .into_response()
}

async fn api_status(State(s): State<AppState>) -> Json<Snapshot> {
    Json(s.board.snapshot())
}

async fn api_devices(State(s): State<AppState>) -> Response {
    match s.ledger.list() {
        Ok(records) => Json(records).into_response(),
        Err(e) => ledger_failed(e),
    }
}

async fn api_device(State(s): State<AppState>, Path(serial): Path<String>) -> Response {
    match s.ledger.list() {
        Ok(records) => match find_record(&records, &serial) {
            Some(r) => Json(r).into_response(),
            None => (
                StatusCode::NOT_FOUND,
                "no iPad with this serial number or UDID in the ledger\n",
            )
                .into_response(),
        },
        Err(e) => ledger_failed(e),
    }
}

async fn api_history(State(s): State<AppState>) -> Response {
    match s.ledger.list() {
        Ok(records) => Json(recent_history(&records, HISTORY_SHOWN)).into_response(),
        Err(e) => ledger_failed(e),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let records = match s.ledger.list() {
        Ok(r) => r,
        Err(e) => return ledger_failed(e),
    };
    let audit_log_bytes = std::fs::metadata(s.ledger.audit_path())
        .ok()
        .map(|m| m.len());
    let snapshot = s.board.snapshot();
    match crate::metrics::render(&crate::metrics::Inputs {
        snapshot: &snapshot,
        usbmuxd_up: s.board.usbmuxd_up(),
        records: &records,
        audit_log_bytes,
    }) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("metrics: {e}\n")).into_response(),
    }
}

/// The board as server-sent events: the whole view at once, then again after each change
/// (changes that arrive together are sent as one).
async fn events(
    State(s): State<AppState>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    // Subscribed before the first view is taken, so no change falls between the two.
    let changes = s.board.subscribe();
    let stream =
        futures::stream::unfold((s, changes, true), |(s, mut changes, first)| async move {
            if !first {
                let mut stopping = s.stopping.clone();
                tokio::select! {
                    change = changes.recv() => match change {
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    _ = stopping.wait_for(|stop| *stop) => return None,
                }
                while matches!(
                    changes.try_recv(),
                    Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_))
                ) {}
            }
            let event = match s.view() {
                Ok(view) => SseEvent::default()
                    .event("board")
                    .json_data(&view)
                    .unwrap_or_else(|_| {
                        SseEvent::default().event("error").data("unencodable view")
                    }),
                Err(e) => SseEvent::default()
                    .event("error")
                    .data(format!("the ledger could not be read: {e}")),
            };
            Some((Ok(event), (s, changes, false)))
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::DeviceRecord;

    #[test]
    fn history_is_newest_first_and_bounded() {
        let mut a = DeviceRecord::new_at("A", "ua", 1_000);
        a.begin_attempt();
        a.advance(Step::Paired, None);
        a.history[1].at_ms = 3_000;
        let mut b = DeviceRecord::new_at("B", "ub", 2_000);
        b.begin_attempt();
        b.fail("no answer");
        b.history[1].at_ms = 4_000;
        let history = recent_history(&[a, b], 3);
        let seen: Vec<(&str, u64)> = history
            .iter()
            .map(|h| (h.serial.as_str(), h.at_ms))
            .collect();
        assert_eq!(seen, [("B", 4_000), ("A", 3_000), ("B", 2_000)]);
        assert_eq!(history[0].error.as_deref(), Some("no answer"));
    }

    #[test]
    fn the_page_numbers_the_steps_as_the_station_does() {
        assert!(APP_JS.contains(&format!("const TOTAL_STEPS = {};", Step::TOTAL)));
        for step in Step::ALL {
            let word = serde_json::to_value(step).unwrap();
            let entry = format!("{}: {}", word.as_str().unwrap(), step.number());
            assert!(APP_JS.contains(&entry), "app.js lacks {entry}");
        }
    }

    #[test]
    fn records_are_found_by_serial_or_udid_in_any_case() {
        let records = [
            DeviceRecord::new_at("DMPXK1", "00008030-AAAA", 1),
            DeviceRecord::new_at("DMPXK2", "00008030-BBBB", 2),
        ];
        assert_eq!(
            find_record(&records, "dmpxk2").map(|r| r.serial.as_str()),
            Some("DMPXK2")
        );
        assert_eq!(
            find_record(&records, "00008030-aaaa").map(|r| r.serial.as_str()),
            Some("DMPXK1")
        );
        assert!(find_record(&records, "DMPXK3").is_none());
    }
}
