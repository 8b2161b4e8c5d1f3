//! A DNS server for tests: authoritative for `test.` only, answering from an in-memory table
//! that tests change while it runs.
//!
//! It is hickory-server's [`Server`] (UDP and TCP on the same port, truncation and TCP
//! fallback as a real server does them) with a request handler over the table. It never
//! forwards: names outside `test.` get REFUSED, unknown names under `test.` NXDOMAIN (with the
//! zone's SOA, so resolvers get a negative TTL). A name can also fail for one record type only
//! (REFUSED, SERVFAIL, or no answer at all), as forwarders without an upstream do for the type
//! they have no local data for — also when the name is reached through a CNAME. A name can
//! be a pool ([`TestDns::set_pool`]: each answer carries `k` of its `n` addresses, chosen at
//! random, as CDNs hand each asker different IPs), and the whole server can go silent
//! ([`TestDns::set_silent`]: an upstream that drops everything). Every question is logged with
//! its transport and source ([`TestDns::log`], [`TestDns::queries_via`]). The server runs on
//! its own thread and runtime, so it works from sync and async tests alike and stops when the
//! [`TestDns`] is dropped; [`TestDns::start_in_netns_of`] binds it inside a container's
//! network namespace (a "test host" serving DNS on its own address).
//!
//! ```no_run
//! use egress_tests::dns::TestDns;
//! use hickory_proto::{op::ResponseCode, rr::RecordType};
//! let dns = TestDns::start("127.0.0.1".parse().unwrap());
//! dns.set_a("www.test", &["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()], 30);
//! dns.set_cname("alias.test", "www.test", 10);
//! dns.set_type_failure("www.test", RecordType::AAAA, ResponseCode::Refused);
//! // point a resolver at dns.addr() ...
//! assert_eq!(dns.queries_for("www.test"), 0);
//! ```

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    str::FromStr,
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode},
    rr::{
        DNSClass, Name, RData, Record, RecordType,
        rdata::{A, AAAA, CNAME, SOA},
    },
};
use hickory_server::{
    Server,
    net::{runtime::Time, xfer::Protocol},
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponseBuilder,
};

use crate::lock;

/// The only zone served.
pub const ZONE: &str = "test.";

/// Longest CNAME chain the server follows inside one answer.
const MAX_CHAIN: usize = 8;

/// How long a TCP connection may stay idle.
const TCP_IDLE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
enum Entry {
    Addrs {
        ips: Vec<IpAddr>,
        ttl: u32,
    },
    /// `pick` of `ips` (of the asked family) at random in each answer.
    Pool {
        ips: Vec<IpAddr>,
        pick: usize,
        ttl: u32,
    },
    Cname {
        target: Name,
        ttl: u32,
    },
    Fail(ResponseCode),
}

/// What the server does with the questions of one type about one name.
#[derive(Debug, Clone, Copy)]
enum TypeFailure {
    /// Answers with this response code and no records.
    Code(ResponseCode),
    /// Never answers (the client times out).
    Drop,
}

#[derive(Debug)]
struct Table {
    names: HashMap<Name, Entry>,
    type_failures: HashMap<(Name, RecordType), TypeFailure>,
    negative_ttl: u32,
    chase_cnames: bool,
    /// Answer nothing at all (questions are still logged).
    silent: bool,
}

/// How a question reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// One question the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedQuery {
    /// Lower-case FQDN (`www.test.`).
    pub name: Name,
    pub rtype: RecordType,
    pub transport: Transport,
    /// Who asked.
    pub src: SocketAddr,
}

#[derive(Debug)]
struct Shared {
    zone: Name,
    table: Mutex<Table>,
    queries: Mutex<HashMap<(Name, RecordType), usize>>,
    log: Mutex<Vec<LoggedQuery>>,
}

/// A running test DNS server; stops on drop.
#[derive(Debug)]
pub struct TestDns {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TestDns {
    /// Starts a server on `bind`, UDP and TCP on one random port. Panics if it cannot bind.
    pub fn start(bind: IpAddr) -> Self {
        Self::try_start(bind).unwrap_or_else(|e| panic!("starting the test DNS on {bind}: {e}"))
    }

    /// [`TestDns::start`], returning the error.
    pub fn try_start(bind: IpAddr) -> io::Result<Self> {
        let mut last = None;
        // The random UDP port may be taken for TCP: try a few.
        for _ in 0..16 {
            let udp = std::net::UdpSocket::bind((bind, 0))?;
            let port = udp.local_addr()?.port();
            match std::net::TcpListener::bind((bind, port)) {
                Ok(tcp) => return Self::serve(udp, tcp),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free port")))
    }

    /// Starts a server on a given address (e.g. a bridge gateway on port 53, which needs
    /// CAP_NET_BIND_SERVICE).
    pub fn start_on(addr: SocketAddr) -> io::Result<Self> {
        let udp = std::net::UdpSocket::bind(addr)?;
        let tcp = std::net::TcpListener::bind(udp.local_addr()?)?;
        Self::serve(udp, tcp)
    }

    /// [`TestDns::start_on`] inside the network namespace of process `pid` (a container's):
    /// the sockets are bound there, on an address of that namespace (say the container's own
    /// IP, port 53), while the server runs on the host.
    pub fn start_in_netns_of(pid: u32, addr: SocketAddr) -> io::Result<Self> {
        let bound = thread::Builder::new()
            .name(format!("test-dns-bind-{pid}"))
            .spawn(move || -> io::Result<_> {
                // This short-lived thread only.
                crate::netns::enter_netns_of(pid).map_err(io::Error::other)?;
                let udp = std::net::UdpSocket::bind(addr)?;
                let tcp = std::net::TcpListener::bind(udp.local_addr()?)?;
                Ok((udp, tcp))
            })?
            .join()
            .map_err(|_| io::Error::other("the netns bind thread panicked"))??;
        Self::serve(bound.0, bound.1)
    }

    fn serve(udp: std::net::UdpSocket, tcp: std::net::TcpListener) -> io::Result<Self> {
        let addr = udp.local_addr()?;
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            zone: Name::from_str(ZONE).expect("valid zone"),
            table: Mutex::new(Table {
                names: HashMap::new(),
                type_failures: HashMap::new(),
                negative_ttl: 5,
                chase_cnames: true,
                silent: false,
            }),
            queries: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let handler = Handler(shared.clone());
        let thread = thread::Builder::new()
            .name(format!("test-dns-{addr}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let sockets = tokio::net::UdpSocket::from_std(udp)
                        .and_then(|u| Ok((u, tokio::net::TcpListener::from_std(tcp)?)));
                    let (udp, tcp) = match sockets {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let mut server = Server::new(handler);
                    server.register_socket(udp);
                    server.register_listener(tcp, TCP_IDLE, 32);
                    let _ = ready_tx.send(Ok(()));
                    // Stop on request or when the TestDns is dropped without a request.
                    let _ = stopped.await;
                    let _ = server.shutdown_gracefully().await;
                });
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("test DNS thread died"))??;
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the addresses of `name` (replacing whatever it had): the IPv4 ones are its A
    /// records, the IPv6 ones its AAAA records. An empty list leaves a name with no address
    /// records (NOERROR, no data).
    pub fn set_a(&self, name: &str, ips: &[IpAddr], ttl_secs: u32) {
        self.set(
            name,
            Entry::Addrs {
                ips: ips.to_vec(),
                ttl: ttl_secs,
            },
        );
    }

    /// Makes `name` a pool: each answer carries `pick` of its addresses of the asked family,
    /// chosen at random per question (IPv4 ones for A, IPv6 ones for AAAA).
    pub fn set_pool(&self, name: &str, ips: &[IpAddr], pick: usize, ttl_secs: u32) {
        self.set(
            name,
            Entry::Pool {
                ips: ips.to_vec(),
                pick,
                ttl: ttl_secs,
            },
        );
    }

    /// Whether the server answers nothing at all (an upstream that drops every question);
    /// questions are still logged.
    pub fn set_silent(&self, silent: bool) {
        lock(&self.shared.table).silent = silent;
    }

    /// Makes `name` a CNAME to `target` (which may be outside `test.`).
    pub fn set_cname(&self, name: &str, target: &str, ttl_secs: u32) {
        let target = fqdn(target);
        self.set(
            name,
            Entry::Cname {
                target,
                ttl: ttl_secs,
            },
        );
    }

    /// Makes every query for `name` fail with `code` (e.g. `ServFail`, `Refused`).
    pub fn set_failure(&self, name: &str, code: ResponseCode) {
        self.set(name, Entry::Fail(code));
    }

    /// Makes queries of type `rtype` for `name` fail with `code` (e.g. `Refused`, `ServFail`),
    /// whatever `name` holds; other types are answered as usual. Also applies when `name` is
    /// reached through a CNAME (the whole answer is then that failure, as a forwarder that
    /// failed to resolve the target sends).
    pub fn set_type_failure(&self, name: &str, rtype: RecordType, code: ResponseCode) {
        self.set_type(name, rtype, Some(TypeFailure::Code(code)));
    }

    /// Makes queries of type `rtype` for `name` go unanswered (the client times out), also
    /// through a CNAME; other types are answered as usual.
    pub fn drop_type(&self, name: &str, rtype: RecordType) {
        self.set_type(name, rtype, Some(TypeFailure::Drop));
    }

    /// Undoes [`TestDns::set_type_failure`] and [`TestDns::drop_type`] for `name` and `rtype`.
    pub fn clear_type_failure(&self, name: &str, rtype: RecordType) {
        self.set_type(name, rtype, None);
    }

    /// Forgets `name`: it is NXDOMAIN from now on.
    pub fn remove(&self, name: &str) {
        lock(&self.shared.table).names.remove(&self.in_zone(name));
    }

    /// The negative TTL (SOA TTL and minimum) sent with NXDOMAIN and no-data answers.
    /// Default 5 s.
    pub fn set_negative_ttl(&self, ttl_secs: u32) {
        lock(&self.shared.table).negative_ttl = ttl_secs;
    }

    /// Whether an answer for a CNAME also carries the records of its target when the target is
    /// in the table (default: yes, as authoritative servers do). Without it, resolvers must
    /// follow the chain with queries of their own.
    pub fn set_chase_cnames(&self, chase: bool) {
        lock(&self.shared.table).chase_cnames = chase;
    }

    /// How many queries (any type, UDP or TCP) asked about `name` so far.
    pub fn queries_for(&self, name: &str) -> usize {
        let name = fqdn(name);
        lock(&self.shared.queries)
            .iter()
            .filter(|((n, _), _)| *n == name)
            .map(|(_, count)| count)
            .sum()
    }

    /// How many queries of type `rtype` (UDP or TCP) asked about `name` so far.
    pub fn queries_of_type(&self, name: &str, rtype: RecordType) -> usize {
        lock(&self.shared.queries)
            .get(&(fqdn(name), rtype))
            .copied()
            .unwrap_or(0)
    }

    /// How many queries were received so far, for any name.
    pub fn total_queries(&self) -> usize {
        lock(&self.shared.queries).values().sum()
    }

    /// How many queries (any type) asked about `name` over `transport` so far.
    pub fn queries_via(&self, name: &str, transport: Transport) -> usize {
        let name = fqdn(name);
        lock(&self.shared.log)
            .iter()
            .filter(|q| q.name == name && q.transport == transport)
            .count()
    }

    /// Every question received so far, in order.
    pub fn log(&self) -> Vec<LoggedQuery> {
        lock(&self.shared.log).clone()
    }

    /// Forgets the query counts and the log.
    pub fn reset_counts(&self) {
        lock(&self.shared.queries).clear();
        lock(&self.shared.log).clear();
    }

    /// Stops the server and waits until its sockets are closed (as dropping it does).
    pub fn stop(self) {}

    fn set(&self, name: &str, entry: Entry) {
        let name = self.in_zone(name);
        lock(&self.shared.table).names.insert(name, entry);
    }

    fn set_type(&self, name: &str, rtype: RecordType, failure: Option<TypeFailure>) {
        let key = (self.in_zone(name), rtype);
        let mut table = lock(&self.shared.table);
        match failure {
            Some(failure) => table.type_failures.insert(key, failure),
            None => table.type_failures.remove(&key),
        };
    }

    fn in_zone(&self, name: &str) -> Name {
        let name = fqdn(name);
        assert!(
            self.shared.zone.zone_of(&name),
            "the test DNS only serves names under `{ZONE}`, not `{name}`"
        );
        name
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `name` as a lower-case FQDN. Panics on names DNS cannot carry (a test bug).
fn fqdn(name: &str) -> Name {
    let mut n = Name::from_str(name).unwrap_or_else(|e| panic!("bad DNS name `{name}`: {e}"));
    n.set_fqdn(true);
    n.to_lowercase()
}

/// The answer to one question.
struct Reply {
    code: ResponseCode,
    answers: Vec<Record>,
    soa: Option<Record>,
}

impl Shared {
    fn soa(&self, negative_ttl: u32) -> Record {
        let soa = SOA::new(
            Name::from_str("ns.test.").expect("valid"),
            Name::from_str("hostmaster.test.").expect("valid"),
            1,
            3600,
            600,
            86_400,
            negative_ttl,
        );
        Record::from_rdata(self.zone.clone(), negative_ttl, RData::SOA(soa))
    }

    /// The reply to a question, or `None` when it goes unanswered.
    fn answer(&self, qname: &Name, qtype: RecordType, qclass: DNSClass) -> Option<Reply> {
        let refused = Reply {
            code: ResponseCode::Refused,
            answers: Vec::new(),
            soa: None,
        };
        if qclass != DNSClass::IN || !self.zone.zone_of(qname) {
            return Some(refused);
        }
        let table = lock(&self.table);
        let soa = self.soa(table.negative_ttl);
        let mut answers = Vec::new();
        let mut name = qname.clone();
        for _ in 0..MAX_CHAIN {
            let no_data = |answers| Reply {
                code: ResponseCode::NoError,
                answers,
                soa: Some(soa.clone()),
            };
            match table.type_failures.get(&(name.clone(), qtype)) {
                Some(TypeFailure::Drop) => return None,
                Some(TypeFailure::Code(code)) => {
                    return Some(Reply {
                        code: *code,
                        answers: Vec::new(),
                        soa: None,
                    });
                }
                None => {}
            }
            match table.names.get(&name) {
                Some(Entry::Fail(code)) => {
                    return Some(Reply {
                        code: *code,
                        answers: Vec::new(),
                        soa: None,
                    });
                }
                Some(Entry::Cname { target, ttl }) => {
                    answers.push(Record::from_rdata(
                        name.clone(),
                        *ttl,
                        RData::CNAME(CNAME(target.clone())),
                    ));
                    if qtype == RecordType::CNAME
                        || !table.chase_cnames
                        || !self.zone.zone_of(target)
                    {
                        return Some(Reply {
                            code: ResponseCode::NoError,
                            answers,
                            soa: None,
                        });
                    }
                    name = target.clone();
                }
                Some(entry @ (Entry::Addrs { ttl, .. } | Entry::Pool { ttl, .. })) => {
                    let before = answers.len();
                    for ip in entry.addresses_for(qtype) {
                        let data = match ip {
                            IpAddr::V4(v4) => RData::A(A(v4)),
                            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                        };
                        answers.push(Record::from_rdata(name.clone(), *ttl, data));
                    }
                    if answers.len() == before {
                        return Some(no_data(answers));
                    }
                    return Some(Reply {
                        code: ResponseCode::NoError,
                        answers,
                        soa: None,
                    });
                }
                None if name == self.zone && qtype == RecordType::SOA => {
                    answers.push(soa.clone());
                    return Some(Reply {
                        code: ResponseCode::NoError,
                        answers,
                        soa: None,
                    });
                }
                None => {
                    // An empty non-terminal (a name with names below it) exists, with no data.
                    let exists = name == self.zone || table.names.keys().any(|k| name.zone_of(k));
                    if exists {
                        return Some(no_data(answers));
                    }
                    // NXDOMAIN, also at the end of a CNAME chain (RFC 6604).
                    return Some(Reply {
                        code: ResponseCode::NXDomain,
                        answers,
                        soa: Some(soa),
                    });
                }
            }
        }
        // A CNAME loop or a chain too long: what was collected so far.
        Some(Reply {
            code: ResponseCode::NoError,
            answers,
            soa: None,
        })
    }

    fn count(&self, qname: &Name, qtype: RecordType, transport: Transport, src: SocketAddr) {
        let name = qname.to_lowercase();
        *lock(&self.queries)
            .entry((name.clone(), qtype))
            .or_default() += 1;
        lock(&self.log).push(LoggedQuery {
            name,
            rtype: qtype,
            transport,
            src,
        });
    }

    fn is_silent(&self) -> bool {
        lock(&self.table).silent
    }
}

impl Entry {
    /// The addresses of an address entry that answer a question of type `qtype` (a pool's
    /// random pick among them).
    fn addresses_for(&self, qtype: RecordType) -> Vec<IpAddr> {
        let fits = |ip: &&IpAddr| match ip {
            IpAddr::V4(_) => matches!(qtype, RecordType::A | RecordType::ANY),
            IpAddr::V6(_) => matches!(qtype, RecordType::AAAA | RecordType::ANY),
        };
        match self {
            Entry::Addrs { ips, .. } => ips.iter().filter(fits).copied().collect(),
            Entry::Pool { ips, pick, .. } => {
                fastrand::choose_multiple(ips.iter().filter(fits).copied(), *pick)
            }
            Entry::Cname { .. } | Entry::Fail(_) => Vec::new(),
        }
    }
}

struct Handler(Arc<Shared>);

impl Handler {
    async fn handle<R: ResponseHandler>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let edns = request.edns.as_ref().map(|req| {
            let mut edns = Edns::new();
            edns.set_max_payload(req.max_payload().max(512));
            edns.set_version(0);
            edns
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let info = match request.request_info() {
            Err(_) => {
                metadata.response_code = ResponseCode::FormErr;
                None
            }
            Ok(_) if request.metadata.op_code != OpCode::Query => {
                metadata.response_code = ResponseCode::NotImp;
                None
            }
            Ok(info) => Some(info.query.original().clone()),
        };
        let Some(query) = info else {
            return send(&mut response, builder.build_no_records(metadata)).await;
        };
        let qname = query.name().clone();
        let transport = match request.protocol() {
            Protocol::Udp => Transport::Udp,
            _ => Transport::Tcp,
        };
        self.0
            .count(&qname, query.query_type(), transport, request.src());
        if self.0.is_silent() {
            return response_info(metadata);
        }
        let Some(reply) = self
            .0
            .answer(&qname, query.query_type(), query.query_class())
        else {
            // Unanswered: nothing is sent, the client times out.
            return response_info(metadata);
        };
        metadata.response_code = reply.code;
        metadata.authoritative = reply.code != ResponseCode::Refused;
        let message = builder.build(
            metadata,
            reply.answers.iter(),
            std::iter::empty(),
            reply.soa.iter(),
            std::iter::empty(),
        );
        send(&mut response, message).await
    }
}

fn response_info(metadata: Metadata) -> ResponseInfo {
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    message: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    let id = message.metadata().id;
    match response.send_response(message).await {
        Ok(info) => info,
        Err(_) => {
            let mut metadata =
                Metadata::new(id, hickory_proto::op::MessageType::Response, OpCode::Query);
            metadata.response_code = ResponseCode::ServFail;
            response_info(metadata)
        }
    }
}

// `RequestHandler` is declared with `#[async_trait]`; this is the signature it expands to
// (this crate does not depend on async-trait).
impl RequestHandler for Handler {
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: ResponseHandler + 'async_trait,
        T: Time + 'async_trait,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.handle(request, response_handle))
    }
}
