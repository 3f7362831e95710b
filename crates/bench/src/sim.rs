//! The simulated cart every phase uses: one simulator on its own runtime (threads named
//! `sim`, so their CPU is told apart from the station's), iPads activated and in Setup
//! Assistant, all unplugged until a phase plugs them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use simulator::scenario::{DeviceEntry, Scenario};

/// Identities (and so device keys) derive from this: the same iPads every run.
const SEED: u64 = 9;

pub struct Cart {
    pub rt: tokio::runtime::Runtime,
    pub sim: simulator::Simulator,
    zero: usize,
    slow: usize,
    /// Next unused slot of each kind (zero latency: 1..=zero; slow: zero+1..=zero+slow).
    cursors: std::sync::Mutex<(usize, usize)>,
}

/// An iPad handed to one client for one measurement.
#[derive(Clone)]
pub struct Ipad {
    pub slot: u32,
    pub udid: String,
    pub dev: Arc<simulator::ipad::VirtualIpad>,
}

impl Ipad {
    /// (replies, usbmux connections) the iPad has served so far.
    pub fn traffic(&self) -> (u64, u64) {
        self.dev.traffic.counts()
    }
}

impl Cart {
    /// A cart with `zero` iPads answering at once and `slow` answering after `latency_ms`.
    /// Device keys are kept in `keys` between runs (generating 2048-bit keys is what makes
    /// a first run slow).
    pub fn start(
        zero: usize,
        slow: usize,
        latency_ms: u64,
        state: &Path,
        keys: &Path,
    ) -> anyhow::Result<Cart> {
        Cart::build(zero, slow, latency_ms, false, state, keys)
    }

    /// `n` iPads, all plugged at start.
    pub fn start_plugged(n: usize, state: &Path, keys: &Path) -> anyhow::Result<Cart> {
        Cart::build(n, 0, 0, true, state, keys)
    }

    fn build(
        zero: usize,
        slow: usize,
        latency_ms: u64,
        plugged: bool,
        state: &Path,
        keys: &Path,
    ) -> anyhow::Result<Cart> {
        std::fs::create_dir_all(state)?;
        std::fs::create_dir_all(keys)?;
        // The simulator keeps device keys in <state>/devices.
        let link = state.join("devices");
        if !link.exists() {
            std::os::unix::fs::symlink(keys, &link).context("linking the device key cache")?;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sim")
            // Its threads must outlive every measurement: the CPU of a thread that exited
            // would be counted as the station's.
            .thread_keep_alive(Duration::from_secs(24 * 3600))
            .enable_all()
            .build()?;
        let mut scenario = Scenario {
            seed: SEED,
            ..Scenario::default()
        };
        for i in 0..zero + slow {
            let ms = if i < zero { 0 } else { latency_ms };
            scenario.devices.push(DeviceEntry {
                model: Some("iPad12,1".into()),
                ios: Some("18.5".into()),
                activated: Some(true),
                latency_ms: ms,
                plugged: Some(plugged),
                ..DeviceEntry::default()
            });
        }
        let sim = rt
            .block_on(simulator::Simulator::start(simulator::SimConfig {
                scenario,
                listen: vec!["127.0.0.1:0".parse()?],
                state_dir: state.to_owned(),
                activated: true,
            }))
            .context("starting the simulator")?;
        Ok(Cart {
            rt,
            sim,
            zero,
            slow,
            cursors: std::sync::Mutex::new((1, zero + 1)),
        })
    }

    /// `n` unused iPads with the given latency (0 or the cart's slow latency), their device
    /// keys ready.
    pub fn take(&self, n: usize, latency_ms: u64) -> anyhow::Result<Vec<Ipad>> {
        let mut cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        let (cursor, end) = if latency_ms == 0 {
            (&mut cursors.0, self.zero)
        } else {
            (&mut cursors.1, self.zero + self.slow)
        };
        if *cursor + n > end + 1 {
            anyhow::bail!("the simulated cart has run out of iPads with {latency_ms} ms latency");
        }
        let mut out = Vec::new();
        for slot in *cursor..*cursor + n {
            let dev = self.sim.cart.device(slot as u32).context("slot")?.clone();
            out.push(Ipad {
                slot: slot as u32,
                udid: dev.udid().to_owned(),
                dev,
            });
        }
        *cursor += n;
        drop(cursors);
        // The simulated iPad makes its key on its first connection; made here, before the
        // iPad is handed out, so a first run (CI's, a fresh machine's) does not count the
        // simulator's key generation in the client's time.
        self.rt.block_on(async {
            for i in &out {
                i.dev.keys_ready().await?;
            }
            Ok::<_, simulator::SimError>(())
        })?;
        Ok(out)
    }

    pub fn plug(&self, ipad: &Ipad) {
        let _ = self.sim.cart.plug(ipad.slot);
    }

    pub fn unplug(&self, ipad: &Ipad) {
        let _ = self.sim.cart.unplug(ipad.slot);
    }

    pub fn address(&self) -> String {
        self.sim.address().to_string()
    }
}
