//! The programs of the eBPF object and where each is attached: one row per program in
//! [`PROGRAMS`], read by the agent's loader, `status` and the tests (the agent's unit tests
//! check the table against the object). A new hook is a row here and its program in
//! `egress-ebpf`.

/// The cgroup attach types the agent uses, with their kernel numbers (`bpf_attach_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum CgroupAttachType {
    /// `cgroup_skb/egress`.
    InetEgress = 1,
    /// `cgroup/sock_create`.
    InetSockCreate = 2,
    Connect4 = 10,
    Connect6 = 11,
    Sendmsg4 = 14,
    Sendmsg6 = 15,
    Recvmsg4 = 19,
    Recvmsg6 = 20,
    Getpeername4 = 29,
    Getpeername6 = 30,
    /// `cgroup/setsockopt`.
    Setsockopt = 22,
}

/// Where a program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// A cgroup program (`sock_addr`, `sock`, `sockopt` or `skb`, as its attach type says),
    /// attached through bpf_link to the attach cgroup (the cgroup v2 root or
    /// `--attach-cgroup`); its link pin names the cgroup.
    Cgroup(CgroupAttachType),
    /// A BPF LSM program on this hook (its link pin names cgroup id 0). Attached only where
    /// the kernel runs the BPF LSM (`bpf` in `/sys/kernel/security/lsm`); elsewhere the agent
    /// says what stays possible without it.
    Lsm { hook: &'static str },
    /// A tracepoint program of this category, named as the program (its link pin names cgroup
    /// id 0).
    Tracepoint { category: &'static str },
}

/// One program of the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramSpec {
    /// The program's name in the object, also the hook name in its link pin's name.
    pub name: &'static str,
    pub attach: Attach,
}

const fn cgroup(name: &'static str, t: CgroupAttachType) -> ProgramSpec {
    ProgramSpec {
        name,
        attach: Attach::Cgroup(t),
    }
}

const fn lsm(name: &'static str, hook: &'static str) -> ProgramSpec {
    ProgramSpec {
        name,
        attach: Attach::Lsm { hook },
    }
}

const fn tracepoint(name: &'static str, category: &'static str) -> ProgramSpec {
    ProgramSpec {
        name,
        attach: Attach::Tracepoint { category },
    }
}

/// Every program, in the order the loader attaches them.
pub const PROGRAMS: &[ProgramSpec] = &[
    cgroup("connect4", CgroupAttachType::Connect4),
    cgroup("connect6", CgroupAttachType::Connect6),
    cgroup("sendmsg4", CgroupAttachType::Sendmsg4),
    cgroup("sendmsg6", CgroupAttachType::Sendmsg6),
    cgroup("recvmsg4", CgroupAttachType::Recvmsg4),
    cgroup("recvmsg6", CgroupAttachType::Recvmsg6),
    cgroup("getpeername4", CgroupAttachType::Getpeername4),
    cgroup("getpeername6", CgroupAttachType::Getpeername6),
    // The backstop: what the hooks above never see (see `egress-ebpf/src/backstop.rs`).
    cgroup("sock_create", CgroupAttachType::InetSockCreate),
    cgroup("setsockopt", CgroupAttachType::Setsockopt),
    cgroup("egress", CgroupAttachType::InetEgress),
    lsm("lsm_socket_create", "socket_create"),
    tracepoint("cgroup_mkdir", "cgroup"),
    tracepoint("cgroup_rmdir", "cgroup"),
];

/// How many rows of [`PROGRAMS`] attach to a cgroup.
const CGROUP_HOOKS: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < PROGRAMS.len() {
        if let Attach::Cgroup(_) = PROGRAMS[i].attach {
            n += 1;
        }
        i += 1;
    }
    n
};

impl CgroupAttachType {
    /// The attach types of [`PROGRAMS`], in table order.
    pub const ALL: [Self; CGROUP_HOOKS] = {
        let mut out = [Self::Connect4; CGROUP_HOOKS];
        let (mut n, mut i) = (0, 0);
        while i < PROGRAMS.len() {
            if let Attach::Cgroup(t) = PROGRAMS[i].attach {
                out[n] = t;
                n += 1;
            }
            i += 1;
        }
        out
    };

    /// The name of the program attached with this type (its hook name in link pins).
    pub fn name(self) -> &'static str {
        PROGRAMS
            .iter()
            .find(|p| p.attach == Attach::Cgroup(self))
            .map_or("?", |p| p.name)
    }

    /// The attach type of the program called `name`, if it is a cgroup program.
    pub fn of_program(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cgroup_hook_is_listed_once_with_its_name() {
        assert_eq!(CgroupAttachType::ALL.len(), 11);
        for t in CgroupAttachType::ALL {
            assert_eq!(CgroupAttachType::of_program(t.name()), Some(t));
        }
        assert_eq!(CgroupAttachType::Sendmsg6.name(), "sendmsg6");
        assert_eq!(CgroupAttachType::of_program("cgroup_mkdir"), None);
        for (i, p) in PROGRAMS.iter().enumerate() {
            assert!(PROGRAMS[..i].iter().all(|o| o.name != p.name), "{}", p.name);
        }
    }
}
