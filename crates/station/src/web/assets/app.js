// The live board: one server-sent events stream (/events); the browser reconnects it by
// itself if it drops. The page never polls. Text from the station is set with textContent
// only, so a device name can never become markup.
"use strict";

const TOTAL_STEPS = 11;
const STEP_NUMBER = {
  detected: 1, paired: 2, identified: 3, assessed: 4, erased: 5, activated: 6,
  supervised: 7, escalated: 8, wifi_installed: 9, named: 10, done: 11,
};
const STEP_LABEL = { wifi_installed: "Wi-Fi installed" };
const WORD = {
  ready: "READY", waiting: "WAITING", working: "WORKING", done: "DONE — UNPLUG",
  attention: "ATTENTION", failed: "FAILED", unplugged: "UNPLUGGED",
};

// A `?token=` link passes its token on to the stream.
const token = new URLSearchParams(location.search).get("token");
const withToken = (path) => (token ? `${path}?token=${encodeURIComponent(token)}` : path);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function tile(d) {
  const t = el("article", "tile");
  t.dataset.light = d.light;
  t.dataset.udid = d.udid;
  if (d.serial) t.dataset.serial = d.serial;
  const top = el("div", "top");
  top.append(el("span", "slot", d.slot ? `slot ${d.slot}` : "slot ?"), el("span", "led"));
  t.append(top, el("div", "word", WORD[d.light] || d.light));
  if (d.light === "working" && d.step) {
    const k = STEP_NUMBER[d.step] || 0;
    t.append(el("div", "step", `step ${k} of ${TOTAL_STEPS}`));
    const bar = el("div", "bar");
    const fill = el("span");
    fill.style.width = `${Math.round((100 * k) / TOTAL_STEPS)}%`;
    bar.append(fill);
    t.append(bar);
  }
  if (d.name) t.append(el("div", "name", d.name));
  t.append(el("div", "serial", d.serial || `UDID …${d.udid.slice(-8)}`));
  if (d.model) t.append(el("div", "model", d.model));
  if (d.light === "attention") t.append(el("div", "action", d.message));
  else if (d.message) t.append(el("div", "message", d.message));
  return t;
}

let renders = 0;

function render(view) {
  const s = view.status;
  for (const k of ["done", "working", "waiting", "attention", "failed", "unplugged"]) {
    document.getElementById(`n-${k}`).textContent = s.summary[k];
  }
  const tiles = document.getElementById("tiles");
  if (s.devices.length === 0) {
    tiles.replaceChildren(el("p", "empty", "No iPad plugged in yet."));
  } else {
    tiles.replaceChildren(...s.devices.map(tile));
  }
  document.getElementById("history").replaceChildren(
    ...view.history.map((h) => {
      const li = el("li");
      const who = [h.name, h.serial || null, h.slot ? `slot ${h.slot}` : null].filter(Boolean).join(" · ");
      li.append(el("time", null, clock(h.at_ms)), el("span", null, `${who}: ${STEP_LABEL[h.step] || h.step}`));
      if (h.error) li.append(el("span", "error", ` — ${h.error}`));
      else if (h.note) li.append(el("span", null, ` — ${h.note}`));
      return li;
    }),
  );
  document.getElementById("notes").replaceChildren(...s.notes.slice().reverse().map((n) => el("li", null, n)));
  const link = document.getElementById("link");
  link.dataset.state = view.usbmuxd ? "live" : "usbmuxd-down";
  link.textContent = view.usbmuxd ? "live" : "live · usbmuxd not connected";
  // Counted for the browser test: updates arrive without a reload.
  renders += 1;
  document.body.dataset.renders = String(renders);
}

const source = new EventSource(withToken("events"));
source.addEventListener("board", (e) => render(JSON.parse(e.data)));
source.addEventListener("error", () => {
  const link = document.getElementById("link");
  link.dataset.state = "connecting";
  link.textContent = "reconnecting…";
});
