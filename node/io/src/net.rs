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
        Ok(Connection { inner, quick_ack: false })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr().map_err(|e| io::Error::other(e.to_string()))
    }
}

/// A TCP connection, read and written through `futures_lite`'s async traits.
pub struct Connection {
    inner: glommio::net::TcpStream,
    /// ACK what arrives at once rather than after the kernel's delayed-ACK timer
    /// (`set_quick_ack`).
    quick_ack: bool,
}

impl Connection {
    pub async fn connect(address: SocketAddr) -> io::Result<Connection> {
        let inner = glommio::net::TcpStream::connect(address).await.map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Connection { inner, quick_ack: false })
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.inner.set_nodelay(on).map_err(|e| io::Error::other(e.to_string()))
    }

    /// From now on, acknowledges what it reads at once (TCP_QUICKACK, set again after
    /// every read: the kernel turns it off by itself). A peer with Nagle's algorithm on
    /// (librdkafka's default) that writes a request in two parts, as it does over TLS,
    /// holds the second until the first is acknowledged, and the delayed ACK costs it
    /// 40 ms per request.
    pub fn set_quick_ack(&mut self) {
        self.quick_ack = true;
        self.ack_now();
    }

    fn ack_now(&self) {
        use std::os::unix::io::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt on our own open socket with a valid c_int option value and
        // its size; a failure only leaves the kernel's default (delayed ACKs).
        let _ = unsafe {
            libc::setsockopt(
                self.inner.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                std::ptr::from_ref(&on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr().map_err(|e| io::Error::other(e.to_string()))
    }
}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.quick_ack && matches!(read, Poll::Ready(Ok(n)) if n > 0) {
            self.ack_now();
        }
        read
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
