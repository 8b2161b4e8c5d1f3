//! Container labels (`egress.*`): the grammar a container uses to say where it may connect,
//! and the classification of a container from its labels.
//!
//! # Labels
//!
//! | label          | value                                                      | default   |
//! |----------------|------------------------------------------------------------|-----------|
//! | `egress.allow` | comma-separated list of allowed destinations (see below)   | nothing   |
//! | `egress.mode`  | `enforce` (block the rest) or `audit` (log it, block none) | `enforce` |
//! | `egress.dns`   | `learn` or `resolve`: where a name's addresses come from ([`DnsMode`]) | the agent's |
//!
//! Label keys are case-sensitive. Any other key that starts with `egress.` is an error (an
//! unknown key), so a typo such as `egress.alow` is never silently ignored. So is a *near
//! miss* ([`KeyKind::NearMiss`]): a key of the agent's with its prefix mistyped. That is, after
//! surrounding whitespace, `egress` in any case followed by
//!
//! - `.`, `_` or `-` and anything (`Egress.allow`, `EGRESS.ALLOW`, `egress_allow`,
//!   `egress-allow`, `egress-gateway`): the dot spelled otherwise is still the agent's prefix;
//! - another character that is neither a letter nor a digit (`:`, `/`, ...) or none, then a
//!   word (letters and digits) that is `allow` or `mode` or at most two edits from one
//!   (`egress:allow`, `egressallow`, `EgressMode`), or `dns` or one edit from it (`egressdns`,
//!   `egress:dsn`; two edits from a three-letter word would take in `egresses`), or no word at
//!   all (`egress`).
//!
//! So a key of another tool that starts with `egress-` or `egress_` denies the container too
//! (with a log line naming it): the `egress` prefix is the agent's. Keys that merely contain it
//! (`com.example.egress-proxy`, `egressor`) are not. An `egress.*` label or a near miss is a
//! *policy label*.
//!
//! A container with no policy label at all is not policed. A container with at least one is
//! policed: `egress.allow=` (empty) allows nothing, and `egress.mode=audit` alone audits
//! everything. A container whose policy labels contain any error (a near miss included) is
//! denied all egress (fail closed), and every error is reported at once.
//!
//! # Labels from the image
//!
//! Docker copies an image's `LABEL`s into every container made from it (the operator's
//! `--label`s override them key by key), and the image is not trusted: code inside a labelled
//! container may also ship its image. So [`screen`] tells the labels apart before they are
//! read. A container label counts as the image's when the image has the same key with the
//! same value (an operator's label equal to the image's is the image's too); when the image's
//! labels could not be read ([`ImageLabels::Unknown`]), every label counts as the image's.
//! Labels from the image may make a container stricter, never looser:
//!
//! - the image's `egress.allow` polices the container by that list (in enforce mode, unless
//!   the operator says otherwise) when the operator has no policy label of its own and no
//!   policy-file rule selects the container; beside the operator's labels or rules it is
//!   ignored;
//! - the image's `egress.mode=audit` is always ignored (so an image's audit label alone leaves
//!   the container as if unlabelled);
//! - the image's `egress.dns=resolve` is always ignored: in resolve mode the agent allows the
//!   addresses it resolves itself, which the container never asked for;
//! - anything else the image sets applies: `egress.mode=enforce`, `egress.dns=learn`, and every
//!   error (an unknown key, a near miss, a malformed value), which denies the container
//!   everything.
//!
//! An ignored label is not read at all (its errors do not count) and is reported in
//! [`Screened::ignored`], to be logged naming the image and the label. An image the operator
//! trusts (the policy file's `trusted_images`) counts as the operator: all its labels apply.
//!
//! # The `egress.allow` grammar
//!
//! ```text
//! allow    = [ item *( "," item ) ]          ; whitespace around items is ignored,
//!                                            ; empty items (e.g. a trailing comma) are ignored
//! item     = domain [ ":" port ]             ; that name, exactly
//!          | "*." domain [ ":" port ]        ; a name exactly one label below it
//!          | "**." domain [ ":" port ]       ; a name any number of labels below it
//!          | address                         ; an IPv4/IPv6 address or CIDR, see below
//! domain   = dlabel *( "." dlabel ) [ "." ]  ; at most 253 characters without the final dot
//! dlabel   = 1*63( ALPHA / DIGIT / "-" )     ; not starting or ending with "-"
//! port     = 1*DIGIT                         ; 1-65535
//! address  = v4 [ "/" len ] [ ":" port ]
//!          | v6 [ "/" len ]                  ; no port without brackets
//!          | "[" v6 [ "/" len ] "]" [ ":" port ]
//! ```
//!
//! - A domain is case-insensitive (it is lowercased) and one final dot is dropped:
//!   `API.Example.COM.` is `api.example.com`. Single-label names (`db`) are allowed. The last
//!   DNS label must not be all digits (`foo.123`), so a name never reads as an address.
//!   Internationalised names are written in their ASCII (`xn--`) form.
//! - `*.example.com` matches exactly one label more: `a.example.com`, not `a.b.example.com`;
//!   `**.example.com` matches any depth: `a.example.com` and `a.b.example.com`. Neither
//!   matches `example.com` itself; allow it too to get it. `*` and `**` are only allowed as the
//!   whole first DNS label ([`Pattern`]).
//! - Without a port, an entry allows every port; `name:443` allows only port 443.
//! - Addresses follow [`crate::policy::parse_ip_entry`]: `10.0.0.1`, `10.1.0.0/16:5432`,
//!   `2001:db8::/32`, `[2001:db8::1]:443`.
//! - The same entry twice is fine (it is kept once).
//! - Anything else is an error naming the item: `*foo.com`, `a.*.com`, `***.x`, `*`,
//!   `http://x`, `x.com/path`, `x.com:0`, `x.com:http`, `-a.com`, `a..com`, `a_b.com`.
//!
//! # Wildcards
//!
//! A wildcard can only be honoured by learning the addresses of the names the container looks
//! up (the agent's DNS proxy), so a wildcard entry is accepted only when the caller says it
//! can honour it ([`Capabilities::wildcards`]). Otherwise it is an error (the container is
//! denied all egress), never silently ignored.
//!
//! # `egress.dns`
//!
//! `learn`: the addresses a container may reach for a name are exactly those its own DNS
//! answers carried. `resolve`: the agent also resolves the exact names itself and allows what
//! it got (for applications that connect to addresses they did not look up); wildcards are
//! learned in both modes. Without the label, the agent's default applies.

use std::{collections::HashMap, fmt};

pub use crate::domain::{DomainError, DomainName, Pattern};
use crate::{
    dns::DnsMode,
    policy::{EntryError, Mode, Rule, parse_ip_entry, parse_mode},
};

/// Every label the agent reads starts with this.
pub const LABEL_PREFIX: &str = "egress.";
/// The allowed destinations.
pub const ALLOW_LABEL: &str = "egress.allow";
/// `enforce` or `audit`.
pub const MODE_LABEL: &str = "egress.mode";
/// `learn` or `resolve`.
pub const DNS_LABEL: &str = "egress.dns";
/// Every key the agent reads, for messages.
const KEYS_READ: &str = "`egress.allow`, `egress.mode` and `egress.dns`";

pub(crate) const WILDCARDS_UNAVAILABLE: &str = "wildcard entries need the DNS-aware mode, which is not \
     available yet (list the names, or allow the addresses)";

/// The word a near miss starts with (in any case).
const PREFIX_WORD: &str = "egress";
/// What comes after `egress.` in the agent's keys, with how many edits (insertions, deletions,
/// substitutions, transpositions) a word may be from it and still be meant to be it: two for
/// the long words, one for `dns` (two edits from a three-letter word take in `es`, so
/// `egresses` would be a near miss).
const KEY_WORDS: [(&str, &str, usize); 3] = [
    ("allow", ALLOW_LABEL, 2),
    ("mode", MODE_LABEL, 2),
    ("dns", DNS_LABEL, 1),
];

/// How the agent reads a label key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// Not a policy label.
    Other,
    /// `egress.allow`.
    Allow,
    /// `egress.mode`.
    Mode,
    /// `egress.dns`.
    Dns,
    /// Another key starting with `egress.` (an error).
    Unknown,
    /// The `egress.` prefix spelled otherwise (an error): see the module docs.
    NearMiss,
}

impl KeyKind {
    pub fn of(key: &str) -> Self {
        match key {
            ALLOW_LABEL => Self::Allow,
            MODE_LABEL => Self::Mode,
            DNS_LABEL => Self::Dns,
            k if k.starts_with(LABEL_PREFIX) => Self::Unknown,
            k if near_miss_word(k).is_some() => Self::NearMiss,
            _ => Self::Other,
        }
    }
}

/// For a near miss (see the module docs), the word after its prefix, lowercased (may be
/// empty); None for any other key.
fn near_miss_word(key: &str) -> Option<String> {
    let key = key.trim();
    let (word, rest) = key.split_at_checked(PREFIX_WORD.len())?;
    if !word.eq_ignore_ascii_case(PREFIX_WORD) {
        return None;
    }
    let (dotted, rest) = match rest.strip_prefix(['.', '_', '-']) {
        Some(r) => (true, r),
        None => (
            false,
            rest.strip_prefix(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(rest),
        ),
    };
    let next: String = rest
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase();
    (dotted || next.is_empty() || meant_word(&next).is_some()).then_some(next)
}

/// The key whose word `w` is (nearly) spelled as.
fn meant_word(w: &str) -> Option<&'static str> {
    KEY_WORDS
        .into_iter()
        .map(|(word, key, edits)| (strsim::damerau_levenshtein(w, word), edits, key))
        .filter(|(d, edits, _)| d <= edits)
        .min()
        .map(|(_, _, key)| key)
}

/// The key a near miss was probably meant to be.
fn meant_key(near_miss: &str) -> Option<&'static str> {
    meant_word(&near_miss_word(near_miss)?)
}

/// True for a policy label key: one the agent reads, or rejects as unknown or as a near miss.
pub fn is_policed_label(key: &str) -> bool {
    KeyKind::of(key) != KeyKind::Other
}

/// True if a container with these labels is policed (it has at least one policy label).
pub fn is_policed(labels: &HashMap<String, String>) -> bool {
    labels.keys().any(|k| is_policed_label(k))
}

/// One item of `egress.allow` (or of an `allow` list in the policy file).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AllowEntry {
    /// An address or CIDR, on one port or on every port.
    Addr(Rule),
    /// A name or a wildcard ([`Pattern`]): the addresses of the names it matches.
    Name { pattern: Pattern, port: Option<u16> },
}

impl AllowEntry {
    pub fn port(&self) -> Option<u16> {
        match self {
            AllowEntry::Addr(r) => r.port(),
            AllowEntry::Name { port, .. } => *port,
        }
    }
}

impl fmt::Display for AllowEntry {
    /// The entry in the label grammar (it parses back to the same entry).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowEntry::Addr(r) => r.fmt(f),
            AllowEntry::Name {
                pattern,
                port: None,
            } => pattern.fmt(f),
            AllowEntry::Name {
                pattern,
                port: Some(p),
            } => write!(f, "{pattern}:{p}"),
        }
    }
}

/// What the agent can enforce; entries it cannot honour are errors (fail closed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `*.example.com` and `**.example.com` entries can be enforced (needs the DNS proxy).
    pub wildcards: bool,
}

/// A bad allow entry: the item as written (trimmed) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{token}`: {message}")]
pub struct EntryProblem {
    pub token: String,
    pub message: String,
}

/// Parses one allow entry (surrounding whitespace is ignored; an empty entry is an error here,
/// it is only skipped inside a comma-separated list).
pub fn parse_allow_entry(raw: &str, caps: Capabilities) -> Result<AllowEntry, EntryProblem> {
    let token = raw.trim();
    let problem = |message: String| EntryProblem {
        token: token.to_owned(),
        message,
    };
    // Checked first: `https://x:443` would otherwise read as a malformed IPv6 address.
    if token.contains("://") {
        return Err(problem(
            "a URL is not an entry: write the host name, optionally with `:port`".into(),
        ));
    }
    match parse_ip_entry(token) {
        Ok(Some(rule)) => Ok(AllowEntry::Addr(rule)),
        Ok(None) => parse_name_entry(token, caps).map_err(problem),
        Err(e) => Err(problem(ip_entry_message(e))),
    }
}

/// The message of an address-entry error, without the entry (the caller names the token).
fn ip_entry_message(e: EntryError) -> String {
    match e {
        EntryError::Empty => "empty entry".into(),
        EntryError::BadPort { port, .. } => format!("bad port `{port}` (expected 1-65535)"),
        EntryError::BadPrefix { len, max, .. } => {
            format!("bad prefix length `{len}` (at most {max})")
        }
        EntryError::BadAddress { .. } => "not an IPv4 or IPv6 address".into(),
        EntryError::Rule { source, .. } => source.to_string(),
    }
}

/// `pattern[:port]` ([`Pattern`]); `token` is trimmed, non-empty and not an address.
fn parse_name_entry(token: &str, caps: Capabilities) -> Result<AllowEntry, String> {
    // Not an address, so at most one colon is left (two or more read as IPv6).
    let (host, port) = match token.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (token, None),
    };
    if host.contains('/') {
        return Err(
            "`/` is not allowed after a name: write the host name, optionally with \
                    `:port` (a prefix length needs an address)"
                .into(),
        );
    }
    let pattern = Pattern::parse(host).map_err(|e| e.0)?;
    let port = port.map(parse_port).transpose()?;
    if pattern.is_wildcard() && !caps.wildcards {
        return Err(WILDCARDS_UNAVAILABLE.into());
    }
    Ok(AllowEntry::Name { pattern, port })
}

/// `1*DIGIT` in 1-65535 (no sign, no service names).
fn parse_port(p: &str) -> Result<u16, String> {
    Some(p)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|n| *n != 0)
        .ok_or_else(|| format!("bad port `{p}` (expected 1-65535)"))
}

/// What a policed container may reach: the mode, the allowed entries (no duplicates, in the
/// order first written) and its DNS mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSpec {
    pub mode: Mode,
    pub entries: Vec<AllowEntry>,
    /// `egress.dns` (or the policy file's `dns`); None: the agent's default.
    pub dns: Option<DnsMode>,
}

impl ContainerSpec {
    /// Nothing allowed, in `mode`, with the agent's default DNS mode.
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            entries: Vec::new(),
            dns: None,
        }
    }

    /// The DNS mode it asks for, or `default`.
    pub fn dns_mode(&self, default: DnsMode) -> DnsMode {
        self.dns.unwrap_or(default)
    }

    /// Adds `entry` unless it is already there; returns whether it was added.
    pub fn add(&mut self, entry: AllowEntry) -> bool {
        if self.entries.contains(&entry) {
            return false;
        }
        self.entries.push(entry);
        true
    }

    /// The address entries.
    pub fn rules(&self) -> impl Iterator<Item = Rule> + '_ {
        self.entries.iter().filter_map(|e| match e {
            AllowEntry::Addr(r) => Some(*r),
            _ => None,
        })
    }

    /// The name and wildcard entries, with their ports.
    pub fn names(&self) -> impl Iterator<Item = (&Pattern, Option<u16>)> + '_ {
        self.entries.iter().filter_map(|e| match e {
            AllowEntry::Name { pattern, port } => Some((pattern, *port)),
            AllowEntry::Addr(_) => None,
        })
    }

    /// The exact names (as [`crate::domain::key`]s), with their ports.
    pub fn domains(&self) -> impl Iterator<Item = (&str, Option<u16>)> + '_ {
        self.names().filter_map(|(p, port)| match p {
            Pattern::Exact(name) => Some((name.as_str(), port)),
            _ => None,
        })
    }

    /// The wildcard entries, with their ports.
    pub fn wildcards(&self) -> impl Iterator<Item = (&Pattern, Option<u16>)> + '_ {
        self.names().filter(|(p, _)| p.is_wildcard())
    }
}

/// One problem with a container's `egress.*` labels.
///
/// `label` is the label key (or, for an error that comes from the policy file, where in the
/// file); `token` is the offending item as written, or empty when the whole label is at fault
/// (an unknown key, an empty mode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelError {
    pub label: String,
    pub token: String,
    pub message: String,
}

impl fmt::Display for LabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A policy label key; an error from the policy file names its place instead
        // (`<file>: [[container]] #2`, never a key, even where the file is `egress-...`).
        if is_policed_label(&self.label) && !self.label.contains(char::is_whitespace) {
            write!(f, "label `{}`: ", self.label)?;
        } else {
            write!(f, "{}: ", self.label)?;
        }
        if !self.token.is_empty() {
            write!(f, "`{}`: ", self.token)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for LabelError {}

/// What the agent does with a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Classification {
    /// No `egress.*` label: not policed.
    Unpoliced,
    /// Policed with this spec.
    Policed(ContainerSpec),
    /// Policed, but the labels are malformed: deny all egress. Every problem is listed.
    Invalid(Vec<LabelError>),
}

/// Classifies a container by its labels (keys are read in sorted order, so errors are listed
/// in a stable order).
pub fn classify(labels: &HashMap<String, String>, caps: Capabilities) -> Classification {
    let parsed = parse_labels(labels, caps);
    if !parsed.policed {
        Classification::Unpoliced
    } else if !parsed.errors.is_empty() {
        Classification::Invalid(parsed.errors)
    } else {
        Classification::Policed(ContainerSpec {
            mode: parsed.mode.unwrap_or(Mode::Enforce),
            entries: parsed.entries,
            dns: parsed.dns,
        })
    }
}

/// The labels read apart: what was valid, and every error (for callers that combine the labels
/// with other sources, such as the policy file).
#[derive(Clone, Debug, Default)]
pub(crate) struct ParsedLabels {
    /// Some `egress.*` label is present.
    pub policed: bool,
    /// `egress.mode`, if given and valid.
    pub mode: Option<Mode>,
    /// `egress.dns`, if given and valid.
    pub dns: Option<DnsMode>,
    /// The valid entries of `egress.allow`, deduplicated.
    pub entries: Vec<AllowEntry>,
    pub errors: Vec<LabelError>,
}

pub(crate) fn parse_labels(labels: &HashMap<String, String>, caps: Capabilities) -> ParsedLabels {
    let mut keys: Vec<&String> = labels.keys().filter(|k| is_policed_label(k)).collect();
    keys.sort();
    let mut out = ParsedLabels {
        policed: !keys.is_empty(),
        ..ParsedLabels::default()
    };
    let mut spec = ContainerSpec::new(Mode::Enforce);
    for key in keys {
        let value = &labels[key];
        let error = |token: &str, message: String| LabelError {
            label: key.clone(),
            token: token.to_owned(),
            message,
        };
        match KeyKind::of(key) {
            KeyKind::Other => {}
            KeyKind::Allow => {
                for item in value.split(',').filter(|i| !i.trim().is_empty()) {
                    match parse_allow_entry(item, caps) {
                        Ok(entry) => {
                            spec.add(entry);
                        }
                        Err(p) => out.errors.push(error(&p.token, p.message)),
                    }
                }
            }
            KeyKind::Mode => match value.trim() {
                "" => out.errors.push(error(
                    "",
                    "empty value: expected `enforce` or `audit`".into(),
                )),
                v => match parse_mode(v) {
                    Ok(m) => out.mode = Some(m),
                    Err(_) => out.errors.push(error(
                        v,
                        "unknown mode: expected `enforce` or `audit`".into(),
                    )),
                },
            },
            KeyKind::Dns => match value.trim() {
                "" => out.errors.push(error(
                    "",
                    "empty value: expected `learn` or `resolve`".into(),
                )),
                v => match DnsMode::parse(v) {
                    Ok(m) => out.dns = Some(m),
                    Err(_) => out.errors.push(error(
                        v,
                        "unknown DNS mode: expected `learn` or `resolve`".into(),
                    )),
                },
            },
            KeyKind::Unknown => out.errors.push(error(
                "",
                format!("unknown key (the agent reads {KEYS_READ})"),
            )),
            KeyKind::NearMiss => out.errors.push(error(
                "",
                match meant_key(key) {
                    Some(k) => format!(
                        "not a label the agent reads: keys are case-sensitive, with a dot \
                         (did you mean `{k}`?)"
                    ),
                    None => format!(
                        "not a label the agent reads: keys are case-sensitive, with a dot \
                         (the agent reads {KEYS_READ})"
                    ),
                },
            )),
        }
    }
    out.entries = spec.entries;
    out
}

/// The labels of the image a container was created from, as far as the agent could read them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageLabels {
    /// The image's own labels (`Config.Labels` of its inspect).
    Known(HashMap<String, String>),
    /// They could not be read (why): every label of the container counts as the image's.
    Unknown(String),
}

impl Default for ImageLabels {
    /// Not read (yet): fail closed.
    fn default() -> Self {
        Self::Unknown("the image's labels were not read".into())
    }
}

impl ImageLabels {
    /// True if the container label `key=value` comes from the image (see the module docs).
    pub fn has(&self, key: &str, value: &str) -> bool {
        match self {
            Self::Known(image) => image.get(key).is_some_and(|v| v == value),
            Self::Unknown(_) => true,
        }
    }
}

/// Why an image's label was not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgnoredWhy {
    /// An image's `egress.mode=audit`: an image cannot loosen its container's policy.
    Audit,
    /// An image's `egress.allow` beside the operator's own policy labels or policy-file rules.
    BesideOperator,
    /// An image's `egress.dns=resolve`: the agent would allow addresses the container never
    /// asked for.
    DnsResolve,
}

/// A label of the image that [`screen`] set aside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IgnoredLabel {
    pub label: String,
    pub value: String,
    pub why: IgnoredWhy,
}

impl fmt::Display for IgnoredLabel {
    /// What was ignored and why; the caller names the container and the image.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}={}` is ignored: ", self.label, self.value)?;
        f.write_str(match self.why {
            IgnoredWhy::Audit => {
                "an image may make its container's policy stricter, never looser, and audit \
                 mode would let everything through"
            }
            IgnoredWhy::BesideOperator => {
                "the operator's own egress labels or policy-file rules decide what the \
                 container may reach; an image may not add to them"
            }
            IgnoredWhy::DnsResolve => {
                "an image may make its container's policy stricter, never looser, and resolve \
                 mode allows addresses the agent resolves, which the container never asked for"
            }
        })
    }
}

/// The container's labels with the image's labels that may not apply taken out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Screened {
    /// What to classify: every label of the container less the ignored ones.
    pub labels: HashMap<String, String>,
    /// In key order.
    pub ignored: Vec<IgnoredLabel>,
}

/// Applies the image rule (module docs): `image` are the labels of the container's image,
/// `trusted` says the operator trusts that image, `operator_rules` that a policy-file rule
/// selects the container.
pub fn screen(
    labels: &HashMap<String, String>,
    image: &ImageLabels,
    trusted: bool,
    operator_rules: bool,
) -> Screened {
    if trusted {
        return Screened {
            labels: labels.clone(),
            ignored: Vec::new(),
        };
    }
    let from_image = |k: &str| image.has(k, &labels[k]);
    let operator = operator_rules || labels.keys().any(|k| is_policed_label(k) && !from_image(k));
    let mut ignored = Vec::new();
    for (key, value) in labels {
        if !from_image(key) {
            continue;
        }
        let why = match KeyKind::of(key) {
            KeyKind::Mode if matches!(parse_mode(value), Ok(Mode::Audit)) => IgnoredWhy::Audit,
            KeyKind::Dns if matches!(DnsMode::parse(value), Ok(DnsMode::Resolve)) => {
                IgnoredWhy::DnsResolve
            }
            KeyKind::Allow if operator => IgnoredWhy::BesideOperator,
            _ => continue,
        };
        ignored.push(IgnoredLabel {
            label: key.clone(),
            value: value.clone(),
            why,
        });
    }
    ignored.sort_by(|a, b| a.label.cmp(&b.label));
    let mut labels = labels.clone();
    for i in &ignored {
        labels.remove(&i.label);
    }
    Screened { labels, ignored }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_WILD: Capabilities = Capabilities { wildcards: false };
    const WILD: Capabilities = Capabilities { wildcards: true };

    fn entry(s: &str) -> AllowEntry {
        parse_allow_entry(s, WILD).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn bad(s: &str) -> EntryProblem {
        match parse_allow_entry(s, WILD) {
            Ok(e) => panic!("{s:?} parsed as {e:?}"),
            Err(p) => p,
        }
    }

    fn domain(name: &str, port: Option<u16>) -> AllowEntry {
        AllowEntry::Name {
            pattern: Pattern::Exact(name.into()),
            port,
        }
    }

    /// `*.suffix`
    fn one_label(suffix: &str, port: Option<u16>) -> AllowEntry {
        AllowEntry::Name {
            pattern: Pattern::OneLabel(suffix.into()),
            port,
        }
    }

    /// `**.suffix`
    fn any_depth(suffix: &str, port: Option<u16>) -> AllowEntry {
        AllowEntry::Name {
            pattern: Pattern::AnyDepth(suffix.into()),
            port,
        }
    }

    fn is_exact(e: &AllowEntry) -> bool {
        matches!(
            e,
            AllowEntry::Name {
                pattern: Pattern::Exact(_),
                ..
            }
        )
    }

    fn addr(s: &str) -> AllowEntry {
        AllowEntry::Addr(parse_ip_entry(s).unwrap().unwrap())
    }

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn policed(pairs: &[(&str, &str)], caps: Capabilities) -> ContainerSpec {
        match classify(&labels(pairs), caps) {
            Classification::Policed(s) => s,
            other => panic!("{pairs:?}: {other:?}"),
        }
    }

    fn invalid(pairs: &[(&str, &str)], caps: Capabilities) -> Vec<LabelError> {
        match classify(&labels(pairs), caps) {
            Classification::Invalid(e) => e,
            other => panic!("{pairs:?}: {other:?}"),
        }
    }

    // ---- entries ----

    #[test]
    fn domain_names() {
        assert_eq!(entry("api.example.com"), domain("api.example.com", None));
        assert_eq!(entry("db"), domain("db", None));
        assert_eq!(entry("a-b.c0.example"), domain("a-b.c0.example", None));
        assert_eq!(entry("123.example.com"), domain("123.example.com", None));
        assert_eq!(
            entry("xn--bcher-kva.example"),
            domain("xn--bcher-kva.example", None)
        );
    }

    #[test]
    fn domain_names_with_ports() {
        assert_eq!(
            entry("api.example.com:443"),
            domain("api.example.com", Some(443))
        );
        assert_eq!(entry("db:5432"), domain("db", Some(5432)));
        assert_eq!(entry("x.com:1"), domain("x.com", Some(1)));
        assert_eq!(entry("x.com:65535"), domain("x.com", Some(65535)));
        assert_eq!(entry("x.com:0080"), domain("x.com", Some(80)));
    }

    #[test]
    fn case_is_folded() {
        assert_eq!(entry("API.Example.COM"), domain("api.example.com", None));
        assert_eq!(
            entry("*.Example.COM:443"),
            one_label("example.com", Some(443))
        );
        assert_eq!(entry("API.example.com").to_string(), "api.example.com");
    }

    #[test]
    fn one_trailing_dot_is_dropped() {
        assert_eq!(entry("api.example.com."), domain("api.example.com", None));
        assert_eq!(
            entry("api.example.com.:443"),
            domain("api.example.com", Some(443))
        );
        assert_eq!(entry("*.example.com."), one_label("example.com", None));
        assert!(bad("api.example.com..").message.contains("empty DNS label"));
        // `.` reads as a malformed address; as a name it is empty.
        assert_eq!(bad(".").token, ".");
        assert!(
            DomainName::parse(".")
                .unwrap_err()
                .0
                .contains("empty domain name")
        );
        assert!(bad("*..").message.contains("empty"));
    }

    #[test]
    fn whitespace_around_an_entry_is_ignored() {
        assert_eq!(
            entry("  api.example.com \t"),
            domain("api.example.com", None)
        );
        assert_eq!(entry(" 10.0.0.1 "), addr("10.0.0.1"));
    }

    #[test]
    fn wildcards() {
        assert_eq!(entry("*.example.com"), one_label("example.com", None));
        assert_eq!(
            entry("*.example.com:443"),
            one_label("example.com", Some(443))
        );
        assert_eq!(entry("*.internal"), one_label("internal", None));
        assert_eq!(entry("**.example.com"), any_depth("example.com", None));
        assert_eq!(
            entry("**.Example.com.:8443"),
            any_depth("example.com", Some(8443))
        );
    }

    #[test]
    fn wildcards_need_the_capability() {
        let e = parse_allow_entry("*.example.com", NO_WILD).unwrap_err();
        assert_eq!(e.token, "*.example.com");
        assert!(e.message.contains("DNS-aware mode"), "{e}");
        let e = parse_allow_entry("**.example.com:443", NO_WILD).unwrap_err();
        assert!(e.message.contains("DNS-aware mode"), "{e}");
        // A malformed wildcard reports its shape first, whatever the capabilities.
        let e = parse_allow_entry("*foo.com", NO_WILD).unwrap_err();
        assert!(e.message.contains("`*.` (exactly one more label)"), "{e}");
    }

    #[test]
    fn addresses() {
        assert_eq!(entry("10.0.0.1"), addr("10.0.0.1"));
        assert_eq!(entry("10.0.0.1:53"), addr("10.0.0.1:53"));
        assert_eq!(entry("10.1.0.0/16:5432"), addr("10.1.0.0/16:5432"));
        assert_eq!(entry("2001:db8::1"), addr("2001:db8::1"));
        assert_eq!(entry("2001:DB8::1"), addr("2001:db8::1"));
        assert_eq!(entry("[2001:db8::1]"), addr("2001:db8::1"));
        assert_eq!(entry("[2001:db8::1]:443"), addr("[2001:db8::1]:443"));
        assert_eq!(entry("2001:db8::/32"), addr("2001:db8::/32"));
        assert_eq!(entry("[2001:db8::/32]:443"), addr("[2001:db8::/32]:443"));
        assert_eq!(entry("[2001:db8::1]:443").port(), Some(443));
    }

    #[test]
    fn bad_addresses_name_the_token() {
        for (s, want) in [
            ("10.0.0.1:0", "bad port `0`"),
            ("10.0.0.1:70000", "bad port `70000`"),
            ("10.0.0.0/33", "bad prefix length `33`"),
            ("10.0.0", "not an IPv4 or IPv6 address"),
            ("1.2.3.4.5", "not an IPv4 or IPv6 address"),
            ("[2001:db8::1", "not an IPv4 or IPv6 address"),
            ("[2001:db8::1]443", "not an IPv4 or IPv6 address"),
            ("2001:db8::1:443]", "not an IPv4 or IPv6 address"),
            ("[2001:db8::1]:0", "bad port `0`"),
            ("x.com:80:90", "not an IPv4 or IPv6 address"),
            ("123", "not an IPv4 or IPv6 address"),
        ] {
            let p = bad(s);
            assert_eq!(p.token, s);
            assert!(p.message.contains(want), "{s}: {p}");
            assert!(!p.message.contains(s), "{s}: the token is repeated: {p}");
        }
    }

    #[test]
    fn bad_entries_name_the_token() {
        for (s, want) in [
            ("*foo.com", "`*foo` is not a wildcard label"),
            ("***.x", "`***` is not a wildcard label"),
            ("*x.y", "`*x` is not a wildcard label"),
            (
                "a.*.com",
                "`*`: `*` is only allowed as the whole first label",
            ),
            ("*.*.x", "`*`: `*` is only allowed as the whole first label"),
            (
                "**.**.x",
                "`**`: `*` is only allowed as the whole first label",
            ),
            ("*", "a wildcard needs a domain after it"),
            ("**", "a wildcard needs a domain after it"),
            ("*.", "a wildcard needs a domain after it"),
            ("*.com*", "`com*`: `*` is only allowed"),
            ("http://x", "a URL is not an entry"),
            ("https://x.com:443/", "a URL is not an entry"),
            ("x.com/path", "`/` is not allowed"),
            ("x.com/24", "`/` is not allowed"),
            ("x.com:0", "bad port `0`"),
            ("x.com:http", "bad port `http`"),
            ("x.com:", "bad port ``"),
            ("x.com:+80", "bad port `+80`"),
            ("x.com:65536", "bad port `65536`"),
            (
                "-a.com",
                "DNS label `-a` must not start or end with a hyphen",
            ),
            ("a-.com", "DNS label `a-`"),
            ("a.com-", "DNS label `com-`"),
            ("a..com", "empty DNS label"),
            (".a.com", "empty DNS label"),
            ("a_b.com", "invalid character `_`"),
            ("a b.com", "invalid character ` `"),
            ("bücher.example", "`xn--` form"),
            ("foo.123", "all digits"),
            ("*.-a.com", "DNS label `-a`"),
            ("*.10.0.0.1", "all digits"),
            ("**.-a.com", "DNS label `-a`"),
        ] {
            let p = bad(s);
            assert_eq!(p.token, s);
            assert!(p.message.contains(want), "{s}: {p}");
        }
    }

    #[test]
    fn length_limits() {
        let l63 = "a".repeat(63);
        let l64 = "a".repeat(64);
        assert!(is_exact(&entry(&format!("{l63}.com"))));
        assert!(bad(&format!("{l64}.com")).message.contains("at most 63"));
        // 4 * 63 + 3 dots = 255 > 253; 3 * 63 + 61 + 3 = 253.
        let long = [l63.as_str(); 4].join(".");
        assert!(bad(&long).message.contains("at most 253"));
        let max = format!("{l63}.{l63}.{l63}.{}", "b".repeat(61));
        assert_eq!(max.len(), 253);
        assert!(is_exact(&entry(&max)));
        assert!(is_exact(&entry(&format!("{max}."))));
        // `*.` + 253 cannot match any name.
        assert!(bad(&format!("*.{max}")).message.contains("at most 251"));
        let wild = format!("*.{l63}.{l63}.{l63}.{}", "b".repeat(59));
        assert_eq!(entry(&wild), one_label(&wild[2..], None));
        assert!(bad(&format!("**.{max}")).message.contains("at most 251"));
        assert_eq!(entry(&format!("*{wild}")), any_depth(&wild[2..], None));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "api.example.com",
            "api.example.com:443",
            "*.example.com",
            "*.example.com:8443",
            "**.example.com",
            "**.example.com:8443",
            "10.0.0.0/8:5432",
            "[2001:db8::1]:443",
            "2001:db8::/32",
        ] {
            let e = entry(s);
            assert_eq!(e.to_string(), s);
            assert_eq!(entry(&e.to_string()), e);
        }
    }

    // ---- labels ----

    #[test]
    fn no_egress_label_is_unpoliced() {
        assert_eq!(classify(&labels(&[]), NO_WILD), Classification::Unpoliced);
        let l = labels(&[
            ("com.example.team", "x"),
            ("com.example.egress.allow", "x.com"),
            ("egressor", "x"),
            ("egresses.allow", "x"),
            ("my-egress.allow", "x"),
            ("e.gress.allow", "x"),
        ]);
        assert_eq!(classify(&l, NO_WILD), Classification::Unpoliced);
        assert!(!is_policed(&l));
        assert!(is_policed(&labels(&[("egress.mode", "audit")])));
        assert!(is_policed_label("egress.allow"));
    }

    #[test]
    fn key_kinds() {
        for (k, want) in [
            ("egress.allow", KeyKind::Allow),
            ("egress.mode", KeyKind::Mode),
            ("egress.dns", KeyKind::Dns),
            ("egress.alow", KeyKind::Unknown),
            ("egress.DNS", KeyKind::Unknown),
            ("egress.", KeyKind::Unknown),
            ("egress.allow ", KeyKind::Unknown),
            ("egress.Allow", KeyKind::Unknown),
            ("Egress.allow", KeyKind::NearMiss),
            ("EGRESS.ALLOW", KeyKind::NearMiss),
            ("Egress.Mode", KeyKind::NearMiss),
            ("Egress.anything", KeyKind::NearMiss),
            (" egress.allow", KeyKind::NearMiss),
            ("egress_allow", KeyKind::NearMiss),
            ("EGRESS_MODE", KeyKind::NearMiss),
            ("egress-allow", KeyKind::NearMiss),
            ("Egress-Mode", KeyKind::NearMiss),
            ("egress:allow", KeyKind::NearMiss),
            ("egress/mode", KeyKind::NearMiss),
            ("egress-alow", KeyKind::NearMiss),
            ("egress_allwo", KeyKind::NearMiss),
            ("egress-mdoe", KeyKind::NearMiss),
            ("egress-allowed-hosts", KeyKind::NearMiss),
            ("EGRESS_ALLOW_LIST", KeyKind::NearMiss),
            ("egressallow", KeyKind::NearMiss),
            ("EgressMode", KeyKind::NearMiss),
            ("Egress.dns", KeyKind::NearMiss),
            ("EGRESS_DNS", KeyKind::NearMiss),
            ("egressdns", KeyKind::NearMiss),
            ("egress:dsn", KeyKind::NearMiss),
            ("EgressDNS", KeyKind::NearMiss),
            ("egress", KeyKind::NearMiss),
            ("Egress", KeyKind::NearMiss),
            ("egress-", KeyKind::NearMiss),
            // The prefix with `_` or `-` for the dot is the agent's, whatever follows.
            ("egress-gateway", KeyKind::NearMiss),
            ("egress_proxy", KeyKind::NearMiss),
            ("EGRESS-E2E.lab", KeyKind::NearMiss),
            // Other tools' keys, and the tests' own.
            ("test.egress-e2e.lab", KeyKind::Other),
            ("bench.egress-enforcer", KeyKind::Other),
            ("egressor", KeyKind::Other),
            ("egresses.allow", KeyKind::Other),
            ("egresses", KeyKind::Other),
            ("egressd", KeyKind::Other),
            ("egres.allow", KeyKind::Other),
            ("com.egress.allow", KeyKind::Other),
            ("", KeyKind::Other),
            ("egréss.allow", KeyKind::Other),
        ] {
            assert_eq!(KeyKind::of(k), want, "{k:?}");
            assert_eq!(is_policed_label(k), want != KeyKind::Other, "{k:?}");
        }
    }

    #[test]
    fn near_miss_keys_deny_and_name_the_key() {
        for (key, meant) in [
            ("Egress.allow", Some("egress.allow")),
            ("EGRESS.ALLOW", Some("egress.allow")),
            ("egress_allow", Some("egress.allow")),
            ("egress-allow", Some("egress.allow")),
            ("EGRESS_MODE", Some("egress.mode")),
            ("egressallow", Some("egress.allow")),
            ("Egress.alow", Some("egress.allow")),
            ("egress-mdoe", Some("egress.mode")),
            ("EGRESS_DNS", Some("egress.dns")),
            ("egress:dsn", Some("egress.dns")),
            ("Egress.deny", None),
            ("egress", None),
        ] {
            // Alone, and beside a valid label: the container is denied all egress.
            for pairs in [
                vec![(key, "10.0.0.1")],
                vec![(key, "10.0.0.1"), ("egress.allow", "10.0.0.2")],
            ] {
                let e = invalid(&pairs, NO_WILD);
                assert_eq!(e.len(), 1, "{key}: {e:?}");
                assert_eq!(e[0].label, key);
                let shown = e[0].to_string();
                assert!(
                    shown.starts_with(&format!("label `{key}`: not a label the agent reads")),
                    "{shown}"
                );
                match meant {
                    Some(m) => assert!(shown.contains(&format!("did you mean `{m}`?")), "{shown}"),
                    None => assert!(!shown.contains("did you mean"), "{shown}"),
                }
            }
        }
    }

    // ---- labels from the image ----

    fn image(pairs: &[(&str, &str)]) -> ImageLabels {
        ImageLabels::Known(labels(pairs))
    }

    fn unknown() -> ImageLabels {
        ImageLabels::Unknown("docker image inspect: no such image".into())
    }

    /// The container's classification after the image rule, and the labels it set aside.
    fn screened(
        container: &[(&str, &str)],
        img: &ImageLabels,
        trusted: bool,
        rules: bool,
    ) -> (Classification, Vec<(String, IgnoredWhy)>) {
        let s = screen(&labels(container), img, trusted, rules);
        let ignored = s.ignored.iter().map(|i| (i.label.clone(), i.why)).collect();
        (classify(&s.labels, NO_WILD), ignored)
    }

    fn allows(mode: Mode, list: &[&str]) -> Classification {
        Classification::Policed(ContainerSpec {
            mode,
            entries: list.iter().map(|e| entry(e)).collect(),
            dns: None,
        })
    }

    #[test]
    fn operator_labels_apply_as_written() {
        let img = image(&[("org.opencontainers.image.title", "app")]);
        let c = [("egress.allow", "10.0.0.1"), ("egress.mode", "audit")];
        assert_eq!(
            screened(&c, &img, false, false),
            (allows(Mode::Audit, &["10.0.0.1"]), vec![])
        );
        // No policy label anywhere: not policed, whatever the image's other labels.
        let c = [("org.opencontainers.image.title", "app")];
        assert_eq!(
            screened(&c, &img, false, false),
            (Classification::Unpoliced, vec![])
        );
    }

    #[test]
    fn an_image_allow_alone_polices_by_its_list_in_enforce_mode() {
        let img = image(&[("egress.allow", "10.0.0.1")]);
        let c = [("egress.allow", "10.0.0.1")];
        assert_eq!(
            screened(&c, &img, false, false),
            (allows(Mode::Enforce, &["10.0.0.1"]), vec![])
        );
        // With the image's `egress.mode=enforce` too; its audit mode is dropped.
        let img = image(&[("egress.allow", "10.0.0.1"), ("egress.mode", "enforce")]);
        let c = [("egress.allow", "10.0.0.1"), ("egress.mode", "enforce")];
        assert_eq!(
            screened(&c, &img, false, false),
            (allows(Mode::Enforce, &["10.0.0.1"]), vec![])
        );
    }

    #[test]
    fn an_image_audit_beside_operator_allow_is_ignored() {
        let img = image(&[("egress.mode", "audit")]);
        let c = [("egress.mode", "audit"), ("egress.allow", "10.0.0.1")];
        assert_eq!(
            screened(&c, &img, false, false),
            (
                allows(Mode::Enforce, &["10.0.0.1"]),
                vec![("egress.mode".into(), IgnoredWhy::Audit)]
            )
        );
        // ` audit ` is audit too; an image's audit alone leaves the container unlabelled.
        let img = image(&[("egress.mode", " audit ")]);
        let c = [("egress.mode", " audit ")];
        assert_eq!(
            screened(&c, &img, false, false),
            (
                Classification::Unpoliced,
                vec![("egress.mode".into(), IgnoredWhy::Audit)]
            )
        );
        // The operator's own audit mode (a value other than the image's) stands.
        let img = image(&[("egress.mode", "enforce")]);
        let c = [("egress.mode", "audit"), ("egress.allow", "10.0.0.1")];
        assert_eq!(
            screened(&c, &img, false, false),
            (allows(Mode::Audit, &["10.0.0.1"]), vec![])
        );
    }

    #[test]
    fn an_image_allow_beside_operator_labels_is_ignored() {
        // Same key: Docker keeps the operator's value, the image's never shows.
        let img = image(&[("egress.allow", "0.0.0.0/0")]);
        let c = [("egress.allow", "10.0.0.1")];
        assert_eq!(
            screened(&c, &img, false, false),
            (allows(Mode::Enforce, &["10.0.0.1"]), vec![])
        );
        // Beside another operator label.
        let c = [("egress.allow", "0.0.0.0/0"), ("egress.mode", "enforce")];
        assert_eq!(
            screened(&c, &img, false, false),
            (
                allows(Mode::Enforce, &[]),
                vec![("egress.allow".into(), IgnoredWhy::BesideOperator)]
            )
        );
        let c = [("egress.allow", "0.0.0.0/0"), ("egress.mode", "audit")];
        assert_eq!(screened(&c, &img, false, false).0, allows(Mode::Audit, &[]));
        // Beside a policy-file rule that selects the container (which then polices it).
        let c = [("egress.allow", "0.0.0.0/0")];
        assert_eq!(
            screened(&c, &img, false, true),
            (
                Classification::Unpoliced,
                vec![("egress.allow".into(), IgnoredWhy::BesideOperator)]
            )
        );
        // An ignored label is not read: its errors do not count.
        let img = image(&[("egress.allow", "*foo.com")]);
        let c = [("egress.allow", "*foo.com"), ("egress.mode", "enforce")];
        assert_eq!(
            screened(&c, &img, false, false).0,
            allows(Mode::Enforce, &[])
        );
    }

    #[test]
    fn an_image_operator_value_equal_to_the_image_counts_as_the_image() {
        let img = image(&[("egress.allow", "10.0.0.1"), ("egress.mode", "audit")]);
        let c = [("egress.allow", "10.0.0.1"), ("egress.mode", "audit")];
        assert_eq!(
            screened(&c, &img, false, false),
            (
                allows(Mode::Enforce, &["10.0.0.1"]),
                vec![("egress.mode".into(), IgnoredWhy::Audit)]
            )
        );
    }

    #[test]
    fn image_errors_make_the_container_stricter() {
        // A near miss or an unknown key from the image denies, beside operator labels too.
        for key in [
            "EGRESS_ALLOW",
            "Egress.allow",
            "egress-allow",
            "egress.alow",
        ] {
            let img = image(&[(key, "0.0.0.0/0")]);
            for c in [
                vec![(key, "0.0.0.0/0")],
                vec![(key, "0.0.0.0/0"), ("egress.allow", "10.0.0.1")],
            ] {
                let (class, ignored) = screened(&c, &img, false, false);
                let Classification::Invalid(e) = class else {
                    panic!("{c:?}: {class:?}")
                };
                assert_eq!(e[0].label, key);
                assert!(ignored.is_empty());
            }
        }
        // A malformed mode from the image.
        let img = image(&[("egress.mode", "Audit")]);
        let c = [("egress.mode", "Audit"), ("egress.allow", "10.0.0.1")];
        assert!(matches!(
            screened(&c, &img, false, false).0,
            Classification::Invalid(_)
        ));
    }

    #[test]
    fn a_trusted_image_counts_as_the_operator() {
        let img = image(&[("egress.mode", "audit"), ("egress.allow", "0.0.0.0/0")]);
        let c = [("egress.mode", "audit"), ("egress.allow", "0.0.0.0/0")];
        assert_eq!(
            screened(&c, &img, true, true),
            (allows(Mode::Audit, &["0.0.0.0/0"]), vec![])
        );
        assert_eq!(
            screened(&c, &unknown(), true, false),
            (allows(Mode::Audit, &["0.0.0.0/0"]), vec![])
        );
    }

    #[test]
    fn unknown_image_labels_count_as_the_image() {
        let img = unknown();
        // The operator's audit (indistinguishable from the image's) is dropped: never looser.
        let c = [("egress.allow", "10.0.0.1"), ("egress.mode", "audit")];
        assert_eq!(
            screened(&c, &img, false, false),
            (
                allows(Mode::Enforce, &["10.0.0.1"]),
                vec![("egress.mode".into(), IgnoredWhy::Audit)]
            )
        );
        // An allow list beside a file rule is dropped (the rule polices); beside nothing it
        // polices.
        let c = [("egress.allow", "0.0.0.0/0")];
        assert_eq!(
            screened(&c, &img, false, true),
            (
                Classification::Unpoliced,
                vec![("egress.allow".into(), IgnoredWhy::BesideOperator)]
            )
        );
        assert_eq!(
            screened(&c, &img, false, false).0,
            allows(Mode::Enforce, &["0.0.0.0/0"])
        );
        // Errors still deny.
        let c = [("Egress.allow", "10.0.0.1")];
        assert!(matches!(
            screened(&c, &img, false, false).0,
            Classification::Invalid(_)
        ));
        assert_eq!(
            screened(&[], &img, false, false),
            (Classification::Unpoliced, vec![])
        );
    }

    #[test]
    fn ignored_labels_say_why() {
        let s = screen(
            &labels(&[("egress.mode", "audit"), ("egress.allow", "10.0.0.0/8")]),
            &unknown(),
            false,
            true,
        );
        let shown: Vec<String> = s.ignored.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 2);
        assert!(
            shown[0].starts_with("`egress.allow=10.0.0.0/8` is ignored: the operator's own"),
            "{shown:?}"
        );
        assert!(
            shown[1].starts_with("`egress.mode=audit` is ignored: an image may make"),
            "{shown:?}"
        );
    }

    #[test]
    fn empty_allow_allows_nothing() {
        let s = policed(&[("egress.allow", "")], NO_WILD);
        assert_eq!(s, ContainerSpec::new(Mode::Enforce));
        let s = policed(&[("egress.allow", " , ,")], NO_WILD);
        assert!(s.entries.is_empty());
    }

    #[test]
    fn audit_alone_audits_everything() {
        let s = policed(&[("egress.mode", "audit")], NO_WILD);
        assert_eq!(s, ContainerSpec::new(Mode::Audit));
    }

    #[test]
    fn allow_list() {
        let s = policed(
            &[
                (
                    "egress.allow",
                    " api.example.com:443, 10.1.0.0/16:5432 ,[2001:db8::1]:443,db,",
                ),
                ("other", "ignored"),
            ],
            NO_WILD,
        );
        assert_eq!(s.mode, Mode::Enforce);
        assert_eq!(
            s.entries,
            vec![
                domain("api.example.com", Some(443)),
                addr("10.1.0.0/16:5432"),
                addr("[2001:db8::1]:443"),
                domain("db", None),
            ]
        );
        assert_eq!(s.rules().count(), 2);
        assert_eq!(s.domains().count(), 2);
        assert_eq!(s.wildcards().count(), 0);
    }

    #[test]
    fn duplicates_are_kept_once() {
        let s = policed(
            &[(
                "egress.allow",
                "x.com,X.com.,x.com:443,x.com,10.0.0.1,10.0.0.1,::ffff:10.0.0.1",
            )],
            NO_WILD,
        );
        assert_eq!(
            s.entries,
            vec![
                domain("x.com", None),
                domain("x.com", Some(443)),
                addr("10.0.0.1")
            ]
        );
    }

    #[test]
    fn modes() {
        let s = policed(
            &[("egress.mode", " enforce "), ("egress.allow", "x.com")],
            NO_WILD,
        );
        assert_eq!(s.mode, Mode::Enforce);
        let s = policed(
            &[("egress.mode", "audit"), ("egress.allow", "x.com")],
            NO_WILD,
        );
        assert_eq!(s.mode, Mode::Audit);
    }

    #[test]
    fn mode_errors() {
        let e = invalid(&[("egress.mode", "block")], NO_WILD);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].label, "egress.mode");
        assert_eq!(e[0].token, "block");
        assert_eq!(
            e[0].to_string(),
            "label `egress.mode`: `block`: unknown mode: expected `enforce` or `audit`"
        );
        let e = invalid(&[("egress.mode", "Audit")], NO_WILD);
        assert_eq!(e[0].token, "Audit");
        let e = invalid(&[("egress.mode", " ")], NO_WILD);
        assert_eq!(
            e[0].to_string(),
            "label `egress.mode`: empty value: expected `enforce` or `audit`"
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = invalid(&[("egress.alow", "x.com"), ("egress.", "")], NO_WILD);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].label, "egress.");
        assert_eq!(e[1].label, "egress.alow");
        assert!(e[1].token.is_empty());
        assert!(
            e[1].to_string()
                .starts_with("label `egress.alow`: unknown key"),
            "{}",
            e[1]
        );
    }

    #[test]
    fn every_error_is_collected() {
        let e = invalid(
            &[
                (
                    "egress.allow",
                    "ok.com, *foo.com, x.com:0, 10.0.0.1, -a.com",
                ),
                ("egress.mode", "block"),
                ("egress.deny", "y.com"),
            ],
            NO_WILD,
        );
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "label `egress.allow`: `*foo.com`: `*foo` is not a wildcard label: a wildcard is \
                 `*.` (exactly one more label) or `**.` (any depth) followed by a domain, e.g. \
                 `*.example.com`",
                "label `egress.allow`: `x.com:0`: bad port `0` (expected 1-65535)",
                "label `egress.allow`: `-a.com`: DNS label `-a` must not start or end with a \
                 hyphen",
                "label `egress.deny`: unknown key (the agent reads `egress.allow`, `egress.mode` \
                 and `egress.dns`)",
                "label `egress.mode`: `block`: unknown mode: expected `enforce` or `audit`",
            ]
        );
    }

    #[test]
    fn wildcard_labels_follow_capabilities() {
        let pairs = [("egress.allow", "*.example.com:443, example.com")];
        let e = invalid(&pairs, NO_WILD);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].token, "*.example.com:443");
        assert!(e[0].message.contains("not available yet"), "{}", e[0]);
        let s = policed(&pairs, WILD);
        assert_eq!(
            s.entries,
            vec![
                one_label("example.com", Some(443)),
                domain("example.com", None)
            ]
        );
        assert_eq!(s.wildcards().count(), 1);
    }

    #[test]
    fn dns_label() {
        let s = policed(
            &[("egress.dns", " resolve "), ("egress.allow", "x.com")],
            NO_WILD,
        );
        assert_eq!(s.dns, Some(DnsMode::Resolve));
        assert_eq!(s.dns_mode(DnsMode::Learn), DnsMode::Resolve);
        let s = policed(&[("egress.dns", "learn")], NO_WILD);
        assert_eq!((s.mode, s.dns), (Mode::Enforce, Some(DnsMode::Learn)));
        assert!(
            s.entries.is_empty(),
            "a DNS label alone polices: nothing allowed"
        );
        let s = policed(&[("egress.allow", "x.com")], NO_WILD);
        assert_eq!(s.dns, None);
        assert_eq!(s.dns_mode(DnsMode::Resolve), DnsMode::Resolve);
    }

    #[test]
    fn dns_label_errors_name_the_token() {
        let e = invalid(
            &[("egress.dns", "Resolve"), ("egress.allow", "x.com")],
            NO_WILD,
        );
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].label.as_str(), e[0].token.as_str()),
            ("egress.dns", "Resolve")
        );
        assert_eq!(
            e[0].to_string(),
            "label `egress.dns`: `Resolve`: unknown DNS mode: expected `learn` or `resolve`"
        );
        let e = invalid(&[("egress.dns", "")], NO_WILD);
        assert_eq!(
            e[0].to_string(),
            "label `egress.dns`: empty value: expected `learn` or `resolve`"
        );
    }

    #[test]
    fn an_image_dns_learn_applies_and_resolve_is_ignored_unless_trusted() {
        let img = image(&[("egress.allow", "x.com"), ("egress.dns", "learn")]);
        let c = [("egress.allow", "x.com"), ("egress.dns", "learn")];
        let (class, ignored) = screened(&c, &img, false, false);
        let Classification::Policed(s) = class else {
            panic!("{class:?}")
        };
        assert_eq!((s.dns, ignored), (Some(DnsMode::Learn), vec![]));

        let img = image(&[("egress.allow", "x.com"), ("egress.dns", "resolve")]);
        let c = [("egress.allow", "x.com"), ("egress.dns", "resolve")];
        let (class, ignored) = screened(&c, &img, false, false);
        let Classification::Policed(s) = class else {
            panic!("{class:?}")
        };
        assert_eq!(s.dns, None, "the agent's default applies");
        assert_eq!(ignored, vec![("egress.dns".into(), IgnoredWhy::DnsResolve)]);
        // Alone, it leaves the container unlabelled (like an image's audit mode).
        let img = image(&[("egress.dns", "resolve")]);
        let (class, _) = screened(&[("egress.dns", "resolve")], &img, false, false);
        assert_eq!(class, Classification::Unpoliced);
        // Labels of an image the agent could not read count as the image's.
        let (class, ignored) = screened(&c, &unknown(), false, false);
        assert!(matches!(
            class,
            Classification::Policed(ContainerSpec { dns: None, .. })
        ));
        assert_eq!(ignored.len(), 1);
        // A trusted image counts as the operator.
        let (class, ignored) = screened(&c, &img, true, false);
        let Classification::Policed(s) = class else {
            panic!("{class:?}")
        };
        assert_eq!((s.dns, ignored), (Some(DnsMode::Resolve), vec![]));
        // The operator's own resolve (a value other than the image's) stands.
        let img = image(&[("egress.dns", "learn")]);
        let (class, _) = screened(&c, &img, false, false);
        assert!(matches!(
            class,
            Classification::Policed(ContainerSpec {
                dns: Some(DnsMode::Resolve),
                ..
            })
        ));
        // An image's malformed DNS mode denies.
        let img = image(&[("egress.dns", "both")]);
        let (class, _) = screened(&[("egress.dns", "both")], &img, false, false);
        assert!(matches!(class, Classification::Invalid(_)));
    }

    #[test]
    fn an_ignored_dns_label_says_why() {
        let s = screen(
            &labels(&[("egress.dns", "resolve")]),
            &unknown(),
            false,
            false,
        );
        assert_eq!(s.ignored.len(), 1);
        assert!(
            s.ignored[0]
                .to_string()
                .starts_with("`egress.dns=resolve` is ignored: an image may make"),
            "{}",
            s.ignored[0]
        );
    }

    #[test]
    fn names_domains_and_wildcards_of_a_spec() {
        let s = policed(
            &[(
                "egress.allow",
                "a.test:443, *.b.test, **.c.test:80, 10.0.0.1",
            )],
            WILD,
        );
        assert_eq!(s.names().count(), 3);
        assert_eq!(s.domains().collect::<Vec<_>>(), vec![("a.test", Some(443))]);
        let wild: Vec<String> = s.wildcards().map(|(p, _)| p.to_string()).collect();
        assert_eq!(wild, vec!["*.b.test", "**.c.test"]);
    }
}
