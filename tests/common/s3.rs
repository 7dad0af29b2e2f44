//! A moto S3 server on loopback for the object-store tests (`.ci/run` installs moto and sets
//! `PRETEXT_REQUIRE_S3=1`, so there these tests cannot skip), and the CLI run against it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed and reaped at drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Options for pipelines that reach an S3 server at `port` on loopback.
fn options_at(port: u16) -> String {
    format!("{{ endpoint: 'http://127.0.0.1:{port}', allow_http: true, region: us-east-1 }}")
}

/// A moto S3 server on a free loopback port, stopped at drop.
pub struct S3 {
    _child: Killed,
    pub port: u16,
}

impl S3 {
    /// Starts the server; `None` (test skipped) when moto is missing and CI does not require it.
    pub fn start(enforce_auth: bool) -> Option<S3> {
        let ready = Command::new("python3")
            .args(["-c", "import moto.server, flask, flask_cors"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ready {
            assert!(std::env::var_os("PRETEXT_REQUIRE_S3").is_none(), "moto[server] is required here but missing");
            eprintln!("skipped: python3 with moto[server] is not available (pip install 'moto[server]')");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if enforce_auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        }
        let child = cmd.spawn().unwrap();
        let s3 = S3 { _child: Killed(child), port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(s3)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A raw, unsigned request (moto accepts them without auth enforcement).
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let text = String::from_utf8_lossy(&out);
        let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body_at = out.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4).unwrap_or(out.len());
        (code, out[body_at..].to_vec())
    }

    pub fn create_bucket(&self, bucket: &str) {
        let (code, body) = self.request("PUT", &format!("/{bucket}"), b"");
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    }

    /// Uploads every file under `dir` to `bucket/prefix/…`.
    pub fn upload_dir(&self, dir: &Path, bucket: &str, prefix: &str) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(&p).unwrap() {
                let e = e.unwrap().path();
                if e.is_dir() {
                    stack.push(e);
                } else {
                    let rel = e.strip_prefix(dir).unwrap().to_string_lossy().replace('\\', "/");
                    let (code, body) =
                        self.request("PUT", &format!("/{bucket}/{prefix}/{rel}"), &std::fs::read(&e).unwrap());
                    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
                }
            }
        }
    }

    /// Reads an object back, signed (objects are private, so unsigned reads are refused).
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        use object_store::ObjectStoreExt;
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test-secret")
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let r = store.get(&object_store::path::Path::from(key)).await.ok()?;
            r.bytes().await.ok().map(|b| b.to_vec())
        })
    }

    /// The keys under `prefix`, sorted.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (code, body) = self.request("GET", &format!("/{bucket}?list-type=2&prefix={prefix}"), b"");
        assert_eq!(code, 200);
        let text = String::from_utf8_lossy(&body).to_string();
        let mut keys: Vec<String> =
            text.split("<Key>").skip(1).filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string())).collect();
        keys.sort();
        keys
    }

    /// The parts of the finished export at `lake/<prefix>`, checking that nothing but the
    /// dataset is visible there.
    pub fn finished_parts(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let keys = self.keys("lake", &format!("{prefix}/"));
        assert!(keys.iter().all(|k| !k.contains(".pretext-partial")), "{keys:?}");
        assert!(keys.contains(&format!("{prefix}/_manifest.json")), "{keys:?}");
        keys.iter()
            .filter_map(|k| {
                k.strip_prefix(&format!("{prefix}/"))
                    .filter(|n| n.starts_with("part-"))
                    .map(|n| (n.to_string(), self.get("lake", k).unwrap()))
            })
            .collect()
    }

    /// Options for pipelines reading or writing this server.
    pub fn options(&self) -> String {
        options_at(self.port)
    }
}

/// Runs the CLI with test credentials in the environment.
pub fn pretext_s3(args: &[&str], cwd: &Path, key: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(args)
        .current_dir(cwd)
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("RANK")
        .env_remove("WORLD_SIZE")
        .output()
        .unwrap()
}

/// The fault-injecting proxy (`tests/support/fault_proxy.py`) in front of a server, stopped at
/// drop. `args` are the proxy's own (`--seed 3 --reset-get 0.15`, …).
pub struct Proxy {
    _child: Killed,
    pub port: u16,
}

impl Proxy {
    pub fn start(upstream: &S3, args: &[&str]) -> Proxy {
        use std::io::BufRead;
        let script = super::repo().join("tests/support/fault_proxy.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--upstream", &format!("127.0.0.1:{}", upstream.port)])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("listening on ").and_then(|p| p.parse().ok());
        let port = port.unwrap_or_else(|| panic!("the fault proxy did not start: {line:?}"));
        Proxy { _child: Killed(child), port }
    }

    /// Options for pipelines that reach the server through this proxy.
    pub fn options(&self) -> String {
        options_at(self.port)
    }

    /// What the proxy injected so far: counts by kind (`get_reset`, `status_503_PUT`, …).
    pub fn injected(&self) -> std::collections::BTreeMap<String, u64> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.write_all(b"GET /__faults HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("{}");
        serde_json::from_str(body).unwrap()
    }
}
