//! The agent-side policy file: TOML rules that add to or override the `egress.*` labels of
//! selected containers. Docker labels cannot change after a container is created, so this is
//! how an operator fixes a policy without recreating the container. The caller reloads the
//! file on SIGHUP (and keeps the previous one if the new one has errors).
//!
//! ```toml
//! # Images whose egress.* labels count as the operator's (before any [[container]]).
//! trusted_images = ["registry.example.com/team/proxy:1.4", "sha256:0c9023e3...(64 hex)"]
//!
//! # Each [[container]] selects containers by exact name (without the leading "/") and/or by
//! # label ("key" = has the label, "key=value" = has it with that value). All given selectors
//! # must match.
//! [[container]]
//! name = "billing"
//! mode = "audit"                                  # optional: overrides egress.mode
//! dns = "resolve"                                 # optional: overrides egress.dns
//! allow = ["api.stripe.com", "10.0.0.0/8:5432"]   # same entry grammar as the label
//! replace = false                                 # true: replaces the label's entries
//!
//! [[container]]
//! label = "com.example.team=payments"
//! allow = ["*.payments.example.com"]
//! ```
//!
//! # Fields of a `[[container]]`
//!
//! - `name`: the container's exact name; a leading `/` (as the Docker API writes names) is
//!   ignored, here and in the name the rule is matched against.
//! - `label`: `key` (the container has the label) or `key=value` (split at the first `=`; the
//!   value is compared exactly and may be empty). At least one of `name` and `label` is
//!   required; when both are given, both must match.
//! - `mode`: `enforce` or `audit`; overrides `egress.mode`.
//! - `dns`: `learn` or `resolve`; overrides `egress.dns` (see [`crate::dns::DnsMode`]).
//! - `allow`: a list of entries, one per string, in the grammar of `egress.allow` (see
//!   [`crate::labels`]), checked with the same [`Capabilities`]. An empty string or a comma in a
//!   string is an error (commas separate entries only in the label).
//! - `replace`: `false` (default) adds the entries to the label's; `true` replaces the entries
//!   gathered so far (the label's and those of earlier matching rules) with this rule's. With an
//!   empty or missing `allow`, that allows nothing.
//!
//! # `trusted_images`
//!
//! A top-level list of images (written before the first `[[container]]`, as TOML wants) whose
//! labels count as the operator's: the `egress.*` labels a container gets from a trusted image
//! all apply, `egress.mode=audit` and an `egress.allow` beside the operator's own included.
//! Without it, labels from the image may only make a container stricter (see
//! [`crate::labels`], "Labels from the image"). Each entry is an image id (`sha256:` and 64
//! hex digits) or a reference (`repository[:tag]`, normalized: `busybox` is
//! `docker.io/library/busybox:latest`), see [`crate::image_ref`]. A bad entry is an error like
//! any other in the file.
//!
//! Any other field, and any top-level key other than `container` and `trusted_images`, is an
//! error. Every problem in the file is reported at once, each naming the file, the
//! `[[container]]` (numbered from 1, with its `name`/`label`), the field and the offending
//! value.
//!
//! # How the file and the labels combine
//!
//! For a container ([`judge`]), take its labels less the image's labels that may not apply
//! ([`crate::labels::screen`]: a matching `[[container]]` counts as the operator's own policy,
//! beside which an image's `egress.allow` is ignored; a trusted image's labels all apply),
//! classify them ([`crate::labels::classify`]), then apply every matching `[[container]]` in
//! file order: `allow` adds (without duplicates) or, with
//! `replace = true`, replaces the entries; `mode` and `dns` override the mode and the DNS mode
//! (the last one wins).
//!
//! - A container without `egress.*` labels that some rule selects is policed by the file alone,
//!   starting from "enforce, nothing allowed". So a rule with only a selector cuts a container
//!   off, and `mode = "audit"` alone audits it.
//! - A container that no rule selects is classified by its labels alone.
//! - Malformed labels: a rule only takes over the parts of the labels it fully supersedes. The
//!   errors of `egress.allow` no longer matter if a matching rule has `replace = true` (the
//!   label's entries are discarded anyway), and those of `egress.mode` (`egress.dns`) no longer
//!   matter if a matching rule sets `mode` (`dns`). Any other error (an unknown `egress.*`
//!   key, whose intent the agent cannot know, or an error in a label no rule supersedes) keeps
//!   the container [`Classification::Invalid`]: all egress denied. This is stricter than ignoring bad labels
//!   and more useful than "a file can never fix a label": the result is exactly what the
//!   operator wrote, and a container cut off by a typo in its labels can be repaired without
//!   recreating it. [`PolicyFile::resolve`] returns the superseded errors so they can still be
//!   logged.
//! - Rules select by the container's labels as Docker reports them, the image's included.

use std::{
    collections::{BTreeMap, HashMap},
    fmt, fs,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use tracing::warn;

use crate::{
    dns::DnsMode,
    image_ref::ImageRef,
    labels::{
        self, ALLOW_LABEL, AllowEntry, Capabilities, Classification, ContainerSpec, DNS_LABEL,
        IgnoredLabel, ImageLabels, LabelError, MODE_LABEL,
    },
    policy::{Mode, parse_mode},
};

/// What `parse` calls the file in its errors (`load` uses the path).
const UNNAMED: &str = "policy file";
const FIELDS: &[&str] = &["name", "label", "mode", "dns", "allow", "replace"];
/// The top-level list of trusted images.
const TRUSTED_IMAGES: &str = "trusted_images";

/// A parsed, validated policy file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyFile {
    /// The path it was loaded from, or "policy file".
    origin: String,
    rules: Vec<FileRule>,
    /// `trusted_images`, in file order.
    trusted: Vec<ImageRef>,
}

/// One `[[container]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRule {
    /// Position in the file, from 1.
    pub index: usize,
    /// Exact container name, without a leading `/`.
    pub name: Option<String>,
    pub label: Option<LabelSelector>,
    pub mode: Option<Mode>,
    pub dns: Option<DnsMode>,
    /// Deduplicated, in the order written.
    pub allow: Vec<AllowEntry>,
    pub replace: bool,
}

/// `key` or `key=value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelSelector {
    pub key: String,
    /// `None`: the label only has to be present.
    pub value: Option<String>,
}

impl LabelSelector {
    pub fn matches(&self, labels: &HashMap<String, String>) -> bool {
        match (labels.get(&self.key), &self.value) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(have), Some(want)) => have == want,
        }
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            None => f.write_str(&self.key),
            Some(v) => write!(f, "{}={v}", self.key),
        }
    }
}

impl FileRule {
    /// True if every selector this rule has matches the container.
    pub fn matches(&self, name: &str, labels: &HashMap<String, String>) -> bool {
        let name = name.strip_prefix('/').unwrap_or(name);
        self.name.as_deref().is_none_or(|n| n == name)
            && self.label.as_ref().is_none_or(|l| l.matches(labels))
    }
}

/// Why a policy file was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not TOML at all (the message has the line and column).
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    /// TOML, but not a valid policy: every problem found.
    #[error("{file}: {}", join(problems))]
    Invalid {
        file: String,
        problems: Vec<RuleProblem>,
    },
}

fn join(problems: &[RuleProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One problem in a policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleProblem {
    /// The `[[container]]`, from 1; `None` for a problem outside any.
    pub index: Option<usize>,
    /// Its `name`/`label`, as written (for the message), if any.
    pub selector: Option<String>,
    /// The field at fault, if one is.
    pub field: Option<String>,
    /// The offending value, if one is (an allow entry, a mode).
    pub token: Option<String>,
    pub message: String,
}

impl fmt::Display for RuleProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(i) = self.index {
            write!(f, "[[container]] #{i}")?;
            if let Some(s) = &self.selector {
                write!(f, " ({s})")?;
            }
            f.write_str(": ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "`{field}`: ")?;
        }
        if let Some(t) = &self.token {
            write!(f, "`{t}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A `[[container]]` as written; checked by `validate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    label: Option<String>,
    mode: Option<String>,
    dns: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    replace: bool,
}

/// The outcome of [`PolicyFile::resolve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub classification: Classification,
    /// The indices (from 1) of the `[[container]]`s that selected the container.
    pub matched: Vec<usize>,
    /// Label errors that a matching rule made moot (worth a warning, not a denial).
    pub superseded: Vec<LabelError>,
}

impl PolicyFile {
    /// Parses and validates policy-file text; errors call it "policy file".
    pub fn parse(text: &str, caps: Capabilities) -> Result<Self, FileError> {
        Self::parse_as(text, UNNAMED, caps)
    }

    /// Reads, parses and validates the file at `path`; errors name the path.
    pub fn load(path: &Path, caps: Capabilities) -> Result<Self, FileError> {
        let text = fs::read_to_string(path).map_err(|source| FileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_as(&text, &path.display().to_string(), caps)
    }

    fn parse_as(text: &str, file: &str, caps: Capabilities) -> Result<Self, FileError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| FileError::Syntax {
                file: file.to_owned(),
                message: e.to_string().trim_end().to_owned(),
            })?;
        let mut problems = Vec::new();
        let mut rules = Vec::new();
        let mut trusted = Vec::new();
        for (key, value) in table {
            if key == TRUSTED_IMAGES {
                match parse_trusted(value) {
                    Ok(t) => trusted = t,
                    Err(mut p) => problems.append(&mut p),
                }
                continue;
            }
            if key != "container" {
                problems.push(RuleProblem {
                    index: None,
                    selector: None,
                    field: Some(key),
                    token: None,
                    message: format!(
                        "unknown top-level key (expected `{TRUSTED_IMAGES}` and \
                         `[[container]]` tables)"
                    ),
                });
                continue;
            }
            let toml::Value::Array(items) = value else {
                problems.push(RuleProblem {
                    index: None,
                    selector: None,
                    field: Some(key),
                    token: None,
                    message: "expected an array of tables, written `[[container]]`".into(),
                });
                continue;
            };
            for (i, item) in items.into_iter().enumerate() {
                match validate(i + 1, item, caps) {
                    Ok(rule) => rules.push(rule),
                    Err(mut p) => problems.append(&mut p),
                }
            }
        }
        if !problems.is_empty() {
            return Err(FileError::Invalid {
                file: file.to_owned(),
                problems,
            });
        }
        Ok(Self {
            origin: file.to_owned(),
            rules,
            trusted,
        })
    }

    /// `trusted_images`, in file order.
    pub fn trusted_images(&self) -> &[ImageRef] {
        &self.trusted
    }

    /// True if `trusted_images` names the image a container was created from (as
    /// `reference`, with the image id `id` if known).
    pub fn trusts(&self, reference: &str, id: Option<&str>) -> bool {
        self.trusted.iter().any(|t| t.matches(reference, id))
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[FileRule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules that select this container, in file order.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a HashMap<String, String>,
    ) -> impl Iterator<Item = &'a FileRule> + 'a {
        self.rules.iter().filter(move |r| r.matches(name, labels))
    }

    /// What the agent does with a container: its labels combined with the matching rules (see
    /// the module docs). `caps` must be those the file was parsed with.
    pub fn effective(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
        caps: Capabilities,
    ) -> Classification {
        self.resolve(name, labels, caps).classification
    }

    /// [`effective`](Self::effective), with which rules matched and which label errors they
    /// made moot.
    pub fn resolve(
        &self,
        name: &str,
        labels: &HashMap<String, String>,
        caps: Capabilities,
    ) -> Resolution {
        self.resolve_split(name, labels, labels, caps)
    }

    /// [`resolve`](Self::resolve) with the labels that select rules (all of the container's)
    /// apart from those that give the policy (screened, see [`judge`]).
    fn resolve_split(
        &self,
        name: &str,
        selecting: &HashMap<String, String>,
        labels: &HashMap<String, String>,
        caps: Capabilities,
    ) -> Resolution {
        let parsed = labels::parse_labels(labels, caps);
        let matching: Vec<&FileRule> = self.matching(name, selecting).collect();
        let matched = matching.iter().map(|r| r.index).collect();
        if !parsed.policed && matching.is_empty() {
            return Resolution {
                classification: Classification::Unpoliced,
                matched,
                superseded: Vec::new(),
            };
        }
        let replaces = matching.iter().any(|r| r.replace);
        let sets_mode = matching.iter().any(|r| r.mode.is_some());
        let sets_dns = matching.iter().any(|r| r.dns.is_some());
        let (superseded, mut errors): (Vec<LabelError>, Vec<LabelError>) =
            parsed.errors.into_iter().partition(|e| {
                (e.label == ALLOW_LABEL && replaces)
                    || (e.label == MODE_LABEL && sets_mode)
                    || (e.label == DNS_LABEL && sets_dns)
            });
        // Wildcards in the file pass `parse` only with wildcard capabilities; if the caller
        // now says otherwise, fail closed rather than drop them.
        if !caps.wildcards {
            for rule in &matching {
                for entry in rule.allow.iter().filter(
                    |e| matches!(e, AllowEntry::Name { pattern, .. } if pattern.is_wildcard()),
                ) {
                    errors.push(LabelError {
                        label: format!("{}: [[container]] #{}", self.origin, rule.index),
                        token: entry.to_string(),
                        message: labels::WILDCARDS_UNAVAILABLE.into(),
                    });
                }
            }
        }
        let classification = if errors.is_empty() {
            let mut spec = ContainerSpec {
                mode: parsed.mode.unwrap_or(Mode::Enforce),
                entries: parsed.entries,
                dns: parsed.dns,
            };
            for rule in &matching {
                if rule.replace {
                    spec.entries.clear();
                }
                for entry in &rule.allow {
                    spec.add(entry.clone());
                }
                if let Some(mode) = rule.mode {
                    spec.mode = mode;
                }
                if let Some(dns) = rule.dns {
                    spec.dns = Some(dns);
                }
            }
            Classification::Policed(spec)
        } else {
            Classification::Invalid(errors)
        };
        Resolution {
            classification,
            matched,
            superseded,
        }
    }
}

/// A container as [`judge`] needs it.
#[derive(Clone, Copy, Debug)]
pub struct ContainerLabels<'a> {
    /// Without Docker's leading `/`.
    pub name: &'a str,
    /// Its labels as Docker reports them (the image's merged in).
    pub labels: &'a HashMap<String, String>,
    /// The image as the container was created from it (`Config.Image`).
    pub image: &'a str,
    /// The image's id, if known.
    pub image_id: Option<&'a str>,
    /// The image's own labels.
    pub image_labels: &'a ImageLabels,
}

/// What [`judge`] decided, with what is worth a warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub classification: Classification,
    /// Labels of the image that were not applied.
    pub ignored: Vec<IgnoredLabel>,
    /// The image's labels could not be read (why), the image is not trusted, and the container
    /// has policy labels: they all counted as the image's.
    pub image_unknown: Option<String>,
}

impl Verdict {
    /// Logs the warnings: one line per ignored label, or one line in all when the image's
    /// labels could not be read. Each names the container, the image, the label and its value.
    pub fn log_warnings(&self, container: &str, id: &str, image: &str) {
        let ignored: Vec<String> = self
            .ignored
            .iter()
            .map(|i| format!("{}={}", i.label, i.value))
            .collect();
        if let Some(why) = &self.image_unknown {
            let dropped = if ignored.is_empty() {
                String::new()
            } else {
                format!("; ignored: {}", ignored.join(", "))
            };
            warn!(
                container,
                id,
                image,
                label = %self.ignored.iter().map(|i| i.label.as_str()).collect::<Vec<_>>().join(","),
                token = %ignored.join(","),
                error = %why,
                "cannot read the labels of image `{image}` ({why}): every egress label of the \
                 container counts as the image's, which may only make it stricter{dropped}"
            );
            return;
        }
        for i in &self.ignored {
            warn!(
                container,
                id,
                image,
                label = %i.label,
                token = %i.value,
                "label of image `{image}`: {i} (list the image in the policy file's \
                 `{TRUSTED_IMAGES}` to apply its labels)"
            );
        }
    }
}

/// What the agent does with a container: its labels screened by where they come from (the
/// image's may only make it stricter, unless `file` trusts the image), combined with `file`'s
/// rules (see the module docs). `caps` must be those the file was parsed with.
pub fn judge(file: Option<&PolicyFile>, c: &ContainerLabels<'_>, caps: Capabilities) -> Verdict {
    let none = PolicyFile::default();
    let file = file.unwrap_or(&none);
    let selected = file.matching(c.name, c.labels).next().is_some();
    let trusted = file.trusts(c.image, c.image_id);
    let screened = labels::screen(c.labels, c.image_labels, trusted, selected);
    let resolution = file.resolve_split(c.name, c.labels, &screened.labels, caps);
    let image_unknown = match c.image_labels {
        ImageLabels::Unknown(why) if !trusted && labels::is_policed(c.labels) => Some(why.clone()),
        _ => None,
    };
    Verdict {
        classification: resolution.classification,
        ignored: screened.ignored,
        image_unknown,
    }
}

/// `trusted_images = [...]`: every entry checked, every problem reported.
fn parse_trusted(value: toml::Value) -> Result<Vec<ImageRef>, Vec<RuleProblem>> {
    let problem = |token: Option<&str>, message: String| RuleProblem {
        index: None,
        selector: None,
        field: Some(TRUSTED_IMAGES.into()),
        token: token.map(str::to_owned),
        message,
    };
    let toml::Value::Array(items) = value else {
        return Err(vec![problem(
            None,
            "expected a list of image references or ids".into(),
        )]);
    };
    let mut problems = Vec::new();
    let mut trusted = Vec::new();
    for item in items {
        let Some(s) = item.as_str() else {
            problems.push(problem(None, format!("expected a string, found `{item}`")));
            continue;
        };
        match ImageRef::parse(s) {
            Ok(r) if !trusted.contains(&r) => trusted.push(r),
            Ok(_) => {}
            Err(message) => problems.push(problem(Some(s.trim()), message)),
        }
    }
    if problems.is_empty() {
        Ok(trusted)
    } else {
        Err(problems)
    }
}

/// Checks one `[[container]]` (`index` from 1), collecting every problem.
fn validate(
    index: usize,
    item: toml::Value,
    caps: Capabilities,
) -> Result<FileRule, Vec<RuleProblem>> {
    let mut problems = Vec::new();
    let toml::Value::Table(table) = item else {
        return Err(vec![RuleProblem {
            index: Some(index),
            selector: None,
            field: None,
            token: None,
            message: "expected a table".into(),
        }]);
    };
    let selector = describe_selectors(&table);
    let problem = |field: Option<&str>, token: Option<&str>, message: String| RuleProblem {
        index: Some(index),
        selector: selector.clone(),
        field: field.map(str::to_owned),
        token: token.map(str::to_owned),
        message,
    };
    // Every unknown field at once (serde would stop at the first).
    for key in table.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
        problems.push(problem(
            Some(key),
            None,
            format!("unknown field (expected one of {})", FIELDS.join(", ")),
        ));
    }
    // Field by field, so a type error names its field; the fields that pass are checked
    // further, so every problem is reported at once.
    let mut checked = BTreeMap::new();
    for (key, value) in table.iter().filter(|(k, _)| FIELDS.contains(&k.as_str())) {
        let one = toml::Table::from_iter([(key.clone(), value.clone())]);
        if let Err(e) = one.try_into::<RawRule>() {
            problems.push(problem(Some(key), None, e.message().trim_end().to_owned()));
        } else {
            checked.insert(key.clone(), value.clone());
        }
    }
    let raw: RawRule = match toml::Table::from_iter(checked).try_into() {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(problem(None, None, e.message().trim_end().to_owned()));
            return Err(problems);
        }
    };

    let name = match raw.name.as_deref() {
        None => None,
        Some(n) => {
            let n = n.strip_prefix('/').unwrap_or(n);
            if n.is_empty() {
                problems.push(problem(Some("name"), None, "empty container name".into()));
            } else if n.chars().any(char::is_whitespace) {
                problems.push(problem(
                    Some("name"),
                    Some(n),
                    "a container name has no whitespace".into(),
                ));
            }
            Some(n.to_owned())
        }
    };
    let label = match raw.label.as_deref() {
        None => None,
        Some(l) => {
            let (key, value) = match l.split_once('=') {
                Some((k, v)) => (k, Some(v.to_owned())),
                None => (l, None),
            };
            if key.is_empty() {
                problems.push(problem(
                    Some("label"),
                    Some(l),
                    "empty label key (expected `key` or `key=value`)".into(),
                ));
            } else if key.chars().any(char::is_whitespace) {
                problems.push(problem(
                    Some("label"),
                    Some(l),
                    "a label key has no whitespace (write `key=value` without spaces around \
                     `=`)"
                        .into(),
                ));
            }
            Some(LabelSelector {
                key: key.to_owned(),
                value,
            })
        }
    };
    if !table.contains_key("name") && !table.contains_key("label") {
        problems.push(problem(
            None,
            None,
            "selects nothing: give `name` and/or `label`".into(),
        ));
    }
    let mode = match raw.mode.as_deref().map(|m| (m, parse_mode(m))) {
        None => None,
        Some((_, Ok(m))) => Some(m),
        Some((m, Err(_))) => {
            problems.push(problem(
                Some("mode"),
                Some(m),
                "unknown mode: expected `enforce` or `audit`".into(),
            ));
            None
        }
    };
    let dns = match raw.dns.as_deref().map(|d| (d, DnsMode::parse(d))) {
        None => None,
        Some((_, Ok(d))) => Some(d),
        Some((d, Err(_))) => {
            problems.push(problem(
                Some("dns"),
                Some(d),
                "unknown DNS mode: expected `learn` or `resolve`".into(),
            ));
            None
        }
    };
    let mut spec = ContainerSpec::new(Mode::Enforce);
    for item in &raw.allow {
        if item.contains(',') {
            problems.push(problem(
                Some("allow"),
                Some(item.trim()),
                "one entry per string (commas separate entries only in the label)".into(),
            ));
            continue;
        }
        match labels::parse_allow_entry(item, caps) {
            Ok(entry) => {
                spec.add(entry);
            }
            Err(p) => problems.push(problem(Some("allow"), Some(&p.token), p.message)),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(FileRule {
        index,
        name,
        label,
        mode,
        dns,
        allow: spec.entries,
        replace: raw.replace,
    })
}

/// `name = "x", label = "k=v"`, from whichever are strings.
fn describe_selectors(table: &toml::Table) -> Option<String> {
    let parts: Vec<String> = ["name", "label"]
        .iter()
        .filter_map(|k| {
            table
                .get(*k)
                .and_then(toml::Value::as_str)
                .map(|v| format!("{k} = {v:?}"))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_WILD: Capabilities = Capabilities { wildcards: false };
    const WILD: Capabilities = Capabilities { wildcards: true };

    const EXAMPLE: &str = r#"
        # Each [[container]] selects containers by exact name and/or by label.
        [[container]]
        name = "billing"
        mode = "audit"
        allow = ["api.stripe.com", "10.0.0.0/8:5432"]
        replace = false

        [[container]]
        label = "com.example.team=payments"
        allow = ["*.payments.example.com"]
    "#;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn entries(list: &[&str]) -> Vec<AllowEntry> {
        list.iter()
            .map(|s| labels::parse_allow_entry(s, WILD).unwrap())
            .collect()
    }

    fn file(text: &str) -> PolicyFile {
        PolicyFile::parse(text, NO_WILD).unwrap_or_else(|e| panic!("{e}"))
    }

    fn problems(text: &str, caps: Capabilities) -> (String, Vec<RuleProblem>) {
        match PolicyFile::parse(text, caps) {
            Err(e @ FileError::Invalid { .. }) => {
                let shown = e.to_string();
                let FileError::Invalid { problems, .. } = e else {
                    unreachable!()
                };
                (shown, problems)
            }
            other => panic!("{other:?}"),
        }
    }

    fn policed(c: Classification) -> ContainerSpec {
        match c {
            Classification::Policed(s) => s,
            other => panic!("{other:?}"),
        }
    }

    // ---- parsing ----

    #[test]
    fn parses_the_example() {
        let f = PolicyFile::parse(EXAMPLE, WILD).unwrap();
        let r = f.rules();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].index, 1);
        assert_eq!(r[0].name.as_deref(), Some("billing"));
        assert_eq!(r[0].label, None);
        assert_eq!(r[0].mode, Some(Mode::Audit));
        assert_eq!(r[0].allow, entries(&["api.stripe.com", "10.0.0.0/8:5432"]));
        assert!(!r[0].replace);
        assert_eq!(r[1].index, 2);
        assert_eq!(r[1].name, None);
        assert_eq!(
            r[1].label,
            Some(LabelSelector {
                key: "com.example.team".into(),
                value: Some("payments".into())
            })
        );
        assert_eq!(r[1].mode, None);
        assert_eq!(r[1].allow, entries(&["*.payments.example.com"]));
    }

    #[test]
    fn empty_file_has_no_rules() {
        assert!(file("").is_empty());
        assert!(file("# nothing yet\n").is_empty());
        assert!(file("container = []").is_empty());
    }

    #[test]
    fn fields_are_optional_except_a_selector() {
        let f = file("[[container]]\nname = \"/web\"\n");
        let r = &f.rules()[0];
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!((r.mode, r.allow.is_empty(), r.replace), (None, true, false));
        let f = file("[[container]]\nlabel = \"egress.managed\"\n");
        assert_eq!(
            f.rules()[0].label,
            Some(LabelSelector {
                key: "egress.managed".into(),
                value: None
            })
        );
        let f = file("[[container]]\nlabel = \"tier=\"\n");
        assert_eq!(
            f.rules()[0].label.as_ref().unwrap().value.as_deref(),
            Some("")
        );
        assert_eq!(f.rules()[0].label.as_ref().unwrap().to_string(), "tier=");
        let f = file("[[container]]\nlabel = \"a=b=c\"\n");
        assert_eq!(
            f.rules()[0].label.as_ref().unwrap().value.as_deref(),
            Some("b=c")
        );
    }

    #[test]
    fn allow_entries_are_deduplicated() {
        let f = file("[[container]]\nname = \"x\"\nallow = [\"A.com\", \"a.com.\", \" a.com \"]\n");
        assert_eq!(f.rules()[0].allow, entries(&["a.com"]));
    }

    #[test]
    fn wildcards_follow_capabilities() {
        let (shown, p) = problems(EXAMPLE, NO_WILD);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].index, Some(2));
        assert_eq!(p[0].field.as_deref(), Some("allow"));
        assert_eq!(p[0].token.as_deref(), Some("*.payments.example.com"));
        assert!(
            shown.starts_with(
                "policy file: [[container]] #2 (label = \"com.example.team=payments\"): \
                 `allow`: `*.payments.example.com`: wildcard entries need the DNS-aware mode"
            ),
            "{shown}"
        );
    }

    #[test]
    fn syntax_errors_name_the_file() {
        let e = PolicyFile::parse("[[container]\nname = ", NO_WILD).unwrap_err();
        assert!(matches!(e, FileError::Syntax { .. }), "{e:?}");
        assert!(e.to_string().starts_with("policy file: "), "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn unknown_fields_are_errors() {
        let (shown, p) = problems(
            "[[container]]\nname = \"billing\"\nalow = [\"x.com\"]\nreplce = true\n",
            NO_WILD,
        );
        assert_eq!(p.len(), 2, "{shown}");
        assert!(
            shown.contains("[[container]] #1 (name = \"billing\"): `alow`: unknown field"),
            "{shown}"
        );
        assert!(shown.contains("`replce`: unknown field"), "{shown}");
        // Unknown fields do not hide the other problems.
        let (shown, p) = problems(
            "[[container]]\nname = 5\nmode = \"x\"\nallow = [\"-a.com\"]\nalow = 1\n",
            NO_WILD,
        );
        let fields: Vec<_> = p.iter().map(|p| p.field.as_deref()).collect();
        assert_eq!(
            fields,
            vec![Some("alow"), Some("name"), Some("mode"), Some("allow")],
            "{shown}"
        );
        let (shown, _) = problems("[container]\nname = \"x\"\n", NO_WILD);
        assert!(
            shown.contains("`container`: expected an array of tables"),
            "{shown}"
        );
        let (shown, _) = problems("containers = []\n", NO_WILD);
        assert!(
            shown.contains("`containers`: unknown top-level key"),
            "{shown}"
        );
    }

    #[test]
    fn type_errors_name_the_field() {
        let (shown, p) = problems(
            "[[container]]\nname = \"x\"\nallow = \"a.com\"\nreplace = \"yes\"\n",
            NO_WILD,
        );
        assert_eq!(p.len(), 2, "{shown}");
        assert_eq!(p[0].field.as_deref(), Some("allow"));
        assert_eq!(p[1].field.as_deref(), Some("replace"));
        let (_, p) = problems("[[container]]\nname = 5\n", NO_WILD);
        assert_eq!(p[0].field.as_deref(), Some("name"));
        assert_eq!(p[0].selector, None);
    }

    #[test]
    fn a_rule_needs_a_selector() {
        let (shown, p) = problems("[[container]]\nallow = [\"x.com\"]\n", NO_WILD);
        assert_eq!(p.len(), 1);
        assert_eq!(
            shown,
            "policy file: [[container]] #1: selects nothing: give `name` and/or `label`"
        );
        let (shown, _) = problems("[[container]]\nname = \"/\"\n", NO_WILD);
        assert!(shown.contains("`name`: empty container name"), "{shown}");
        let (shown, _) = problems("[[container]]\nlabel = \"=x\"\n", NO_WILD);
        assert!(shown.contains("`label`: `=x`: empty label key"), "{shown}");
        let (shown, _) = problems("[[container]]\nlabel = \"team = x\"\n", NO_WILD);
        assert!(
            shown.contains("`label`: `team = x`: a label key has no whitespace"),
            "{shown}"
        );
        let (shown, _) = problems("[[container]]\nname = \"bill ing\"\n", NO_WILD);
        assert!(shown.contains("`name`: `bill ing`"), "{shown}");
    }

    #[test]
    fn bad_values_name_the_token() {
        let (shown, p) = problems(
            r#"
            [[container]]
            name = "ok"
            allow = ["ok.com"]

            [[container]]
            name = "billing"
            label = "team=payments"
            mode = "block"
            allow = ["ok.com", "*foo.com", "x.com:0", "", "a.com, b.com"]
            "#,
            NO_WILD,
        );
        let tokens: Vec<_> = p.iter().map(|p| p.token.as_deref()).collect();
        assert_eq!(
            tokens,
            vec![
                Some("block"),
                Some("*foo.com"),
                Some("x.com:0"),
                Some(""),
                Some("a.com, b.com")
            ]
        );
        assert!(p.iter().all(|p| p.index == Some(2)));
        assert!(
            shown.starts_with(
                "policy file: [[container]] #2 (name = \"billing\", label = \"team=payments\"): \
                 `mode`: `block`: unknown mode"
            ),
            "{shown}"
        );
        for want in [
            "`allow`: `*foo.com`: `*foo` is not a wildcard label",
            "`allow`: `x.com:0`: bad port `0`",
            "`allow`: ``: empty entry",
            "`allow`: `a.com, b.com`: one entry per string",
        ] {
            assert!(shown.contains(want), "{want}: {shown}");
        }
    }

    #[test]
    fn problems_in_every_rule_are_collected() {
        let (_, p) = problems(
            "[[container]]\nname = \"a\"\nmode = \"x\"\n[[container]]\nallow = []\n\
             [[container]]\nname = \"c\"\nallow = [\"-c.com\"]\n",
            NO_WILD,
        );
        let at: Vec<_> = p.iter().map(|p| p.index).collect();
        assert_eq!(at, vec![Some(1), Some(2), Some(3)]);
    }

    #[test]
    fn load_names_the_path() {
        let dir = std::env::temp_dir().join(format!("egress-policy-file-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        fs::write(&good, EXAMPLE).unwrap();
        assert_eq!(PolicyFile::load(&good, WILD).unwrap().rules().len(), 2);
        let e = PolicyFile::load(&good, NO_WILD).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}: [[container]] #2", good.display())),
            "{e}"
        );
        let missing = dir.join("missing.toml");
        let e = PolicyFile::load(&missing, WILD).unwrap_err();
        assert!(matches!(e, FileError::Read { .. }));
        assert!(e.to_string().contains("missing.toml"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    // ---- selection ----

    #[test]
    fn selection_by_name_label_or_both() {
        let f = file(
            r#"
            [[container]]
            name = "billing"
            [[container]]
            label = "team"
            [[container]]
            label = "team=payments"
            [[container]]
            name = "billing"
            label = "team=payments"
            "#,
        );
        let matched = |name: &str, pairs: &[(&str, &str)]| -> Vec<usize> {
            f.matching(name, &labels(pairs)).map(|r| r.index).collect()
        };
        assert_eq!(matched("billing", &[]), vec![1]);
        assert_eq!(matched("/billing", &[]), vec![1]);
        assert_eq!(matched("billing2", &[]), Vec::<usize>::new());
        assert_eq!(matched("Billing", &[]), Vec::<usize>::new());
        assert_eq!(matched("web", &[("team", "search")]), vec![2]);
        assert_eq!(matched("web", &[("team", "payments")]), vec![2, 3]);
        assert_eq!(matched("web", &[("team", "Payments")]), vec![2]);
        assert_eq!(matched("web", &[("Team", "payments")]), Vec::<usize>::new());
        assert_eq!(
            matched("billing", &[("team", "payments")]),
            vec![1, 2, 3, 4]
        );
    }

    // ---- combination ----

    #[test]
    fn no_match_means_the_labels_alone() {
        let f = file("[[container]]\nname = \"billing\"\nmode = \"audit\"\n");
        let l = labels(&[]);
        assert_eq!(f.effective("web", &l, NO_WILD), Classification::Unpoliced);
        let l = labels(&[("egress.allow", "x.com")]);
        assert_eq!(
            f.effective("web", &l, NO_WILD),
            labels::classify(&l, NO_WILD)
        );
        let l = labels(&[("egress.allow", "*foo.com")]);
        assert!(matches!(
            f.effective("web", &l, NO_WILD),
            Classification::Invalid(_)
        ));
        assert_eq!(
            PolicyFile::default().effective("web", &l, NO_WILD),
            labels::classify(&l, NO_WILD)
        );
    }

    #[test]
    fn file_alone_polices() {
        let f = file(
            "[[container]]\nname = \"a\"\n\
             [[container]]\nname = \"b\"\nmode = \"audit\"\n\
             [[container]]\nname = \"c\"\nallow = [\"x.com:443\"]\n",
        );
        let none = labels(&[]);
        assert_eq!(
            policed(f.effective("a", &none, NO_WILD)),
            ContainerSpec::new(Mode::Enforce)
        );
        assert_eq!(
            policed(f.effective("b", &none, NO_WILD)),
            ContainerSpec::new(Mode::Audit)
        );
        let c = policed(f.effective("c", &none, NO_WILD));
        assert_eq!(
            (c.mode, c.entries),
            (Mode::Enforce, entries(&["x.com:443"]))
        );
    }

    #[test]
    fn add_keeps_label_entries_and_dedups() {
        let f =
            file("[[container]]\nname = \"web\"\nallow = [\"b.com\", \"10.0.0.0/8\", \"a.com\"]\n");
        let l = labels(&[("egress.allow", "a.com, c.com"), ("egress.mode", "audit")]);
        let s = policed(f.effective("web", &l, NO_WILD));
        assert_eq!(s.mode, Mode::Audit);
        assert_eq!(
            s.entries,
            entries(&["a.com", "c.com", "b.com", "10.0.0.0/8"])
        );
    }

    #[test]
    fn replace_discards_what_came_before() {
        let f = file(
            r#"
            [[container]]
            label = "team"
            allow = ["early.com"]
            [[container]]
            name = "web"
            allow = ["b.com"]
            replace = true
            [[container]]
            label = "team=payments"
            allow = ["late.com"]
            "#,
        );
        let l = labels(&[("egress.allow", "a.com"), ("team", "payments")]);
        let s = policed(f.effective("web", &l, NO_WILD));
        assert_eq!(s.entries, entries(&["b.com", "late.com"]));
        // Not selected by the replacing rule: everything adds up.
        let s = policed(f.effective("api", &l, NO_WILD));
        assert_eq!(s.entries, entries(&["a.com", "early.com", "late.com"]));
        // Replace with nothing: nothing allowed.
        let f = file("[[container]]\nname = \"web\"\nreplace = true\n");
        let s = policed(f.effective("web", &l, NO_WILD));
        assert!(s.entries.is_empty());
    }

    #[test]
    fn mode_override_last_match_wins() {
        let f = file(
            "[[container]]\nname = \"web\"\nmode = \"audit\"\n\
             [[container]]\nlabel = \"strict\"\nmode = \"enforce\"\n",
        );
        let l = labels(&[("egress.mode", "enforce")]);
        assert_eq!(policed(f.effective("web", &l, NO_WILD)).mode, Mode::Audit);
        let l = labels(&[("egress.mode", "audit"), ("strict", "")]);
        assert_eq!(policed(f.effective("web", &l, NO_WILD)).mode, Mode::Enforce);
        assert_eq!(policed(f.effective("api", &l, NO_WILD)).mode, Mode::Enforce);
        let l = labels(&[("egress.mode", "audit")]);
        assert_eq!(policed(f.effective("api", &l, NO_WILD)).mode, Mode::Audit);
    }

    #[test]
    fn invalid_labels_stay_invalid_unless_superseded() {
        let l = labels(&[
            ("egress.allow", "ok.com, *foo.com"),
            ("egress.mode", "block"),
        ]);
        // Adding does not supersede anything.
        let f = file("[[container]]\nname = \"web\"\nallow = [\"x.com\"]\n");
        let Classification::Invalid(e) = f.effective("web", &l, NO_WILD) else {
            panic!()
        };
        assert_eq!(e.len(), 2);
        // Replacing supersedes the allow errors, not the mode error.
        let f = file("[[container]]\nname = \"web\"\nallow = [\"x.com\"]\nreplace = true\n");
        let r = f.resolve("web", &l, NO_WILD);
        let Classification::Invalid(e) = r.classification else {
            panic!("{r:?}")
        };
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].label, "egress.mode");
        assert_eq!(r.superseded.len(), 1);
        assert_eq!(r.superseded[0].token, "*foo.com");
        // Replacing and setting the mode supersedes both.
        let f = file(
            "[[container]]\nname = \"web\"\nallow = [\"x.com\"]\nreplace = true\nmode = \"audit\"\n",
        );
        let r = f.resolve("web", &l, NO_WILD);
        assert_eq!(r.matched, vec![1]);
        assert_eq!(r.superseded.len(), 2);
        let s = policed(r.classification);
        assert_eq!((s.mode, s.entries), (Mode::Audit, entries(&["x.com"])));
        // A mode override alone leaves the label's (valid) entries.
        let l2 = labels(&[("egress.allow", "ok.com"), ("egress.mode", "block")]);
        let f = file("[[container]]\nname = \"web\"\nmode = \"enforce\"\n");
        let s = policed(f.effective("web", &l2, NO_WILD));
        assert_eq!((s.mode, s.entries), (Mode::Enforce, entries(&["ok.com"])));
        // An unknown key is never superseded.
        let l3 = labels(&[("egress.alow", "x.com")]);
        let f = file(
            "[[container]]\nname = \"web\"\nallow = [\"x.com\"]\nreplace = true\nmode = \"audit\"\n",
        );
        let Classification::Invalid(e) = f.effective("web", &l3, NO_WILD) else {
            panic!()
        };
        assert_eq!(e[0].label, "egress.alow");
    }

    // ---- trusted images and labels from the image ----

    const IMG_ID: &str = "sha256:0c9023e355dd4ceba841cb174724f4e52a95dd126185f896d1139671a1cca857";

    #[test]
    fn trusted_images_are_parsed_and_matched() {
        let f = file(&format!(
            "trusted_images = [\"team/proxy:1.4\", \"docker.io/library/busybox\", \"{IMG_ID}\", \
             \"busybox:latest\"]\n[[container]]\nname = \"x\"\n"
        ));
        let shown: Vec<String> = f.trusted_images().iter().map(ToString::to_string).collect();
        assert_eq!(shown, vec!["team/proxy:1.4", "busybox:latest", IMG_ID]);
        assert_eq!(f.rules().len(), 1);
        assert!(f.trusts("team/proxy:1.4", None));
        assert!(f.trusts("busybox", None));
        assert!(f.trusts("anything:else", Some(IMG_ID)));
        assert!(!f.trusts("team/proxy:1.5", None));
        assert!(!f.trusts("team/proxy", Some(&IMG_ID.replace("0c90", "0c91"))));
        assert!(!PolicyFile::default().trusts("busybox", Some(IMG_ID)));
        // A file with trusted images only.
        assert!(file("trusted_images = []\n").trusted_images().is_empty());
    }

    #[test]
    fn bad_trusted_images_name_the_token() {
        let (shown, p) = problems(
            "trusted_images = [\"ok:1\", \"team/*\", \"\", 5, \"sha256:abc\"]\n",
            NO_WILD,
        );
        let tokens: Vec<_> = p.iter().map(|p| p.token.as_deref()).collect();
        assert_eq!(
            tokens,
            vec![Some("team/*"), Some(""), None, Some("sha256:abc")],
            "{shown}"
        );
        assert!(
            p.iter()
                .all(|p| p.field.as_deref() == Some("trusted_images"))
        );
        assert!(
            shown.starts_with(
                "policy file: `trusted_images`: `team/*`: invalid character `*` in an image \
                 reference"
            ),
            "{shown}"
        );
        assert!(
            shown.contains("`trusted_images`: expected a string, found `5`"),
            "{shown}"
        );
        let (shown, _) = problems("trusted_images = \"busybox\"\n", NO_WILD);
        assert!(
            shown.contains("`trusted_images`: expected a list of image references or ids"),
            "{shown}"
        );
    }

    fn judged(
        f: Option<&PolicyFile>,
        name: &str,
        container: &[(&str, &str)],
        image: &str,
        image_labels: &ImageLabels,
    ) -> Verdict {
        let l = labels(container);
        judge(
            f,
            &ContainerLabels {
                name,
                labels: &l,
                image,
                image_id: Some(IMG_ID),
                image_labels,
            },
            NO_WILD,
        )
    }

    #[test]
    fn judge_operator_labels_alone() {
        let img = ImageLabels::Known(labels(&[("org.opencontainers.image.title", "x")]));
        let v = judged(None, "web", &[("egress.mode", "audit")], "app", &img);
        assert_eq!(policed(v.classification).mode, Mode::Audit);
        assert!(v.ignored.is_empty() && v.image_unknown.is_none());
        let v = judged(None, "web", &[], "app", &img);
        assert_eq!(v.classification, Classification::Unpoliced);
    }

    #[test]
    fn judge_image_audit_beside_operator_allow() {
        let img = ImageLabels::Known(labels(&[("egress.mode", "audit")]));
        let c = [("egress.mode", "audit"), ("egress.allow", "10.0.0.1")];
        let v = judged(None, "web", &c, "app", &img);
        let s = policed(v.classification);
        assert_eq!((s.mode, s.entries), (Mode::Enforce, entries(&["10.0.0.1"])));
        assert_eq!(v.ignored.len(), 1);
        assert_eq!(v.ignored[0].label, "egress.mode");
        assert_eq!(v.ignored[0].value, "audit");
    }

    #[test]
    fn judge_image_allow_beside_a_rule_that_only_adds() {
        let f = file("[[container]]\nname = \"web\"\nallow = [\"10.0.0.1\"]\n");
        let img = ImageLabels::Known(labels(&[("egress.allow", "0.0.0.0/0")]));
        let c = [("egress.allow", "0.0.0.0/0")];
        let v = judged(Some(&f), "web", &c, "app", &img);
        let s = policed(v.classification);
        assert_eq!((s.mode, s.entries), (Mode::Enforce, entries(&["10.0.0.1"])));
        assert_eq!(v.ignored[0].why, labels::IgnoredWhy::BesideOperator);
        // Not selected by the rule: the image's list polices the container.
        let v = judged(Some(&f), "api", &c, "app", &img);
        assert_eq!(policed(v.classification).entries, entries(&["0.0.0.0/0"]));
        assert!(v.ignored.is_empty());
        // Rules still select by every label the container has, the image's included.
        let f = file("[[container]]\nlabel = \"team=a\"\nallow = [\"10.0.0.1\"]\n");
        let img = ImageLabels::Known(labels(&[("team", "a"), ("egress.allow", "0.0.0.0/0")]));
        let c = [("team", "a"), ("egress.allow", "0.0.0.0/0")];
        let v = judged(Some(&f), "api", &c, "app", &img);
        assert_eq!(policed(v.classification).entries, entries(&["10.0.0.1"]));
    }

    #[test]
    fn judge_trusted_image_keeps_its_labels() {
        let img = ImageLabels::Known(labels(&[
            ("egress.mode", "audit"),
            ("egress.allow", "0.0.0.0/0"),
        ]));
        let c = [("egress.mode", "audit"), ("egress.allow", "0.0.0.0/0")];
        for trust in ["team/proxy:1.4", IMG_ID] {
            let f = file(&format!(
                "trusted_images = [\"{trust}\"]\n[[container]]\nname = \"web\"\nallow = [\"10.0.0.1\"]\n"
            ));
            let v = judged(Some(&f), "web", &c, "team/proxy:1.4", &img);
            let s = policed(v.classification);
            assert_eq!(
                (s.mode, s.entries),
                (Mode::Audit, entries(&["0.0.0.0/0", "10.0.0.1"])),
                "{trust}"
            );
            assert!(v.ignored.is_empty());
        }
        // Another image (tag and id) is not trusted.
        let f = file("trusted_images = [\"team/proxy:1.4\"]\n");
        let l = labels(&c);
        let v = judge(
            Some(&f),
            &ContainerLabels {
                name: "web",
                labels: &l,
                image: "team/proxy:1.5",
                image_id: Some(IMG_ID),
                image_labels: &img,
            },
            NO_WILD,
        );
        let s = policed(v.classification);
        assert_eq!(
            (s.mode, s.entries),
            (Mode::Enforce, entries(&["0.0.0.0/0"]))
        );
        assert_eq!(v.ignored.len(), 1);
    }

    #[test]
    fn judge_unknown_image_labels_fail_closed() {
        let img = ImageLabels::Unknown("docker image inspect: no answer within 2s".into());
        let c = [("egress.mode", "audit"), ("egress.allow", "10.0.0.1")];
        let v = judged(None, "web", &c, "app", &img);
        let s = policed(v.classification);
        assert_eq!((s.mode, s.entries), (Mode::Enforce, entries(&["10.0.0.1"])));
        assert_eq!(
            v.image_unknown.as_deref(),
            Some("docker image inspect: no answer within 2s")
        );
        // Without policy labels there is nothing to say; a trusted image needs no labels.
        let v = judged(None, "web", &[("a", "b")], "app", &img);
        assert_eq!(
            (v.classification, v.image_unknown),
            (Classification::Unpoliced, None)
        );
        let f = file("trusted_images = [\"app\"]\n");
        let v = judged(Some(&f), "web", &c, "app", &img);
        assert_eq!(policed(v.classification).mode, Mode::Audit);
        assert_eq!(v.image_unknown, None);
    }

    #[test]
    fn judge_image_near_miss_denies() {
        let img = ImageLabels::Known(labels(&[("EGRESS_ALLOW", "0.0.0.0/0")]));
        let c = [("EGRESS_ALLOW", "0.0.0.0/0"), ("egress.allow", "10.0.0.1")];
        let f = file(
            "[[container]]\nname = \"web\"\nallow = [\"10.0.0.2\"]\nreplace = true\nmode = \"audit\"\n",
        );
        for f in [None, Some(&f)] {
            let v = judged(f, "web", &c, "app", &img);
            let Classification::Invalid(e) = v.classification else {
                panic!("{v:?}")
            };
            assert_eq!(e[0].label, "EGRESS_ALLOW");
        }
    }

    #[test]
    fn file_wildcards_fail_closed_under_lesser_capabilities() {
        let f = PolicyFile::parse(EXAMPLE, WILD).unwrap();
        let l = labels(&[("com.example.team", "payments")]);
        let s = policed(f.effective("web", &l, WILD));
        assert_eq!(s.entries, entries(&["*.payments.example.com"]));
        let Classification::Invalid(e) = f.effective("web", &l, NO_WILD) else {
            panic!()
        };
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].to_string(),
            format!(
                "policy file: [[container]] #2: `*.payments.example.com`: {}",
                labels::WILDCARDS_UNAVAILABLE
            )
        );
    }

    #[test]
    fn a_rule_sets_the_dns_mode() {
        let f = file(
            "[[container]]\nname = \"web\"\ndns = \"resolve\"\n\
             [[container]]\nlabel = \"tier=db\"\ndns = \"learn\"\n",
        );
        assert_eq!(f.rules()[0].dns, Some(DnsMode::Resolve));
        // Alone it polices (nothing allowed); it overrides the label; the last rule wins.
        let s = policed(f.effective("web", &labels(&[]), NO_WILD));
        assert_eq!((s.mode, s.dns), (Mode::Enforce, Some(DnsMode::Resolve)));
        assert!(s.entries.is_empty());
        let l = labels(&[("egress.dns", "learn"), ("egress.allow", "x.com")]);
        let s = policed(f.effective("web", &l, NO_WILD));
        assert_eq!(s.dns, Some(DnsMode::Resolve));
        let l = labels(&[("tier", "db")]);
        let s = policed(f.effective("web", &l, NO_WILD));
        assert_eq!(s.dns, Some(DnsMode::Learn));
        // Without a `dns` rule, the label's stands.
        let f = file("[[container]]\nname = \"web\"\nallow = [\"y.com\"]\n");
        let l = labels(&[("egress.dns", "resolve")]);
        assert_eq!(
            policed(f.effective("web", &l, NO_WILD)).dns,
            Some(DnsMode::Resolve)
        );
    }

    #[test]
    fn a_dns_rule_supersedes_a_malformed_dns_label_only() {
        let l = labels(&[("egress.dns", "Learn"), ("egress.allow", "x.com")]);
        let f = file("[[container]]\nname = \"web\"\nallow = [\"y.com\"]\n");
        assert!(matches!(
            f.effective("web", &l, NO_WILD),
            Classification::Invalid(_)
        ));
        let f = file("[[container]]\nname = \"web\"\ndns = \"learn\"\n");
        let r = f.resolve("web", &l, NO_WILD);
        assert_eq!(r.superseded.len(), 1);
        assert_eq!(r.superseded[0].label, "egress.dns");
        assert_eq!(policed(r.classification).dns, Some(DnsMode::Learn));
    }

    #[test]
    fn a_bad_dns_field_names_the_token() {
        let (shown, p) = problems("[[container]]\nname = \"web\"\ndns = \"both\"\n", NO_WILD);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].field.as_deref(), Some("dns"));
        assert_eq!(p[0].token.as_deref(), Some("both"));
        assert!(
            shown.ends_with("`dns`: `both`: unknown DNS mode: expected `learn` or `resolve`"),
            "{shown}"
        );
    }

    #[test]
    fn file_wildcards_of_both_kinds_parse() {
        let f = PolicyFile::parse(
            "[[container]]\nname = \"web\"\nallow = [\"*.a.test\", \"**.b.test:443\"]\n",
            WILD,
        )
        .unwrap();
        assert_eq!(f.rules()[0].allow, entries(&["*.a.test", "**.b.test:443"]));
        let Classification::Invalid(e) = f.effective("web", &labels(&[]), NO_WILD) else {
            panic!()
        };
        let tokens: Vec<&str> = e.iter().map(|e| e.token.as_str()).collect();
        assert_eq!(tokens, vec!["*.a.test", "**.b.test:443"]);
    }
}
