//! The agent's pinned maps, read from the bench to time each stage of a container's policy.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use egress_agent::enforcer::{
    keys::{RuleKey, encode},
    layout::PinDir,
};
use egress_common::container::ContainerId;
use egress_common::{
    container::ContainerKey,
    maps,
    policy::CgroupPolicy,
    rule::{Ip4RuleKey, RuleValue},
};
use egress_policy::policy::Rule;

/// The agent's pinned maps, read from the bench.
pub struct Maps {
    pub containers: BpfHashMap<MapData, ContainerKey, CgroupPolicy>,
    pub cgroups: BpfHashMap<MapData, u64, CgroupPolicy>,
    allow4: BpfHashMap<MapData, Ip4RuleKey, RuleValue>,
}

impl Maps {
    pub fn open(pin: &Path) -> Result<Self> {
        let dir = PinDir::new(pin);
        let open = |name: &str| -> Result<Map> {
            let data = MapData::from_pin(dir.map(name))
                .with_context(|| format!("opening the agent's pinned map {name}"))?;
            Ok(Map::HashMap(data))
        };
        Ok(Self {
            containers: open(maps::CONTAINERS)?.try_into()?,
            cgroups: open(maps::CGROUP_POLICY)?.try_into()?,
            allow4: open(maps::ALLOW_V4)?.try_into()?,
        })
    }

    pub fn container_keys(&self) -> HashSet<[u8; 64]> {
        self.containers.keys().flatten().map(|k| k.id).collect()
    }

    pub fn container(&self, id: &ContainerId) -> Option<CgroupPolicy> {
        self.containers.get(&id.key(), 0).ok()
    }

    pub fn has_rule(&self, policy_id: u32, rule: &Rule) -> bool {
        match encode(policy_id, rule) {
            RuleKey::V4(k) => self.allow4.get(&k, 0).is_ok(),
            _ => false,
        }
    }
}

pub fn rule(ip: Ipv4Addr, port: u16) -> Rule {
    Rule::addr(IpAddr::V4(ip), Some(port)).expect("a valid port")
}
