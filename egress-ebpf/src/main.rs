//! Entry points of the egress programs, thin wrappers: the cgroup connect and sendmsg hooks
//! over [`judge::judge`] (with the DNS redirect of [`dns`]), the recvmsg and getpeername hooks
//! over [`unredirect`], the cgroup tracepoints over [`classify`], and the backstop for what those
//! hooks never see (socket creation, socket options, packets at egress) over [`backstop`]. The maps are in [`maps`], the
//! destination decoding in [`dest`].
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod backstop;
#[cfg(target_arch = "bpf")]
mod classify;
#[cfg(target_arch = "bpf")]
mod dest;
#[cfg(target_arch = "bpf")]
mod dns;
#[cfg(target_arch = "bpf")]
mod judge;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod report;
#[cfg(target_arch = "bpf")]
mod unredirect;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        macros::{cgroup_skb, cgroup_sock, cgroup_sock_addr, cgroup_sockopt, lsm, tracepoint},
        programs::{
            LsmContext, SkBuffContext, SockAddrContext, SockContext, SockoptContext,
            TracePointContext,
        },
    };
    use egress_common::event::Hook;

    use crate::{backstop, classify, dest, judge::judge, unredirect};

    #[tracepoint(category = "cgroup", name = "cgroup_mkdir")]
    pub fn cgroup_mkdir(ctx: TracePointContext) -> u32 {
        classify::on_mkdir(&ctx)
    }

    #[tracepoint(category = "cgroup", name = "cgroup_rmdir")]
    pub fn cgroup_rmdir(ctx: TracePointContext) -> u32 {
        classify::on_rmdir(&ctx)
    }

    #[cgroup_sock_addr(connect4)]
    pub fn connect4(ctx: SockAddrContext) -> i32 {
        judge(&ctx, Hook::Connect4, dest::v4(&ctx))
    }

    #[cgroup_sock_addr(connect6)]
    pub fn connect6(ctx: SockAddrContext) -> i32 {
        judge(&ctx, Hook::Connect6, dest::v6(&ctx))
    }

    #[cgroup_sock_addr(sendmsg4)]
    pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
        judge(&ctx, Hook::Sendmsg4, dest::v4(&ctx))
    }

    #[cgroup_sock_addr(sendmsg6)]
    pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
        judge(&ctx, Hook::Sendmsg6, dest::v6(&ctx))
    }

    #[cgroup_sock_addr(recvmsg4)]
    pub fn recvmsg4(ctx: SockAddrContext) -> i32 {
        unredirect::v4(&ctx)
    }

    #[cgroup_sock_addr(recvmsg6)]
    pub fn recvmsg6(ctx: SockAddrContext) -> i32 {
        unredirect::v6(&ctx)
    }

    #[cgroup_sock_addr(getpeername4)]
    pub fn getpeername4(ctx: SockAddrContext) -> i32 {
        unredirect::v4(&ctx)
    }

    #[cgroup_sock_addr(getpeername6)]
    pub fn getpeername6(ctx: SockAddrContext) -> i32 {
        unredirect::v6(&ctx)
    }

    #[cgroup_sock(sock_create)]
    pub fn sock_create(ctx: SockContext) -> i32 {
        backstop::sock_create(&ctx)
    }

    #[cgroup_sockopt(setsockopt)]
    pub fn setsockopt(ctx: SockoptContext) -> i32 {
        backstop::setsockopt(&ctx)
    }

    #[cgroup_skb(egress)]
    pub fn egress(ctx: SkBuffContext) -> i32 {
        backstop::egress(&ctx)
    }

    #[lsm(hook = "socket_create")]
    pub fn lsm_socket_create(ctx: LsmContext) -> i32 {
        backstop::lsm_socket_create(&ctx)
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// On the host this crate is an empty program so that `cargo check --workspace` works.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
