//! `memleak report --debuginfod URL`: debug info by build ID from a real
//! debuginfod server (Debian's `debuginfod`, started here on loopback,
//! serving a directory of debug files), kept in the client cache; a server
//! that sends another build's file is refused with a warning.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::record::{record, report_with, warnings};

/// leaky built with debug info (returned) and its device copy: debug info,
/// symbols and all but the dynamic symbols stripped.
fn split_build(name: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
    let src = example_src("leaky.c");
    let mut args = vec!["-O2", "-g", "-fomit-frame-pointer", "-fno-inline"];
    args.extend_from_slice(extra);
    args.push(path_str(&src));
    let built = compile(name, "gcc", &args);
    let dir = unique_scratch_path("device");
    std::fs::create_dir_all(&dir).unwrap();
    let device = dir.join("leaky");
    let status = Command::new("objcopy")
        .args(["--strip-debug", "--strip-unneeded"])
        .arg(&built)
        .arg(&device)
        .status()
        .unwrap();
    assert!(status.success());
    (built, device)
}

fn build_id(file: &Path) -> String {
    let notes = tool_output("readelf", &["-n"], file);
    notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("{} has no build ID:\n{notes}", file.display()))
        .to_string()
}

/// The status code of `GET path` on 127.0.0.1:port, or None.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Debian's debuginfod serving `dir`, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    /// Its database, removed after it is killed.
    _cleanup: Cleanup,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn debuginfod_serving(dir: &Path, id: &str) -> Server {
    let port = free_port();
    let db = unique_scratch_path("debuginfod.sqlite");
    let mut cleanup = Cleanup::of(&[&db]);
    for suffix in ["-wal", "-shm"] {
        let mut name = db.file_name().unwrap().to_os_string();
        name.push(suffix);
        cleanup.add(&db.with_file_name(name));
    }
    let child = Command::new("debuginfod")
        .arg("-F")
        .arg(format!("--port={port}"))
        .arg(format!("--database={}", path_str(&db)))
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting debuginfod (Debian's debuginfod package; scripts/deps.sh installs it)");
    let server = Server {
        child,
        port,
        _cleanup: cleanup,
    };
    // Ready once it has scanned the directory and serves the file.
    let path = format!("/buildid/{id}/debuginfo");
    let deadline = Instant::now() + Duration::from_secs(90);
    while http_status(port, &path) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "debuginfod on port {port} did not serve {path} within 90 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    server
}

fn assert_chain_has_lines(r: &Report, src: &Path) {
    let stack = r.stacks_with_function("alloc_v3");
    assert_eq!(stack.len(), 1, "{}", r.render());
    let stack = stack[0];
    for (f, callee) in stack.frames[1..5]
        .iter()
        .zip(["malloc", "alloc_v3", "alloc_v2", "alloc_v1"])
    {
        assert_eq!(
            f.line,
            Some(marker_line(src, &format!("CALL:{callee}"))),
            "{}",
            stack.render()
        );
    }
}

#[test]
fn debug_info_from_a_local_debuginfod_server() {
    let (built, device) = split_build("leaky_for_debuginfod", &[]);
    let _cleanup = Cleanup::of(&[device.parent().unwrap()]);
    let id = build_id(&device);
    let served = unique_scratch_path("debuginfod-root");
    std::fs::create_dir_all(&served).unwrap();
    let status = Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&built)
        .arg(served.join("leaky.debug"))
        .status()
        .unwrap();
    assert!(status.success());
    let (rec, file) = record(&[], &device, &["6"]);
    let cache = unique_scratch_path("debuginfod-cache");
    let env = [("DEBUGINFOD_CACHE_PATH", cache.as_path())];

    // Without a server: the program's functions are not named.
    let bare = report_with(&file, &[], &env);
    let r = bare.final_report();
    rec.assert_totals_are_the_programs(&r);
    assert!(
        r.stacks_with_function("alloc_v3").is_empty(),
        "{}",
        r.render()
    );

    let server = debuginfod_serving(&served, &id);
    let url = format!("http://127.0.0.1:{}", server.port);
    let run = report_with(&file, &["--debuginfod", &url], &env);
    let r = run.final_report();
    rec.assert_totals_are_the_programs(&r);
    assert!(warnings(&run).is_empty(), "{}", run.describe());
    let src = example_src("leaky.c");
    assert_chain_has_lines(&r, &src);
    assert!(
        cache.join(&id).join("debuginfo").is_file(),
        "kept in the cache"
    );

    // From the cache once the server is gone (also through the variable).
    drop(server);
    let mut env_url = url.clone();
    env_url.insert(0, ' ');
    let cached = {
        let mut cmd = Command::new(memleak_bin());
        cmd.args(["report", path_str(&file), "--format", "json", "-T", "1000"])
            .env("DEBUGINFOD_URLS", &env_url)
            .env("DEBUGINFOD_CACHE_PATH", &cache);
        run_with_timeout(cmd, Duration::from_secs(60))
    };
    assert_chain_has_lines(&cached.final_report(), &src);
    let _ = std::fs::remove_dir_all(cache);
    let _ = std::fs::remove_dir_all(served);
    let _ = std::fs::remove_file(file);
}

#[test]
fn another_builds_file_from_a_server_is_refused() {
    let (_, device) = split_build("leaky_for_debuginfod_2", &[]);
    let mut _cleanup = Cleanup::of(&[device.parent().unwrap()]);
    // Another build: another build ID.
    let (other, other_device) =
        split_build("leaky_for_debuginfod_other", &["-DOTHER_BUILD=1", "-O1"]);
    _cleanup.add(other_device.parent().unwrap());
    assert_ne!(build_id(&other), build_id(&device));
    let (rec, file) = record(&[], &device, &["4"]);
    let wrong = std::fs::read(&other).unwrap();
    // A server that answers every request with that file.
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                wrong.len()
            );
            let _ = s.write_all(&wrong);
        }
    });
    let cache = unique_scratch_path("debuginfod-cache");
    let url = format!("http://127.0.0.1:{port}");
    let run = report_with(
        &file,
        &["--debuginfod", &url],
        &[("DEBUGINFOD_CACHE_PATH", cache.as_path())],
    );
    let r = run.final_report();
    rec.assert_totals_are_the_programs(&r);
    assert!(
        warnings(&run)
            .iter()
            .any(|w| w.contains("has another build ID: refused")),
        "{}",
        run.describe()
    );
    assert!(
        r.stacks_with_function("alloc_v3").is_empty(),
        "{}",
        r.render()
    );
    assert!(!cache.join(build_id(&device)).join("debuginfo").exists());
    let _ = std::fs::remove_dir_all(cache);
    let _ = std::fs::remove_file(file);
}
