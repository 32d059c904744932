//! Where a report's files and symbols come from when they are not the
//! traced process's own (those are opened through `/proc`, see `procfs`):
//! the device's files under sysroots, matched by build ID ([`sysroot`]),
//! and debuginfod servers ([`debuginfod`]). Separate debug files in debug
//! directories are found by the ELF reader itself (`--debug-dir`).

pub mod debuginfod;
pub mod sysroot;

/// A build ID (or any bytes) in lower-case hex, as debuginfod and readelf
/// write it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|x| format!("{x:02x}")).collect()
}
