//! Following Docker containers. (being written)
