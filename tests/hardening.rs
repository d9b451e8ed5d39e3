//! Servers that cannot be held hostage: 500 clients that send half a request and then nothing are
//! attached to `webhook serve` and to `dps serve`'s HTTP listener; valid requests are still
//! answered, and the server closes the slow connections once their header-read time is up.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::util::{bin, run, scenario, summary, tempdir, Webhook};

/// `n` connections, each with the start of a request and no end of headers.
fn slow_clients(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"POST /api/HttpTrigger1 HTTP/1.1\r\nHost: x\r\nContent-")
                .unwrap();
            s
        })
        .collect()
}

/// Every connection is closed by the server (EOF or reset) before `deadline`, a bound against a
/// hang, far above the header timeout.
fn all_closed(conns: Vec<TcpStream>, deadline: Duration) {
    let started = Instant::now();
    for mut c in conns {
        let left = deadline.saturating_sub(started.elapsed());
        assert!(!left.is_zero(), "a slow client is still attached");
        c.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 512];
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {} // e.g. a 408 before the close
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    panic!("a slow client is still attached after {deadline:?}")
                }
                Err(_) => break, // reset
            }
        }
    }
}

#[test]
fn the_reference_webhook_serves_while_500_slow_clients_hang() {
    let hook = Webhook::start(&["--header-timeout", "2s"]);
    let addr = hook.base.trim_start_matches("http://").to_owned();
    let slow = slow_clients(&addr, 500);
    let dir = tempdir();
    let out = dir.path().join("r");
    let url = format!("{}/api/HttpTrigger1?code=k", hook.base);
    let r = run(&[
        "run",
        scenario("contoso.toml").to_str().unwrap(),
        "--url",
        &url,
        "--count",
        "100",
        "--rate",
        "200",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(summary(&out)["requests"]["completed"], 100);
    all_closed(slow, Duration::from_secs(120));
}

fn emulator_http() -> (Child, String, tempfile::TempDir) {
    let dir = tempdir();
    let mut child = bin()
        .args([
            "dps",
            "serve",
            "--mqtt",
            "127.0.0.1:0",
            "--no-https",
            "--http-plain",
            "127.0.0.1:0",
            "--header-timeout",
            "2s",
            "--tls-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut http = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(a) = line.trim().strip_prefix("HTTP (plain):") {
            http = Some(a.trim().trim_start_matches("http://").to_owned());
        }
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, http.unwrap(), dir)
}

#[test]
fn the_emulator_serves_while_500_slow_clients_hang() {
    let (mut emu, http, _dir) = emulator_http();
    let slow = slow_clients(&http, 500);
    // A valid request still gets its answer.
    let mut s = TcpStream::connect(&http).unwrap();
    write!(
        s,
        "GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"registrations\""), "{text}");
    all_closed(slow, Duration::from_secs(120));
    let _ = emu.kill();
    let _ = emu.wait();
}
