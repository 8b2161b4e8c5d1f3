//! The pin directory and the check that tells a reusable pinned state from one left by an
//! incompatible version.
//!
//! ```text
//! <pin dir>/maps/EG_*                          the maps (see egress_common::maps)
//! <pin dir>/links/<hook>-<cgroup id>-<stamp>   one link per program and attach cgroup
//! ```
//!
//! (bpffs refuses names with dots.)

use std::{
    fs, io,
    mem::size_of,
    path::{Path, PathBuf},
};

use aya::maps::{MapInfo, MapType, lpm_trie::Key};
use egress_common::{
    cgroup_path::PathKey,
    container::ContainerKey,
    maps,
    policy::CgroupPolicy,
    rule::{Cidr4Data, Cidr6Data, Ip4RuleKey, Ip6RuleKey, RuleValue},
    stats,
};

use crate::{
    paths::{LINKS_SUBDIR, MAPS_SUBDIR},
    sys::bpf::{link_detach, obj_get},
};

/// What a map must look like to be reused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MapShape {
    pub name: &'static str,
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

const fn sz<T>() -> u32 {
    size_of::<T>() as u32
}

/// The shapes the current eBPF object declares (kept beside the shared types they come from).
pub fn expected_shapes() -> [MapShape; 13] {
    [
        MapShape {
            name: maps::CGROUP_POLICY,
            map_type: MapType::Hash,
            key_size: sz::<u64>(),
            value_size: sz::<CgroupPolicy>(),
            max_entries: maps::CGROUP_POLICY_ENTRIES,
        },
        MapShape {
            name: maps::ALLOW_V4,
            map_type: MapType::Hash,
            key_size: sz::<Ip4RuleKey>(),
            value_size: sz::<RuleValue>(),
            max_entries: maps::MAX_ADDR_RULES,
        },
        MapShape {
            name: maps::ALLOW_V6,
            map_type: MapType::Hash,
            key_size: sz::<Ip6RuleKey>(),
            value_size: sz::<RuleValue>(),
            max_entries: maps::MAX_ADDR_RULES,
        },
        MapShape {
            name: maps::CIDR_V4,
            map_type: MapType::LpmTrie,
            key_size: sz::<Key<Cidr4Data>>(),
            value_size: sz::<RuleValue>(),
            max_entries: maps::MAX_CIDR_RULES,
        },
        MapShape {
            name: maps::CIDR_V6,
            map_type: MapType::LpmTrie,
            key_size: sz::<Key<Cidr6Data>>(),
            value_size: sz::<RuleValue>(),
            max_entries: maps::MAX_CIDR_RULES,
        },
        MapShape {
            name: maps::EVENTS,
            map_type: MapType::RingBuf,
            key_size: 0,
            value_size: 0,
            max_entries: maps::EVENTS_BYTES,
        },
        MapShape {
            name: maps::STATS,
            map_type: MapType::PerCpuArray,
            key_size: sz::<u32>(),
            value_size: sz::<u64>(),
            max_entries: stats::SLOTS,
        },
        MapShape {
            name: maps::META,
            map_type: MapType::Array,
            key_size: sz::<u32>(),
            value_size: sz::<u64>(),
            max_entries: maps::META_SLOTS,
        },
        MapShape {
            name: maps::CONTAINERS,
            map_type: MapType::Hash,
            key_size: sz::<ContainerKey>(),
            value_size: sz::<CgroupPolicy>(),
            max_entries: maps::MAX_CONTAINERS,
        },
        MapShape {
            name: maps::CONFIG,
            map_type: MapType::Array,
            key_size: sz::<u32>(),
            value_size: sz::<u64>(),
            max_entries: maps::CONFIG_SLOTS,
        },
        MapShape {
            name: maps::UNPOLICED,
            map_type: MapType::Hash,
            key_size: sz::<ContainerKey>(),
            value_size: sz::<u8>(),
            max_entries: maps::MAX_UNPOLICED,
        },
        MapShape {
            name: maps::PATH_POLICY,
            map_type: MapType::Hash,
            key_size: sz::<PathKey>(),
            value_size: sz::<CgroupPolicy>(),
            max_entries: maps::MAX_POLICY_PATHS,
        },
        MapShape {
            name: maps::CONTAINER_PARENTS,
            map_type: MapType::Hash,
            key_size: sz::<PathKey>(),
            value_size: sz::<u32>(),
            max_entries: maps::MAX_CONTAINER_PARENTS,
        },
    ]
}

/// The agent's directory in bpffs.
#[derive(Debug, Clone)]
pub struct PinDir {
    pub root: PathBuf,
}

/// What [`PinDir::check`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum PinnedState {
    /// Nothing pinned yet.
    Empty,
    /// Maps of this layout: reuse them.
    Compatible,
    /// Something else is pinned; the reason says what differs.
    Incompatible(String),
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct PinIoError {
    pub path: PathBuf,
    pub source: io::Error,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PinIoError + '_ {
    move |source| PinIoError {
        path: path.to_owned(),
        source,
    }
}

/// Prefix of retired map directories.
const RETIRED_PREFIX: &str = "retired-";

/// A link pin's file name: `<hook>-<cgroup id>-<stamp>`.
pub fn link_pin_name(hook: &str, cgroup_id: u64, stamp: u128) -> String {
    format!("{hook}-{cgroup_id}-{stamp}")
}

/// Parses a link pin name into (hook, cgroup id).
pub fn parse_link_pin_name(name: &str) -> Option<(&str, u64)> {
    let (hook, rest) = name.split_once('-')?;
    let (cg, _stamp) = rest.split_once('-')?;
    Some((hook, cg.parse().ok()?))
}

impl PinDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn maps(&self) -> PathBuf {
        self.root.join(MAPS_SUBDIR)
    }

    pub fn links(&self) -> PathBuf {
        self.root.join(LINKS_SUBDIR)
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    /// Directories of maps retired by [`PinDir::retire_maps`] and not removed yet.
    pub fn retired(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(RETIRED_PREFIX))
            })
            .collect();
        v.sort();
        v
    }

    /// Moves the pinned maps out of the way (to `retired-<stamp>`) so that new ones can be
    /// created, while the programs of earlier runs, whose links are still pinned, keep
    /// enforcing with them until [`PinDir::remove_retired`].
    pub fn retire_maps(&self, stamp: u128) -> Result<PathBuf, PinIoError> {
        let to = self.root.join(format!("{RETIRED_PREFIX}{stamp}"));
        fs::rename(self.maps(), &to).map_err(io_err(&self.maps()))?;
        Ok(to)
    }

    /// Detaches the given links and removes their pins, then every retired map directory.
    /// Returns the number of links released.
    ///
    /// The explicit detach matters: dropping the last reference to a pinned link (unlinking its
    /// pin) frees it only after an RCU grace period and a deferred work item, so without it the
    /// old program would stay attached for an unbounded little while after this returns.
    pub fn release(&self, links: &[PathBuf]) -> Result<usize, PinIoError> {
        let mut n = 0;
        for l in links {
            if let Ok(fd) = obj_get(l) {
                // Hooks without a detach operation (tracepoints) and links whose cgroup is gone
                // refuse; their programs go when the pin does.
                let _ = link_detach(&fd);
            }
            remove_file(l)?;
            n += 1;
        }
        for dir in self.retired() {
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                remove_file(&entry.path())?;
            }
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&dir)(e)),
            }
        }
        Ok(n)
    }

    /// The pinned link files, sorted by name.
    pub fn link_pins(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.links())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    }

    /// Compares what is pinned with what this build would create.
    pub fn check(&self) -> PinnedState {
        let shapes = expected_shapes();
        let present: Vec<bool> = shapes.iter().map(|s| self.map(s.name).exists()).collect();
        if present.iter().all(|p| !p) {
            return PinnedState::Empty;
        }
        for (shape, present) in shapes.iter().zip(&present) {
            if !present {
                return PinnedState::Incompatible(format!("map {} is missing", shape.name));
            }
            let info = match MapInfo::from_pin(self.map(shape.name)) {
                Ok(i) => i,
                Err(e) => {
                    return PinnedState::Incompatible(format!(
                        "map {} unreadable: {e}",
                        shape.name
                    ));
                }
            };
            let found = MapShape {
                name: shape.name,
                map_type: match info.map_type() {
                    Ok(t) => t,
                    Err(e) => {
                        return PinnedState::Incompatible(format!(
                            "map {} has an unknown type: {e}",
                            shape.name
                        ));
                    }
                },
                key_size: info.key_size(),
                value_size: info.value_size(),
                max_entries: info.max_entries(),
            };
            if found != *shape {
                return PinnedState::Incompatible(format!(
                    "map {}: pinned {:?}/key {}/value {}/max {}, this build needs {:?}/key {}/value {}/max {}",
                    shape.name,
                    found.map_type,
                    found.key_size,
                    found.value_size,
                    found.max_entries,
                    shape.map_type,
                    shape.key_size,
                    shape.value_size,
                    shape.max_entries
                ));
            }
        }
        match read_layout_version(&self.map(maps::META)) {
            Some(v) if v == egress_common::LAYOUT_VERSION => PinnedState::Compatible,
            Some(v) => PinnedState::Incompatible(format!(
                "layout version {v}, this build uses {}",
                egress_common::LAYOUT_VERSION
            )),
            None => PinnedState::Incompatible("no layout version recorded".into()),
        }
    }

    /// Detaches every pinned link (even ones other processes still hold) and removes every pin
    /// and directory. Returns the number of links and maps removed. Missing pieces are fine.
    pub fn remove_all(&self) -> Result<(usize, usize), PinIoError> {
        let mut links = 0;
        for pin in self.link_pins() {
            if let Ok(fd) = obj_get(&pin) {
                // A link whose cgroup is gone is already detached; ignore that error.
                let _ = link_detach(&fd);
            }
            remove_file(&pin)?;
            links += 1;
        }
        let mut maps_removed = 0;
        let mut map_dirs = self.retired();
        map_dirs.push(self.maps());
        for dir in &map_dirs {
            for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
                remove_file(&entry.path())?;
                maps_removed += 1;
            }
        }
        let mut dirs = map_dirs;
        dirs.extend([self.links(), self.root.clone()]);
        for dir in dirs {
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&dir)(e)),
            }
        }
        Ok((links, maps_removed))
    }
}

fn remove_file(path: &Path) -> Result<(), PinIoError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Reads the layout version from a pinned META map.
pub fn read_layout_version(path: &Path) -> Option<u64> {
    let data = aya::maps::MapData::from_pin(path).ok()?;
    let arr: aya::maps::Array<_, u64> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).ok()?;
    arr.get(&maps::META_LAYOUT_SLOT, 0).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pin_names_round_trip() {
        let n = link_pin_name("connect4", 1234, 99);
        assert_eq!(n, "connect4-1234-99");
        assert_eq!(parse_link_pin_name(&n), Some(("connect4", 1234)));
        assert_eq!(parse_link_pin_name("garbage"), None);
    }

    #[test]
    fn shapes_match_the_shared_types() {
        let s = expected_shapes();
        assert_eq!(s[3].key_size, 16, "LPM key is prefix_len + 12 data bytes");
        assert_eq!(s[4].key_size, 28);
        assert!(s.iter().all(|m| maps::ALL.contains(&m.name)));
        assert!(maps::ALL.iter().all(|n| s.iter().any(|m| m.name == *n)));
        let path = s.iter().find(|m| m.name == maps::PATH_POLICY).unwrap();
        assert_eq!(path.key_size, 16, "path key: hash, length, padding");
    }
}
