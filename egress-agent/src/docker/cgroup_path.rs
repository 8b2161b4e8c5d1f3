//! Finding a container's cgroup v2 directories. (being written)
