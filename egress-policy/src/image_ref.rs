//! An image as the operator names it in the policy file's `trusted_images`, and whether a
//! container's image is that one.
//!
//! - **By id**: `sha256:` and 64 hex digits (or the 64 digits alone), as `docker image inspect
//!   --format '{{.Id}}'` prints it. It matches the image the container was made from, whatever
//!   it is called. Only a full id is an id: a short one (`0c9023e355dd`) reads as a repository
//!   name, since 12 digits are few enough to be forged.
//! - **By reference**: `[registry/]repository[:tag][@digest]`, matched against the reference
//!   the container was created with (`Config.Image`, what `docker run` was given). Both sides
//!   are normalized as Docker does: no tag and no digest means `:latest`, and Docker Hub's
//!   `docker.io/` (or `index.docker.io/`) and `library/` are dropped, so `busybox`,
//!   `busybox:latest` and `docker.io/library/busybox:latest` are one name. Otherwise names are
//!   compared exactly. Whoever may tag images on the host may move a trusted tag to another
//!   image; pin by id (or digest) where that matters.

use std::fmt;

const ID_PREFIX: &str = "sha256:";
const ID_DIGITS: usize = 64;

/// One entry of `trusted_images`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    /// `sha256:<64 hex>`.
    Id(String),
    /// A normalized reference (`busybox:latest`, `registry:5000/team/app:1.2`).
    Name(String),
}

impl ImageRef {
    /// Parses an entry; the error says what is wrong with it (the caller names the token).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty image reference".into());
        }
        if let Some(id) = parse_id(s) {
            return Ok(Self::Id(id));
        }
        if s.starts_with(ID_PREFIX) {
            return Err(format!(
                "an image id is `{ID_PREFIX}` followed by {ID_DIGITS} lowercase hex digits"
            ));
        }
        check_reference(s)?;
        Ok(Self::Name(normalize(s)))
    }

    /// True if the container's image — created as `reference`, with the image id `id` if
    /// known — is this one.
    pub fn matches(&self, reference: &str, id: Option<&str>) -> bool {
        match self {
            Self::Id(want) => id.and_then(parse_id).is_some_and(|have| have == *want),
            Self::Name(want) => {
                let reference = reference.trim();
                !reference.is_empty()
                    && check_reference(reference).is_ok()
                    && normalize(reference) == *want
            }
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(s) | Self::Name(s) => f.write_str(s),
        }
    }
}

/// `sha256:<64 hex>` or the 64 digits alone, as `sha256:<64 hex>`.
fn parse_id(s: &str) -> Option<String> {
    let hex = s.strip_prefix(ID_PREFIX).unwrap_or(s);
    (hex.len() == ID_DIGITS && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| format!("{ID_PREFIX}{hex}"))
}

/// The characters of a reference, and no empty part.
fn check_reference(s: &str) -> Result<(), String> {
    if let Some(c) = s
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !"._-/:@".contains(*c))
    {
        return Err(format!(
            "invalid character `{c}` in an image reference (expected \
             `[registry/]repository[:tag][@digest]` or `sha256:<id>`; no wildcards)"
        ));
    }
    let (name, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest
        && (d.contains('@')
            || d.split_once(':')
                .is_none_or(|(a, h)| a.is_empty() || h.is_empty()))
    {
        return Err(format!("bad digest `{d}` (expected `algorithm:hex`)"));
    }
    let (repo, tag) = split_tag(name);
    if repo.split('/').any(str::is_empty) {
        return Err("empty part in the image's name".into());
    }
    if tag.is_some_and(|t| t.is_empty() || t.contains(':')) {
        return Err("bad tag (expected `repository:tag`)".into());
    }
    Ok(())
}

/// `repo[:tag]` split at the tag's colon (one after the last `/`, so not a registry's port).
fn split_tag(name: &str) -> (&str, Option<&str>) {
    let after_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[after_slash..].find(':') {
        Some(i) => (&name[..after_slash + i], Some(&name[after_slash + i + 1..])),
        None => (name, None),
    }
}

/// Docker's spelling of a checked reference: Docker Hub's prefixes dropped, `:latest` added
/// when there is neither tag nor digest.
fn normalize(s: &str) -> String {
    let (name, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    let (repo, tag) = split_tag(name);
    let repo = ["docker.io/", "index.docker.io/"]
        .iter()
        .find_map(|p| repo.strip_prefix(p))
        .map(|r| r.strip_prefix("library/").unwrap_or(r))
        .unwrap_or(repo);
    let mut out = repo.to_owned();
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        out.push('@');
        out.push_str(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "sha256:0c9023e355dd4ceba841cb174724f4e52a95dd126185f896d1139671a1cca857";

    fn name(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn ids() {
        assert_eq!(name(ID), ImageRef::Id(ID.into()));
        assert_eq!(name(&ID[ID_PREFIX.len()..]), ImageRef::Id(ID.into()));
        assert!(name(ID).matches("whatever:1", Some(ID)));
        assert!(!name(ID).matches("whatever:1", None));
        let other = ID.replace("0c90", "0c91");
        assert!(!name(ID).matches("whatever:1", Some(&other)));
        // A short id is a repository name, not an id.
        assert_eq!(
            name("0c9023e355dd"),
            ImageRef::Name("0c9023e355dd:latest".into())
        );
        assert!(!name("0c9023e355dd").matches(ID, Some(ID)));
        let e = ImageRef::parse("sha256:0c9023e355dd").unwrap_err();
        assert!(e.contains("64 lowercase hex digits"), "{e}");
    }

    #[test]
    fn references_are_normalized() {
        for same in [
            "busybox",
            "busybox:latest",
            "docker.io/busybox",
            "docker.io/library/busybox:latest",
            "index.docker.io/library/busybox",
        ] {
            assert_eq!(name(same).to_string(), "busybox:latest", "{same}");
            assert!(name("busybox").matches(same, None), "{same}");
        }
        assert_eq!(
            name("localhost:5000/team/app").to_string(),
            "localhost:5000/team/app:latest"
        );
        assert_eq!(
            name("registry.example:5000/app:1.2").to_string(),
            "registry.example:5000/app:1.2"
        );
        assert_eq!(name("app@sha256:abc").to_string(), "app@sha256:abc");
        assert_eq!(name(" app:v1 ").to_string(), "app:v1");
    }

    #[test]
    fn references_match_exactly_otherwise() {
        let trusted = name("team/app:1.2");
        assert!(trusted.matches("team/app:1.2", Some(ID)));
        assert!(!trusted.matches("team/app:1.3", Some(ID)));
        assert!(!trusted.matches("team/app", Some(ID)));
        assert!(!trusted.matches("other/team/app:1.2", None));
        assert!(!trusted.matches("team/App:1.2", None));
        assert!(!trusted.matches("", None));
        assert!(!name("app").matches("app:latest@sha256:abc", None));
    }

    #[test]
    fn bad_entries_say_why() {
        for (s, want) in [
            ("", "empty image reference"),
            ("  ", "empty image reference"),
            ("team/*", "invalid character `*`"),
            ("app name", "invalid character ` `"),
            ("team//app", "empty part"),
            ("/app", "empty part"),
            ("app:", "bad tag"),
            ("app:1:2", "bad tag"),
            ("app@", "bad digest"),
            ("app@sha256", "bad digest"),
        ] {
            let e = ImageRef::parse(s).unwrap_err();
            assert!(e.contains(want), "{s:?}: {e}");
        }
    }
}
