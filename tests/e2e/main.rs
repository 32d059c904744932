//! End-to-end tests of the `memleak` binary.
//!
//! Each test builds small C/C++ programs from `examples/` and
//! `tests/fixtures/src/` with gcc/g++ (and musl-gcc), runs them under
//! `memleak --format json` and compares the reports with ground truth the
//! programs print themselves
//! (`EXPECT ...` lines on stderr), with the `/* CALL:... */` line markers in
//! their sources and, for whole-program totals, with valgrind.
//!
//! The tests need root (BPF and uprobes) and fail, never skip, without it.
//! Run them with `cargo test -p memleak-loader --test e2e`.

mod common;

mod accounting;
mod attach;
mod compat;
mod container;
mod cxx;
mod debug_files;
mod debuginfod;
mod demo;
mod dlopen;
mod errors;
mod exec;
mod filters;
mod forks;
mod formats;
mod growth;
mod load;
mod mmap;
mod musl;
mod real_use;
mod record;
mod sampling;
mod sstrip;
mod static_link;
mod tables;
mod threads;
mod truncation;
mod unwind;
mod valgrind;
