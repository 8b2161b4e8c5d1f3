//! The embedded eBPF object against the tables of programs and maps (`egress_common::programs`,
//! `egress_common::maps`): every program of the object is a row with its hook, every pinned map
//! a row with its type and sizes, and the other way round.

use aya_obj::{Object, ProgramSection, generated::bpf_attach_type, maps::PinningType};
use egress_common::{
    maps::MAPS,
    programs::{Attach, PROGRAMS},
};

fn object() -> Object {
    Object::parse(super::EBPF_OBJECT).expect("the embedded eBPF object parses")
}

#[test]
fn every_program_of_the_object_is_a_row_of_the_table() {
    let obj = object();
    let mut names: Vec<&str> = obj.programs.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut rows: Vec<&str> = PROGRAMS.iter().map(|p| p.name).collect();
    rows.sort_unstable();
    assert_eq!(names, rows);
    for spec in PROGRAMS {
        let section = &obj.programs[spec.name].section;
        match (spec.attach, section) {
            (Attach::Cgroup(t), ProgramSection::CgroupSockAddr { attach_type }) => {
                let kernel = bpf_attach_type::from(*attach_type) as u32;
                assert_eq!(kernel, t as u32, "{}: {attach_type:?}", spec.name);
            }
            (Attach::Cgroup(t), ProgramSection::CgroupSock { attach_type }) => {
                let kernel = bpf_attach_type::from(*attach_type) as u32;
                assert_eq!(kernel, t as u32, "{}: {attach_type:?}", spec.name);
            }
            (Attach::Cgroup(t), ProgramSection::CgroupSockopt { attach_type }) => {
                let kernel = bpf_attach_type::from(*attach_type) as u32;
                assert_eq!(kernel, t as u32, "{}: {attach_type:?}", spec.name);
            }
            (
                Attach::Cgroup(t),
                ProgramSection::CgroupSkb {
                    attach_type: Some(attach_type),
                },
            ) => {
                let kernel = bpf_attach_type::from(*attach_type) as u32;
                assert_eq!(kernel, t as u32, "{}: {attach_type:?}", spec.name);
            }
            (Attach::Lsm { hook }, ProgramSection::Lsm { .. }) => {
                assert_eq!(format!("lsm_{hook}"), spec.name);
            }
            (Attach::Tracepoint { .. }, ProgramSection::TracePoint) => {}
            (attach, section) => panic!("{}: table {attach:?}, object {section:?}", spec.name),
        }
    }
}

#[test]
fn every_pinned_map_of_the_object_is_a_row_of_the_table() {
    let obj = object();
    let mut pinned: Vec<&str> = obj
        .maps
        .iter()
        .filter(|(_, m)| m.pinning() == PinningType::ByName)
        .map(|(n, _)| n.as_str())
        .collect();
    pinned.sort_unstable();
    let mut rows: Vec<&str> = MAPS.iter().map(|m| m.name).collect();
    rows.sort_unstable();
    assert_eq!(pinned, rows);
    for spec in MAPS {
        let m = &obj.maps[spec.name];
        assert_eq!(
            (m.map_type(), m.key_size(), m.value_size(), m.max_entries()),
            (
                spec.kind as u32,
                spec.key_size,
                spec.value_size,
                spec.max_entries
            ),
            "{}",
            spec.name
        );
    }
}
