//! A throw-away PostgreSQL server on loopback (Debian's `postgresql` package), for the
//! replicated-store tests and benchmark. Each instance is its own cluster in a temporary
//! directory, on a free port, with trust authentication, stopped when dropped.
//!
//! As root the server runs as the `postgres` user (PostgreSQL refuses to run as root).
//! Without the package the tests skip with a message, or fail when `CI=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

/// Debian installs the server binaries under /usr/lib/postgresql/<major>/bin.
fn find_bin() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("CLOISTER_PG_BIN") {
        return Some(PathBuf::from(d));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("pg_ctl").exists() && b.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

fn postgres_ids() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").arg(flag).arg("postgres").output().ok()?;
        String::from_utf8(o.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

impl PgServer {
    /// Starts a fresh server, or returns `None` (after saying why) when PostgreSQL is missing.
    pub fn start() -> Option<PgServer> {
        let Some(bin) = find_bin() else {
            let msg = "PostgreSQL server binaries not found (Debian package `postgresql`)";
            if std::env::var("CI").is_ok_and(|v| v == "1" || v == "true") {
                panic!("{msg}; CI=1 requires them");
            }
            eprintln!("skipping: {msg}");
            return None;
        };
        let as_postgres = is_root();
        let dir = tempfile::Builder::new().prefix("cloister-pg-").tempdir_in("/tmp").unwrap();
        if as_postgres {
            let (uid, gid) = postgres_ids().expect("the postgres user exists when the package is installed");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let s = PgServer { bin, dir, port, as_postgres };
        let data = s.data_dir();
        s.run(
            "initdb",
            &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "--no-locale"],
        );
        s.pg_ctl_start();
        Some(s)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(args).current_dir(self.dir.path()).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// (Re)starts the server on its port and waits until it accepts connections.
    pub fn pg_ctl_start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on",
            self.port,
            self.dir.path().display()
        );
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        self.run("pg_ctl", &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-o", &opts, "start"]);
    }

    /// Stops the server (`fast`: open connections are closed, in-flight transactions roll back).
    pub fn pg_ctl_stop(&self) {
        let data = self.data_dir();
        self.run("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"]);
    }

    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres?sslmode=disable", self.port)
    }

    /// Runs one SQL statement through a direct connection and returns the rows' first column
    /// as bytes.
    pub async fn query_bytes(&self, sql: &str) -> Vec<Vec<u8>> {
        let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls).await.unwrap();
        let t = tokio::spawn(conn);
        let rows = client.query(sql, &[]).await.unwrap();
        drop(client);
        let _ = t.await;
        rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data_dir();
        let exe = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let _ = cmd.args(["-D", data.to_str().unwrap_or("/nonexistent"), "-m", "immediate", "-w", "stop"]).output();
    }
}

/// The `[storage_backend]` TOML for `pg`, with a fresh 32-byte key written to `key_path`.
pub fn storage_toml(pg: &PgServer, key_path: &Path, key: &[u8; 32]) -> String {
    if !key_path.exists() {
        std::fs::write(key_path, hex::encode(key)).unwrap();
    }
    format!(
        "[storage_backend]\nstorage_type = \"Postgres\"\n[storage_backend.backends.postgres]\nurl = \"{}\"\n\
         encryption_key_path = \"{}\"\npool_size = 8\nconnect_timeout_secs = 2\nrequest_timeout_secs = 5\n",
        pg.url(),
        key_path.display()
    )
}
