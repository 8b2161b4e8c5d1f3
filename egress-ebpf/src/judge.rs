//! The verdict: unpoliced cgroups pass after one lookup; policed ones must match a rule, and
//! their DNS (port 53) goes to their DNS proxy ([`crate::dns`]) before any rule is looked at.

use aya_ebpf::{
    helpers::bpf_get_current_cgroup_id, maps::lpm_trie::Key, programs::SockAddrContext,
};
use egress_common::{
    dns::DNS_PORT,
    event::{Hook, Reason, Verdict},
    policy::{
        CgroupPolicy, FLAG_ANY_PORT_ONLY4, FLAG_ANY_PORT_ONLY6, FLAG_CIDR4, FLAG_CIDR6,
        FLAG_DENY_ALL, FLAG_LOOPBACK, FLAG_UNCLASSIFIED, Mode,
    },
    rule::{ANY_PORT, CIDR_PREFIX_BITS, Cidr4Data, Cidr6Data, Ip4RuleKey, Ip6RuleKey},
    stats,
};

use crate::{
    dest::{Addr, Dest},
    dns::{self, Outcome},
    maps::{ALLOW_V4, ALLOW_V6, CGROUP_POLICY, CIDR_V4, CIDR_V6},
    report::{count, send, set_destination},
};

const ALLOW: i32 = 1;
const DENY: i32 = 0;

/// Judges one destination for the calling task's cgroup.
///
/// The policy is looked up by the cgroup of the task that connects or sends. The program only
/// runs for sockets created under the cgroup it is attached to; see the README ("Which cgroup
/// a socket is judged by").
#[inline(always)]
pub fn judge(ctx: &SockAddrContext, hook: Hook, dest: Dest) -> i32 {
    // SAFETY: a helper with no arguments, valid in cgroup programs.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: the value is plain data, copied out before anything else touches the map.
    let policy = match unsafe { CGROUP_POLICY.get(cgroup_id) } {
        Some(p) => *p,
        None => return ALLOW,
    };
    let reason = if policy.flags & FLAG_UNCLASSIFIED != 0 {
        Reason::Unclassified
    } else if policy.flags & FLAG_DENY_ALL != 0 {
        Reason::PolicyNotWritten
    } else if dest.port == DNS_PORT
        && let Some(outcome) = dns::redirect(ctx, hook, &policy, &dest)
    {
        match outcome {
            Outcome::Allow => return ALLOW,
            Outcome::Deny => return DENY,
            Outcome::NotReady => Reason::DnsProxyNotReady,
        }
    } else if own_loopback(&policy, &dest) || allowed(&policy, &dest) {
        count(stats::ALLOWED);
        return ALLOW;
    } else if dns::is_proxy(&policy, &dest) {
        return ALLOW;
    } else {
        Reason::NoMatchingRule
    };
    let verdict = match policy.mode() {
        Mode::Audit => Verdict::Audited,
        Mode::Enforce => Verdict::Denied,
    };
    count(stats::slot(verdict, reason));
    report(ctx, hook, cgroup_id, &policy, &dest, verdict, reason);
    match verdict {
        Verdict::Audited => ALLOW,
        Verdict::Denied => DENY,
    }
}

/// Docker's embedded DNS server, a loopback address that forwards outward.
const EMBEDDED_DNS: [u8; 4] = [127, 0, 0, 11];

/// True if `policy` may reach its own loopback ([`FLAG_LOOPBACK`]) and `dest` is loopback
/// (`127.0.0.0/8`, `::1`), neither port 53 nor the embedded resolver. No map lookup.
#[inline(always)]
fn own_loopback(policy: &CgroupPolicy, dest: &Dest) -> bool {
    if policy.flags & FLAG_LOOPBACK == 0 || dest.port == DNS_PORT {
        return false;
    }
    match dest.addr {
        Addr::V4(a) => a[0] == 127 && a != EMBEDDED_DNS,
        Addr::V6(a) => a == LOOPBACK6,
    }
}

const LOOPBACK6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// True if a rule of `policy` allows `dest`: the exact address with the port (unless the
/// policy's exact rules of that family all allow any port), then with any port; then the same
/// in the CIDR trie if the policy has CIDR rules of that family.
#[inline(always)]
pub fn allowed(policy: &CgroupPolicy, dest: &Dest) -> bool {
    let id = policy.policy_id;
    let port = dest.port;
    // SAFETY (every `get` on a hash map below): the value is only tested for presence.
    match dest.addr {
        Addr::V4(a) => unsafe {
            (policy.flags & FLAG_ANY_PORT_ONLY4 == 0
                && ALLOW_V4.get(Ip4RuleKey::new(id, a, port)).is_some())
                || ALLOW_V4.get(Ip4RuleKey::new(id, a, ANY_PORT)).is_some()
                || (policy.flags & FLAG_CIDR4 != 0
                    && (cidr4(Cidr4Data::new(id, a, port))
                        || cidr4(Cidr4Data::new(id, a, ANY_PORT))))
        },
        Addr::V6(a) => unsafe {
            (policy.flags & FLAG_ANY_PORT_ONLY6 == 0
                && ALLOW_V6.get(Ip6RuleKey::new(id, a, port)).is_some())
                || ALLOW_V6.get(Ip6RuleKey::new(id, a, ANY_PORT)).is_some()
                || (policy.flags & FLAG_CIDR6 != 0
                    && (cidr6(Cidr6Data::new(id, a, port))
                        || cidr6(Cidr6Data::new(id, a, ANY_PORT))))
        },
    }
}

#[inline(always)]
pub fn cidr4(data: Cidr4Data) -> bool {
    CIDR_V4.get(Key::new(CIDR_PREFIX_BITS + 32, data)).is_some()
}

#[inline(always)]
pub fn cidr6(data: Cidr6Data) -> bool {
    CIDR_V6
        .get(Key::new(CIDR_PREFIX_BITS + 128, data))
        .is_some()
}

#[inline(always)]
fn report(
    ctx: &SockAddrContext,
    hook: Hook,
    cgroup_id: u64,
    policy: &CgroupPolicy,
    dest: &Dest,
    verdict: Verdict,
    reason: Reason,
) {
    send(cgroup_id, policy.policy_id, |ev| {
        ev.port = dest.port;
        // SAFETY: a field of the valid context.
        ev.protocol = unsafe { (*ctx.sock_addr).protocol } as u8;
        ev.verdict = verdict as u8;
        ev.reason = reason as u8;
        ev.hook = hook as u8;
        set_destination(ev, dest);
    });
}
