//! Entry points of the egress programs. Each is a thin wrapper over [`judge::judge`]; the maps
//! are in [`maps`], the destination decoding in [`dest`].
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod dest;
#[cfg(target_arch = "bpf")]
mod judge;
#[cfg(target_arch = "bpf")]
mod maps;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
    use egress_common::event::Hook;

    use crate::{dest, judge::judge};

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
