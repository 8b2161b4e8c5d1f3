//! End-to-end, one address family failing: a labelled container in `egress.dns=resolve` mode
//! (the agent resolves its allowed names itself) reaches the host of its allowed name although
//! the DNS server refuses that name's AAAA question (as dnsmasq without upstream and some
//! corporate forwarders do), directly and behind a CNAME; another host stays denied by IP and
//! its name does not resolve. The agent resolves A and AAAA on their own, keeps the A answer and
//! says in one log line which family failed, why, and what it keeps.
//!
//! The lab (`egress_tests::e2e::Lab`) is network 40: `10.231.40.0/24`, its test DNS on the
//! gateway, busybox targets answering `ok <role>` on TCP 8080. Needs root, a dockerd and the
//! test image: `cargo xtask test --with-docker -- e2e_dns_families`.

use std::time::Duration;

use egress_tests::e2e::{AgentOpts, Check, Lab, PORT};
use hickory_proto::{op::ResponseCode, rr::RecordType};
use serde_json::Value;

const ALLOW: &str = "egress.allow";
const DNS_MODE: &str = "egress.dns";
const LOG_TIMEOUT: Duration = Duration::from_secs(15);

fn field<'a>(f: &'a Value, k: &str) -> &'a str {
    f[k].as_str().unwrap_or_default()
}

#[test]
fn allowed_name_is_reached_although_its_aaaa_is_refused() {
    let mut lab = Lab::new("fam-refused", 40);
    let a = lab.start_target("a", 10);
    let b = lab.start_target("b", 11);
    let (ip_a, ip_b) = (a.ip.unwrap(), b.ip.unwrap());
    lab.dns.set_a("api.fam.test", &[ip_a], 300);
    lab.dns
        .set_type_failure("api.fam.test", RecordType::AAAA, ResponseCode::Refused);
    lab.dns.set_cname("alias.fam.test", "api.fam.test", 300);
    lab.dns.set_a("other.fam.test", &[ip_b], 300);
    lab.start_agent(&AgentOpts::default());

    for (role, name) in [("direct", "api.fam.test"), ("cname", "alias.fam.test")] {
        let checks = [
            Check::tcp("a_ip", ip_a, PORT),
            Check::tcp("a_name", name, PORT),
            Check::tcp("b_ip", ip_b, PORT),
            Check::tcp("b_name", "other.fam.test", PORT),
        ];
        // The client starts once the agent's own lookup has written the A address into its
        // policy (on the code before the fix, it never did: this wait timed out).
        let labels = [(ALLOW, name), (DNS_MODE, "resolve")];
        let (run, p) = lab.probe_client(role, &labels, &checks, &[ip_a.to_string()]);
        println!(
            "{role} client `{ALLOW}={name}` ({:?}):\n{}",
            run.wall, run.output
        );
        assert!(p[0].reached("a"), "{role}: A by IP: {:?}", p[0]);
        assert!(p[1].reached("a"), "{role}: A by name {name}: {:?}", p[1]);
        p[2].assert_denied(&format!("{role}: B by IP"));
        p[3].assert_unresolved(&format!("{role}: B by name"));

        // One line says which family failed, why, and what is kept.
        let failed = lab.agent().wait_for(
            &format!("on the failed AAAA lookup of {name}"),
            LOG_TIMEOUT,
            |f| {
                field(f, "message") == "lookup failed; keeping this family's last good addresses"
                    && field(f, "domain") == name
            },
        );
        assert_eq!(field(&failed, "family"), "AAAA", "{failed}");
        assert!(
            field(&failed, "error").to_lowercase().contains("refused"),
            "{failed}"
        );
        assert!(
            field(&failed, "effective").contains(&ip_a.to_string()),
            "the line says the A address is kept: {failed}"
        );
    }
}
