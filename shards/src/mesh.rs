//! The cross-core mesh: one bounded, lock-free SPSC channel for every ordered pair of cores.
//!
//! Built on glommio's `channel_mesh` (single-producer single-consumer rings with eventfd
//! wake-ups), so a core never takes a lock to talk to another. A full channel makes
//! [`Mesh::send`] wait: backpressure flows back to whatever produced the message, and memory
//! stays at `capacity x cores^2` messages at most.
//!
//! Seastar's rule applies: the local case never goes through the mesh. Callers check
//! [`Mesh::is_local`] and handle their own core's messages directly.

use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};

/// Builder handed to every executor; each joins once.
pub type MeshSetup<T> = MeshBuilder<T, Full>;

pub fn mesh_setup<T: Send + 'static>(cores: usize, channel_messages_max: usize) -> MeshSetup<T> {
    MeshBuilder::full(cores, channel_messages_max)
}

/// This core's ends of the mesh.
pub struct Mesh<T: Send> {
    senders: Senders<T>,
}

impl<T: Send + 'static> Mesh<T> {
    /// Joins the mesh; resolves once every core has joined. Returns the mesh and the inbound
    /// channels, one per peer core, as `(peer core, receiver)`.
    pub async fn join(
        setup: MeshSetup<T>,
    ) -> (Self, Vec<(usize, glommio::channels::shared_channel::ConnectedReceiver<T>)>) {
        let (senders, mut receivers): (Senders<T>, Receivers<T>) =
            setup.join().await.expect("every core joins the mesh");
        let inbound = receivers.streams();
        (Mesh { senders }, inbound)
    }

    /// This core's index; the mesh decides it, and it is the core id used for routing.
    pub fn core_id(&self) -> usize {
        self.senders.peer_id()
    }

    pub fn cores(&self) -> usize {
        self.senders.nr_consumers()
    }

    pub fn is_local(&self, core: usize) -> bool {
        core == self.core_id()
    }

    /// Sends to another core, waiting while its channel is full. Returns the message if that
    /// core has shut down. Panics on the local core: that hop must be handled directly.
    pub async fn send(&self, core: usize, msg: T) -> Result<(), T> {
        assert!(!self.is_local(core), "local messages never cross the mesh");
        self.senders.send_to(core, msg).await.map_err(|e| match e {
            glommio::GlommioError::Closed(glommio::ResourceType::Channel(m)) => m,
            other => panic!("mesh send to core {core} failed: {other}"),
        })
    }
}
