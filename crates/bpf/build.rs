//! Compiles `src/bpf/memleak.bpf.c` with clang into a BPF object of the
//! target's byte order (`bpfel` or `bpfeb`) and architecture (`struct
//! pt_regs` layout), written to `OUT_DIR/memleak.bpf.o` and embedded by
//! `src/lib.rs`. No BTF of the kernel and no CO-RE are used.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const SRC: &str = "src/bpf/memleak.bpf.c";
const HDR: &str = "src/bpf/memleak.h";

fn main() {
    println!("cargo:rerun-if-changed={SRC}");
    println!("cargo:rerun-if-changed={HDR}");
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=LLVM_STRIP");

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH is set by cargo");
    let endian =
        env::var("CARGO_CFG_TARGET_ENDIAN").expect("CARGO_CFG_TARGET_ENDIAN is set by cargo");
    let target_arch = match arch.as_str() {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        "mips" => "mips",
        other => panic!("memleak has no BPF pt_regs layout for target_arch `{other}`"),
    };
    let bpf_target = if endian == "big" { "bpfeb" } else { "bpfel" };

    let obj = out.join("memleak.bpf.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    run(Command::new(&clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", bpf_target])
        .arg(format!("-D__TARGET_ARCH_{target_arch}"))
        .arg("-c")
        .arg(SRC)
        .arg("-o")
        .arg(&obj));
    // Drop DWARF (it only helps debugging the BPF itself); keep .BTF/.BTF.ext,
    // which describe the maps.
    let strip = env::var("LLVM_STRIP").unwrap_or_else(|_| "llvm-strip".to_string());
    run(Command::new(strip).arg("-g").arg(&obj));
    write_meta(&out, bpf_target, target_arch);
}

fn write_meta(out: &Path, bpf_target: &str, target_arch: &str) {
    let meta = format!(
        "/// clang target the embedded object was built for.\npub const BPF_TARGET: &str = \"{bpf_target}\";\n\
         /// `__TARGET_ARCH_x` the embedded object was built with.\npub const TARGET_ARCH: &str = \"{target_arch}\";\n"
    );
    std::fs::write(out.join("meta.rs"), meta).expect("write meta.rs");
}

fn run(cmd: &mut Command) {
    let shown = format!("{cmd:?}");
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run `{shown}`: {e} (install clang and llvm)"));
    if !output.status.success() {
        panic!(
            "`{shown}` reported non-zero exit-status {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
