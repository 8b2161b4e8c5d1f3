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
    path::{Path, PathBuf},
};

use aya::maps::{MapInfo, MapType};
use egress_common::maps::{self, MapSpec};

use crate::{
    paths::{LINKS_SUBDIR, MAPS_SUBDIR},
    sys::bpf::{link_detach, obj_get},
};

/// The kernel's `bpf_map_type` number of an aya map type.
fn kind_number(t: MapType) -> u32 {
    t as u32
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
        let present: Vec<bool> = maps::MAPS
            .iter()
            .map(|s| self.map(s.name).exists())
            .collect();
        if present.iter().all(|p| !p) {
            return PinnedState::Empty;
        }
        for (shape, present) in maps::MAPS.iter().zip(&present) {
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
            let map_type = match info.map_type() {
                Ok(t) => t,
                Err(e) => {
                    return PinnedState::Incompatible(format!(
                        "map {} has an unknown type: {e}",
                        shape.name
                    ));
                }
            };
            let found = MapSpec {
                name: shape.name,
                kind: shape.kind,
                key_size: info.key_size(),
                value_size: info.value_size(),
                max_entries: info.max_entries(),
            };
            if kind_number(map_type) != shape.kind as u32 || found != *shape {
                return PinnedState::Incompatible(format!(
                    "map {}: pinned {:?}/key {}/value {}/max {}, this build needs {:?}/key {}/value {}/max {}",
                    shape.name,
                    map_type,
                    found.key_size,
                    found.value_size,
                    found.max_entries,
                    shape.kind,
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
    use std::mem::size_of;

    use aya::maps::lpm_trie::Key;
    use egress_common::{
        maps::MapKind,
        rule::{Cidr4Data, Cidr6Data},
    };

    use super::*;

    fn sz<T>() -> u32 {
        size_of::<T>() as u32
    }

    #[test]
    fn link_pin_names_round_trip() {
        let n = link_pin_name("connect4", 1234, 99);
        assert_eq!(n, "connect4-1234-99");
        assert_eq!(parse_link_pin_name(&n), Some(("connect4", 1234)));
        assert_eq!(parse_link_pin_name("garbage"), None);
    }

    #[test]
    fn lpm_keys_are_as_aya_lays_them_out() {
        let key = |n| maps::spec_of(n).unwrap().key_size;
        assert_eq!(key(maps::CIDR_V4), sz::<Key<Cidr4Data>>());
        assert_eq!(key(maps::CIDR_V6), sz::<Key<Cidr6Data>>());
    }

    #[test]
    fn kinds_are_the_kernel_numbers_of_aya_types() {
        for (kind, t) in [
            (MapKind::Hash, MapType::Hash),
            (MapKind::Array, MapType::Array),
            (MapKind::PerCpuArray, MapType::PerCpuArray),
            (MapKind::LpmTrie, MapType::LpmTrie),
            (MapKind::LruHash, MapType::LruHash),
            (MapKind::RingBuf, MapType::RingBuf),
        ] {
            assert_eq!(kind as u32, kind_number(t), "{kind:?}");
        }
    }
}
