//! A UDP socket that reads and drops every datagram and only counts them: the receiving end of
//! a load test, where [`crate::net::UdpSink`] (which keeps every payload) would grow without
//! bound.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context, Result};

pub struct UdpDrain {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
}

/// What the reading thread and the owner share.
#[derive(Default)]
struct Shared {
    received: AtomicU64,
    done: AtomicBool,
}

/// The reading thread: counts datagrams until told to stop.
fn drain(socket: &UdpSocket, shared: &Shared) {
    let mut datagram = [0u8; 2048];
    while !shared.done.load(Ordering::Relaxed) {
        if socket.recv(&mut datagram).is_ok() {
            shared.received.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl UdpDrain {
    /// Binds `addr` (port 0: one the kernel picks) and starts the reading thread.
    pub fn bind(addr: SocketAddr) -> Result<Self> {
        let socket = UdpSocket::bind(addr).with_context(|| format!("binding UDP {addr}"))?;
        // The reader looks at `done` at least this often.
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let shared = Arc::<Shared>::default();
        let reader = thread::spawn({
            let shared = shared.clone();
            move || drain(&socket, &shared)
        });
        Ok(Self {
            addr,
            shared,
            reader: Some(reader),
        })
    }

    /// Datagrams received so far.
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }
}

impl Drop for UdpDrain {
    fn drop(&mut self) {
        self.shared.done.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}
