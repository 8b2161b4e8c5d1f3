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
    count: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl UdpDrain {
    /// Binds `addr` (port 0: one the kernel picks) and starts the reading thread.
    pub fn bind(addr: SocketAddr) -> Result<Self> {
        let socket = UdpSocket::bind(addr).with_context(|| format!("binding UDP {addr}"))?;
        // The reader looks at `done` at least this often.
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let count = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (count, done) = (count.clone(), done.clone());
            thread::spawn(move || {
                let mut datagram = [0u8; 2048];
                while !done.load(Ordering::Relaxed) {
                    if socket.recv(&mut datagram).is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        Ok(Self {
            addr,
            count,
            done,
            reader: Some(reader),
        })
    }

    /// Datagrams received so far.
    pub fn received(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for UdpDrain {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
    }
}
