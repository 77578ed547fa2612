//! A `zodiac server` process serving a file store of the harness's run directory:
//! the product's own binary, as an operator runs it, for the workloads that measure
//! the server itself (`load100`).
//!
//! Invariants:
//! - The program is `$ZODIAC_BIN` when set, else the running program when it is the
//!   `zodiac` binary (`zodiac bench`), else the `zodiac` beside the running executable
//!   (or beside its directory, for a test binary in `deps/`); without one the
//!   workload fails with what to build, before any process starts.
//! - Its log goes to the harness's standard error, at `warn` unless `RUST_LOG` says
//!   otherwise; its standard output is read to the end.
//! - A started server is always stopped: [`ServerProcess::stop`] sends SIGTERM and
//!   waits (bounded) for its clean exit; dropping it unstopped kills it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Result;

/// The product binary's name (without the platform's executable suffix).
const ZODIAC_BINARY: &str = "zodiac";

/// How long a stopped server may take to exit before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(20);

/// The `zodiac` program to run.
pub fn zodiac_program() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("ZODIAC_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the running executable: {e}"))?;
    let name = format!("{ZODIAC_BINARY}{}", std::env::consts::EXE_SUFFIX);
    if exe.file_name().is_some_and(|n| *n == *name) {
        return Ok(exe);
    }
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [dir.join(&name), dir.join("..").join(&name)];
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        format!(
            "this workload runs a `zodiac server` process, and there is no {name} beside {}: \
             build it with `cargo build --release -p zodiac` (or set ZODIAC_BIN to it)",
            exe.display()
        )
        .into()
    })
}

/// A running `zodiac server`.
pub struct ServerProcess {
    child: Option<Child>,
    address: String,
}

impl ServerProcess {
    /// Starts `zodiac server DATA --listen 127.0.0.1:0 --max-connections N` and waits
    /// for its `listening on HOST:PORT` line.
    pub fn start(data: &Path, connections_max: u64) -> Result<ServerProcess> {
        let program = zodiac_program()?;
        let mut child = Command::new(&program)
            .arg("server")
            .arg(data)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--max-connections", &connections_max.to_string()])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let mut server = ServerProcess {
            child: Some(child),
            address: String::new(),
        };
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        // The rest of its output is read and dropped: a closed pipe would fail the
        // server's last lines.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        server.address = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("`zodiac server` said {line:?}, not `listening on HOST:PORT`"))?
            .to_string();
        Ok(server)
    }

    /// `HOST:PORT` the server listens on.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The server's peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        crate::system::peak_rss_bytes_of(pid)
    }

    /// Stops the server with SIGTERM and waits for it to exit cleanly (on an early
    /// return, dropping `self` kills it).
    pub fn stop(mut self) -> Result<()> {
        let child = self.child.as_mut().expect("running until stopped");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).ok_or("no process id")?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .map_err(|e| format!("cannot stop the server: {e}"))?;
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                if !status.success() {
                    return Err(format!("`zodiac server` exited with {status} when stopped").into());
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("`zodiac server` did not exit within {STOP_WAIT:?} of SIGTERM").into())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
