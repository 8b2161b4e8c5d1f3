//! DNS resolution of allowed domains. (being written)
