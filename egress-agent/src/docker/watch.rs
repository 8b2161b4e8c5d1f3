//! Following Docker containers through the Engine API, without losing an event.
//!
//! [`connect`] makes the client (`DOCKER_HOST`, else `unix:///var/run/docker.sock`) and
//! negotiates the API version (Debian's dockerd 20.10 speaks 1.41; newer engines more).
//! [`run`] then follows every container until its `shutdown` future completes, sending
//! [`DockerEvent`]s into a channel. It never gives up: a dropped event stream, a dockerd that
//! restarts or is not there yet, a failed request are all answered by reconnecting with
//! exponential backoff (100 ms doubling to 5 s, with jitter) and a full [`DockerEvent::Sync`]
//! (connections that break again within 10 s are paused between by the same backoff).
//! Each loss and each reconnect is logged (`tracing`, target `egress_agent::docker::watch`).
//! It returns early only when the receiver is dropped.
//!
//! # What the receiver gets
//!
//! Per connection (the first one and every reconnect):
//!
//! 1. Possibly some fast [`DockerEvent::Created`] (see below) of containers created while the
//!    sync was being made — each of them is also in the `Sync` that follows.
//! 2. One [`DockerEvent::Sync`] with every container that exists (running or not), each as
//!    [`ContainerInfo`] from `docker inspect` (complete), plus the daemon's cgroup driver. The
//!    receiver reconciles to exactly this set.
//! 3. Then the events, in Docker's order, for each container:
//!    - `create` → **two** [`DockerEvent::Created`]:
//!      1. at once, built from the event's attributes alone (the event carries the labels, the
//!         name and the image) and the image's labels: `id`, `name`, `image`, `labels`,
//!         `image_id`, `image_labels` are set; `pid: None`, `running: false`,
//!         `cgroup_parent: None`, `dns: []`, `network_mode: ""`, `networks: []`. It is sent as
//!         soon as the image's labels are read (by the event's `image` reference; an image
//!         inspect does not wait for the container's lock), ahead of any inspect still
//!         running for other containers, so the receiver can register the container's policy
//!         before runc makes its cgroup (`start` follows `create` within ~100 ms). If the
//!         image's labels cannot be read within [`FAST_IMAGE_TIMEOUT`], it goes without them
//!         ([`ImageLabels::Unknown`]: the classification fails closed).
//!      2. right after, the same container from `docker inspect` (complete: `cgroup_parent`,
//!         `dns`, `network_mode`, `networks`, and labels exactly as set, including any named
//!         `name` or `image`, which Docker's event attributes shadow). Not sent if the
//!         container was removed meanwhile (a `Destroyed` follows).
//!
//!      A receiver treats `Created` as an idempotent upsert. The second one shows the
//!      container as it is when inspected, which may already be running (with its pid).
//!
//!      Timing (measured on dockerd 20.10, debug build, `docker_watch` test): the fast
//!      `Created` leaves 3.4–15 ms after the event (0.7–2.7 ms before it waited for the
//!      image's labels). dockerd answers an inspect only once a `start` in progress has
//!      finished (start holds the container's lock), and `docker run` starts right after
//!      creating, so there the complete `Created` comes only after the container runs
//!      (230–340 ms after the create event here). Only the fast one precedes the cgroup.
//!    - `start` → [`DockerEvent::Started`], from `docker inspect` after the event: `pid` is the
//!      init process (`running: true`); if the container already exited by then, `pid: None`
//!      and `running: false` (its `Died` follows).
//!    - `rename` → [`DockerEvent::Renamed`], from `docker inspect` (the new name).
//!    - `die` → [`DockerEvent::Died`]; `destroy` → [`DockerEvent::Destroyed`].
//!
//! Every [`ContainerInfo`] sent carries the labels of its image ([`super::images`]; by the
//! image id from the container's inspect, cached), or why they could not be read.
//!
//! A container removed before its inspect answers (404) is skipped quietly: its `Destroyed`
//! follows. An inspect that fails otherwise (after two quick retries) drops the connection and
//! a new `Sync` puts everything right. Events that replay ones the `Sync` already reflects
//! (the event subscription starts at the daemon's clock just *before* the listing, so nothing
//! is lost between the two) are harmless upserts.
//!
//! Outputs of different containers may interleave out of Docker's order only in one way: a
//! fast `Created` overtakes inspects still running for other containers. Events of one
//! container always arrive in order.
//!
//! # Limits
//!
//! - The subscription's `since` replay comes from the daemon's in-memory event log (the last
//!   256 events in dockerd): more than that many container events during one sync would be
//!   missed until the next reconnect.
//! - bollard 0.21.1 sends its requests without the `/vX.Y` path prefix (upstream issue
//!   fussybeaver/bollard#736), so the daemon answers in its own newest API version whatever
//!   was negotiated, and bollard's models (API 1.53) decode it. An inspect answer they cannot
//!   read falls back to the listing or the event's attributes, an unreadable `docker info` to
//!   the host's default cgroup driver and the local clock (all logged); an unreadable listing
//!   or event fails the connection (retried). The version is still negotiated on every
//!   connect, for a bollard that sends it (negotiation only ever lowers it).
//! - [`connect`] fails if the unix socket does not exist yet; once made, the client reconnects
//!   to the socket path at every request and survives daemon restarts.

use std::{
    collections::HashMap,
    future::Future,
    net::IpAddr,
    pin::Pin,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use bollard::{
    Docker,
    errors::Error as BollardError,
    models::{ContainerInspectResponse, ContainerSummary, EventMessage, EventMessageTypeEnum},
    query_parameters::{EventsOptions, ListContainersOptions},
};
use futures_util::{
    StreamExt,
    stream::{self, BoxStream, FuturesOrdered},
};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::{
    cgroup_path::CgroupDriver,
    images::ImageLabelReader,
    privileges::{MountInfo, Privileges},
};
use egress_common::container::ContainerId;
use egress_policy::{labels::ImageLabels, policy_file::ContainerLabels};

/// The socket used when `DOCKER_HOST` is not set (with the host root `/`).
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// Timeout of each API request (until the response headers; the event stream itself has none).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Inspects run in parallel during a sync.
const SYNC_CONCURRENCY: usize = 8;
/// The actions followed.
const ACTIONS: [&str; 5] = ["create", "start", "rename", "die", "destroy"];
/// A connection that lasted this long was not flapping.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How long queued outputs may still take when the event stream is lost.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the fast `Created` waits for the image's labels (it holds up the event stream).
pub const FAST_IMAGE_TIMEOUT: Duration = Duration::from_secs(2);

/// A container as the watcher reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: ContainerId,
    /// Without Docker's leading `/`.
    pub name: String,
    /// The image as the container was created from it (`Config.Image`, e.g. `busybox:latest`).
    pub image: String,
    /// The image's id (`sha256:...`), when known.
    pub image_id: Option<String>,
    /// The labels as Docker reports them: the image's, overridden by the operator's.
    pub labels: HashMap<String, String>,
    /// The image's own labels (to tell whose a label is), or why they could not be read.
    pub image_labels: ImageLabels,
    /// The init process, while the container runs.
    pub pid: Option<u32>,
    pub running: bool,
    /// `--cgroup-parent` (`HostConfig.CgroupParent`), if set.
    pub cgroup_parent: Option<String>,
    /// `--dns` (`HostConfig.Dns`); entries that are not IP addresses are left out.
    pub dns: Vec<IpAddr>,
    /// `HostConfig.NetworkMode`: `default`, `bridge`, `none`, `host`, `container:<id>`, or a
    /// network's name.
    pub network_mode: String,
    /// Names of the networks the container is attached to, sorted.
    pub networks: Vec<String>,
    /// What could let it escape a cgroup policy (known once inspected).
    pub privileges: Privileges,
}

/// What the watcher tells its receiver; see the module docs for the exact sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerEvent {
    /// A full list of the containers that exist now (first sync and every resync after a
    /// reconnect): the receiver reconciles to exactly this set.
    Sync {
        containers: Vec<ContainerInfo>,
        cgroup_driver: CgroupDriver,
    },
    /// Sent twice per `create`: first from the event's attributes (labels, name, image; the
    /// cgroup does not exist yet), then complete from `docker inspect`.
    Created(ContainerInfo),
    /// The container's init process runs (`pid` set, unless it already exited again).
    Started(ContainerInfo),
    /// The container has a new name.
    Renamed(ContainerInfo),
    Died(ContainerId),
    Destroyed(ContainerId),
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot make a Docker client for {host}: {source}")]
    Client { host: String, source: BollardError },
    #[error("Docker API: {0}")]
    Api(#[from] BollardError),
    #[error("the Docker event stream ended")]
    StreamEnded,
    #[error("the receiver of Docker events is gone")]
    Closed,
}

/// The daemon to follow: `DOCKER_HOST`, else the host's default socket ([`DEFAULT_HOST`] below
/// the host root, see [`crate::host::Host::default_docker_host`]).
pub fn docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| crate::host::get().default_docker_host())
}

/// The socket path of a `unix://` host (`None` for TCP hosts).
pub fn unix_socket_of(host: &str) -> Option<&std::path::Path> {
    host.strip_prefix("unix://").map(std::path::Path::new)
}

/// A client for [`docker_host`], see [`connect_to`].
pub async fn connect() -> Result<Docker, WatchError> {
    connect_to(&docker_host()).await
}

/// A client for `host` (`unix:///path`, `tcp://host:port`, `http://...`), with
/// [`REQUEST_TIMEOUT`], and the API version negotiated down to the daemon's. Fails only if the
/// client cannot be made (bad address, missing socket); a daemon that does not answer yet is
/// logged, and [`run`] negotiates again when it connects.
pub async fn connect_to(host: &str) -> Result<Docker, WatchError> {
    let docker = Docker::connect_with_host(host)
        .map_err(|source| WatchError::Client {
            host: host.to_owned(),
            source,
        })?
        .with_timeout(REQUEST_TIMEOUT);
    match docker.clone().negotiate_version().await {
        Ok(_) => debug!(
            host,
            api = %docker.client_version(),
            "docker: API version negotiated"
        ),
        Err(e) => warn!(
            host,
            "docker: the daemon does not answer yet ({e}); the watcher keeps trying"
        ),
    }
    Ok(docker)
}

/// Follows Docker's containers into `tx` until `shutdown` completes (or `tx`'s receiver is
/// dropped). Never gives up on the daemon: see the module docs.
pub async fn run(docker: Docker, tx: mpsc::Sender<DockerEvent>, shutdown: impl Future) {
    tokio::select! {
        _ = shutdown => debug!("docker: watcher shut down"),
        () = watch(docker, tx) => debug!("docker: the receiver is gone; watcher stops"),
    }
}

fn reconnect_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
}

async fn watch(docker: Docker, tx: mpsc::Sender<DockerEvent>) {
    // Kept across reconnects: an image id names the same labels on any daemon.
    let images = ImageLabelReader::new(docker.clone());
    let mut lost: Option<Instant> = None;
    // Pauses between connections that break right after they were made (a flapping daemon),
    // so that a full sync is not repeated in a tight loop.
    let mut flapping = reconnect_backoff().build();
    loop {
        let mut attempts = 0u32;
        let session = (|| establish(&docker, &images, &tx))
            .retry(reconnect_backoff())
            .when(|e| !matches!(e, WatchError::Closed))
            .notify(|e, wait| {
                attempts += 1;
                // Loud at first, then about once a minute.
                if attempts == 1 || attempts.is_multiple_of(12) {
                    warn!(attempts, retry_in = ?wait, "docker: cannot follow containers: {e}");
                } else {
                    debug!(attempts, retry_in = ?wait, "docker: cannot follow containers: {e}");
                }
            })
            .await;
        let session = match session {
            Ok(s) => s,
            Err(WatchError::Closed) => return,
            Err(e) => {
                // Not reached (no attempt limit); keep going anyway.
                error!("docker: {e}");
                continue;
            }
        };
        match lost.take() {
            Some(at) => info!(
                down_for = ?at.elapsed(),
                api = %docker.client_version(),
                "docker: reconnected; full sync sent"
            ),
            None => info!(
                api = %docker.client_version(),
                "docker: connected; following containers"
            ),
        }
        let began = Instant::now();
        match follow(&docker, &images, session, &tx).await {
            WatchError::Closed => return,
            e => {
                warn!("docker: lost the daemon ({e}); reconnecting");
                lost = Some(Instant::now());
            }
        }
        if began.elapsed() < STABLE_AFTER {
            if let Some(pause) = flapping.next() {
                tokio::time::sleep(pause).await;
            }
        } else {
            flapping = reconnect_backoff().build();
        }
    }
}

/// A followed container event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    action: Action,
    id: ContainerId,
    attrs: HashMap<String, String>,
    /// Daemon clock, ns since the epoch.
    time_nano: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Create,
    Start,
    Rename,
    Die,
    Destroy,
}

impl Action {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "create" => Self::Create,
            "start" => Self::Start,
            "rename" => Self::Rename,
            "die" => Self::Die,
            "destroy" => Self::Destroy,
            _ => return None,
        })
    }
}

/// A container event we follow, or None for anything else.
fn parse_event(msg: EventMessage) -> Option<Event> {
    if msg
        .typ
        .is_some_and(|t| t != EventMessageTypeEnum::CONTAINER)
    {
        return None;
    }
    let action = Action::parse(msg.action.as_deref()?)?;
    let actor = msg.actor?;
    let id = match actor.id.as_deref()?.parse() {
        Ok(id) => id,
        Err(e) => {
            debug!("docker: ignoring an event: {e}");
            return None;
        }
    };
    Some(Event {
        action,
        id,
        attrs: actor.attributes.unwrap_or_default(),
        time_nano: msg.time_nano,
    })
}

/// Attributes Docker adds to a container event besides the container's labels.
const NON_LABEL_ATTRIBUTES: [&str; 4] = ["name", "image", "exitCode", "oldName"];

impl ContainerInfo {
    /// What the classification reads.
    pub fn labelled(&self) -> ContainerLabels<'_> {
        ContainerLabels {
            name: &self.name,
            labels: &self.labels,
            image: &self.image,
            image_id: self.image_id.as_deref(),
            image_labels: &self.image_labels,
        }
    }

    /// With its image's labels (and id) read through `images`.
    async fn with_image(mut self, images: &ImageLabelReader, timeout: Duration) -> Self {
        let (id, labels) = images
            .read(self.image_id.as_deref(), &self.image, timeout)
            .await;
        self.image_id = id;
        self.image_labels = labels;
        self
    }

    /// What a container event's attributes tell: its labels, name and image. Docker sets
    /// `name` and `image` after copying the labels, so labels with those keys are shadowed.
    fn from_attributes(id: ContainerId, attrs: &HashMap<String, String>) -> Self {
        let labels = attrs
            .iter()
            .filter(|(k, _)| !NON_LABEL_ATTRIBUTES.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Self {
            id,
            name: strip_name(attrs.get("name").map(String::as_str).unwrap_or_default()),
            image: attrs.get("image").cloned().unwrap_or_default(),
            image_id: None,
            labels,
            image_labels: ImageLabels::default(),
            pid: None,
            running: false,
            cgroup_parent: None,
            dns: Vec::new(),
            network_mode: String::new(),
            networks: Vec::new(),
            privileges: Privileges::default(),
        }
    }

    /// From `docker inspect`; None if the answer has no valid id.
    fn from_inspect(c: ContainerInspectResponse) -> Option<Self> {
        let id: ContainerId = c.id.as_deref()?.parse().ok()?;
        let config = c.config.unwrap_or_default();
        let host = c.host_config.unwrap_or_default();
        let state = c.state.unwrap_or_default();
        let running = state.running.unwrap_or(false);
        let pid = state
            .pid
            .filter(|_| running)
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0);
        let mut networks: Vec<String> = c
            .network_settings
            .and_then(|n| n.networks)
            .map(|n| n.into_keys().collect())
            .unwrap_or_default();
        networks.sort();
        Some(Self {
            id,
            name: strip_name(c.name.as_deref().unwrap_or_default()),
            image: config.image.or(c.image.clone()).unwrap_or_default(),
            image_id: c.image.filter(|i| !i.is_empty()),
            labels: config.labels.unwrap_or_default(),
            image_labels: ImageLabels::default(),
            pid,
            running: running && pid.is_some(),
            cgroup_parent: host.cgroup_parent.filter(|p| !p.is_empty()),
            dns: parse_dns(&id, host.dns.as_deref().unwrap_or_default()),
            privileges: Privileges {
                privileged: host.privileged.unwrap_or(false),
                cap_add: host.cap_add.unwrap_or_default(),
                pid_mode: host.pid_mode.unwrap_or_default(),
                mounts: c
                    .mounts
                    .unwrap_or_default()
                    .into_iter()
                    .map(|m| MountInfo {
                        kind: m.typ.unwrap_or_default(),
                        source: m.source.unwrap_or_default(),
                        destination: m.destination.unwrap_or_default(),
                        writable: m.rw.unwrap_or(false),
                    })
                    .collect(),
            },
            network_mode: host.network_mode.unwrap_or_default(),
            networks,
        })
    }

    /// From `docker ps` (used only when inspect's answer cannot be read): no pid, dns or
    /// cgroup parent.
    fn from_summary(c: ContainerSummary) -> Option<Self> {
        let id: ContainerId = c.id.as_deref()?.parse().ok()?;
        let mut networks: Vec<String> = c
            .network_settings
            .and_then(|n| n.networks)
            .map(|n| n.into_keys().collect())
            .unwrap_or_default();
        networks.sort();
        Some(Self {
            id,
            name: strip_name(
                c.names
                    .as_ref()
                    .and_then(|n| n.first())
                    .map(String::as_str)
                    .unwrap_or_default(),
            ),
            image: c.image.unwrap_or_default(),
            image_id: c.image_id.filter(|i| !i.is_empty()),
            labels: c.labels.unwrap_or_default(),
            image_labels: ImageLabels::default(),
            pid: None,
            running: false,
            cgroup_parent: None,
            dns: Vec::new(),
            network_mode: c
                .host_config
                .and_then(|h| h.network_mode)
                .unwrap_or_default(),
            networks,
            privileges: Privileges::default(),
        })
    }
}

/// A container name without Docker's leading `/`.
fn strip_name(name: &str) -> String {
    name.trim_start_matches('/').to_owned()
}

/// `HostConfig.Dns` as addresses; anything else is logged and left out.
fn parse_dns(id: &ContainerId, entries: &[String]) -> Vec<IpAddr> {
    entries
        .iter()
        .filter_map(|s| match s.trim().parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                warn!(id = id.short(), entry = %s, "docker: ignoring a --dns entry that is not an IP address");
                None
            }
        })
        .collect()
}

fn is_not_found(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The daemon answered, but the client could not read the answer.
fn is_undecodable(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::JsonDataError { .. } | BollardError::JsonSerdeError { .. }
    )
}

/// `docker inspect`, with two quick retries for transient failures. Ok(None): the container is
/// gone (404).
async fn inspect(
    docker: &Docker,
    id: &ContainerId,
) -> Result<Option<ContainerInspectResponse>, BollardError> {
    let res = (|| docker.inspect_container(id.as_str(), None))
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(50))
                .with_max_times(2),
        )
        .when(|e| !is_not_found(e) && !is_undecodable(e))
        .await;
    match res {
        Ok(c) => Ok(Some(c)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every container there is, inspected, with its image's labels.
async fn list_and_inspect(
    docker: Docker,
    images: ImageLabelReader,
) -> Result<Vec<ContainerInfo>, WatchError> {
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            ..Default::default()
        }))
        .await?;
    let results: Vec<Result<Option<ContainerInfo>, BollardError>> = stream::iter(list)
        .map(|summary| {
            let docker = docker.clone();
            let images = images.clone();
            async move {
                let Some(id) = summary
                    .id
                    .as_deref()
                    .and_then(|i| i.parse::<ContainerId>().ok())
                else {
                    return Ok(None);
                };
                let info = match inspect(&docker, &id).await {
                    Ok(Some(c)) => ContainerInfo::from_inspect(c),
                    Ok(None) => None,
                    Err(e) if is_undecodable(&e) => {
                        error!(
                            id = id.short(),
                            "docker: cannot read inspect's answer ({e}); using the listing (no pid, dns, cgroup parent)"
                        );
                        ContainerInfo::from_summary(summary)
                    }
                    Err(e) => return Err(e),
                };
                Ok(match info {
                    Some(i) => Some(i.with_image(&images, REQUEST_TIMEOUT).await),
                    None => None,
                })
            }
        })
        .buffered(SYNC_CONCURRENCY)
        .collect()
        .await;
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        if let Some(info) = r? {
            out.push(info);
        }
    }
    Ok(out)
}

type EventStream = BoxStream<'static, Result<EventMessage, BollardError>>;

/// A connection after its `Sync` was sent.
struct Session {
    events: EventStream,
    /// Events read while the sync was being made, in order. Creates among them were announced
    /// already.
    pending: Vec<Event>,
}

async fn send(tx: &mpsc::Sender<DockerEvent>, ev: DockerEvent) -> Result<(), WatchError> {
    tx.send(ev).await.map_err(|_| WatchError::Closed)
}

/// The next followed event from the stream; an error when the stream fails or ends.
fn next_event(
    item: Option<Result<EventMessage, BollardError>>,
) -> Result<Option<Event>, WatchError> {
    match item {
        Some(Ok(msg)) => Ok(parse_event(msg)),
        Some(Err(e)) => Err(WatchError::Api(e)),
        None => Err(WatchError::StreamEnded),
    }
}

/// Sends the fast `Created` of a create event (from its attributes and the image's labels).
async fn announce(
    images: &ImageLabelReader,
    tx: &mpsc::Sender<DockerEvent>,
    ev: &Event,
) -> Result<ContainerInfo, WatchError> {
    let info = ContainerInfo::from_attributes(ev.id, &ev.attrs)
        .with_image(images, FAST_IMAGE_TIMEOUT)
        .await;
    send(tx, DockerEvent::Created(info.clone())).await?;
    debug!(
        container = %info.name,
        id = ev.id.short(),
        since_event_ms = ?ev.time_nano.and_then(ms_since),
        "docker: created (from the event)"
    );
    Ok(info)
}

/// Milliseconds from a daemon timestamp to now (meaningful when the daemon shares our clock).
fn ms_since(time_nano: i64) -> Option<f64> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_nanos() as i64;
    Some((now - time_nano) as f64 / 1e6)
}

/// Connects: negotiates the version, reads the cgroup driver and the daemon's clock,
/// subscribes to events from that moment on, lists and inspects every container, and sends
/// the `Sync`.
async fn establish(
    docker: &Docker,
    images: &ImageLabelReader,
    tx: &mpsc::Sender<DockerEvent>,
) -> Result<Session, WatchError> {
    docker.clone().negotiate_version().await?;
    let (cgroup_driver, since) = match docker.info().await {
        Ok(sys) => {
            let name = sys.cgroup_driver.map(|d| d.to_string()).unwrap_or_default();
            let driver = CgroupDriver::from_docker(&name).unwrap_or_else(|| {
                let guess = host_default_driver();
                warn!(
                    driver = %name,
                    "docker: unknown cgroup driver; assuming {guess} (cgroups are found through /proc first)"
                );
                guess
            });
            let since = sys.system_time.as_deref().and_then(since_from_rfc3339);
            (driver, since.unwrap_or_else(local_since))
        }
        // A newer engine's `docker info` that bollard's models cannot read: carry on without.
        Err(e) if is_undecodable(&e) => {
            let guess = host_default_driver();
            warn!(
                "docker: cannot read `docker info` ({e}); assuming the {guess} cgroup driver and the local clock"
            );
            (guess, local_since())
        }
        Err(e) => return Err(e.into()),
    };
    let filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        (
            "event".to_owned(),
            ACTIONS.iter().map(|a| (*a).to_owned()).collect(),
        ),
    ]);
    let mut events: EventStream = docker
        .events(Some(EventsOptions {
            since: Some(since),
            until: None,
            filters: Some(filters),
        }))
        .boxed();

    let sync = list_and_inspect(docker.clone(), images.clone());
    tokio::pin!(sync);
    let mut pending = Vec::new();
    let mut announced: Vec<ContainerInfo> = Vec::new();
    let mut containers = loop {
        tokio::select! {
            biased;
            item = events.next() => {
                if let Some(ev) = next_event(item)? {
                    if ev.action == Action::Create {
                        announced.push(announce(images, tx, &ev).await?);
                    }
                    pending.push(ev);
                }
            }
            listed = &mut sync => break listed?,
        }
    };
    // Announced ones the listing missed (created after it) must be in the set too.
    for info in announced {
        if !containers.iter().any(|c| c.id == info.id) {
            containers.push(info);
        }
    }
    debug!(
        containers = containers.len(),
        %cgroup_driver,
        replayed = pending.len(),
        "docker: sync"
    );
    send(
        tx,
        DockerEvent::Sync {
            containers,
            cgroup_driver,
        },
    )
    .await?;
    Ok(Session { events, pending })
}

type Output = Pin<Box<dyn Future<Output = Result<Option<DockerEvent>, WatchError>> + Send>>;

/// What an event becomes, as a future (inspects run while later events are read).
fn output_of(docker: &Docker, images: &ImageLabelReader, ev: Event) -> Output {
    let docker = docker.clone();
    let images = images.clone();
    Box::pin(async move {
        let make: fn(ContainerInfo) -> DockerEvent = match ev.action {
            Action::Die => return Ok(Some(DockerEvent::Died(ev.id))),
            Action::Destroy => return Ok(Some(DockerEvent::Destroyed(ev.id))),
            Action::Create => DockerEvent::Created,
            Action::Start => DockerEvent::Started,
            Action::Rename => DockerEvent::Renamed,
        };
        match inspect(&docker, &ev.id).await {
            Ok(Some(c)) => {
                debug!(
                    id = ev.id.short(),
                    action = ?ev.action,
                    since_event_ms = ?ev.time_nano.and_then(ms_since),
                    "docker: inspected"
                );
                Ok(match ContainerInfo::from_inspect(c) {
                    Some(info) => Some(make(info.with_image(&images, REQUEST_TIMEOUT).await)),
                    None => None,
                })
            }
            Ok(None) => {
                debug!(id = ev.id.short(), action = ?ev.action, "docker: container gone before inspect");
                Ok(None)
            }
            Err(e) if is_undecodable(&e) => {
                error!(
                    id = ev.id.short(),
                    "docker: cannot read inspect's answer ({e}); using the event's attributes"
                );
                if ev.action == Action::Create {
                    return Ok(None);
                }
                let info = ContainerInfo::from_attributes(ev.id, &ev.attrs)
                    .with_image(&images, REQUEST_TIMEOUT)
                    .await;
                Ok(Some(make(info)))
            }
            Err(e) => Err(WatchError::Api(e)),
        }
    })
}

/// Follows the events of an established session; returns why it stopped.
async fn follow(
    docker: &Docker,
    images: &ImageLabelReader,
    session: Session,
    tx: &mpsc::Sender<DockerEvent>,
) -> WatchError {
    let Session {
        mut events,
        pending,
    } = session;
    let mut queue: FuturesOrdered<Output> = pending
        .into_iter()
        .map(|ev| output_of(docker, images, ev))
        .collect();
    loop {
        tokio::select! {
            biased;
            item = events.next() => match next_event(item) {
                Ok(Some(ev)) => {
                    if ev.action == Action::Create
                        && let Err(e) = announce(images, tx, &ev).await
                    {
                        return e;
                    }
                    queue.push_back(output_of(docker, images, ev));
                }
                Ok(None) => {}
                Err(e) => {
                    if let Err(closed) = drain(queue, tx).await {
                        return closed;
                    }
                    return e;
                }
            },
            Some(out) = queue.next(), if !queue.is_empty() => match out {
                Ok(Some(ev)) => {
                    if let Err(e) = send(tx, ev).await {
                        return e;
                    }
                }
                Ok(None) => {}
                Err(e) => return e,
            },
        }
    }
}

/// Delivers what is still queued when the stream is lost (a `Died` or `Destroyed` read just
/// before is worth sending); failures are left to the next sync.
async fn drain(
    mut queue: FuturesOrdered<Output>,
    tx: &mpsc::Sender<DockerEvent>,
) -> Result<(), WatchError> {
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while let Ok(Some(out)) = tokio::time::timeout_at(deadline, queue.next()).await {
        match out {
            Ok(Some(ev)) => send(tx, ev).await?,
            Ok(None) => {}
            Err(e) => debug!("docker: dropped while the stream was lost: {e}"),
        }
    }
    Ok(())
}

/// The cgroup driver dockerd picks by default on this host: systemd where systemd is the init
/// (`/run/systemd/system`) and cgroups are v2-only, cgroupfs otherwise.
fn host_default_driver() -> CgroupDriver {
    let host = crate::host::get();
    let pure_v2 = host
        .default_cgroup2_dir()
        .join("cgroup.controllers")
        .exists();
    if pure_v2 && host.systemd_run_dir().is_dir() {
        CgroupDriver::Systemd
    } else {
        CgroupDriver::Cgroupfs
    }
}

/// Docker's `since` (`<seconds>.<nanoseconds>`) for an RFC 3339 time such as `SystemTime` of
/// `docker info` (`2026-11-28T17:50:33.725951084Z`, `...+01:00`). The daemon does not take
/// RFC 3339 there.
fn since_from_rfc3339(s: &str) -> Option<String> {
    let nanos = rfc3339_nanos(s)?;
    Some(format_since(nanos))
}

/// The local clock as `since`, one second early (for a daemon whose clock cannot be read).
fn local_since() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    format_since(now - 1_000_000_000)
}

fn format_since(nanos: i128) -> String {
    format!(
        "{}.{:09}",
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000)
    )
}

/// Nanoseconds since the epoch of an RFC 3339 date-time.
fn rfc3339_nanos(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac: i128 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() {
            return None;
        }
        let mut d: String = digits.chars().take(9).collect();
        while d.len() < 9 {
            d.push('0');
        }
        frac = d.parse().ok()?;
    }
    let offset_s: i64 = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            let off = h * 3600 + m * 60;
            if sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_s;
    Some(secs as i128 * 1_000_000_000 + frac)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "7a49f0c598e69f5c5fe0fc22b89b32ec53c958449359678a676ad8f78715fba9";

    fn id() -> ContainerId {
        ID.parse().unwrap()
    }

    /// Events as dockerd 20.10 (API 1.41) sent them on this project's hosts.
    const CREATE: &str = r#"{"status":"create","id":"7a49f0c598e69f5c5fe0fc22b89b32ec53c958449359678a676ad8f78715fba9","from":"egress-test-busybox:latest","Type":"container","Action":"create","Actor":{"ID":"7a49f0c598e69f5c5fe0fc22b89b32ec53c958449359678a676ad8f78715fba9","Attributes":{"a.b":"c","egress.allow":"10.0.0.1,example.com:443","image":"egress-test-busybox:latest","name":"evt1"}},"scope":"local","time":1795888221,"timeNano":1795888221576250592}"#;
    const RENAME: &str = r#"{"status":"rename","id":"7a49f0c598e69f5c5fe0fc22b89b32ec53c958449359678a676ad8f78715fba9","from":"egress-test-busybox:latest","Type":"container","Action":"rename","Actor":{"ID":"7a49f0c598e69f5c5fe0fc22b89b32ec53c958449359678a676ad8f78715fba9","Attributes":{"a.b":"c","image":"egress-test-busybox:latest","name":"evt2","oldName":"/evt1"}},"scope":"local","time":1795888221,"timeNano":1795888221895729820}"#;
    const DIE: &str = r#"{"status":"die","id":"7a49f0c598e69f5c5fe0fc22b89b32ec53c958449359678a676ad8f78715fba9","from":"egress-test-busybox:latest","Type":"container","Action":"die","Actor":{"ID":"7a49f0c598e69f5c5fe0fc22b89b32ec53c958449359678a676ad8f78715fba9","Attributes":{"a.b":"c","exitCode":"0","image":"egress-test-busybox:latest","name":"evt2"}},"scope":"local","time":1795888222,"timeNano":1795888222877470549}"#;

    fn event(json: &str) -> Option<Event> {
        parse_event(serde_json::from_str(json).unwrap())
    }

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn create_event_becomes_a_fast_created() {
        let ev = event(CREATE).unwrap();
        assert_eq!(ev.action, Action::Create);
        assert_eq!(ev.id, id());
        assert_eq!(ev.time_nano, Some(1795888221576250592));
        let info = ContainerInfo::from_attributes(ev.id, &ev.attrs);
        assert_eq!(
            info,
            ContainerInfo {
                id: id(),
                name: "evt1".into(),
                image: "egress-test-busybox:latest".into(),
                image_id: None,
                labels: labels(&[("a.b", "c"), ("egress.allow", "10.0.0.1,example.com:443")]),
                image_labels: ImageLabels::default(),
                pid: None,
                running: false,
                cgroup_parent: None,
                dns: vec![],
                network_mode: String::new(),
                networks: vec![],
                privileges: Privileges::default(),
            }
        );
    }

    #[test]
    fn other_attributes_are_not_labels() {
        let ev = event(DIE).unwrap();
        assert_eq!(ev.action, Action::Die);
        let info = ContainerInfo::from_attributes(ev.id, &ev.attrs);
        assert_eq!(info.labels, labels(&[("a.b", "c")]));
        let ev = event(RENAME).unwrap();
        assert_eq!(ev.action, Action::Rename);
        let info = ContainerInfo::from_attributes(ev.id, &ev.attrs);
        assert_eq!(info.name, "evt2");
        assert_eq!(info.labels, labels(&[("a.b", "c")]));
    }

    #[test]
    fn names_lose_their_leading_slash() {
        assert_eq!(strip_name("/web"), "web");
        assert_eq!(strip_name("web"), "web");
        assert_eq!(strip_name(""), "");
        let attrs = labels(&[("name", "/x")]);
        assert_eq!(ContainerInfo::from_attributes(id(), &attrs).name, "x");
    }

    #[test]
    fn unfollowed_events_are_ignored() {
        let exec = CREATE.replace(r#""Action":"create""#, r#""Action":"exec_start: sh""#);
        assert_eq!(event(&exec), None);
        let network = CREATE.replace(r#""Type":"container""#, r#""Type":"network""#);
        assert_eq!(event(&network), None);
        let short_id = CREATE.replace(
            r#""Actor":{"ID":"7a49f0c598e69f5c5fe0fc22b89b32ec53c958449359678a676ad8f78715fba9""#,
            r#""Actor":{"ID":"7a49f0c598e6""#,
        );
        assert_eq!(event(&short_id), None);
        for a in ACTIONS {
            assert!(Action::parse(a).is_some(), "{a}");
        }
    }

    #[test]
    fn dns_entries_are_addresses() {
        let entries: Vec<String> = ["127.0.0.53", " ::1 ", "dns.example", "10.0.0.1"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            parse_dns(&id(), &entries),
            vec![
                "127.0.0.53".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap(),
                "10.0.0.1".parse().unwrap()
            ]
        );
        assert!(parse_dns(&id(), &[]).is_empty());
    }

    /// The parts of `docker inspect` (dockerd 20.10, API 1.41) the watcher reads, with what
    /// surrounds them, as bollard must decode them.
    const INSPECT: &str = r#"{
        "Id": "7a49f0c598e69f5c5fe0fc22b89b32ec53c958449359678a676ad8f78715fba9",
        "Created": "2026-11-28T17:50:21.567424425Z",
        "Path": "sleep", "Args": ["30"],
        "State": {"Status": "running", "Running": true, "Paused": false, "Restarting": false,
                  "OOMKilled": false, "Dead": false, "Pid": 4242, "ExitCode": 0, "Error": "",
                  "StartedAt": "2026-11-28T17:50:21.851751290Z",
                  "FinishedAt": "0001-01-01T00:00:00Z"},
        "Image": "sha256:87f9943bcc4153ac70fd59dce5598cf7ee1ca3685e74e150018290b103cb78ee",
        "Name": "/web",
        "RestartCount": 0, "Driver": "overlay2", "Platform": "linux",
        "HostConfig": {"NetworkMode": "none", "CgroupParent": "/egress-test",
                       "Dns": ["127.0.0.53", "not-an-ip"], "DnsOptions": [], "DnsSearch": [],
                       "CgroupnsMode": "host", "Isolation": "", "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
                       "Privileged": false, "CapAdd": ["NET_ADMIN"], "PidMode": ""},
        "Mounts": [{"Type": "bind", "Source": "/var/run/docker.sock",
                    "Destination": "/var/run/docker.sock", "Mode": "", "RW": true,
                    "Propagation": "rprivate"}],
        "Config": {"Hostname": "7a49f0c598e6", "Image": "egress-test-busybox:latest",
                   "Labels": {"egress.allow": "10.0.0.1", "name": "kept"},
                   "Cmd": ["sleep", "30"], "Volumes": {"/data": {}}},
        "NetworkSettings": {"Bridge": "", "SandboxID": "abc", "Ports": {},
                            "Networks": {"none": {"NetworkID": "n1", "EndpointID": "e1",
                                          "IPAddress": "", "IPPrefixLen": 0, "MacAddress": ""}}}
    }"#;

    #[test]
    fn inspect_gives_the_complete_info() {
        let c: ContainerInspectResponse = serde_json::from_str(INSPECT).unwrap();
        let info = ContainerInfo::from_inspect(c).unwrap();
        assert_eq!(
            info,
            ContainerInfo {
                id: id(),
                name: "web".into(),
                image: "egress-test-busybox:latest".into(),
                image_id: Some(
                    "sha256:87f9943bcc4153ac70fd59dce5598cf7ee1ca3685e74e150018290b103cb78ee"
                        .into()
                ),
                labels: labels(&[("egress.allow", "10.0.0.1"), ("name", "kept")]),
                image_labels: ImageLabels::default(),
                pid: Some(4242),
                running: true,
                cgroup_parent: Some("/egress-test".into()),
                dns: vec!["127.0.0.53".parse().unwrap()],
                network_mode: "none".into(),
                networks: vec!["none".into()],
                privileges: Privileges {
                    privileged: false,
                    cap_add: vec!["NET_ADMIN".into()],
                    pid_mode: String::new(),
                    mounts: vec![MountInfo {
                        kind: "bind".into(),
                        source: "/var/run/docker.sock".into(),
                        destination: "/var/run/docker.sock".into(),
                        writable: true,
                    }],
                },
            }
        );
    }

    #[test]
    fn a_stopped_container_has_no_pid() {
        let stopped = INSPECT
            .replace(r#""Running": true"#, r#""Running": false"#)
            .replace(r#""Pid": 4242"#, r#""Pid": 0"#)
            .replace(r#""CgroupParent": "/egress-test""#, r#""CgroupParent": """#);
        let c: ContainerInspectResponse = serde_json::from_str(&stopped).unwrap();
        let info = ContainerInfo::from_inspect(c).unwrap();
        assert_eq!(info.pid, None);
        assert!(!info.running);
        assert_eq!(info.cgroup_parent, None);
    }

    #[test]
    fn since_from_the_daemon_clock() {
        assert_eq!(
            since_from_rfc3339("2026-11-28T17:50:33.725951084Z").as_deref(),
            Some("1795888233.725951084")
        );
        assert_eq!(
            since_from_rfc3339("1970-01-01T00:00:00Z").as_deref(),
            Some("0.000000000")
        );
        assert_eq!(
            since_from_rfc3339("2026-11-28T18:50:33.5+01:00").as_deref(),
            Some("1795888233.500000000")
        );
        assert_eq!(
            since_from_rfc3339("2000-02-29T00:00:00.1234567891-02:30").as_deref(),
            Some("951791400.123456789")
        );
        for bad in [
            "",
            "yesterday",
            "2026-11-28",
            "2026-13-01T00:00:00Z",
            "2026-11-28T17:50:33",
        ] {
            assert_eq!(since_from_rfc3339(bad), None, "{bad}");
        }
        let local: f64 = local_since().parse().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((now - 1.0 - local).abs() < 5.0);
    }

    #[tokio::test]
    async fn run_stops_on_shutdown_without_a_daemon() {
        // A client whose daemon is absent: the watcher retries until shutdown.
        let docker =
            Docker::connect_with_http("http://127.0.0.1:9", 1, bollard::API_DEFAULT_VERSION)
                .unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let t0 = Instant::now();
        run(docker, tx, tokio::time::sleep(Duration::from_millis(300))).await;
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(rx.try_recv().is_err(), "nothing is sent without a daemon");
    }
}

#[cfg(test)]
mod fake_daemon_tests {
    //! The watcher against a scripted daemon on a unix socket: what is sent while a sync is
    //! being made, 404s, and a stream that ends.

    use std::{
        path::PathBuf,
        sync::{Arc, Mutex},
    };

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{UnixListener, UnixStream},
        sync::{Notify, mpsc::UnboundedReceiver},
    };

    use super::*;

    const X: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const Y: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    const Z: &str = "3333333333333333333333333333333333333333333333333333333333333333";

    /// What the fake daemon answers; shared with its connection tasks.
    #[derive(Default)]
    struct Script {
        /// Request lines received.
        requests: Mutex<Vec<String>>,
        /// `docker ps -a` answer (ids), held until `release_list` is notified.
        list: Mutex<Vec<&'static str>>,
        hold_list: Mutex<bool>,
        release_list: Notify,
        list_requested: Notify,
        /// Inspect answers by id (absent: 404).
        inspect: Mutex<HashMap<String, String>>,
        /// Image inspect answers by name or id (absent: 404).
        images: Mutex<HashMap<String, String>>,
        /// The event lines of the next `/events` request; None ends the stream.
        events: Mutex<Vec<UnboundedReceiver<Option<String>>>>,
        events_requested: Notify,
    }

    fn inspect_json(id: &str, name: &str, running: bool) -> String {
        serde_json::json!({
            "Id": id,
            "Name": format!("/{name}"),
            "State": {"Running": running, "Pid": if running { 77 } else { 0 }},
            "Config": {"Image": "img", "Labels": {"egress.allow": "10.0.0.1"}},
            "HostConfig": {"NetworkMode": "none", "Dns": ["10.0.0.53"]},
        })
        .to_string()
    }

    fn event_json(action: &str, id: &str, name: &str) -> String {
        serde_json::json!({
            "Type": "container", "Action": action,
            "Actor": {"ID": id, "Attributes": {"name": name, "image": "img", "egress.allow": "10.0.0.1"}},
            "time": 1, "timeNano": 1_000_000_000i64,
        })
        .to_string()
    }

    async fn respond(s: &mut UnixStream, status: &str, body: &str) {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(head.as_bytes()).await;
        let _ = s.write_all(body.as_bytes()).await;
        let _ = s.shutdown().await;
    }

    async fn serve(mut s: UnixStream, script: Arc<Script>) {
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let line = String::from_utf8_lossy(&req)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        script.requests.lock().unwrap().push(line.clone());
        let target = line.split_whitespace().nth(1).unwrap_or_default();
        let path = target.split('?').next().unwrap_or_default();
        // Accept both `/info` and `/v1.41/info`.
        let path = match path.strip_prefix("/v1.") {
            Some(rest) => &rest[rest.find('/').unwrap_or(0)..],
            None => path,
        };
        match path {
            "/version" => {
                respond(
                    &mut s,
                    "200 OK",
                    r#"{"ApiVersion":"1.41","Version":"20.10.24"}"#,
                )
                .await
            }
            "/info" => {
                respond(
                    &mut s,
                    "200 OK",
                    r#"{"CgroupDriver":"systemd","SystemTime":"2026-11-28T17:50:33.725951084Z"}"#,
                )
                .await
            }
            "/events" => {
                let rx = script.events.lock().unwrap().pop();
                script.events_requested.notify_one();
                let Some(mut rx) = rx else {
                    return respond(&mut s, "500 Internal Server Error", r#"{"message":"no"}"#)
                        .await;
                };
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                while let Some(Some(line)) = rx.recv().await {
                    let chunk = format!("{:x}\r\n{line}\n\r\n", line.len() + 1);
                    if s.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
                let _ = s.shutdown().await;
            }
            p if p.starts_with("/images/") => {
                let name = p
                    .strip_prefix("/images/")
                    .and_then(|r| r.strip_suffix("/json"))
                    .unwrap_or_default();
                let found = script.images.lock().unwrap().get(name).cloned();
                match found {
                    Some(body) => respond(&mut s, "200 OK", &body).await,
                    None => {
                        respond(&mut s, "404 Not Found", r#"{"message":"No such image"}"#).await
                    }
                }
            }
            "/containers/json" => {
                script.list_requested.notify_one();
                let hold = *script.hold_list.lock().unwrap();
                if hold {
                    script.release_list.notified().await;
                }
                let ids = script.list.lock().unwrap().clone();
                let list: Vec<_> = ids
                    .iter()
                    .map(|id| serde_json::json!({"Id": id, "Names": ["/x"]}))
                    .collect();
                respond(&mut s, "200 OK", &serde_json::Value::from(list).to_string()).await
            }
            p => {
                let id = p
                    .strip_prefix("/containers/")
                    .and_then(|r| r.strip_suffix("/json"))
                    .unwrap_or_default();
                let found = script.inspect.lock().unwrap().get(id).cloned();
                match found {
                    Some(body) => respond(&mut s, "200 OK", &body).await,
                    None => {
                        respond(
                            &mut s,
                            "404 Not Found",
                            r#"{"message":"No such container"}"#,
                        )
                        .await
                    }
                }
            }
        }
    }

    struct Fake {
        dir: PathBuf,
        script: Arc<Script>,
    }

    impl Fake {
        fn start() -> Self {
            let dir = std::env::temp_dir().join(format!(
                "egress-fake-docker-{}-{}",
                std::process::id(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let listener = UnixListener::bind(dir.join("docker.sock")).unwrap();
            let script = Arc::new(Script::default());
            let s = script.clone();
            tokio::spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    tokio::spawn(serve(conn, s.clone()));
                }
            });
            Self { dir, script }
        }

        fn docker(&self) -> Docker {
            Docker::connect_with_unix(
                &self.dir.join("docker.sock").to_string_lossy(),
                5,
                bollard::API_DEFAULT_VERSION,
            )
            .unwrap()
        }

        /// A new event stream for the next `/events` request.
        fn next_events(&self) -> mpsc::UnboundedSender<Option<String>> {
            let (tx, rx) = mpsc::unbounded_channel();
            self.script.events.lock().unwrap().push(rx);
            tx
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    async fn recv(rx: &mut mpsc::Receiver<DockerEvent>) -> DockerEvent {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an event within 5 s")
            .expect("the watcher runs")
    }

    fn cid(s: &str) -> ContainerId {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn nothing_is_lost_around_a_sync_and_a_lost_stream_resyncs() {
        let fake = Fake::start();
        let script = fake.script.clone();
        *script.list.lock().unwrap() = vec![Y];
        *script.hold_list.lock().unwrap() = true;
        script
            .inspect
            .lock()
            .unwrap()
            .insert(Y.into(), inspect_json(Y, "y", true));
        let events = fake.next_events();
        let (tx, mut rx) = mpsc::channel(64);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(fake.docker(), tx, stop_rx));

        // The listing is held: a container created meanwhile is announced at once ...
        script.list_requested.notified().await;
        script
            .inspect
            .lock()
            .unwrap()
            .insert(X.into(), inspect_json(X, "x", false));
        events.send(Some(event_json("create", X, "x"))).unwrap();
        let DockerEvent::Created(fast) = recv(&mut rx).await else {
            panic!("the fast Created first")
        };
        assert_eq!(
            (fast.id, fast.name.as_str(), fast.dns.len()),
            (cid(X), "x", 0)
        );
        assert_eq!(
            fast.labels.get("egress.allow").map(String::as_str),
            Some("10.0.0.1")
        );
        // ... and is in the Sync, though the listing (made before) does not have it.
        script.release_list.notify_one();
        let DockerEvent::Sync {
            containers,
            cgroup_driver,
        } = recv(&mut rx).await
        else {
            panic!("then the Sync")
        };
        assert_eq!(cgroup_driver, CgroupDriver::Systemd);
        let ids: Vec<ContainerId> = containers.iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![cid(Y), cid(X)]);
        assert_eq!(containers[0].pid, Some(77));
        assert_eq!(
            containers[0].dns,
            vec!["10.0.0.53".parse::<IpAddr>().unwrap()]
        );
        // Then X complete.
        let DockerEvent::Created(full) = recv(&mut rx).await else {
            panic!("then the complete Created")
        };
        assert_eq!(full.id, cid(X));
        assert_eq!(full.network_mode, "none");
        assert_eq!(full.dns, vec!["10.0.0.53".parse::<IpAddr>().unwrap()]);

        // A container gone before its inspect: no Started, just what follows.
        events.send(Some(event_json("start", Z, "z"))).unwrap();
        events.send(Some(event_json("destroy", Z, "z"))).unwrap();
        events.send(Some(event_json("die", Y, "y"))).unwrap();
        assert_eq!(recv(&mut rx).await, DockerEvent::Destroyed(cid(Z)));
        assert_eq!(recv(&mut rx).await, DockerEvent::Died(cid(Y)));

        // The stream ends: reconnect and a new Sync.
        *script.hold_list.lock().unwrap() = false;
        *script.list.lock().unwrap() = vec![X];
        let events2 = fake.next_events();
        events.send(None).unwrap();
        let DockerEvent::Sync { containers, .. } = recv(&mut rx).await else {
            panic!("a new Sync after the stream ended")
        };
        assert_eq!(
            containers.iter().map(|c| c.id).collect::<Vec<_>>(),
            vec![cid(X)]
        );
        script
            .inspect
            .lock()
            .unwrap()
            .insert(X.into(), inspect_json(X, "x2", false));
        events2.send(Some(event_json("rename", X, "x2"))).unwrap();
        let DockerEvent::Renamed(r) = recv(&mut rx).await else {
            panic!("Renamed")
        };
        assert_eq!(r.name, "x2");

        let requests = script.requests.lock().unwrap().clone();
        let ev = requests
            .iter()
            .find(|r| r.contains("/events"))
            .expect("an events request");
        assert!(
            ev.contains("since=1795888233.725951084"),
            "events since the daemon's clock: {ev}"
        );
        stop_tx.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn every_info_carries_its_image_labels() {
        const IMAGE_ID: &str =
            "sha256:aaaa000000000000000000000000000000000000000000000000000000000001";
        let fake = Fake::start();
        let script = fake.script.clone();
        let image = serde_json::json!({
            "Id": IMAGE_ID,
            "Config": {"Labels": {"egress.mode": "audit"}},
        })
        .to_string();
        script
            .images
            .lock()
            .unwrap()
            .insert("img".into(), image.clone());
        script.images.lock().unwrap().insert(IMAGE_ID.into(), image);
        let mut with_image: serde_json::Value =
            serde_json::from_str(&inspect_json(X, "x", false)).unwrap();
        with_image["Image"] = IMAGE_ID.into();
        script
            .inspect
            .lock()
            .unwrap()
            .insert(X.into(), with_image.to_string());
        // Y's image is gone (404).
        let mut gone: serde_json::Value =
            serde_json::from_str(&inspect_json(Y, "y", false)).unwrap();
        gone["Image"] = IMAGE_ID.replace("aaaa", "bbbb").into();
        script
            .inspect
            .lock()
            .unwrap()
            .insert(Y.into(), gone.to_string());
        let events = fake.next_events();
        let (tx, mut rx) = mpsc::channel(64);
        let task = tokio::spawn(run(fake.docker(), tx, std::future::pending::<()>()));
        let DockerEvent::Sync { containers, .. } = recv(&mut rx).await else {
            panic!("a Sync")
        };
        assert!(containers.is_empty());

        let want = ImageLabels::Known(
            [("egress.mode".to_owned(), "audit".to_owned())]
                .into_iter()
                .collect(),
        );
        events.send(Some(event_json("create", X, "x"))).unwrap();
        let DockerEvent::Created(fast) = recv(&mut rx).await else {
            panic!("the fast Created")
        };
        assert_eq!(fast.dns.len(), 0, "the fast one: {fast:?}");
        assert_eq!(fast.image_labels, want);
        assert_eq!(fast.image_id.as_deref(), Some(IMAGE_ID));
        let DockerEvent::Created(full) = recv(&mut rx).await else {
            panic!("the complete Created")
        };
        assert_eq!(full.network_mode, "none");
        assert_eq!(
            (full.image_labels, full.image_id.as_deref()),
            (want, Some(IMAGE_ID))
        );
        // The fast one asked by reference, the complete one found the id in the cache.
        let image_requests: Vec<String> = script
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.contains("/images/"))
            .cloned()
            .collect();
        assert_eq!(image_requests.len(), 1, "{image_requests:?}");
        assert!(
            image_requests[0].contains("/images/img/json"),
            "{image_requests:?}"
        );

        // An image that cannot be read: Unknown, with why.
        events.send(Some(event_json("start", Y, "y"))).unwrap();
        let DockerEvent::Started(y) = recv(&mut rx).await else {
            panic!("Started")
        };
        let ImageLabels::Unknown(why) = &y.image_labels else {
            panic!("{y:?}")
        };
        assert!(why.contains("docker image inspect"), "{why}");
        task.abort();
    }

    #[tokio::test]
    async fn unreadable_inspect_answers_fall_back() {
        let fake = Fake::start();
        let script = fake.script.clone();
        *script.list.lock().unwrap() = vec![Y];
        let bogus = |id: &str| format!(r#"{{"Id":"{id}","State":{{"Status":"not-a-state"}}}}"#);
        script.inspect.lock().unwrap().insert(Y.into(), bogus(Y));
        let events = fake.next_events();
        let (tx, mut rx) = mpsc::channel(64);
        let task = tokio::spawn(run(fake.docker(), tx, std::future::pending::<()>()));
        // The Sync takes Y from the listing.
        let DockerEvent::Sync { containers, .. } = recv(&mut rx).await else {
            panic!("a Sync")
        };
        assert_eq!(containers.len(), 1);
        assert_eq!(
            (containers[0].id, containers[0].name.as_str()),
            (cid(Y), "x")
        );
        // A start whose inspect cannot be read: Started from the event's attributes.
        events.send(Some(event_json("start", Y, "y"))).unwrap();
        let DockerEvent::Started(info) = recv(&mut rx).await else {
            panic!("Started")
        };
        assert_eq!((info.id, info.name.as_str(), info.pid), (cid(Y), "y", None));
        assert_eq!(
            info.labels.get("egress.allow").map(String::as_str),
            Some("10.0.0.1")
        );
        task.abort();
    }
}
