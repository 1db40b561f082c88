//! The cross-shard mesh: a bounded channel from every shard to every other, which the
//! node's shards send their requests and replies over. A message crosses threads, so it
//! is `Send`; a sender past a full channel waits.

use std::io;

use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::channels::shared_channel::ConnectedReceiver;

/// The mesh before the shards joined it; one clone goes to each shard.
pub struct Mesh<T: Send + 'static> {
    inner: MeshBuilder<T, Full>,
}

impl<T: Send + 'static> Clone for Mesh<T> {
    fn clone(&self) -> Self {
        Mesh { inner: self.inner.clone() }
    }
}

impl<T: Send + 'static> Mesh<T> {
    /// A mesh of `shards` members, `capacity` messages waiting in each direction.
    #[must_use]
    pub fn new(shards: usize, capacity: usize) -> Mesh<T> {
        Mesh { inner: MeshBuilder::full(shards, capacity) }
    }

    /// Joins the mesh from this shard (every member must join): this shard's senders, and
    /// a receiver per other member.
    pub async fn join(self) -> io::Result<(MeshSender<T>, Vec<MeshReceiver<T>>)> {
        let (senders, mut receivers) = self.inner.join().await.map_err(|e| io::Error::other(e.to_string()))?;
        let receivers = receivers.streams().into_iter().map(|(_, inner)| MeshReceiver { inner }).collect();
        Ok((MeshSender { inner: senders }, receivers))
    }
}

/// This shard's end of the mesh's channels.
pub struct MeshSender<T: Send + 'static> {
    inner: Senders<T>,
}

impl<T: Send + 'static> MeshSender<T> {
    /// This shard's index in the mesh.
    #[must_use]
    pub fn me(&self) -> usize {
        self.inner.peer_id()
    }

    /// Members of the mesh.
    #[must_use]
    pub fn members(&self) -> usize {
        self.inner.nr_consumers()
    }

    /// Sends `message` to member `to`, waiting while its channel is full; fails when that
    /// member is gone.
    pub async fn send_to(&self, to: usize, message: T) -> io::Result<()> {
        self.inner.send_to(to, message).await.map_err(|e| io::Error::other(e.to_string()))
    }
}

/// Messages from one other member.
pub struct MeshReceiver<T: Send + 'static> {
    inner: ConnectedReceiver<T>,
}

impl<T: Send + 'static> MeshReceiver<T> {
    /// The next message; `None` once the sender is gone.
    pub async fn recv(&self) -> Option<T> {
        self.inner.recv().await
    }
}
