fn main() {
    let p = std::env::args().nth(1).unwrap();
    let f = memleak_unwind_arch::ElfFile::open(&p).unwrap();
    println!(
        "needed {:?} interp {:?} static {} malloc {:?}",
        f.needed_libraries(),
        f.interpreter(),
        f.is_static_executable(),
        f.find_function("malloc")
    );
}
