//! A throwaway Postgres cluster from the machine's own Postgres (Debian's `postgresql` package):
//! `initdb` into a temp dir, `pg_ctl start` on a free loopback port, stopped and deleted on drop.
//! Postgres refuses to run as root, so as root the cluster belongs to the `postgres` user.
//!
//! Missing Postgres: said loudly and the caller skips — unless `CI` is set (`true` or `1`), where
//! it is a failure: `.ci/test` installs the package, so a skip there would hide a broken setup.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A running cluster; dropped: stopped at once and deleted.
pub struct TestPostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// The user the cluster runs as when this process is root.
    owner: Option<String>,
}

impl TestPostgres {
    /// Starts a cluster with a superuser `fanout` trusted on loopback. None if Postgres is not
    /// installed here (a skip, said on stderr); panics under `CI=true`, or if it is installed
    /// but does not start.
    pub fn start() -> Option<TestPostgres> {
        let Some(bin) = bin_dir() else {
            let why = "Postgres is not installed (no /usr/lib/postgresql/*/bin/initdb): \
                       `apt-get install -y postgresql`, or run `bash .ci/test`, which installs it";
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("{why}; CI is set, so the Postgres tests fail instead of skipping");
            }
            say_skipped(why);
            return None;
        };
        let owner = is_root().then(|| "postgres".to_owned());
        // As root, under /tmp whatever TMPDIR says: the cluster's owner must reach it.
        let base = if owner.is_some() { PathBuf::from("/tmp") } else { std::env::temp_dir() };
        remove_abandoned(&bin, &base, owner.as_deref());
        let dir = base.join(format!("fanout-pg-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).expect("a temp dir for the cluster");
        if let Some(user) = &owner {
            chown(&dir, user);
        }
        let mut pg = TestPostgres { bin, dir, port: free_port(), owner };
        pg.run("initdb", &["-D", &pg.data(), "-U", "fanout", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]);
        // A port found free can be taken by another test's cluster before this one binds it:
        // then another port.
        for _ in 0..4 {
            if pg.try_start().is_ok() {
                return Some(pg);
            }
            pg.port = free_port();
        }
        pg.start_server();
        Some(pg)
    }

    /// `postgres://fanout@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        format!("postgres://fanout@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's main process (the postmaster), whose children serve the connections: what
    /// a benchmark reads the database's CPU time from.
    pub fn postmaster_pid(&self) -> u32 {
        let pid_file = self.dir.join("data").join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file).unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
        text.lines().next().and_then(|l| l.trim().parse().ok()).expect("postmaster.pid starts with the pid")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves TLS with this certificate and key (PEM) from now on, and refuses plain-text TCP
    /// connections, so a client that connects at all spoke TLS. Restarts the server.
    pub fn require_tls(&self, cert_pem: &str, key_pem: &str) {
        let data = self.dir.join("data");
        for (name, pem) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = data.join(name);
            std::fs::write(&path, pem).expect("the server's TLS files are written");
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("the key is private");
            if let Some(user) = &self.owner {
                chown(&path, user);
            }
        }
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
        text.push_str("\nssl = on\n");
        std::fs::write(&conf, text).expect("postgresql.conf is written");
        std::fs::write(data.join("pg_hba.conf"), "local all all trust\nhostssl all all 127.0.0.1/32 trust\n")
            .expect("pg_hba.conf is written");
        self.stop();
        self.start_server();
    }

    /// Stops the server at once (as a crash would), keeping its data.
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }

    /// Starts the server again on the same port and data.
    pub fn start_server(&self) {
        if let Err(why) = self.try_start() {
            panic!("{why}");
        }
    }

    fn try_start(&self) -> Result<Output, String> {
        // The socket goes to /tmp (a short path; a long TMPDIR would pass the 107-byte limit).
        let options = format!("-p {} -k /tmp -c listen_addresses=127.0.0.1", self.port);
        let log = self.dir.join("server.log");
        self.try_run("pg_ctl", &["-D", &self.data(), "-l", &log.display().to_string(), "-o", &options, "-w", "start"])
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Runs one of the cluster's programs (as its owner), panicking with its output on failure.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        self.try_run(program, args).unwrap_or_else(|why| panic!("{why}"))
    }

    fn try_run(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        let path = self.bin.join(program);
        // As root, as the cluster's owner: Postgres refuses to run as root.
        let mut cmd = match &self.owner {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        let out = cmd.args(args).current_dir(&self.dir).output().map_err(|e| format!("cannot run {program}: {e}"))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            return Err(format!(
                "{program} {args:?} failed: {}\n{}\n{}\nserver log:\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(out)
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = self.try_run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Says a skip where a person sees it: libtest captures `eprintln!` of passing tests, not a
/// write to the process's stderr. Once per process.
fn say_skipped(why: &str) {
    use std::io::Write;
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        let _ = writeln!(std::io::stderr(), "\n*** SKIPPED the Postgres tests: {why} ***\n");
    });
}

/// Clusters left by test processes that died without dropping them (killed, or a CI timeout):
/// stopped and deleted.
fn remove_abandoned(bin: &Path, base: &Path, owner: Option<&str>) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("fanout-pg-").and_then(|r| r.split('-').next()?.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let pg = TestPostgres { bin: bin.to_owned(), dir: entry.path(), port: 0, owner: owner.map(str::to_owned) };
        drop(pg);
    }
}

/// The newest installed Postgres' programs.
fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn chown(path: &Path, user: &str) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, user]).output().expect("id runs");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no user {user:?} to run Postgres as"))
    };
    std::os::unix::fs::chown(path, Some(id("-u")), Some(id("-g"))).expect("the cluster dir is given to its owner");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

fn unique() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
        ^ Duration::from_nanos(std::process::id() as u64).as_nanos()
}

/// A client TLS config for tests that connect in plain text (the URL does not ask for TLS).
pub fn plain_tls() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}
