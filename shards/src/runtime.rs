//! Starts one glommio executor per core, pinned, and joins them into the cross-core mesh.
//!
//! Each executor runs the same `main` with its own [`Core`]: its id (its index in the mesh,
//! used by the routing ring), its mesh ends and the inbound channels from every other core.
//! Everything a core allocates after that stays on its thread.

use std::future::Future;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use crate::mesh::{mesh_setup, Mesh, MeshSetup};

/// Inbound channel from one peer core.
pub type Inbound<T> = glommio::channels::shared_channel::ConnectedReceiver<T>;

/// What a core starts with.
pub struct Core<T: Send> {
    pub mesh: Mesh<T>,
    /// `(peer core, channel)` for every other core.
    pub inbound: Vec<(usize, Inbound<T>)>,
}

#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub cores: usize,
    /// Depth of each cross-core channel, in messages.
    pub core_mailbox_messages_max: usize,
    /// How long a task may run before the executor makes it yield to I/O; short keeps
    /// latency low for the many small tasks of a messaging server.
    pub preempt_timer: Duration,
    /// Submission entries of each io_uring (glommio's `ring_depth`).
    pub io_ring_entries: usize,
    /// Memory each executor registers with its io_uring for DMA file reads and writes
    /// (glommio's `io_memory`). It is pinned, so resident from the start; glommio's default
    /// of 10 MiB is a third of an idle node's RSS, and a server that does socket I/O only
    /// needs none of it (glommio's minimum is 64 KiB).
    pub io_registered_memory_bytes: usize,
}

/// Runs `main` on `cores` executors and waits for all of them to finish.
pub fn run<T, F, Fut>(cfg: &RuntimeConfig, main: F) -> std::io::Result<()>
where
    T: Send + 'static,
    F: Fn(Core<T>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let setup: MeshSetup<T> = mesh_setup(cfg.cores, cfg.core_mailbox_messages_max);
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut handles = Vec::with_capacity(cfg.cores);
    for i in 0..cfg.cores {
        // Pin when there is a CPU per executor; oversubscribed runs (tests asking for more
        // cores than the box has) float instead of piling onto the same CPUs.
        let placement = if cfg.cores <= cpus { Placement::Fixed(i) } else { Placement::Unbound };
        let (setup, main) = (setup.clone(), main.clone());
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("core{i}"))
            .preempt_timer(cfg.preempt_timer)
            .ring_depth(cfg.io_ring_entries)
            .io_memory(cfg.io_registered_memory_bytes)
            .spawn(move || async move {
                let (mesh, inbound) = Mesh::join(setup).await;
                main(Core { mesh, inbound }).await;
            })
            .map_err(|e| std::io::Error::other(format!("core {i}: {e}")))?;
        handles.push(handle);
    }
    for h in handles {
        h.join().map_err(|e| std::io::Error::other(format!("executor: {e}")))?;
    }
    Ok(())
}
