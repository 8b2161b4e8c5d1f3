//! A minimal authoritative DNS server for the agent benchmarks (UDP on loopback), so that the
//! agent never asks the host's resolver and no real name is ever looked up. It answers A
//! queries for the `bench.test` zone from a function of the name, NODATA (with an SOA) for other
//! types of those names and NXDOMAIN for anything else, and records when each query came.
//!
//! Names:
//! - `c<N>.bench.test` → `127.78.<N / 256>.<N % 256>`, TTL 300 (container policies);
//!   the NODATA answer to its AAAA query has the same negative TTL;
//! - `r<N>.refresh.bench.test` → `127.<79 + version>.<N / 256>.<N % 256>`, TTL 5: the refresh
//!   test bumps the version to change every answer at once.
//!
//! The addresses are loopback ones that nothing ever connects to: they only fill allow maps.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

pub const ZONE: &str = "bench.test";
const TTL_STATIC: u32 = 300;
pub const TTL_REFRESH: u32 = 5;

/// The address a name resolves to (None: the name does not exist).
pub fn resolve(name: &str, version: u8) -> Option<(Ipv4Addr, u32)> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let num = |s: &str| s.parse::<u16>().ok();
    if let Some(n) = name
        .strip_suffix(".refresh.bench.test")
        .and_then(|l| l.strip_prefix('r'))
        .and_then(num)
    {
        let ip = Ipv4Addr::new(127, 79 + version, (n >> 8) as u8, n as u8);
        return Some((ip, TTL_REFRESH));
    }
    let n = name
        .strip_suffix(".bench.test")
        .and_then(|l| l.strip_prefix('c'))
        .and_then(num)?;
    Some((Ipv4Addr::new(127, 78, (n >> 8) as u8, n as u8), TTL_STATIC))
}

/// The query log: (arrival, name).
type Log = Arc<Mutex<Vec<(Instant, String)>>>;

pub struct Dns {
    pub addr: SocketAddr,
    version: Arc<AtomicU8>,
    log: Log,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Dns {
    pub fn start(addr: SocketAddr) -> Result<Self> {
        let sock = UdpSocket::bind(addr).with_context(|| format!("DNS server on {addr}"))?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let addr = sock.local_addr()?;
        let version = Arc::new(AtomicU8::new(0));
        let log: Log = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (version, log, stop) = (version.clone(), log.clone(), stop.clone());
            thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    let Some((reply, name)) = answer(&buf[..n], version.load(Ordering::Relaxed))
                    else {
                        continue;
                    };
                    if let Ok(mut l) = log.lock() {
                        l.push((Instant::now(), name));
                    }
                    let _ = sock.send_to(&reply, peer);
                }
            })
        };
        Ok(Self {
            addr,
            version,
            log,
            stop,
            thread: Some(thread),
        })
    }

    /// Changes every `r<N>.refresh.bench.test` answer.
    pub fn set_version(&self, v: u8) {
        self.version.store(v, Ordering::Relaxed);
    }

    /// Queries for names ending in `suffix` that arrived after `since`: (count, first, last).
    pub fn queries_since(
        &self,
        since: Instant,
        suffix: &str,
    ) -> (usize, Option<Instant>, Option<Instant>) {
        let l = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let hits: Vec<Instant> = l
            .iter()
            .filter(|(t, n)| *t >= since && n.ends_with(suffix))
            .map(|(t, _)| *t)
            .collect();
        (
            hits.len(),
            hits.iter().min().copied(),
            hits.iter().max().copied(),
        )
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads a name at `at` (no compression: queries carry plain names). Returns it and the
/// offset after it.
fn read_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    loop {
        let len = *msg.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        labels.push(String::from_utf8_lossy(msg.get(at..at + len)?).into_owned());
        at += len;
    }
    Some((labels.join("."), at))
}

fn write_name(out: &mut Vec<u8>, name: &str) {
    for l in name.split('.').filter(|l| !l.is_empty()) {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
}

/// The zone's SOA (for negative answers), in the authority section. `negative_ttl` is both
/// its TTL and its MINIMUM, so a name's AAAA (NODATA) is cached as long as its A record.
fn soa(out: &mut Vec<u8>, negative_ttl: u32) {
    write_name(out, ZONE);
    out.extend_from_slice(&6u16.to_be_bytes()); // SOA
    out.extend_from_slice(&1u16.to_be_bytes()); // IN
    out.extend_from_slice(&negative_ttl.to_be_bytes());
    let mut rdata = Vec::new();
    write_name(&mut rdata, "ns.bench.test");
    write_name(&mut rdata, "hostmaster.bench.test");
    for v in [1u32, 3600, 600, 86400, negative_ttl] {
        rdata.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(&rdata);
}

/// The reply to one query, and the name asked for. None for anything that is not a plain query.
pub fn answer(q: &[u8], version: u8) -> Option<(Vec<u8>, String)> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    let (name, end) = read_name(q, 12)?;
    let qtype = u16::from_be_bytes([*q.get(end)?, *q.get(end + 1)?]);
    let question = q.get(12..end + 4)?;
    let in_zone = name.to_ascii_lowercase().ends_with(ZONE);
    let found = resolve(&name, version);
    let rcode: u8 = if found.is_some() || (in_zone && name.eq_ignore_ascii_case(ZONE)) {
        0
    } else {
        3 // NXDOMAIN
    };
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&q[0..2]); // id
    out.push(0x84 | (q[2] & 0x01)); // QR, AA, RD copied
    out.push(rcode);
    let a = match (found, qtype) {
        (Some((ip, ttl)), 1) => Some((ip, ttl)),
        _ => None,
    };
    out.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    out.extend_from_slice(&u16::from(a.is_some()).to_be_bytes()); // ANCOUNT
    out.extend_from_slice(&u16::from(a.is_none()).to_be_bytes()); // NSCOUNT
    out.extend_from_slice(&0u16.to_be_bytes()); // ARCOUNT
    out.extend_from_slice(question);
    match a {
        Some((ip, ttl)) => {
            out.extend_from_slice(&[0xc0, 12]); // the question's name
            out.extend_from_slice(&1u16.to_be_bytes());
            out.extend_from_slice(&1u16.to_be_bytes());
            out.extend_from_slice(&ttl.to_be_bytes());
            out.extend_from_slice(&4u16.to_be_bytes());
            out.extend_from_slice(&ip.octets());
        }
        None => soa(&mut out, found.map_or(TTL_STATIC, |(_, ttl)| ttl)),
    }
    Some((out, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        write_name(&mut q, name);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    #[test]
    fn names_map_to_loopback_addresses() {
        assert_eq!(
            resolve("c258.bench.test", 0),
            Some((Ipv4Addr::new(127, 78, 1, 2), 300))
        );
        assert_eq!(
            resolve("R7.refresh.bench.test.", 1),
            Some((Ipv4Addr::new(127, 80, 0, 7), 5))
        );
        assert_eq!(resolve("x.bench.test", 0), None);
        assert_eq!(resolve("c1.example", 0), None);
    }

    #[test]
    fn answers_a_nodata_and_nxdomain() {
        let (r, name) = answer(&query("c1.bench.test", 1), 0).unwrap();
        assert_eq!(name, "c1.bench.test");
        assert_eq!(&r[0..2], &[0x12, 0x34]);
        assert_eq!(r[3] & 0x0f, 0);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1);
        assert_eq!(&r[r.len() - 4..], &[127, 78, 0, 1]);

        let (r, _) = answer(&query("c1.bench.test", 28), 0).unwrap();
        assert_eq!(r[3] & 0x0f, 0);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 0);
        assert_eq!(u16::from_be_bytes([r[8], r[9]]), 1);

        let (r, _) = answer(&query("nope.test", 1), 0).unwrap();
        assert_eq!(r[3] & 0x0f, 3);
    }
}
