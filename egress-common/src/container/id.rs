//! A Docker container's full id, as the agent, the maps and the cgroup paths spell it (user
//! space only).

use std::{fmt, str::FromStr};

use super::{CONTAINER_ID_LEN, ContainerKey, PATH_SCAN, find_container_id, key_at};

/// A full container id: 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId([u8; CONTAINER_ID_LEN]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a full container id (64 lowercase hex digits)")]
pub struct BadContainerId(pub String);

impl ContainerId {
    pub fn as_str(&self) -> &str {
        // The bytes were checked to be ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The first 12 digits, as `docker ps` shows them.
    pub fn short(&self) -> &str {
        &self.as_str()[..12]
    }

    /// The key of this container in the CONTAINERS map.
    pub fn key(&self) -> ContainerKey {
        ContainerKey { id: self.0 }
    }

    /// From a CONTAINERS map key.
    pub fn from_key(k: &ContainerKey) -> Option<Self> {
        std::str::from_utf8(&k.id).ok()?.parse().ok()
    }

    /// The container whose cgroup `path` is, recognised by its last component (`<id>` or
    /// `docker-<id>.scope`, below some parent) exactly as the `cgroup_mkdir` tracepoint does
    /// ([`find_container_id`]); None for any other cgroup.
    pub fn of_cgroup_path(path: &str) -> Option<Self> {
        let tail = &path.as_bytes()[path.rfind('/')?..];
        if tail.len() > PATH_SCAN {
            return None;
        }
        let mut buf = [0u8; PATH_SCAN];
        buf[..tail.len()].copy_from_slice(tail);
        let at = find_container_id(&buf, tail.len())?;
        Self::from_key(&key_at(&buf, at))
    }
}

impl FromStr for ContainerId {
    type Err = BadContainerId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() != CONTAINER_ID_LEN
            || !b
                .iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
        {
            return Err(BadContainerId(s.to_owned()));
        }
        let mut id = [0u8; CONTAINER_ID_LEN];
        id.copy_from_slice(b);
        Ok(Self(id))
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContainerId({})", self.short())
    }
}

impl serde::Serialize for ContainerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_full_ids_only() {
        let id: ContainerId = ID.parse().unwrap();
        assert_eq!(id.to_string(), ID);
        assert_eq!(id.short(), "0123456789ab");
        assert_eq!(ContainerId::from_key(&id.key()), Some(id));
        assert!("0123456789ab".parse::<ContainerId>().is_err());
        assert!(ID.to_uppercase().parse::<ContainerId>().is_err());
        assert!(format!("{}g", &ID[..63]).parse::<ContainerId>().is_err());
    }

    #[test]
    fn cgroup_paths_name_their_container_as_the_kernel_reads_them() {
        let id: ContainerId = ID.parse().unwrap();
        for path in [
            format!("/docker/{ID}"),
            format!("/{ID}"),
            format!("/system.slice/docker-{ID}.scope"),
            format!("/a/b/c/{ID}"),
        ] {
            assert_eq!(ContainerId::of_cgroup_path(&path), Some(id), "{path}");
        }
        for path in [
            ID.to_owned(),
            format!("/docker/{ID}/init.scope"),
            format!("/docker/docker-{ID}"),
            format!("/docker/{}", ID.to_uppercase()),
            "/".to_owned(),
        ] {
            assert_eq!(ContainerId::of_cgroup_path(&path), None, "{path}");
        }
    }
}
