//! A UDP socket with one API in both runtimes (madsim 0.2 swaps `send_to`'s arguments).

use std::io;
use std::net::SocketAddr;

/// A bound UDP socket.
#[derive(Debug)]
pub struct UdpSocket(tokio::net::UdpSocket);

impl UdpSocket {
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        tokio::net::UdpSocket::bind(addr).await.map(UdpSocket)
    }

    pub async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        #[cfg(madsim)]
        {
            self.0.send_to(to, buf).await.map(|_| buf.len())
        }
        #[cfg(not(madsim))]
        {
            self.0.send_to(buf, to).await
        }
    }

    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.0.recv_from(buf).await
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}
