//! Object stores (`s3://`, `gs://`, `az://`) through the `object_store` crate that DataFusion
//! reads with: one store per bucket, configured from the usual environment variables plus
//! `storage_options`, registered in each DataFusion session so `read_parquet("s3://…")` works.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore, RetryConfig};
use url::Url;

use crate::error::{Error, Result};
use crate::spec::OptionValue;

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

/// Parses `url` and builds its store from the environment and `options` (`at`: the YAML key
/// the options come from, for errors). Returns the store and the key prefix inside the bucket.
pub fn connect(url: &str, options: &BTreeMap<String, OptionValue>, at: &str) -> Result<(Remote, StorePath)> {
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
            format!("`{at}.{key}` is not a {scheme} setting: {e}"),
            "use object_store's configuration keys, e.g. `endpoint`, `region`, `allow_http`, `access_key_id`",
        )
    };
    // Object stores retry failed requests for up to three minutes by default; a typo in an
    // endpoint should fail in seconds.
    let retry = RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(20), ..Default::default() };
    let store: Arc<dyn ObjectStore> = match scheme.as_str() {
        "s3" | "s3a" => {
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_url(base.as_str()).with_retry(retry);
            for (k, v) in options {
                b = b.with_config(k.to_ascii_lowercase().parse().map_err(|e| unknown(k, e))?, v.to_string());
            }
            Arc::new(b.build().map_err(|e| describe(e, url))?)
        }
        "gs" | "gcs" => {
            let mut b = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(format!("gs://{bucket}"))
                .with_retry(retry);
            for (k, v) in options {
                b = b.with_config(k.to_ascii_lowercase().parse().map_err(|e| unknown(k, e))?, v.to_string());
            }
            Arc::new(b.build().map_err(|e| describe(e, url))?)
        }
        _ => {
            let mut b =
                object_store::azure::MicrosoftAzureBuilder::from_env().with_url(base.as_str()).with_retry(retry);
            for (k, v) in options {
                b = b.with_config(k.to_ascii_lowercase().parse().map_err(|e| unknown(k, e))?, v.to_string());
            }
            Arc::new(b.build().map_err(|e| describe(e, url))?)
        }
    };
    Ok((Remote { base, store }, prefix))
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
