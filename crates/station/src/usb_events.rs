//! When to look at the USB bus again (for iPads usbmuxd cannot see: recovery, DFU): at start,
//! when usbmuxd reports an iPad arriving or leaving, and when the bus's folder changes (on
//! Linux the kernel adds or removes a node under `/dev/bus/usb`, seen with inotify the way
//! libusb's own hotplug support learns of devices through udev; the topology says which
//! folder). No timer: an idle station does not wake for this.

use std::path::Path;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

pub struct UsbEvents {
    // Kept for its Drop, which ends the kernel watch.
    _watcher: Option<notify::RecommendedWatcher>,
    tx: mpsc::UnboundedSender<()>,
    rx: mpsc::UnboundedReceiver<()>,
}

impl UsbEvents {
    /// Starts with one pending look (the bus as it is at start), then one whenever an entry
    /// of `changes` (`Topology::changes_path`) comes or goes.
    pub fn start(changes: Option<&Path>) -> UsbEvents {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(());
        let watcher = changes.and_then(|dir| watch_nodes(dir, tx.clone()));
        UsbEvents {
            _watcher: watcher,
            tx,
            rx,
        }
    }

    /// Something changed on the bus (usbmuxd saw an iPad come or go): look again.
    pub fn poke(&self) {
        let _ = self.tx.send(());
    }

    /// Resolves when the bus should be looked at; several pending reasons count as one.
    pub async fn next(&mut self) {
        if self.rx.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
        while self.rx.try_recv().is_ok() {}
    }
}

fn watch_nodes(dir: &Path, tx: mpsc::UnboundedSender<()>) -> Option<notify::RecommendedWatcher> {
    if !dir.is_dir() {
        return None;
    }
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event
            && (e.kind.is_create() || e.kind.is_remove())
        {
            let _ = tx.send(());
        }
    })
    .ok()?;
    watcher.watch(dir, RecursiveMode::Recursive).ok()?;
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_look_at_start_and_one_per_burst_of_pokes() {
        let mut usb = UsbEvents::start(None);
        usb.next().await;
        usb.poke();
        usb.poke();
        usb.next().await;
        let again = tokio::time::timeout(std::time::Duration::from_millis(50), usb.next()).await;
        assert!(again.is_err(), "two pokes before a look are one look");
    }

    #[tokio::test]
    async fn a_device_folder_appearing_is_a_look() {
        let bus = tempfile::tempdir().unwrap();
        let mut usb = UsbEvents::start(Some(bus.path()));
        usb.next().await;
        std::fs::create_dir(bus.path().join("1-1.4")).unwrap();
        let look = tokio::time::timeout(std::time::Duration::from_secs(10), usb.next()).await;
        assert!(
            look.is_ok(),
            "a new device folder makes the station look again"
        );
    }
}
