//! Containers of one test, removed on drop.

use std::sync::{
    Mutex,
    atomic::{AtomicUsize, Ordering},
};

use super::Docker;
use crate::lock;

/// Containers removed (`docker rm -f`) on drop, also on panic.
#[derive(Debug)]
pub struct Containers {
    docker: Docker,
    names: Mutex<Vec<String>>,
    counter: AtomicUsize,
    prefix: String,
}

impl Containers {
    pub fn new(docker: &Docker, prefix: &str) -> Self {
        Self {
            docker: docker.clone(),
            names: Mutex::new(Vec::new()),
            counter: AtomicUsize::new(0),
            prefix: prefix.to_owned(),
        }
    }

    /// A new container name, `<prefix>-<role>-<n>`, removed on drop.
    pub fn name(&self, role: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{role}-{n}", self.prefix);
        lock(&self.names).push(name.clone());
        name
    }

    pub fn remove_all(&self) {
        let names = std::mem::take(&mut *lock(&self.names));
        if names.is_empty() {
            return;
        }
        let mut args = vec!["rm", "-f"];
        args.extend(names.iter().map(String::as_str));
        // Containers already gone (`--rm`) make `rm -f` complain: that is fine.
        let _ = self.docker.output(&args);
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        self.remove_all();
    }
}
