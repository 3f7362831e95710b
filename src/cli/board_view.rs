//! The full-screen board: what a volunteer across the room reads on an 80×24 terminal. One
//! row per slot (or per iPad when slots are unknown) with its state word in colour, a progress
//! bar and the step in words; the ATTENTION items pinned at the top until resolved; a header
//! with the cart's summary, the MDM, the Wi-Fi and the time per iPad. Drawing only: the
//! screen loop is in `board_screen.rs`; the data is the status snapshot.

use std::collections::BTreeMap;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use station::Step;
use station::status::{DeviceStatus, Light, Snapshot};

/// What the station is set up to do, for the header.
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub organization: String,
    pub mdm: String,
    pub wifi: String,
}

/// Everything one frame shows.
#[derive(Debug, Clone, Default)]
pub struct Screen {
    pub header: Header,
    pub snapshot: Snapshot,
    /// Wall clock, "HH:MM:SS".
    pub clock: String,
    /// The average time from start to done, when an iPad was prepared.
    pub per_ipad_s: Option<u64>,
}

/// The state word and its colour.
pub fn word(light: Light) -> (&'static str, Color) {
    match light {
        Light::Ready => ("READY", Color::Blue),
        Light::Waiting => ("WAITING", Color::Gray),
        Light::Working => ("WORKING", Color::Yellow),
        Light::Done => ("DONE", Color::Green),
        Light::Attention => ("ATTENTION", Color::Magenta),
        Light::Failed => ("FAILED", Color::Red),
        Light::Unplugged => ("UNPLUGGED", Color::Gray),
        Light::Free => ("FREE", Color::Green),
    }
}

/// One row per slot: the latest status of each slot (or of each iPad without a slot), in slot
/// order (numbers as numbers).
pub fn rows(snapshot: &Snapshot) -> Vec<&DeviceStatus> {
    let mut latest: BTreeMap<(u64, String), &DeviceStatus> = BTreeMap::new();
    for d in &snapshot.devices {
        let key = match &d.slot {
            Some(s) => (s.parse::<u64>().unwrap_or(u64::MAX - 1), s.clone()),
            None => (u64::MAX, d.udid.clone()),
        };
        let newer = latest
            .get(&key)
            .is_none_or(|old| old.since_ms <= d.since_ms);
        if newer {
            latest.insert(key, d);
        }
    }
    latest.into_values().collect()
}

/// "■■■■□□□□ 4/8" for a working iPad; full for a done one.
fn progress(d: &DeviceStatus) -> String {
    let total = Step::SHOWN_TOTAL as usize;
    let k = match d.light {
        Light::Done | Light::Free => total,
        Light::Working => d.current.and_then(Step::shown).unwrap_or(0) as usize,
        _ => return " ".repeat(total + 5),
    };
    format!(
        "{}{} {k}/{total}",
        "\u{25a0}".repeat(k),
        "\u{25a1}".repeat(total - k)
    )
}

fn who(d: &DeviceStatus) -> String {
    let id = d.serial.clone().unwrap_or_else(|| {
        let tail: String = d.udid.chars().rev().take(8).collect();
        format!("\u{2026}{}", tail.chars().rev().collect::<String>())
    });
    match &d.name {
        Some(n) => format!("{id} \u{201c}{n}\u{201d}"),
        None => id,
    }
}

fn slot(d: &DeviceStatus) -> String {
    d.slot.clone().unwrap_or_else(|| "?".into())
}

fn header(screen: &Screen) -> Vec<Line<'static>> {
    let s = &screen.snapshot.summary;
    let h = &screen.header;
    let per_ipad = screen
        .per_ipad_s
        .map(|t| format!(" \u{b7} {}m{:02}s per iPad", t / 60, t % 60))
        .unwrap_or_default();
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut lines = vec![
        Line::from(vec![
            Span::styled(format!("cartprep \u{2014} {}", h.organization), bold),
            Span::raw(format!("  {}", screen.clock)),
        ]),
        Line::from(format!(
            "MDM {}  \u{b7}  Wi-Fi \u{201c}{}\u{201d}",
            h.mdm, h.wifi
        )),
        Line::from(vec![
            Span::styled(format!("{} done", s.done), bold.fg(Color::Green)),
            Span::raw(format!(
                " \u{b7} {} working \u{b7} {} waiting \u{b7} ",
                s.working, s.waiting
            )),
            Span::styled(
                format!("{} attention", s.attention),
                if s.attention > 0 {
                    bold.fg(Color::Magenta)
                } else {
                    Style::default()
                },
            ),
            Span::raw(format!(" \u{b7} {} failed{per_ipad}", s.failed)),
        ]),
    ];
    if let Some(w) = &screen.snapshot.waiting_for {
        lines.push(Line::styled(w.clone(), bold.fg(Color::Red)));
    } else if let Some(note) = screen.snapshot.notes.last() {
        // The station's latest note (a reload, the demo pulling an iPad out…).
        lines.push(Line::styled(note.clone(), Style::default().fg(Color::Gray)));
    }
    lines
}

fn attention_lines(items: &[&DeviceStatus]) -> Vec<Line<'static>> {
    items
        .iter()
        .map(|d| {
            let what = match &d.action {
                Some(a) => format!("{} \u{2014} {a}", d.message),
                None => d.message.clone(),
            };
            Line::from(vec![
                Span::styled(
                    format!("slot {} ", slot(d)),
                    Style::default().add_modifier(Modifier::BOLD),
                ),
                Span::raw(format!("{}: {what}", who(d))),
            ])
        })
        .collect()
}

fn row_line(d: &DeviceStatus) -> Line<'static> {
    let (w, colour) = word(d.light);
    let badge = Style::default()
        .fg(Color::Black)
        .bg(colour)
        .add_modifier(Modifier::BOLD);
    Line::from(vec![
        Span::styled(
            format!("{:>3} ", slot(d)),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::styled(format!(" {w:<9} "), badge),
        Span::styled(format!(" {} ", progress(d)), Style::default().fg(colour)),
        // Who first: a long message is what the edge of the screen cuts.
        Span::styled(who(d), Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!(" \u{b7} {}", d.message)),
    ])
}

/// Draws one frame.
pub fn draw(frame: &mut Frame, screen: &Screen) {
    let area = frame.area();
    let head = header(screen);
    let rows = rows(&screen.snapshot);
    let attention: Vec<&DeviceStatus> = rows
        .iter()
        .copied()
        .filter(|d| d.light == Light::Attention)
        .collect();
    let attention_height = if attention.is_empty() {
        0
    } else {
        // Two lines an item (long instructions wrap), plus the border, at most half the screen.
        (attention.len() as u16 * 2 + 2).min(area.height / 2)
    };
    let [top, pinned, list] = Layout::vertical([
        Constraint::Length(head.len() as u16 + 1),
        Constraint::Length(attention_height),
        Constraint::Min(0),
    ])
    .areas(area);
    frame.render_widget(
        Paragraph::new(head).block(Block::default().borders(Borders::BOTTOM)),
        top,
    );
    if !attention.is_empty() {
        frame.render_widget(
            Paragraph::new(attention_lines(&attention))
                .wrap(Wrap { trim: false })
                .block(
                    Block::default()
                        .borders(Borders::ALL)
                        .border_style(Style::default().fg(Color::Magenta))
                        .title(Span::styled(
                            " ATTENTION ",
                            Style::default()
                                .fg(Color::Magenta)
                                .add_modifier(Modifier::BOLD),
                        )),
                ),
            pinned,
        );
    }
    let lines: Vec<Line> = if rows.is_empty() {
        vec![Line::from("no iPad yet \u{2014} plug one in")]
    } else {
        rows.iter().map(|d| row_line(d)).collect()
    };
    frame.render_widget(Paragraph::new(lines), list);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use station::Attention;
    use station::status::Summary;

    fn device(slot: u32, light: Light, step: Option<Step>, message: &str) -> DeviceStatus {
        DeviceStatus {
            serial: Some(format!("F9FZ0000{slot:04}")),
            slot: Some(slot.to_string()),
            current: step,
            since_ms: 1_000 + u64::from(slot),
            ..DeviceStatus::new(format!("udid-{slot}"), light, message)
        }
    }

    fn every_state() -> Screen {
        let mut attention = device(
            4,
            Light::Attention,
            None,
            "already set up; erase is not allowed by policy",
        );
        attention.attention = Some(Attention::AlreadySetUp);
        attention.action = Some("to erase it: cartprep erase F9FZ00000004".into());
        let mut done = device(2, Light::Done, None, "prepared \u{2014} unplug");
        done.name = Some("Cart A - 02".into());
        let devices = vec![
            device(1, Light::Ready, None, "plugged in"),
            done,
            device(3, Light::Working, Some(Step::Supervised), "supervising"),
            attention,
            device(5, Light::Waiting, None, "waiting \u{2014} 1 ahead of it"),
            device(
                6,
                Light::Failed,
                Some(Step::Activated),
                "the activation server did not answer",
            ),
            device(
                7,
                Light::Unplugged,
                None,
                "unplugged during \u{201c}activating\u{201d}",
            ),
            device(8, Light::Free, None, "free \u{2014} plug the next iPad"),
        ];
        Screen {
            header: Header {
                organization: "Springfield Elementary".into(),
                mdm: "https://mdm.example.org/enroll".into(),
                wifi: "Springfield-Students".into(),
            },
            snapshot: Snapshot {
                devices,
                summary: Summary {
                    done: 2,
                    working: 1,
                    waiting: 2,
                    attention: 1,
                    failed: 1,
                    unplugged: 1,
                },
                notes: vec![],
                waiting_for: None,
            },
            clock: "12:04:05".into(),
            per_ipad_s: Some(62),
        }
    }

    /// The screen as text, one string per terminal line.
    fn render(screen: &Screen) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        terminal.draw(|f| draw(f, screen)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        (0..24)
            .map(|y| {
                (0..80)
                    .map(|x| buffer[(x, y)].symbol().to_string())
                    .collect()
            })
            .collect()
    }

    fn line_of<'a>(lines: &'a [String], needle: &str) -> (usize, &'a String) {
        lines
            .iter()
            .enumerate()
            .find(|(_, l)| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not on the screen:\n{}", lines.join("\n")))
    }

    #[test]
    fn every_state_has_its_word_on_its_slots_row() {
        let lines = render(&every_state());
        let expected = [
            ("1", "READY", "plugged in"),
            ("2", "DONE", "8/8"),
            ("3", "WORKING", "5/8 F9FZ00000003 · supervising"),
            ("4", "ATTENTION", "already set up"),
            ("5", "WAITING", "1 ahead of it"),
            ("6", "FAILED", "the activation server"),
            ("7", "UNPLUGGED", "during “activating”"),
            ("8", "FREE", "free — plug the next iPad"),
        ];
        for (slot, word, text) in expected {
            let (_, row) = line_of(&lines, &format!("  {slot}  {word} "));
            assert!(row.contains(text), "slot {slot}: {row}");
        }
    }

    #[test]
    fn attention_is_pinned_above_the_slots_with_its_command() {
        let lines = render(&every_state());
        let (pinned, _) = line_of(&lines, "ATTENTION ─");
        let (command, _) = line_of(&lines, "cartprep erase F9FZ00000004");
        let (first_row, _) = line_of(&lines, "  1  READY ");
        assert!(
            pinned < command && command < first_row,
            "{}",
            lines.join("\n")
        );
    }

    #[test]
    fn the_header_names_the_cart_the_mdm_the_wifi_and_the_time_per_ipad() {
        let lines = render(&every_state());
        let top = lines[..4].join("\n");
        for text in [
            "Springfield Elementary",
            "12:04:05",
            "MDM https://mdm.example.org/enroll",
            "Wi-Fi “Springfield-Students”",
            "2 done",
            "1 attention",
            "1m02s per iPad",
        ] {
            assert!(top.contains(text), "{text:?} in\n{top}");
        }
    }

    #[test]
    fn a_station_waiting_for_usbmuxd_says_so_and_an_empty_cart_asks_for_an_ipad() {
        let mut screen = every_state();
        screen.snapshot.devices.clear();
        screen.snapshot.waiting_for = Some("waiting for usbmuxd at /var/run/usbmuxd".into());
        let lines = render(&screen);
        line_of(&lines, "waiting for usbmuxd at /var/run/usbmuxd");
        line_of(&lines, "no iPad yet — plug one in");
    }

    #[test]
    fn a_slot_shows_its_latest_ipad_only() {
        let mut screen = every_state();
        let mut next = device(8, Light::Working, Some(Step::Paired), "pairing");
        next.udid = "udid-next".into();
        next.since_ms = 99_999;
        screen.snapshot.devices.push(next);
        let lines = render(&screen);
        assert!(
            !lines.iter().any(|l| l.contains("FREE")),
            "{}",
            lines.join("\n")
        );
        line_of(&lines, "2/8 F9FZ00000008 · pairing");
    }
}
