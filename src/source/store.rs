//! Object stores (`s3://`, `gs://`, `az://`) through the `object_store` crate that DataFusion
//! reads with: one store per bucket, configured from the usual environment variables plus
//! `storage_options`, registered in each DataFusion session so `read_parquet("s3://…")` works.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{BackoffConfig, ObjectMeta, ObjectStore, RetryConfig};
use url::Url;

use crate::error::{Error, GaveUp, Result};
use crate::spec::{OptionValue, RetrySpec};

mod patient;
use patient::{Patient, Shared};

pub use crate::spec::is_remote;

/// One bucket (or container) and the store that reads it.
#[derive(Clone)]
pub struct Remote {
    /// `scheme://bucket`: what DataFusion registers the store under.
    pub base: Url,
    pub store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.base)
    }
}

impl Remote {
    /// The full URL of `key` in this bucket.
    pub fn url_of(&self, key: &StorePath) -> String {
        format!("{}/{}", self.base.as_str().trim_end_matches('/'), key)
    }
}

/// Parses `url` and builds its store from the environment and `options`, retrying as `retry`
/// says (`at`: the YAML section the settings come from, e.g. `source` or `export`, for
/// errors). Returns the store and the key prefix inside the bucket.
pub fn connect(
    url: &str,
    options: &BTreeMap<String, OptionValue>,
    retry: &RetrySpec,
    at: &str,
) -> Result<(Remote, StorePath)> {
    let parsed = Url::parse(url).map_err(|e| {
        Error::data_hint(format!("`{url}` is not a valid URL: {e}"), "write it as `s3://bucket/prefix`")
    })?;
    let bucket = parsed.host_str().unwrap_or_default().to_string();
    if bucket.is_empty() {
        return Err(Error::data_hint(
            format!("`{url}` names no bucket"),
            "write it as `s3://bucket/prefix` (gs://bucket/…, az://container/…)",
        ));
    }
    let scheme = parsed.scheme().to_ascii_lowercase();
    let base = Url::parse(&format!("{scheme}://{bucket}")).map_err(Error::internal)?;
    let prefix = StorePath::from_url_path(parsed.path()).map_err(|e| {
        Error::data_hint(
            format!("`{url}` is not a valid object key: {e}"),
            "remove `..`, empty segments and control characters",
        )
    })?;
    let unknown = |key: &str, e: object_store::Error| {
        Error::data_hint(
            format!("`{at}.storage_options.{key}` is not a {scheme} setting: {e}"),
            "use object_store's configuration keys, e.g. `endpoint`, `region`, `allow_http`, `access_key_id`",
        )
    };
    // Two clients from one configuration: `full` retries as `retry` says; `probe` does not retry
    // at all, and asks once whether anything answers at the endpoint (see `Patient::reachable`).
    let full = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_secs_f64(retry.backoff_s),
            max_backoff: Duration::from_secs_f64(retry.max_backoff_s),
            base: 2.0,
        },
        max_retries: retry.max_retries as usize,
        retry_timeout: Duration::from_secs_f64(retry.timeout_s),
    };
    let probe = RetryConfig { max_retries: 0, ..full.clone() };
    let (full, probe): (Arc<dyn ObjectStore>, Arc<dyn ObjectStore>) = match scheme.as_str() {
        "s3" | "s3a" => {
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(base.as_str());
            for (k, v) in options {
                b = b.with_config(k.to_ascii_lowercase().parse().map_err(|e| unknown(k, e))?, v.to_string());
            }
            let build = |r: RetryConfig| b.clone().with_retry(r).build().map_err(|e| describe(e, url));
            (Arc::new(build(full)?), Arc::new(build(probe)?))
        }
        "gs" | "gcs" => {
            let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env().with_url(format!("gs://{bucket}"));
            for (k, v) in options {
                b = b.with_config(k.to_ascii_lowercase().parse().map_err(|e| unknown(k, e))?, v.to_string());
            }
            let build = |r: RetryConfig| b.clone().with_retry(r).build().map_err(|e| describe(e, url));
            (Arc::new(build(full)?), Arc::new(build(probe)?))
        }
        _ => {
            let mut b = object_store::azure::MicrosoftAzureBuilder::from_env().with_url(base.as_str());
            for (k, v) in options {
                b = b.with_config(k.to_ascii_lowercase().parse().map_err(|e| unknown(k, e))?, v.to_string());
            }
            let build = |r: RetryConfig| b.clone().with_retry(r).build().map_err(|e| describe(e, url));
            (Arc::new(build(full)?), Arc::new(build(probe)?))
        }
    };
    let store = Patient(Arc::new(Shared {
        full,
        probe,
        probe_at: prefix.clone(),
        probed: tokio::sync::OnceCell::new(),
        retry: *retry,
        base: base.as_str().trim_end_matches('/').to_string(),
        at: format!("{at}.retry"),
    }));
    Ok((Remote { base, store: Arc::new(store) }, prefix))
}

/// Every object under `prefix`, sorted by key.
pub async fn list(remote: &Remote, prefix: &StorePath, url: &str) -> Result<Vec<ObjectMeta>> {
    let mut objects: Vec<ObjectMeta> =
        remote.store.list(Some(prefix)).try_collect().await.map_err(|e| describe(e, url))?;
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(objects)
}

/// An object-store failure, said in terms of what to check.
pub fn describe(e: object_store::Error, url: &str) -> Error {
    use object_store::Error as E;
    if let Some(g) = GaveUp::find(&e) {
        return g.clone().into();
    }
    let mut text = e.to_string();
    // S3's XML error body: keep its code and message, not the request ids.
    if let Some(start) = text.find("<?xml") {
        let tag = |t: &str| {
            let open = format!("<{t}>");
            let s = text.find(&open)? + open.len();
            let e = text[s..].find(&format!("</{t}>"))? + s;
            Some(text[s..e].to_string())
        };
        let brief = match (tag("Code"), tag("Message")) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c,
            _ => String::new(),
        };
        text = format!("{}{brief}", &text[..start]);
    }
    let lower = text.to_ascii_lowercase();
    let hint = match &e {
        E::NotFound { .. } => "check the bucket and the prefix",
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            "check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, GOOGLE_SERVICE_ACCOUNT, AZURE_STORAGE_ACCOUNT_KEY) and the bucket's permissions"
        }
        _ if lower.contains("nosuchbucket") || lower.contains("bucket does not exist") => {
            "the bucket does not exist: check its name, and `endpoint` / `region` in `storage_options`"
        }
        _ if lower.contains("accessdenied")
            || lower.contains("invalidaccesskeyid")
            || lower.contains("signaturedoesnotmatch")
            || lower.contains("403") =>
        {
            "the store refused the credentials: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or `storage_options`) and the bucket's permissions"
        }
        _ if lower.contains("connect")
            || lower.contains("dns")
            || lower.contains("timed out")
            || lower.contains("error sending request") =>
        {
            "the store did not answer: check `endpoint` (and `allow_http: true` for a plain-http server) in `storage_options`, and the network"
        }
        _ if lower.contains("missing") && (lower.contains("region") || lower.contains("credential")) => {
            "set the region and credentials in the environment or in `storage_options`"
        }
        _ => "check the URL, `storage_options` and the credentials",
    };
    Error::data_hint(format!("object store `{url}`: {text}"), hint)
}
