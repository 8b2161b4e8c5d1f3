//! egress-policy: what a container or cgroup may reach, as the operator writes it. Pure Rust
//! (no eBPF, no Docker, no async runtime), so the agent, the tests and fuzz targets share it.
//!
//! - [`domain`]: domain names, their one key spelling, the label grammar's name rules and the
//!   name patterns of allow entries (exact names and wildcards);
//! - [`policy`]: the policy model (mode, address rules, [`policy::Policy`]) and the address
//!   entry grammar of `--policy`;
//! - [`labels`]: the `egress.*` label grammar, the image-label screen and the classification of
//!   a container from its labels;
//! - [`image_ref`]: image references and ids, as the policy file's `trusted_images` names them;
//! - [`policy_file`]: the policy file, and the merge of labels, image labels and its rules into
//!   what a container gets ([`policy_file::judge`]);
//! - [`dns`]: the DNS modes and what the agent's DNS proxy needs of a container's policy
//!   ([`dns::DnsPolicy`]: which names it may look up, on which ports their addresses may be
//!   used);
//! - [`desired`]: what that classification asks of the kernel (mode and rules), given the IPs of
//!   its allowed domains and the addresses it learned from its DNS answers.

pub mod desired;
pub mod dns;
pub mod domain;
pub mod image_ref;
pub mod labels;
pub mod policy;
pub mod policy_file;
#[cfg(test)]
mod testing;
