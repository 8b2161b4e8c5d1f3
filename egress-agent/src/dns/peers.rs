//! The server a redirected client asked, found by the address it reaches the proxy from.
//!
//! The programs give a redirected IPv4 socket a loopback source address of its own
//! (`egress_common::dns::peer_addr`) and store the destination it asked under that address in
//! `EG_DNS_PEER`; the proxy reads it back here, so an allowed question goes to the server the
//! application meant. A client the map does not name (an IPv6 socket, one bound to an address
//! of its own, an entry pushed out) is served by the container's resolvers instead.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

use aya::maps::{HashMap, Map, MapData};
use egress_common::{
    AF_INET,
    dns::{DnsOrigin, is_peer_addr},
    maps::DNS_PEER,
};
use tracing::warn;

use crate::enforcer::layout::PinDir;

/// The pinned `EG_DNS_PEER` map, read only.
pub struct Peers {
    map: Option<HashMap<MapData, u32, DnsOrigin>>,
}

impl Peers {
    /// Opens the map under `pin_dir`; without it every question goes to the container's
    /// resolvers (logged once).
    pub fn open(pin_dir: &Path) -> Self {
        let path = PinDir::new(pin_dir).map(DNS_PEER);
        let map = MapData::from_pin(&path)
            .map_err(|e| e.to_string())
            .and_then(|data| HashMap::try_from(Map::LruHashMap(data)).map_err(|e| e.to_string()));
        match map {
            Ok(map) => Self { map: Some(map) },
            Err(e) => {
                warn!(map = DNS_PEER, path = %path.display(),
                    "cannot read the servers redirected clients asked; their questions go to their container's resolvers: {e}");
                Self { map: None }
            }
        }
    }

    /// The server the client at `peer` asked, if the programs recorded it.
    pub fn origin(&self, peer: IpAddr) -> Option<SocketAddr> {
        let IpAddr::V4(v4) = peer else { return None };
        if !is_peer_addr(v4.octets()) {
            return None;
        }
        let o = self
            .map
            .as_ref()?
            .get(&u32::from_ne_bytes(v4.octets()), 0)
            .ok()?;
        let ip = if o.family == AF_INET {
            IpAddr::V4(Ipv4Addr::from(o.addr4()))
        } else {
            IpAddr::V6(Ipv6Addr::from(o.addr))
        };
        Some(SocketAddr::new(ip, o.port))
    }
}
