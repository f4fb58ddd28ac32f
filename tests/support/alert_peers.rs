//! Real peers for the alert tests, each on free loopback ports in its own temp dir, killed on drop:
//! Kannel (bearerbox + smsbox + fakesmsc), aiosmtpd with STARTTLS and AUTH, and a small HTTP receiver
//! for webhooks. A missing peer binary fails the test with the package to install.

#![allow(dead_code)] // each test binary includes this file and uses only the peers it needs

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a Kannel box may take to come up or go down: seconds on a quiet machine, far more on a loaded
/// one (the waits poll, so a generous bound costs nothing when all is well).
const PEER_START: Duration = Duration::from_secs(60);

/// A port that was free a moment ago (bind to 0, read it, release it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package(s) {package} (scripts/setup.sh does)"
    );
}

/// Polls `f` every 20 ms until it returns Some or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn port_open(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A minimal HTTP/1.0 GET, returning (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let status = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

const BEARERBOX: &str = "/usr/sbin/bearerbox";
const SMSBOX: &str = "/usr/sbin/smsbox";
const FAKESMSC: &str = "/usr/lib/kannel/test/fakesmsc";

/// One SMS as the fake SMSC received it, concatenated parts joined.
#[derive(Clone, Debug)]
pub struct Sms {
    pub from: String,
    pub to: String,
    /// The message bytes as sent over the air: GSM text as UTF-8 or UCS-2 as UTF-16BE.
    pub data: Vec<u8>,
    pub ucs2: bool,
    pub parts: usize,
}

impl Sms {
    pub fn text(&self) -> String {
        if self.ucs2 {
            let units: Vec<u16> = self
                .data
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            String::from_utf16_lossy(&units)
        } else {
            String::from_utf8_lossy(&self.data).into_owned()
        }
    }
}

/// fakesmsc prints binary data URL-encoded with `+` for a 0x20 byte.
fn url_bytes(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

pub struct Kannel {
    dir: TempDir,
    conf: PathBuf,
    pub sendsms_port: u16,
    pub admin_port: u16,
    smsc_port: u16,
    bearerbox: Option<Child>,
    smsbox: Option<Child>,
    fakesmsc: Option<Child>,
    fake_log: PathBuf,
}

pub const KANNEL_USER: &str = "streetwatch";
pub const KANNEL_PASS: &str = "s3cret-sms";
/// Numbers starting like this are refused by the gateway's black list (400 "denied").
pub const DENIED_PREFIX: &str = "+8490000";

impl Kannel {
    /// bearerbox, fakesmsc and smsbox, ready to accept SMS.
    pub fn start() -> Self {
        let mut k = Self::configure();
        k.start_bearerbox();
        k.start_fakesmsc();
        k.start_smsbox();
        k
    }

    /// bearerbox and fakesmsc only: the HTTP interface (smsbox) is down until `start_smsbox`.
    pub fn start_without_smsbox() -> Self {
        let mut k = Self::configure();
        k.start_bearerbox();
        k.start_fakesmsc();
        k
    }

    fn configure() -> Self {
        require(BEARERBOX, "kannel");
        require(SMSBOX, "kannel");
        require(FAKESMSC, "kannel-extras");
        let dir = TempDir::new().unwrap();
        let (admin, boxp, smsc, sendsms) = (free_port(), free_port(), free_port(), free_port());
        let d = dir.path().display();
        let conf = dir.path().join("kannel.conf");
        std::fs::create_dir_all(dir.path().join("spool")).unwrap();
        std::fs::write(
            &conf,
            format!(
                r#"group = core
admin-port = {admin}
admin-password = admin-pw
status-password = admin-pw
admin-interface = 127.0.0.1
admin-allow-ip = 127.0.0.1
smsbox-port = {boxp}
box-allow-ip = 127.0.0.1
store-type = spool
store-location = {d}/spool
dlr-storage = internal
log-file = {d}/bearerbox.log
log-level = 1

group = smsc
smsc = fake
smsc-id = fake
port = {smsc}
connect-allow-ip = 127.0.0.1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {boxp}
sendsms-port = {sendsms}
sendsms-interface = 127.0.0.1
global-sender = 1113
log-file = {d}/smsbox.log
log-level = 1

group = sendsms-user
username = {KANNEL_USER}
password = {KANNEL_PASS}
user-allow-ip = 127.0.0.1
white-list-regex = "^\+?[0-9]{{6,15}}$"
black-list-regex = "^\+8490000"
concatenation = true
max-messages = 5
"#
            ),
        )
        .unwrap();
        let fake_log = dir.path().join("fakesmsc.out");
        Self {
            dir,
            conf,
            sendsms_port: sendsms,
            admin_port: admin,
            smsc_port: smsc,
            bearerbox: None,
            smsbox: None,
            fakesmsc: None,
            fake_log,
        }
    }

    pub fn sendsms_url(&self) -> String {
        format!("http://127.0.0.1:{}/cgi-bin/sendsms", self.sendsms_port)
    }

    fn spawn(&self, bin: &str, args: &[&str], out: &str) -> Child {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(out))
            .unwrap();
        Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"))
    }

    pub fn start_bearerbox(&mut self) {
        let conf = self.conf.display().to_string();
        self.bearerbox = Some(self.spawn(BEARERBOX, &[&conf], "bearerbox.out"));
        let port = self.smsc_port;
        wait_for("bearerbox's fake SMSC port", PEER_START, || {
            port_open(port).then_some(())
        });
    }

    /// SIGKILL: no clean shutdown, as in a crash.
    pub fn kill_bearerbox(&mut self) {
        kill(&mut self.bearerbox);
        // fakesmsc leaves when its SMSC link drops; reap it so it can be started again.
        kill(&mut self.fakesmsc);
    }

    pub fn start_fakesmsc(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.fake_log)
            .unwrap();
        let port = self.smsc_port.to_string();
        let child = Command::new(FAKESMSC)
            .args(["-H", "127.0.0.1", "-r", &port, "-m", "0", "0 0 text x"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {FAKESMSC}: {e}"));
        self.fakesmsc = Some(child);
        let admin = self.admin_port;
        wait_for("the fake SMSC to be online", PEER_START, || {
            let (_, body) = http_get(admin, "/status.txt?password=admin-pw")?;
            body.lines()
                .any(|l| l.contains("fake") && l.contains("online"))
                .then_some(())
        });
    }

    pub fn kill_fakesmsc(&mut self) {
        kill(&mut self.fakesmsc);
        let admin = self.admin_port;
        wait_for("the fake SMSC to go offline", PEER_START, || {
            let (_, body) = http_get(admin, "/status.txt?password=admin-pw")?;
            (!body
                .lines()
                .any(|l| l.contains("fake") && l.contains("online")))
            .then_some(())
        });
    }

    pub fn start_smsbox(&mut self) {
        let conf = self.conf.display().to_string();
        self.smsbox = Some(self.spawn(SMSBOX, &[&conf], "smsbox.out"));
        let port = self.sendsms_port;
        // Ready: the sendsms interface answers, refusing a request without credentials.
        wait_for("smsbox's sendsms interface", PEER_START, || {
            http_get(port, "/cgi-bin/sendsms")
                .filter(|(s, _)| *s == 403)
                .map(|_| ())
        });
    }

    pub fn kill_smsbox(&mut self) {
        kill(&mut self.smsbox);
    }

    /// Every SMS fakesmsc received so far, concatenated parts joined, in arrival order.
    pub fn received(&self) -> Vec<Sms> {
        let text = std::fs::read_to_string(&self.fake_log).unwrap_or_default();
        let mut out = Vec::new();
        // (recipient, reference) → (message so far, parts by sequence number, parts expected)
        type Partial = (Sms, BTreeMap<u8, Vec<u8>>, u8);
        let mut partial: BTreeMap<(String, u8), Partial> = BTreeMap::new();
        for line in text.lines() {
            let Some(i) = line.find("Got message ") else {
                continue;
            };
            let Some(start) = line[i..].find(": <").map(|p| i + p + 3) else {
                continue;
            };
            let body = line[start..].strip_suffix('>').unwrap_or(&line[start..]);
            let mut it = body.splitn(4, ' ');
            let (from, to, kind, rest) = (
                it.next().unwrap_or(""),
                it.next().unwrap_or(""),
                it.next().unwrap_or(""),
                it.next().unwrap_or(""),
            );
            let sms = |data: Vec<u8>, ucs2: bool| Sms {
                from: from.to_string(),
                to: to.to_string(),
                data,
                ucs2,
                parts: 1,
            };
            match kind {
                "text" => out.push(sms(rest.as_bytes().to_vec(), false)),
                "ucs-2" => out.push(sms(url_bytes(rest), true)),
                "udh" => {
                    // `udh <UDH> data <DATA>`; concatenation IE: 05 00 03 ref total seq.
                    let Some((udh, data)) = rest.split_once(" data ") else {
                        continue;
                    };
                    let udh = url_bytes(udh);
                    if udh.len() < 6 {
                        continue;
                    }
                    let (reference, total, seq) = (udh[3], udh[4], udh[5]);
                    let data = url_bytes(data);
                    let entry = partial
                        .entry((to.to_string(), reference))
                        .or_insert_with(|| (sms(Vec::new(), false), BTreeMap::new(), total));
                    entry.1.insert(seq, data);
                    if entry.1.len() == entry.2 as usize {
                        let (mut s, parts, total) =
                            partial.remove(&(to.to_string(), reference)).unwrap();
                        s.data = parts.into_values().flatten().collect();
                        s.parts = total as usize;
                        // fakesmsc does not say which alphabet a part used; UCS-2 from our router is
                        // UTF-16BE, whose high bytes for Latin/Vietnamese text are 0x00, 0x01 or 0x1E.
                        s.ucs2 = s.data.len() % 2 == 0
                            && s.data
                                .chunks(2)
                                .all(|c| matches!(c[0], 0x00 | 0x01 | 0x1E | 0x20));
                        out.push(s);
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Waits until at least `n` SMS arrived.
    pub fn wait_received(&self, n: usize, timeout: Duration) -> Vec<Sms> {
        wait_for(&format!("{n} SMS at the fake SMSC"), timeout, || {
            let got = self.received();
            (got.len() >= n).then_some(got)
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Kannel {
    fn drop(&mut self) {
        kill(&mut self.smsbox);
        kill(&mut self.fakesmsc);
        kill(&mut self.bearerbox);
    }
}

/// aiosmtpd requiring STARTTLS and AUTH, with its own CA.
pub struct Smtp {
    dir: TempDir,
    pub port: u16,
    pub ca_file: PathBuf,
    child: Option<Child>,
}

/// Debian's interpreter, the one python3-aiosmtpd installs into (a pyenv `python3` on PATH lacks it).
const PYTHON: &str = "/usr/bin/python3";

pub const SMTP_USER: &str = "alerts@q1.police.vn";
pub const SMTP_PASS: &str = "mail-s3cret";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl is missing ({e}): install the Debian package openssl"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Smtp {
    pub fn start() -> Self {
        let probe = Command::new(PYTHON)
            .args(["-c", "import aiosmtpd"])
            .output();
        assert!(
            probe.as_ref().is_ok_and(|o| o.status.success()),
            "{PYTHON} with aiosmtpd is missing: install the Debian package python3-aiosmtpd (scripts/setup.sh does)"
        );
        let dir = TempDir::new().unwrap();
        let d = dir.path();
        // A CA and a server certificate it signs: the client trusts the CA file only.
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=streetwatch test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        );
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                "server.pem",
            ],
        );
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/smtp_server.py");
        let mut child = Command::new(PYTHON)
            .arg(script)
            .args([
                "--port",
                &port.to_string(),
                "--cert",
                "server.pem",
                "--key",
                "server.key",
                "--maildir",
                "maildir",
            ])
            .args(["--user", SMTP_USER, "--password", SMTP_PASS])
            .current_dir(d)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(File::create(d.join("smtp.err")).unwrap())
            .spawn()
            .expect("start the aiosmtpd peer");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "READY",
            "aiosmtpd did not start: {}",
            std::fs::read_to_string(d.join("smtp.err")).unwrap_or_default()
        );
        Self {
            ca_file: d.join("ca.pem"),
            dir,
            port,
            child: Some(child),
        }
    }

    /// Messages delivered so far, parsed by Python's email package.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        let maildir = self.dir.path().join("maildir");
        if !maildir.join("new").exists() {
            return Vec::new();
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/read_mail.py");
        let out = Command::new(PYTHON)
            .arg(script)
            .arg(&maildir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "read_mail.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// One request the webhook receiver got.
#[derive(Clone, Debug)]
pub struct HookRequest {
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// An HTTP receiver for webhooks that answers each request with the next status of a script (the last one
/// repeats), recording what it got. It also stands in for a gateway that fails (on that gateway's port).
pub struct HookServer {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<HookRequest>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HookServer {
    pub fn start(statuses: Vec<u16>) -> Self {
        Self::start_on(0, statuses)
    }

    /// On a given loopback port (0: any free one).
    pub fn start_on(port: u16, statuses: Vec<u16>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = requests.clone();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(mut s) = stream else { return };
                let status = statuses[n.min(statuses.len() - 1)];
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    continue;
                }
                let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut headers = BTreeMap::new();
                loop {
                    let mut l = String::new();
                    if reader.read_line(&mut l).unwrap_or(0) == 0 || l.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = l.trim().split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                seen.lock().unwrap().push(HookRequest {
                    path,
                    headers,
                    body,
                });
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
            }
        });
        Self {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// Closes the listening socket (the port is free again when this returns).
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
            // Wakes the accept loop so it sees the flag.
            let _ = TcpStream::connect(("127.0.0.1", self.port));
            let _ = t.join();
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/streetwatch", self.port)
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for HookServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every notice to one police post by SMS through `kannel`, at once (no grouping delay).
pub fn sms_alert_table(kannel: &Kannel) -> String {
    format!(
        r#"
[alert]
[alert.route]
receiver = "post"
group_wait = "0s"
group_interval = "1s"
[alert.retry]
initial_backoff = "200ms"
max_backoff = "1s"
[[alert.receivers]]
name = "post"
[alert.receivers.sms]
url = "{url}"
username = "{KANNEL_USER}"
password = "{KANNEL_PASS}"
numbers = ["0901234567"]
strip_diacritics = true
"#,
        url = kannel.sendsms_url()
    )
}
