//! Where a report's files and symbols come from when they are not the
//! traced process's own (those are opened through `/proc`, see `procfs`):
//! the device's files under sysroots, matched by build ID ([`sysroot`]),
//! and debuginfod servers ([`debuginfod`]). Separate debug files in debug
//! directories are found by the ELF reader itself (`--debug-dir`).

pub mod debuginfod;
pub mod sysroot;
