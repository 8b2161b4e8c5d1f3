//! The labels of the images containers are made from, so that the classification can tell the
//! operator's labels from the image's (see [`crate::labels`], "Labels from the image").
//!
//! An image's labels are read with `docker image inspect` (`Config.Labels`), by the image's id
//! when the container's inspect gave it (`Image`), else by the reference the container was
//! created with (the `create` event's `image` attribute, for the fast `Created`). Image
//! inspect does not wait for a container's lock, so it answers while `docker run` is still
//! starting the container (about 1 ms by curl on the socket here). Answers are kept in a cache of
//! [`CACHE_CAPACITY`] images by id: an id is the digest of the image's configuration, labels
//! included, so an entry never goes stale.
//!
//! Whatever goes wrong (no image named, the image gone, an answer that cannot be read, no
//! answer within the caller's timeout) gives [`ImageLabels::Unknown`] with the reason: the
//! classification then takes every label as the image's, never looser, and says so.

use std::{collections::HashMap, sync::Arc, time::Duration};

use backon::{ExponentialBuilder, Retryable};
use bollard::{Docker, errors::Error as BollardError};
use tracing::debug;

use egress_policy::labels::ImageLabels;

/// Images whose labels are cached.
pub const CACHE_CAPACITY: u64 = 512;

/// Reads (and caches) images' labels; cheap to clone (the cache is shared).
#[derive(Clone)]
pub struct ImageLabelReader {
    docker: Docker,
    cache: moka::sync::Cache<String, Arc<HashMap<String, String>>>,
}

impl ImageLabelReader {
    pub fn new(docker: Docker) -> Self {
        Self {
            docker,
            cache: moka::sync::Cache::new(CACHE_CAPACITY),
        }
    }

    /// The labels of the image `id` (if known), else of the image `reference` names, within
    /// `timeout`; with the image's id when the answer gave one.
    pub async fn read(
        &self,
        id: Option<&str>,
        reference: &str,
        timeout: Duration,
    ) -> (Option<String>, ImageLabels) {
        let id = id.filter(|i| !i.is_empty());
        if let Some(labels) = id.and_then(|i| self.cache.get(i)) {
            return (id.map(str::to_owned), ImageLabels::Known((*labels).clone()));
        }
        let Some(name) = id.or(Some(reference).filter(|r| !r.is_empty())) else {
            return (
                None,
                ImageLabels::Unknown("the container names no image".into()),
            );
        };
        let inspect = (|| self.docker.inspect_image(name))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(20))
                    .with_max_times(2),
            )
            .when(|e| !is_final(e));
        let answer = match tokio::time::timeout(timeout, inspect).await {
            Ok(Ok(image)) => image,
            Ok(Err(e)) => {
                debug!(image = name, "docker: cannot inspect the image: {e}");
                return (
                    id.map(str::to_owned),
                    ImageLabels::Unknown(format!("docker image inspect: {e}")),
                );
            }
            Err(_) => {
                debug!(
                    image = name,
                    ?timeout,
                    "docker: no answer to the image inspect"
                );
                return (
                    id.map(str::to_owned),
                    ImageLabels::Unknown(format!(
                        "docker image inspect: no answer within {timeout:?}"
                    )),
                );
            }
        };
        let labels = answer.config.and_then(|c| c.labels).unwrap_or_default();
        let got_id = answer.id.filter(|i| !i.is_empty());
        if let Some(i) = &got_id {
            self.cache.insert(i.clone(), Arc::new(labels.clone()));
        }
        (got_id.or(id.map(str::to_owned)), ImageLabels::Known(labels))
    }
}

/// An error that retrying does not change: no such image, or an answer that cannot be read.
fn is_final(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        } | BollardError::JsonDataError { .. }
            | BollardError::JsonSerdeError { .. }
    )
}

#[cfg(test)]
mod tests {
    use bollard::models::ImageInspect;

    /// `GET /images/<id>/json` of an image built `FROM egress-test-busybox` with two `LABEL`s,
    /// as dockerd 20.10 (API 1.41) answers it (trimmed), as bollard must decode it.
    const INSPECT: &str = r##"{
        "Id": "sha256:5b1c7f0e8f6de1a4a9c0a1d2cbd1e7c0f4cb5d1f7a3b0d0bc2f0d5f6a7e8c9d0",
        "RepoTags": ["lbl-audit-1:latest"], "RepoDigests": [], "Parent": "sha256:0c90",
        "Comment": "", "Created": "2026-12-01T09:20:11.45088799Z", "Container": "ab12",
        "ContainerConfig": {"Hostname": "ab12", "Cmd": ["/bin/sh", "-c", "#(nop) "],
                            "Image": "sha256:0c90", "Labels": {"egress.mode": "audit"}},
        "DockerVersion": "20.10.24+dfsg1", "Author": "",
        "Config": {"Hostname": "", "Domainname": "", "User": "", "AttachStdin": false,
                   "Env": null, "Cmd": ["/bin/sh"], "Image": "sha256:0c90", "Volumes": null,
                   "WorkingDir": "", "Entrypoint": null, "OnBuild": null,
                   "Labels": {"egress.mode": "audit", "test.egress-e2e.image": "lbl"}},
        "Architecture": "amd64", "Os": "linux", "Size": 1985581, "VirtualSize": 1985581,
        "GraphDriver": {"Data": {"MergedDir": "/m"}, "Name": "overlay2"},
        "RootFS": {"Type": "layers", "Layers": ["sha256:6e47"]},
        "Metadata": {"LastTagTime": "2026-12-01T09:20:11.452283809Z"}
    }"##;

    #[test]
    fn the_answer_of_dockerd_20_10_is_read() {
        let image: ImageInspect = serde_json::from_str(INSPECT).unwrap();
        assert!(image.id.as_deref().unwrap().starts_with("sha256:5b1c"));
        let labels = image.config.and_then(|c| c.labels).unwrap();
        assert_eq!(labels.get("egress.mode").map(String::as_str), Some("audit"));
        assert_eq!(labels.len(), 2);
        // An image without labels says `null`.
        let bare = INSPECT.replace(
            r#""Labels": {"egress.mode": "audit", "test.egress-e2e.image": "lbl"}"#,
            r#""Labels": null"#,
        );
        let image: ImageInspect = serde_json::from_str(&bare).unwrap();
        assert_eq!(image.config.and_then(|c| c.labels), None);
    }
}
