//! The crate plugin authors depend on. It will carry the WIT contract
//! (`wit/v0.1/`), one trait per plugin kind and the `register_plugin!` macro;
//! see `docs/ARCHITECTURE.md`. Until the plugin runtime lands it exports
//! nothing, so that the workspace has its final shape from the start.
#![deny(missing_docs)]
