//! What reaches the wire: an `AF_PACKET` capture on one interface (in this process's network
//! namespace, outside any policed cgroup), searched for a test's marker bytes.

use std::{
    ffi::CString,
    io,
    mem::size_of,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

const ETH_P_ALL: u16 = 3;

/// A running capture; stops when dropped.
pub struct Capture {
    frames: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing every frame on `interface` (both directions), or on every interface of
    /// this network namespace for `any` (a bridge's own device does not see the frames it
    /// forwards between its ports; their veths do).
    #[track_caller]
    pub fn start(interface: &str) -> Self {
        let fd = open(interface).unwrap_or_else(|e| panic!("capture on {interface}: {e}"));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (frames, stop) = (frames.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: a valid socket and buffer; the socket has a receive timeout.
                    let n = unsafe {
                        libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                    };
                    if n > 0 {
                        let mut f = frames.lock().unwrap_or_else(|e| e.into_inner());
                        f.push(buf[..n as usize].to_vec());
                    }
                }
            })
        };
        Self {
            frames,
            stop,
            thread: Some(thread),
        }
    }

    /// How many captured frames hold `marker`, after waiting `settle` for late frames.
    pub fn frames_with(&self, marker: &str, settle: Duration) -> usize {
        std::thread::sleep(settle);
        let m = marker.as_bytes();
        let frames = self.frames.lock().unwrap_or_else(|e| e.into_inner());
        frames
            .iter()
            .filter(|f| f.windows(m.len()).any(|w| w == m))
            .count()
    }

    /// Panics if any captured frame holds `marker` (after 300 ms for late frames).
    #[track_caller]
    pub fn assert_never_saw(&self, marker: &str, what: &str) {
        let n = self.frames_with(marker, Duration::from_millis(300));
        assert_eq!(
            n, 0,
            "{what}: {n} frame(s) with {marker:?} reached the wire"
        );
    }

    /// Panics unless some captured frame holds `marker` (waits up to 2 s).
    #[track_caller]
    pub fn assert_saw(&self, marker: &str, what: &str) {
        for _ in 0..20 {
            if self.frames_with(marker, Duration::from_millis(100)) > 0 {
                return;
            }
        }
        panic!("{what}: no frame with {marker:?} was captured (the capture itself may be broken)");
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open(interface: &str) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ALL.to_be()),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let ifindex = if interface == "any" {
        0
    } else {
        let name = CString::new(interface).map_err(io::Error::other)?;
        // SAFETY: a NUL-terminated name.
        let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if i == 0 {
            return Err(io::Error::last_os_error());
        }
        i
    };
    // SAFETY: plain data, zeroed is valid.
    let mut ll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    ll.sll_family = libc::AF_PACKET as u16;
    ll.sll_protocol = ETH_P_ALL.to_be();
    ll.sll_ifindex = ifindex as i32;
    // SAFETY: a valid socket and sockaddr_ll.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 50_000,
    };
    // SAFETY: a valid socket and timeval.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as u32,
        )
    };
    Ok(fd)
}
