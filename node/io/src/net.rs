//! TCP for the node's listeners and the cluster transport: a listener every shard binds
//! on the same address (SO_REUSEPORT, so the kernel spreads connections over the shards)
//! and the connections it accepts or makes. Lives on: the shard that made it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

/// A listening socket on this shard.
pub struct Listener {
    inner: glommio::net::TcpListener,
}

impl Listener {
    /// Binds `address` (with SO_REUSEPORT: every shard of a node binds the same one).
    pub fn bind(address: SocketAddr) -> io::Result<Listener> {
        let inner = glommio::net::TcpListener::bind(address).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Listener { inner })
    }

    /// The next connection.
    pub async fn accept(&self) -> io::Result<Connection> {
        let inner = self.inner.accept().await.map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Connection { inner })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr().map_err(|e| io::Error::other(e.to_string()))
    }
}

/// A TCP connection, read and written through `futures_lite`'s async traits.
pub struct Connection {
    inner: glommio::net::TcpStream,
}

impl Connection {
    pub async fn connect(address: SocketAddr) -> io::Result<Connection> {
        let inner = glommio::net::TcpStream::connect(address).await.map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Connection { inner })
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.inner.set_nodelay(on).map_err(|e| io::Error::other(e.to_string()))
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr().map_err(|e| io::Error::other(e.to_string()))
    }
}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
