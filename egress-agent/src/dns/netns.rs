//! Making sockets inside another network namespace.
//!
//! A socket belongs for life to the network namespace of the thread that made it. So the
//! proxy's listeners and upstream sockets for a container are made by one dedicated OS thread
//! ([`NetnsThread`]) that enters the container's namespace (`setns`), makes the sockets and
//! comes back. Nothing else ever runs on that thread, so no other code of the agent finds
//! itself in a container's namespace; a thread that could not come back ends, and the next
//! request starts a fresh one.

use std::{
    fs::File,
    io,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::Path,
    sync::{Arc, Mutex, mpsc},
    thread,
};

use tokio::sync::oneshot;
use tracing::error;

/// An open network namespace (a `/proc/<pid>/ns/net` or a bind-mounted nsfs file), known by
/// its inode.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    inode: u64,
}

impl Netns {
    /// Opens the namespace file at `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let inode = file.metadata()?.ino();
        Ok(Self {
            fd: file.into(),
            inode,
        })
    }

    /// The namespace of the calling thread.
    pub fn current() -> io::Result<Self> {
        Self::open(Path::new("/proc/thread-self/ns/net"))
    }

    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// Makes the calling thread enter this namespace.
    fn enter(&self) -> io::Result<()> {
        // SAFETY: a plain syscall on an fd this value owns; it changes only the calling
        // thread's network namespace.
        if unsafe { libc::setns(self.fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

type Job = Box<dyn FnOnce(&Netns) + Send>;

/// The thread that makes sockets in other namespaces (see the module docs).
pub struct NetnsThread {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
}

impl Default for NetnsThread {
    fn default() -> Self {
        Self::new()
    }
}

impl NetnsThread {
    pub fn new() -> Self {
        Self {
            jobs: Mutex::new(None),
        }
    }

    /// Runs `make` on the namespace thread inside `ns` and returns what it made.
    pub async fn run<T: Send + 'static>(
        &self,
        ns: Arc<Netns>,
        make: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |home: &Netns| {
            let made = ns.enter().and_then(|()| {
                let made = make();
                // Coming back is what keeps the thread usable; if it fails, the thread ends
                // (see `spawn`) and whatever was made is still returned.
                if let Err(e) = home.enter() {
                    error!("the netns thread could not return to the agent's network namespace, it ends: {e}");
                    strand();
                }
                made
            });
            let _ = tx.send(made);
        });
        self.send(job)?;
        rx.await
            .map_err(|_| io::Error::other("the netns thread ended"))?
    }

    /// Hands `job` to the thread, starting a fresh one if there is none or it ended.
    fn send(&self, job: Job) -> io::Result<()> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let job = match jobs.as_ref() {
            Some(tx) => match tx.send(job) {
                Ok(()) => return Ok(()),
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let tx = spawn()?;
        tx.send(job)
            .map_err(|_| io::Error::other("the netns thread ended"))?;
        *jobs = Some(tx);
        Ok(())
    }
}

thread_local! {
    static STRANDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the namespace thread as stranded in a foreign namespace: it takes no more jobs.
fn strand() {
    STRANDED.with(|s| s.set(true));
}

fn spawn() -> io::Result<mpsc::Sender<Job>> {
    let home = Netns::current()?;
    let (tx, rx) = mpsc::channel::<Job>();
    thread::Builder::new()
        .name("egress-netns".into())
        .spawn(move || {
            for job in rx {
                job(&home);
                if STRANDED.with(|s| s.get()) {
                    break;
                }
            }
        })?;
    Ok(tx)
}
