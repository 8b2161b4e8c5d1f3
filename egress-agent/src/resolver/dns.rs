//! The DNS client: the A or the AAAA lookup of one domain through hickory's resolver, without
//! its cache, so that every lookup reports the upstream server's current answer and TTL. The
//! two families are separate lookups: the resolver service asks, keeps and retries each on its
//! own, so that a server refusing (or failing, or never answering) AAAA costs nothing to A.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use futures_util::future::{BoxFuture, FutureExt};
use hickory_resolver::{
    TokioResolver,
    config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig},
    lookup::Lookup,
    net::{DnsError, NetError, runtime::TokioRuntimeProvider},
    proto::{
        op::ResponseCode,
        rr::{Name, RData, Record, rdata::CNAME},
    },
    system_conf::parse_resolv_conf,
};

use super::{Family, ResolverError, normalize_domain, service::Upstream};

/// The longest CNAME chain followed inside one answer.
const MAX_CHAIN: usize = 16;

/// The IPs of one family of one domain and how long they may be cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The family's addresses (A or AAAA records) at the end of the domain's CNAME chain
    /// (empty for NXDOMAIN or when the name has no records of the family).
    pub ips: BTreeSet<IpAddr>,
    /// The smallest TTL of the records used (CNAMEs of the chain included); without records,
    /// the negative TTL of the SOA the server sent. Zero if the server gave none of these (the
    /// refresh floor then applies).
    pub ttl: Duration,
}

/// Timeouts of the DNS client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsOptions {
    /// Timeout of one query to the server. Default 2 s.
    pub timeout: Duration,
    /// Attempts per query (hickory's `attempts`). Default 2.
    pub attempts: usize,
}

impl Default for DnsOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            attempts: 2,
        }
    }
}

/// A DNS client for the resolver service; cheap to clone.
#[derive(Clone)]
pub struct DnsClient {
    resolver: TokioResolver,
    server: Option<SocketAddr>,
}

impl std::fmt::Debug for DnsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsClient")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl DnsClient {
    /// A client that asks only `server` (UDP, with TCP when an answer is truncated), or the
    /// name servers of the host's /etc/resolv.conf ([`crate::host::Host::resolv_conf`]) when
    /// `None`. Must be called inside a tokio
    /// runtime.
    pub fn new(server: Option<SocketAddr>) -> Result<Self, ResolverError> {
        Self::with_options(server, DnsOptions::default())
    }

    /// [`DnsClient::new`] with explicit timeouts.
    pub fn with_options(
        server: Option<SocketAddr>,
        options: DnsOptions,
    ) -> Result<Self, ResolverError> {
        if options.timeout.is_zero() || options.attempts == 0 {
            return Err(ResolverError::InvalidConfig(
                "the DNS timeout and attempts must be positive".into(),
            ));
        }
        let mut builder = match server {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => {
                let (config, opts) = std::fs::read(crate::host::get().resolv_conf())
                    .map_err(NetError::from)
                    .and_then(parse_resolv_conf)
                    .map_err(ResolverError::SystemConfig)?;
                let mut builder =
                    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
                *builder.options_mut() = opts;
                builder
            }
        };
        let opts = builder.options_mut();
        // No response cache: each lookup must see the server's current records and TTLs
        // (a capacity of 0 disables hickory's cache entirely).
        opts.cache_size = 0;
        // The host's /etc/hosts says nothing about what containers may reach.
        opts.use_hosts_file = ResolveHosts::Never;
        // Keep the CNAMEs of a chain in answers: their TTLs bound the answer's TTL.
        opts.preserve_intermediates = true;
        opts.timeout = options.timeout;
        opts.attempts = options.attempts;
        let resolver = builder
            .build()
            .map_err(|e| ResolverError::InvalidConfig(format!("building the DNS resolver: {e}")))?;
        Ok(Self { resolver, server })
    }

    /// The server given to [`DnsClient::new`] (`None`: the system configuration).
    pub fn server(&self) -> Option<SocketAddr> {
        self.server
    }

    /// Looks up the records of one family (A or AAAA) of `domain`, following CNAMEs. No records
    /// of the family, or NXDOMAIN, is a valid empty answer; REFUSED, SERVFAIL, a timeout, a
    /// network error or a referral is an error of this family only.
    pub async fn lookup(&self, domain: &str, family: Family) -> Result<Answer, ResolverError> {
        let key = normalize_domain(domain)?;
        let mut name = Name::from_ascii(&key).map_err(|e| ResolverError::InvalidDomain {
            domain: domain.to_owned(),
            reason: e.to_string(),
        })?;
        name.set_fqdn(true);
        let result = self
            .resolver
            .lookup(name.clone(), family.record_type())
            .await;
        let mut ips = BTreeSet::new();
        let ttl = match QueryOutcome::from_result(&key, family, result)? {
            QueryOutcome::Records(records) => addresses_of(&name, family, &records, &mut ips),
            QueryOutcome::Empty { negative_ttl } => negative_ttl,
        };
        Ok(Answer {
            ips,
            ttl: Duration::from_secs(ttl.unwrap_or(0).into()),
        })
    }
}

impl Upstream for DnsClient {
    fn lookup(
        &self,
        domain: String,
        family: Family,
    ) -> BoxFuture<'static, Result<Answer, ResolverError>> {
        let client = self.clone();
        async move { client.lookup(&domain, family).await }.boxed()
    }
}

/// The outcome of one query.
enum QueryOutcome {
    Records(Vec<Record>),
    Empty { negative_ttl: Option<u32> },
}

impl QueryOutcome {
    fn from_result(
        domain: &str,
        family: Family,
        result: Result<Lookup, NetError>,
    ) -> Result<Self, ResolverError> {
        match result {
            Ok(lookup) => Ok(Self::Records(lookup.answers().to_vec())),
            Err(NetError::Dns(DnsError::NoRecordsFound(no)))
                if matches!(
                    no.response_code,
                    ResponseCode::NXDomain | ResponseCode::NoError
                ) =>
            {
                // A referral (NS records, no SOA) means the server does not resolve for us.
                if no.soa.is_none() && no.ns.is_some() {
                    return Err(ResolverError::Referral {
                        domain: domain.to_owned(),
                        family,
                    });
                }
                Ok(Self::Empty {
                    negative_ttl: no.negative_ttl,
                })
            }
            Err(source) => Err(ResolverError::Lookup {
                domain: domain.to_owned(),
                family,
                source,
            }),
        }
    }
}

/// Adds the addresses of `family` that belong to `name` — its own, or those of the names its
/// CNAME chain leads to — to `ips`, and returns the smallest TTL of the chain's records (None
/// if none). Records about other names, and addresses of the other family, are ignored.
fn addresses_of(
    name: &Name,
    family: Family,
    records: &[Record],
    ips: &mut BTreeSet<IpAddr>,
) -> Option<u32> {
    let mut chain = vec![name.clone()];
    let mut ttl = None;
    // Follow the chain link by link, whatever order the records come in.
    while chain.len() <= MAX_CHAIN {
        let last = chain.last().expect("chain starts non-empty");
        let next = records.iter().find_map(|r| match &r.data {
            RData::CNAME(CNAME(target)) if &r.name == last => Some((target, r.ttl)),
            _ => None,
        });
        match next {
            Some((target, link_ttl)) if !chain.contains(target) => {
                ttl = min_opt(ttl, Some(link_ttl));
                chain.push(target.clone());
            }
            _ => break,
        }
    }
    for record in records {
        let ip = match &record.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
            _ => continue,
        };
        if Family::of(&ip) == family && chain.contains(&record.name) {
            ips.insert(ip);
            ttl = min_opt(ttl, Some(record.ttl));
        }
    }
    ttl
}

fn min_opt(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parses `--dns-server`: `ADDR` or `ADDR:PORT`, IPv6 bare (`::1`) or in brackets
/// (`[::1]`, `[::1]:5353`). The port defaults to 53.
pub fn parse_dns_server(raw: &str) -> Result<SocketAddr, ResolverError> {
    let s = raw.trim();
    let bad = || ResolverError::InvalidServer(raw.to_owned());
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let ip: std::net::Ipv6Addr = inner.parse().map_err(|_| bad())?;
        return Ok(SocketAddr::new(ip.into(), 53));
    }
    let addr: SocketAddr = s.parse().map_err(|_| bad())?;
    if addr.port() == 0 {
        return Err(bad());
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, str::FromStr};

    use hickory_resolver::proto::rr::rdata::{A, AAAA, TXT};

    use super::*;

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    fn a(owner: &str, ttl: u32, ip: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::A(A(ip.parse().unwrap())))
    }

    fn aaaa(owner: &str, ttl: u32, ip: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA(ip.parse().unwrap())))
    }

    fn cname(owner: &str, ttl: u32, target: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
    }

    fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn direct_addresses_of_the_family_and_its_min_ttl() {
        let records = [
            a("www.test.", 60, "10.0.0.1"),
            a("WWW.test.", 30, "10.0.0.2"),
            aaaa("www.test.", 20, "2001:db8::1"),
        ];
        let mut out = BTreeSet::new();
        let ttl = addresses_of(&name("www.test."), Family::V4, &records, &mut out);
        assert_eq!(ttl, Some(30), "the AAAA record's TTL is not the A answer's");
        assert_eq!(out, ips(&["10.0.0.1", "10.0.0.2"]));
        let mut out = BTreeSet::new();
        let ttl = addresses_of(&name("www.test."), Family::V6, &records, &mut out);
        assert_eq!(ttl, Some(20));
        assert_eq!(out, ips(&["2001:db8::1"]));
    }

    #[test]
    fn cname_chain_addresses_belong_to_the_asked_name() {
        let mut out = BTreeSet::new();
        // Out of order on purpose; the chain's smallest TTL is a CNAME's.
        let records = [
            a("edge.cdn.test.", 300, "10.0.0.9"),
            cname("mid.test.", 20, "edge.cdn.test."),
            cname("www.test.", 100, "mid.test."),
        ];
        let ttl = addresses_of(&name("www.test."), Family::V4, &records, &mut out);
        assert_eq!(out, ips(&["10.0.0.9"]));
        assert_eq!(ttl, Some(20));
    }

    #[test]
    fn records_of_other_names_are_ignored() {
        let mut out = BTreeSet::new();
        let records = [
            a("www.test.", 60, "10.0.0.1"),
            a("evil.test.", 1, "192.0.2.66"),
            cname("other.test.", 1, "www.test."),
            Record::from_rdata(name("www.test."), 1, RData::TXT(TXT::new(vec!["x".into()]))),
        ];
        let ttl = addresses_of(&name("www.test."), Family::V4, &records, &mut out);
        assert_eq!(out, ips(&["10.0.0.1"]));
        assert_eq!(ttl, Some(60));
    }

    #[test]
    fn cname_loops_end() {
        let mut out = BTreeSet::new();
        let records = [
            cname("a.test.", 5, "b.test."),
            cname("b.test.", 7, "a.test."),
        ];
        let ttl = addresses_of(&name("a.test."), Family::V4, &records, &mut out);
        assert!(out.is_empty());
        assert_eq!(ttl, Some(5));
    }

    #[test]
    fn dangling_cname_gives_no_address_but_a_ttl() {
        let mut out = BTreeSet::new();
        let ttl = addresses_of(
            &name("a.test."),
            Family::V6,
            &[cname("a.test.", 9, "gone.test.")],
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(ttl, Some(9));
    }

    #[test]
    fn empty_answers_are_answers_and_error_codes_fail_their_family_only() {
        use hickory_resolver::{net::NoRecords, proto::op::Query};

        let query = Query::query(name("v4only.test."), Family::V6.record_type());
        for code in [ResponseCode::NXDomain, ResponseCode::NoError] {
            let empty = NetError::Dns(DnsError::NoRecordsFound(NoRecords::new(
                query.clone(),
                code,
            )));
            assert!(matches!(
                QueryOutcome::from_result("v4only.test", Family::V6, Err(empty)),
                Ok(QueryOutcome::Empty { .. })
            ));
        }
        for code in [ResponseCode::Refused, ResponseCode::ServFail] {
            let failed = NetError::Dns(DnsError::ResponseCode(code));
            let error = QueryOutcome::from_result("v4only.test", Family::V6, Err(failed))
                .err()
                .expect("an error code is no answer");
            assert!(
                matches!(
                    &error,
                    ResolverError::Lookup {
                        family: Family::V6,
                        ..
                    }
                ),
                "{error}"
            );
            assert!(
                error
                    .to_string()
                    .starts_with("resolving `v4only.test` (AAAA): "),
                "{error}"
            );
        }
        let timeout = QueryOutcome::from_result("v4only.test", Family::V6, Err(NetError::Timeout));
        assert!(matches!(timeout, Err(ResolverError::Lookup { .. })));
    }

    #[test]
    fn dns_server_argument() {
        let v4 = |a: [u8; 4], p| SocketAddr::new(Ipv4Addr::from(a).into(), p);
        assert_eq!(
            parse_dns_server("10.0.0.53").unwrap(),
            v4([10, 0, 0, 53], 53)
        );
        assert_eq!(
            parse_dns_server("127.0.0.1:5353").unwrap(),
            v4([127, 0, 0, 1], 5353)
        );
        assert_eq!(
            parse_dns_server("::1").unwrap(),
            "[::1]:53".parse().unwrap()
        );
        assert_eq!(
            parse_dns_server("[::1]").unwrap(),
            "[::1]:53".parse().unwrap()
        );
        assert_eq!(
            parse_dns_server("[fd00::53]:5353").unwrap(),
            "[fd00::53]:5353".parse().unwrap()
        );
        for bad in [
            "",
            "dns.example",
            "10.0.0.1:",
            "10.0.0.1:0",
            "10.0.0.1:70000",
            "[10.0.0.1]",
        ] {
            assert!(parse_dns_server(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn client_options_are_checked() {
        let zero = DnsOptions {
            timeout: Duration::ZERO,
            attempts: 1,
        };
        assert!(DnsClient::with_options(Some("127.0.0.1:53".parse().unwrap()), zero).is_err());
    }
}
