//! The benchmark's floor on turmoil: bare hosts replaying a full run's frames with no chat
//! logic, on the same simulation (latencies, tick, socket sizes) and the same hosts, so the
//! full system's speed can be read as a ratio of the engine's own.

use super::{
    batch, cell_count, cell_of, host_name, now, simulation, sleep_until, write_all, EngineError,
    CONNECT_TIMEOUT, OVERTIME, PORT, READ_BUFFER_BYTES, TICK,
};
use bytes::{Bytes, BytesMut};
use chatsim_system::proto::{DeviceId, Host, Millis};
use chatsim_world::record::{FloorPlan, Frames};
use chatsim_world::scenario::Scenario;
use chatsim_world::wire::{filler, skip_frames};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc::unbounded_channel;
use tokio::task::spawn_local;
use turmoil::net::{TcpListener, TcpStream};

/// The benchmark's floor on turmoil: bare hosts replaying `plan` (the frames a full run
/// delivered, of the same sizes, sent at the same simulated times) on the same simulation
/// (latencies, tick, socket sizes) and the same hosts (each server its own, the phones on as
/// many cells as the full run has), with no chat logic. Each route gets its own connection, so
/// a phone and its gateway talk over two (one per direction) where the full run has one, and
/// server links carry no acknowledgements; nothing reconnects and the scenario's extra per-link
/// latencies are not applied. Returns the frames received and the simulated ms until the last
/// arrived.
pub fn floor(
    scenario: &Scenario,
    seed: u64,
    plan: FloorPlan,
) -> Result<(u64, Millis), EngineError> {
    // Frames may still be on the wire after the last send; give them a generous while.
    let until = Duration::from_millis(plan.last) + OVERTIME;
    let mut sim = simulation(scenario, seed, until + TICK);
    let phones: Vec<DeviceId> = plan
        .hosts
        .iter()
        .filter_map(|h| match h {
            Host::Device(d) => Some(*d),
            _ => None,
        })
        .collect();
    let cells = cell_count(phones.len() as u32);
    let cell: BTreeMap<DeviceId, String> = phones
        .iter()
        .enumerate()
        .map(|(flat, d)| (*d, cell_of(flat as u32, cells)))
        .collect();
    let name = move |h: Host| match h {
        Host::Device(d) => cell[&d].clone(),
        h => host_name(h),
    };
    // Every turmoil host's outgoing routes, each with the name of the host it goes to.
    let mut routes: BTreeMap<String, Vec<(String, Frames)>> = BTreeMap::new();
    for &h in &plan.hosts {
        routes.entry(name(h)).or_default();
    }
    for (from, list) in &plan.routes {
        for (to, frames) in list {
            routes
                .entry(name(*from))
                .or_default()
                .push((name(*to), frames.clone()));
        }
    }
    let received = Arc::new(AtomicU64::new(0));
    for (host, out) in routes {
        let (out, received) = (Arc::new(out), received.clone());
        sim.host(host, move || floor_host(out.clone(), received.clone()));
    }
    let elapsed = |sim: &turmoil::Sim| sim.elapsed().as_millis() as Millis;
    while received.load(Ordering::Relaxed) < plan.total && sim.elapsed() < until {
        sim.step().map_err(|e| EngineError::Stopped {
            at_ms: elapsed(&sim),
            message: e.to_string(),
        })?;
    }
    Ok((received.load(Ordering::Relaxed), elapsed(&sim)))
}

/// One floor host: count every frame that arrives, and send each of `routes` frames at its
/// time, what is queued by then going as one write (as the full run's connections write).
async fn floor_host(
    routes: Arc<Vec<(String, Frames)>>,
    received: Arc<AtomicU64>,
) -> turmoil::Result {
    let listener = TcpListener::bind(("0.0.0.0", PORT)).await?;
    spawn_local(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = received.clone();
            spawn_local(async move {
                let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
                while matches!(stream.read_buf(&mut buf).await, Ok(n) if n > 0) {
                    counter.fetch_add(skip_frames(&mut buf), Ordering::Relaxed);
                }
            });
        }
    });
    for (to, frames) in routes.iter() {
        let (to, frames) = (to.clone(), frames.clone());
        let (tx, mut rx) = unbounded_channel::<Bytes>();
        spawn_local(async move {
            for &(t, bytes) in frames.iter() {
                if t > now() {
                    sleep_until(t).await;
                }
                let _ = tx.send(filler(bytes));
            }
        });
        spawn_local(async move {
            let mut stream = loop {
                let connect = TcpStream::connect((to.as_str(), PORT));
                if let Ok(Ok(s)) = tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                    break s;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            };
            while let Some(first) = rx.recv().await {
                let (bytes, _) = batch(first, &mut rx);
                if !write_all(&mut stream, &bytes).await {
                    return;
                }
            }
        });
    }
    std::future::pending::<()>().await;
    Ok(())
}
