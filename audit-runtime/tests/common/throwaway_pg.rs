//! A throwaway PostgreSQL server for fault tests: `initdb` and `pg_ctl`
//! (from `PHI_AUDIT_PG_BIN`, default /usr/lib/postgresql/15/bin) on a free
//! loopback port in a temporary directory, trust authentication. A test can
//! stop it, start it again on the same data, or stop its processes with
//! SIGSTOP, without disturbing a shared server. Stopped (immediate) on drop.
//!
//! Include it with `#[path = "common/throwaway_pg.rs"] mod throwaway_pg;`
//! (audit-cli's TLS test includes it from there too, with a [`Setup`] that
//! adds a certificate and a TLS-only `pg_hba.conf`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Lines for `postgresql.conf`, given the server's directory.
pub type ConfLines = Box<dyn FnOnce(&Path) -> String>;

/// What a test adds to the default server.
#[derive(Default)]
pub struct Setup {
    /// Files written into the server's directory before `initdb`:
    /// `(name, contents, unix mode)`.
    pub files: Vec<(String, Vec<u8>, u32)>,
    /// Lines appended to `postgresql.conf`, given the server's directory
    /// (where `files` are).
    pub conf: Option<ConfLines>,
    /// A `pg_hba.conf` replacing initdb's (trust everywhere).
    pub hba: Option<String>,
}

/// A private PostgreSQL server.
pub struct Server {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// initdb refuses to run as root: then the server runs as `postgres`.
    as_postgres: bool,
    stopped_by_signal: bool,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| "a non-UTF-8 temporary path".to_owned())
}

/// Why the server cannot be started here, or `None` when it can.
pub fn unavailable() -> Option<String> {
    let bin = bin_dir();
    if !bin.join("initdb").exists() || !bin.join("pg_ctl").exists() {
        return Some(format!(
            "no PostgreSQL binaries (initdb, pg_ctl) in {} (set PHI_AUDIT_PG_BIN)",
            bin.display()
        ));
    }
    None
}

fn bin_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("PHI_AUDIT_PG_BIN")
            .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".to_owned()),
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Server {
    /// Starts a server. `Ok(None)`: no PostgreSQL binaries here (skip).
    pub fn start() -> Result<Option<Server>, String> {
        Server::start_with(Setup::default())
    }

    /// Starts a server with `setup`'s files, configuration and `pg_hba.conf`.
    /// `Ok(None)`: no PostgreSQL binaries here (skip).
    pub fn start_with(setup: Setup) -> Result<Option<Server>, String> {
        if unavailable().is_some() {
            return Ok(None);
        }
        let as_postgres = is_root();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let server = Server {
            dir,
            bin: bin_dir(),
            port,
            as_postgres,
            stopped_by_signal: false,
        };
        for (name, contents, _) in &setup.files {
            std::fs::write(server.dir.path().join(name), contents).map_err(|e| e.to_string())?;
        }
        if as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(server.dir.path()))?;
        }
        #[cfg(unix)]
        for (name, _, mode) in &setup.files {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                server.dir.path().join(name),
                std::fs::Permissions::from_mode(*mode),
            )
            .map_err(|e| e.to_string())?;
        }
        let data = server.data();
        run(&mut server.pg(
            "initdb",
            &[
                "-D",
                path_str(&data)?,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        ))?;
        let mut conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             fsync = off\nmax_connections = 40\nshared_buffers = 16MB\n",
            server.dir.path().display(),
        );
        if let Some(extra) = setup.conf {
            conf.push_str(&extra(server.dir.path()));
        }
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|e| e.to_string())?;
        if let Some(hba) = &setup.hba {
            std::fs::write(data.join("pg_hba.conf"), hba).map_err(|e| e.to_string())?;
        }
        server.start_again()?;
        Ok(Some(server))
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg(&self, tool: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe).args(args);
            c
        } else {
            let mut c = Command::new(exe);
            c.args(args);
            c
        }
    }

    /// The connection URL (database `postgres`), with `query` appended.
    pub fn url(&self, query: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres{query}",
            self.port
        )
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (fast shutdown: connections are closed).
    pub fn stop(&self) -> Result<(), String> {
        let data = self.data();
        run(&mut self.pg(
            "pg_ctl",
            &["-D", path_str(&data)?, "-m", "fast", "-w", "stop"],
        ))
    }

    /// Starts it (again) on the same data and port.
    pub fn start_again(&self) -> Result<(), String> {
        let data = self.data();
        let log = self.dir.path().join("server.log");
        run(&mut self.pg(
            "pg_ctl",
            &[
                "-D",
                path_str(&data)?,
                "-l",
                path_str(&log)?,
                "-w",
                "-t",
                "60",
                "start",
            ],
        ))
    }

    /// The postmaster's pid and its children's.
    pub fn pids(&self) -> Result<Vec<u32>, String> {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .map_err(|e| format!("postmaster.pid: {e}"))?;
        let main: u32 = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or("postmaster.pid has no pid")?;
        let mut pids = vec![main];
        for entry in std::fs::read_dir("/proc").map_err(|e| e.to_string())? {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": the fields after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(main) {
                pids.push(pid);
            }
        }
        Ok(pids)
    }

    /// Sends `signal` (`STOP`, `CONT`) to every process of the server.
    pub fn signal(&mut self, signal: &str) -> Result<(), String> {
        let pids = self.pids()?;
        let mut cmd = Command::new("kill");
        cmd.arg(format!("-{signal}"));
        for p in &pids {
            cmd.arg(p.to_string());
        }
        run(&mut cmd)?;
        self.stopped_by_signal = signal == "STOP";
        Ok(())
    }

    /// Whether this process may signal the server's processes (same user,
    /// or root).
    pub fn may_signal(&self) -> bool {
        self.pids()
            .ok()
            .and_then(|p| p.first().copied())
            .is_some_and(|pid| {
                Command::new("kill")
                    .args(["-0", &pid.to_string()])
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.stopped_by_signal {
            let _ = self.signal("CONT");
        }
        let data = self.data();
        if let Some(d) = data.to_str() {
            let _ = self
                .pg("pg_ctl", &["-D", d, "-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}
