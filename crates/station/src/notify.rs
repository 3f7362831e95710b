//! `[notify] webhook`: a JSON event posted when an iPad is DONE, needs ATTENTION or FAILED, and
//! when the cart is complete (nothing working, waiting or pulled out half-done).
//!
//! It listens to the board's changes ([`crate::status::BoardChange`]) in a task of its own and
//! posts from a bounded queue in another, so a slow or dead receiver never holds a job up: when
//! the queue is full the oldest waiting event is dropped (and counted in the log). Each post is
//! retried with exponential backoff. The payload carries what the board shows (serial, slot,
//! model, name, state, the action for a person) and never a secret: no Wi-Fi password, key,
//! pair record or token is ever on the board. The webhook's address is itself a credential for
//! most chat services, so only its host is logged.
//!
//! The event has a `text` field, which Slack, Mattermost and Rocket.Chat incoming webhooks
//! show as the message (their documented minimal payload is `{"text": "…"}`), next to the
//! structured fields for other receivers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, broadcast};

use crate::config::NotifyConfig;
use crate::record::Attention;
use crate::status::{Board, BoardChange, DeviceStatus, Light, Summary};

/// Events kept while the receiver is slow; past this the oldest is dropped.
const QUEUE: usize = 64;
/// Posts per event, the first included.
const ATTEMPTS: u32 = 5;
/// Longest a receiver may take to answer one post.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Done,
    Attention,
    Failed,
    CartComplete,
}

/// The iPad an event is about, as the board shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ipad {
    pub serial: Option<String>,
    pub udid: String,
    pub slot: Option<String>,
    pub model: Option<String>,
    pub name: Option<String>,
}

/// The JSON posted to the webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub event: Kind,
    /// `[notify] station`, to tell a school's stations apart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub station: Option<String>,
    /// RFC 3339, UTC.
    pub at: String,
    /// One line for a person (what chat webhooks display).
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipad: Option<Ipad>,
    /// For `attention`: the reason, as in the ledger's JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Attention>,
    /// What happened, or for `attention` what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub summary: Summary,
}

/// The event for a device's new line, if it is one worth telling: the first line of a DONE,
/// FAILED or ATTENTION (a new attention reason counts as new).
pub fn device_event(before: Option<&DeviceStatus>, now: &DeviceStatus) -> Option<Kind> {
    let kind = match now.light {
        Light::Done => Kind::Done,
        Light::Attention => Kind::Attention,
        Light::Failed => Kind::Failed,
        _ => return None,
    };
    let same = before.is_some_and(|b| b.light == now.light && b.attention == now.attention);
    (!same).then_some(kind)
}

/// Whether the cart has just become complete: something is on it, and nothing is working,
/// waiting or pulled out before it was done — where a moment ago something was.
pub fn cart_completed(before: &Summary, now: &Summary) -> bool {
    let complete = |s: &Summary| {
        s.working + s.waiting + s.unplugged == 0 && s.done + s.attention + s.failed > 0
    };
    complete(now) && !complete(before)
}

/// Pause before post number `attempt + 1` (after `attempt` failed ones), `None` to give up:
/// 1, 2, 4, 8 s.
pub fn retry_delay(attempt: u32) -> Option<Duration> {
    (1..ATTEMPTS)
        .contains(&attempt)
        .then(|| Duration::from_secs(1 << (attempt - 1)))
}

fn text_for(kind: Kind, s: &DeviceStatus) -> String {
    let who = [
        s.name.clone(),
        s.serial.clone(),
        s.slot.as_ref().map(|x| format!("slot {x}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    match kind {
        Kind::Done => format!("✔ {who}: done — unplug it"),
        Kind::Attention => format!("▲ {who}: needs attention — {}", s.message),
        Kind::Failed => format!("✖ {who}: failed — {}", s.message),
        Kind::CartComplete => String::new(),
    }
}

/// Builds the event for a device's change.
pub fn event_for(kind: Kind, s: &DeviceStatus, summary: Summary, station: Option<&str>) -> Event {
    Event {
        event: kind,
        station: station.map(str::to_owned),
        at: crate::clock::rfc3339_utc(crate::clock::now_ms()),
        text: text_for(kind, s),
        ipad: Some(Ipad {
            serial: s.serial.clone(),
            udid: s.udid.clone(),
            slot: s.slot.clone(),
            model: s.model.clone(),
            name: s.name.clone(),
        }),
        reason: s.attention.clone(),
        message: Some(s.message.clone()),
        summary,
    }
}

/// The cart-complete event.
pub fn cart_complete_event(summary: Summary, station: Option<&str>) -> Event {
    Event {
        event: Kind::CartComplete,
        station: station.map(str::to_owned),
        at: crate::clock::rfc3339_utc(crate::clock::now_ms()),
        text: format!("■ the cart is complete — {summary}"),
        ipad: None,
        reason: None,
        message: None,
        summary,
    }
}

/// Events waiting to be posted: bounded, the oldest dropped first.
#[derive(Default)]
struct Queue {
    events: Mutex<VecDeque<Event>>,
    ready: Notify,
}

impl Queue {
    /// Adds an event; returns whether an older one had to be dropped for it.
    fn push(&self, event: Event) -> bool {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let dropped = events.len() >= QUEUE;
        if dropped {
            events.pop_front();
        }
        events.push_back(event);
        drop(events);
        self.ready.notify_one();
        dropped
    }

    async fn pop(&self) -> Event {
        loop {
            let next = self
                .events
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            if let Some(e) = next {
                return e;
            }
            self.ready.notified().await;
        }
    }
}

/// The notifier's two tasks; dropping it stops them.
pub struct Notifier {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Notifier {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("the webhook client could not be built: {0}")]
    Client(#[from] reqwest::Error),
}

impl Notifier {
    /// Starts following `board` and posting to the webhook.
    pub fn start(config: &NotifyConfig, board: &Board) -> Result<Notifier, NotifyError> {
        let client = reqwest::Client::builder()
            .timeout(POST_TIMEOUT)
            .connect_timeout(POST_TIMEOUT)
            // A redirect would carry the event somewhere the admin did not name.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let queue = Arc::new(Queue::default());
        let changes = board.subscribe();
        let watcher = tokio::spawn(watch(
            changes,
            board.clone(),
            queue.clone(),
            config.station.clone(),
        ));
        let poster = tokio::spawn(post_all(
            client,
            config.webhook.expose().to_owned(),
            config.webhook_host(),
            queue,
        ));
        Ok(Notifier {
            tasks: vec![watcher, poster],
        })
    }
}

/// Turns board changes into events on the queue.
async fn watch(
    mut changes: broadcast::Receiver<BoardChange>,
    board: Board,
    queue: Arc<Queue>,
    station: Option<String>,
) {
    let mut summary = board.summary();
    loop {
        let change = match changes.recv().await {
            Ok(c) => c,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!("notifications: {n} board changes were missed");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let BoardChange::Device { before, now } = change else {
            continue;
        };
        let new_summary = board.summary();
        if let Some(kind) = device_event(before.as_deref(), &now) {
            enqueue(
                &queue,
                event_for(kind, &now, new_summary, station.as_deref()),
            );
        }
        if cart_completed(&summary, &new_summary) {
            enqueue(&queue, cart_complete_event(new_summary, station.as_deref()));
        }
        summary = new_summary;
    }
}

fn enqueue(queue: &Queue, event: Event) {
    if queue.push(event) {
        tracing::warn!(
            "notifications: the webhook is behind; the oldest waiting event was dropped"
        );
    }
}

/// Posts events one after another, in order, each with its retries.
async fn post_all(client: reqwest::Client, url: String, host: String, queue: Arc<Queue>) {
    loop {
        let event = queue.pop().await;
        let Ok(body) = serde_json::to_vec(&event) else {
            continue;
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            let why = match result {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => format!("answered {}", r.status()),
                // Without the URL: it holds the webhook's credential.
                Err(e) => describe(&e),
            };
            match retry_delay(attempt) {
                Some(pause) => {
                    tracing::info!(
                        "notification to {host} not delivered ({why}); trying again in {pause:?}"
                    );
                    tokio::time::sleep(pause).await;
                }
                None => {
                    tracing::warn!(
                        "notification to {host} given up after {attempt} attempts ({why})"
                    );
                    break;
                }
            }
        }
    }
}

/// A reqwest error in words, without the URL it carries.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        "the request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(light: Light, attention: Option<Attention>) -> DeviceStatus {
        DeviceStatus {
            attention,
            ..DeviceStatus::new("U1", light, "m")
        }
    }

    #[test]
    fn which_lines_are_events() {
        use crate::record::Attention as A;
        type Line = (Light, Option<A>);
        let working = || (Light::Working, None);
        let done = || (Light::Done, None);
        let failed = || (Light::Failed, None);
        let prompt = || (Light::Attention, Some(A::TrustPrompt));
        let locked = || (Light::Attention, Some(A::Locked));
        let rows: Vec<(Option<Line>, Line, Option<Kind>)> = vec![
            (None, done(), Some(Kind::Done)),
            (Some(working()), done(), Some(Kind::Done)),
            (Some(done()), done(), None),
            (Some(working()), prompt(), Some(Kind::Attention)),
            (Some(prompt()), prompt(), None),
            (Some(prompt()), locked(), Some(Kind::Attention)),
            (Some(working()), failed(), Some(Kind::Failed)),
            (Some((Light::Ready, None)), working(), None),
            (Some(working()), (Light::Unplugged, None), None),
            (None, (Light::Waiting, None), None),
        ];
        for (before, (light, attention), want) in rows {
            let before = before.map(|(l, a)| status(l, a));
            assert_eq!(
                device_event(before.as_ref(), &status(light, attention.clone())),
                want,
                "{before:?} → {light:?} {attention:?}"
            );
        }
    }

    #[test]
    fn the_cart_completes_once_when_the_last_ipad_settles() {
        let s = |done, working, waiting, attention, failed, unplugged| Summary {
            done,
            working,
            waiting,
            attention,
            failed,
            unplugged,
        };
        let rows = [
            (s(0, 0, 0, 0, 0, 0), s(0, 1, 0, 0, 0, 0), false),
            (s(1, 1, 0, 0, 0, 0), s(2, 0, 0, 0, 0, 0), true),
            (s(1, 1, 0, 0, 0, 0), s(1, 0, 0, 1, 0, 0), true),
            (s(2, 0, 0, 0, 0, 0), s(2, 0, 0, 0, 0, 0), false),
            (s(1, 1, 1, 0, 0, 0), s(2, 0, 1, 0, 0, 0), false),
            (s(1, 1, 0, 0, 0, 1), s(2, 0, 0, 0, 0, 1), false),
            (s(0, 1, 0, 0, 0, 0), s(0, 0, 0, 0, 1, 0), true),
        ];
        for (before, now, want) in rows {
            assert_eq!(cart_completed(&before, &now), want, "{before:?} → {now:?}");
        }
    }

    #[test]
    fn retries_back_off_then_stop() {
        let delays: Vec<_> = (1..=ATTEMPTS).map(retry_delay).collect();
        assert_eq!(
            delays,
            [
                Some(Duration::from_secs(1)),
                Some(Duration::from_secs(2)),
                Some(Duration::from_secs(4)),
                Some(Duration::from_secs(8)),
                None
            ]
        );
    }

    #[test]
    fn a_full_queue_drops_the_oldest_event() {
        let queue = Queue::default();
        let event = |n: usize| {
            cart_complete_event(
                Summary {
                    done: n,
                    ..Summary::default()
                },
                None,
            )
        };
        for n in 0..QUEUE {
            assert!(!queue.push(event(n)));
        }
        assert!(queue.push(event(QUEUE)), "the queue was full");
        let events = queue.events.lock().unwrap();
        assert_eq!(events.len(), QUEUE);
        assert_eq!(events.front().map(|e| e.summary.done), Some(1));
    }

    #[test]
    fn a_done_event_reads_as_a_chat_message() {
        let s = DeviceStatus {
            serial: Some("DMPXK1234567".into()),
            slot: Some("3".into()),
            name: Some("Cart A - 03".into()),
            ..DeviceStatus::new("U1", Light::Done, "unplug")
        };
        let e = event_for(Kind::Done, &s, Summary::default(), Some("Library cart"));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["event"], "done");
        assert_eq!(json["station"], "Library cart");
        assert_eq!(
            json["text"],
            "✔ Cart A - 03, DMPXK1234567, slot 3: done — unplug it"
        );
        assert_eq!(json["ipad"]["serial"], "DMPXK1234567");
    }
}
