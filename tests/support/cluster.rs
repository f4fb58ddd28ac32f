//! `streetwatch node` as a child process, for the cluster tests.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use streetwatch::cluster::{Resources, subject_token};

use super::ChildGuard;

/// The tables every process of a test cluster shares: data folder, a viewer `token` for `/api/cameras`,
/// and `[cluster]` on `nats_url` with `prefix`, `lease_seconds` and a node capacity of 10.
pub fn config_head(
    data_dir: &Path,
    nats_url: &str,
    prefix: &str,
    lease_seconds: u64,
    token: &str,
) -> String {
    format!(
        r#"
[runtime]
data_dir = {data_dir:?}
workers = 1

[serve]
listen = "127.0.0.1:0"
[[serve.tokens]]
name = "viewer"
role = "viewer"
token = "{token}"

[cluster]
nats = "{nats_url}"
prefix = "{prefix}"
lease_seconds = {lease_seconds}
capacity = 10
"#
    )
}

/// A running `streetwatch node`: its page (for its own `/api/cameras`) and its log.
pub struct Node {
    pub name: String,
    pub child: ChildGuard,
    pub page: String,
    pub log: PathBuf,
    /// A viewer token of the configuration's `[serve]`.
    token: String,
}

impl Node {
    /// Starts `streetwatch node --config config --name name`, logging to `dir/{name}.log`, and waits
    /// until it says it runs.
    pub fn start(config: &Path, name: &str, dir: &Path, token: &str) -> Node {
        let log = dir.join(format!("{name}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_streetwatch"))
            .args(["node", "--config"])
            .arg(config)
            .args(["--name", name])
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn streetwatch node");
        let stdout = child.stdout.take().unwrap();
        let mut page = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(url) = line.strip_prefix("streetwatch: page at ") {
                page = url.trim_end_matches('/').to_string();
            }
            if line.starts_with("streetwatch node ") {
                break;
            }
        }
        assert!(
            !page.is_empty(),
            "{name} did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Node {
            name: name.into(),
            child: ChildGuard(child),
            page,
            log,
            token: token.into(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(n).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// The node's running cameras and their state, from its `/api/cameras` (empty when it does not answer).
    pub async fn cameras(&self, http: &reqwest::Client) -> BTreeMap<String, String> {
        let Ok(response) = http
            .get(format!("{}/api/cameras", self.page))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(5))
            .send()
            .await
        else {
            return BTreeMap::new();
        };
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        body["cameras"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["id"].as_str().unwrap_or_default().to_string(),
                    c["state"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// SIGKILL: no goodbye, its leases and records left to expire.
    pub fn kill(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) {
        // SAFETY: a plain kill(2) of our own child.
        unsafe { libc::kill(self.child.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                assert!(status.success(), "{}: {status}\n{}", self.name, self.log());
                return;
            }
            assert!(Instant::now() < deadline, "{} did not stop", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Each camera's holder in the leases bucket (absent: free).
pub async fn holders(res: &Resources, cameras: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for id in cameras {
        if let Ok(Some(e)) = res.leases.entry(subject_token(id)).await
            && e.operation == async_nats::jetstream::kv::Operation::Put
        {
            out.insert(id.clone(), String::from_utf8_lossy(&e.value).into_owned());
        }
    }
    out
}
