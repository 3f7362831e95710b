//! The live web page in a real browser: `cartprep demo --web` serves it, headless Chromium
//! (Debian's `chromium`, installed by `.ci/run`) loads it once and watches its tiles reach DONE
//! and ATTENTION as the demo goes on, without a reload; screenshots are kept for CI (desktop and
//! phone widths). Against the same running demo: `/api/status` equals `cartprep status --json`,
//! `/api/devices` equals `cartprep ledger list --json`, and `/metrics` parses as Prometheus text
//! whose counts are the ledger's.
//!
//! Chromium is driven over the DevTools protocol (a WebSocket, with the `tungstenite` crate):
//! Debian's `chromium-driver` would add a WebDriver server and a client crate for the same three
//! things this needs (navigate, evaluate, screenshot).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use station::{Ledger, Outcome};
use tungstenite::stream::MaybeTlsStream;

const CARTPREP: &str = env!("CARGO_BIN_EXE_cartprep");
/// Where the screenshots go; `.ci/run` prints these paths.
const SCREENSHOT_DIR: &str = env!("CARGO_TARGET_TMPDIR");
/// The longest any one wait in this test may take.
const WAIT: Duration = Duration::from_secs(120);

/// Polls `what` every 100 ms until it gives a value, failing after [`WAIT`].
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(started.elapsed() < WAIT, "waited {WAIT:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child process killed when the test ends, whatever happens.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `cartprep demo --web 127.0.0.1:0`, its standard output collected line by line.
struct Demo {
    _child: Killed,
    lines: Arc<Mutex<Vec<String>>>,
    station: PathBuf,
}

impl Demo {
    fn start(state: &Path) -> Demo {
        let mut child = Command::new(CARTPREP)
            .args(["demo", "--web", "127.0.0.1:0", "--state"])
            .arg(state)
            .env_remove("CARTPREP_LOG")
            .env_remove("USBMUXD_SOCKET_ADDRESS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cartprep demo starts");
        let stdout = child.stdout.take().expect("piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        std::thread::spawn({
            let lines = lines.clone();
            move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            }
        });
        Demo {
            _child: Killed(child),
            lines,
            station: state.join("station"),
        }
    }

    fn line_with(&self, what: &str) -> Option<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(what))
            .cloned()
    }

    /// The page's address, from the station's note "web page: http://…/".
    fn url(&self) -> String {
        let line = wait_for("the demo's web page address", || {
            self.line_with("web page: http://")
        });
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .expect("an address");
        url.to_owned()
    }
}

/// `cartprep ARGS` → its standard output, which must be a success.
fn cartprep(args: &[&str]) -> String {
    let out = Command::new(CARTPREP)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("cartprep runs");
    assert!(
        out.status.success(),
        "cartprep {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// Headless Chromium with a fresh profile and the DevTools protocol on a free port.
struct Chromium {
    _process: Killed,
    _profile: tempfile::TempDir,
    socket: tungstenite::WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: Option<String>,
}

impl Chromium {
    /// The browser binary: `$CHROMIUM`, else Debian's `chromium` on the PATH.
    fn binary() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("CHROMIUM") {
            return Some(PathBuf::from(p));
        }
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    }

    fn start(binary: &Path) -> Chromium {
        let profile = tempfile::Builder::new()
            .prefix("cartprep-chromium-")
            .tempdir()
            .unwrap();
        let process = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1200,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        let process = Killed(process);
        // Chromium writes the port it chose and the browser's endpoint here when it is ready.
        let active = profile.path().join("DevToolsActivePort");
        let endpoint = wait_for("Chromium's DevToolsActivePort", || {
            let text = std::fs::read_to_string(&active).ok()?;
            let mut lines = text.lines();
            let (port, path) = (lines.next()?, lines.next()?);
            Some(format!("ws://127.0.0.1:{port}{path}"))
        });
        let (mut socket, _) = tungstenite::connect(&endpoint).expect("DevTools WebSocket");
        if let MaybeTlsStream::Plain(s) = socket.get_mut() {
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        }
        Chromium {
            _process: process,
            _profile: profile,
            socket,
            next_id: 0,
            session: None,
        }
    }

    /// Sends a DevTools command (to the attached page, once there is one) and returns its
    /// result, skipping the events that arrive meanwhile.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            message["sessionId"] = json!(s);
        }
        self.socket
            .send(tungstenite::Message::text(message.to_string()))
            .expect("DevTools send");
        loop {
            let reply = self.socket.read().expect("DevTools reply");
            let tungstenite::Message::Text(text) = reply else {
                continue;
            };
            let v: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Opens a tab and attaches to it.
    fn open_tab(&mut self) {
        let target = self.call("Target.createTarget", json!({ "url": "about:blank" }));
        let attached = self.call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        );
        self.session = Some(attached["sessionId"].as_str().expect("session").to_owned());
    }

    fn evaluate(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        r["result"]["value"].clone()
    }

    fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("image data"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, png).expect("screenshot written");
    }
}

/// What the page shows: its tiles (UDID → light), how many updates it rendered, and the
/// marker set on it after it loaded (gone if it reloaded).
#[derive(Debug)]
struct PageState {
    tiles: BTreeMap<String, String>,
    renders: u64,
    marker: Option<String>,
}

const READ_PAGE: &str = r#"JSON.stringify({
  marker: window.__cartprepMarker || null,
  renders: Number(document.body.dataset.renders || 0),
  tiles: [...document.querySelectorAll(".tile")].map(t => [t.dataset.udid, t.dataset.light]),
})"#;

fn read_page(browser: &mut Chromium) -> PageState {
    let text = browser.evaluate(READ_PAGE);
    let v: Value = serde_json::from_str(text.as_str().expect("a string")).expect("page JSON");
    PageState {
        tiles: v["tiles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t[0].as_str().unwrap().into(), t[1].as_str().unwrap().into()))
            .collect(),
        renders: v["renders"].as_u64().unwrap(),
        marker: v["marker"].as_str().map(str::to_owned),
    }
}

fn get(rt: &tokio::runtime::Runtime, url: &str) -> String {
    rt.block_on(async {
        let r = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("GET");
        assert!(r.status().is_success(), "{url}: {}", r.status());
        r.text().await.expect("body")
    })
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn the_demo_page_follows_the_cart_live_in_chromium_and_its_json_and_metrics_match() {
    let Some(binary) = Chromium::binary() else {
        // CI installs Chromium and must run this; a developer machine may not have it.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have Chromium (.ci/run installs Debian's chromium)"
        );
        eprintln!("SKIPPED: no chromium on the PATH (apt-get install chromium)");
        return;
    };
    let mut browser = Chromium::start(&binary);
    browser.open_tab();
    browser.call("Page.enable", json!({}));

    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(&dir.path().join("demo"));
    let url = demo.url();
    browser.call("Page.navigate", json!({ "url": url }));
    wait_for("the page to load", || {
        let ready = browser.evaluate("document.readyState === 'complete' && location.href");
        (ready.as_str() == Some(url.as_str())).then_some(())
    });
    browser.evaluate("window.__cartprepMarker = 'loaded once'");

    // Every light each tile showed, as the demo goes on.
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let last = wait_for("six tiles at DONE or ATTENTION", || {
        let page = read_page(&mut browser);
        for (udid, light) in &page.tiles {
            seen.entry(udid.clone()).or_default().insert(light.clone());
        }
        let settled = page
            .tiles
            .values()
            .filter(|l| matches!(l.as_str(), "done" | "attention"))
            .count();
        (page.tiles.len() == 6 && settled == 6).then_some(page)
    });
    let count = |light: &str| last.tiles.values().filter(|l| *l == light).count();
    assert_eq!((count("done"), count("attention")), (4, 2), "{last:?}");
    assert_eq!(
        last.marker.as_deref(),
        Some("loaded once"),
        "the page was never reloaded"
    );
    assert!(last.renders > 1, "updates arrived live: {last:?}");
    assert!(
        seen.values().any(|lights| lights.contains("working")),
        "the page showed iPads being worked on before they settled: {seen:?}"
    );

    let desktop = Path::new(SCREENSHOT_DIR).join("web-board.png");
    browser.screenshot(&desktop);
    browser.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true }),
    );
    let fits = browser.evaluate("document.documentElement.scrollWidth <= window.innerWidth");
    assert_eq!(fits, json!(true), "no sideways scrolling on a phone");
    let phone = Path::new(SCREENSHOT_DIR).join("web-board-phone.png");
    browser.screenshot(&phone);
    eprintln!("screenshots: {} {}", desktop.display(), phone.display());

    // The cart is finished: what the page's JSON says is what the commands say.
    wait_for("the demo to say the cart is finished", || {
        demo.line_with(">>> demo: the cart is finished")
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let state = demo.station.to_str().unwrap();
    assert_eq!(
        json_of(&get(&rt, &format!("{url}api/status"))),
        json_of(&cartprep(&["status", "--json", "--state", state])),
        "/api/status is `cartprep status --json`"
    );
    assert_eq!(
        json_of(&get(&rt, &format!("{url}api/devices"))),
        json_of(&cartprep(&["ledger", "list", "--json", "--state", state])),
        "/api/devices is `cartprep ledger list --json`"
    );
    let records = Ledger::read_only(&demo.station).expect("the ledger reads");
    let serial = &records[0].serial;
    assert_eq!(
        json_of(&get(&rt, &format!("{url}api/devices/{serial}"))),
        json_of(&cartprep(&[
            "ledger", "show", serial, "--json", "--state", state
        ])),
        "/api/devices/SERIAL is `cartprep ledger show SERIAL --json`"
    );

    let text = get(&rt, &format!("{url}metrics"));
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("/metrics is Prometheus text");
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("{name} {label:?} in\n{text}"));
        match sample.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    let done = records
        .iter()
        .filter(|r| r.outcome == Outcome::Done)
        .count();
    assert_eq!(value("cartprep_prepared_total", None), done as f64);
    assert_eq!(value("cartprep_ledger_records", None), records.len() as f64);
    assert_eq!(
        value("cartprep_ipads", Some(("state", "done"))),
        done as f64
    );
    for reason in ["already_set_up", "activation_locked"] {
        let in_ledger = records
            .iter()
            .filter(|r| {
                matches!(&r.outcome, Outcome::NeedsAttention(a)
                    if serde_json::to_value(a).unwrap() == json!(reason))
            })
            .count();
        assert_eq!(in_ledger, 1, "{reason} in the demo's ledger");
        assert_eq!(
            value("cartprep_attention_ipads", Some(("reason", reason))),
            in_ledger as f64
        );
    }
    assert_eq!(value("cartprep_usbmuxd_connected", None), 1.0);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "cartprep_step_duration_seconds"
                && matches!(s.value, prometheus_parse::Value::Histogram(_))),
        "step durations are histograms"
    );
    drop(demo);
}
