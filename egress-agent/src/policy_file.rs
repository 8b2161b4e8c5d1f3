//! Agent-side TOML policy file. (being written)
