//! Where an export goes: a local directory, or a prefix in an object store.
//!
//! Both keep the same layout and the same promise. While the export runs, finished parts and
//! `_progress.json` live under the hidden `.pretext-partial/`. At the end a local export is
//! published by renames: staging, complete with its manifest, moves beside the directory and
//! then replaces it, so a reader listing the output as a dataset sees nothing or everything, and
//! a run stopped between the two renames is completed by the next. (A directory that holds other
//! files gets its parts moved one by one, the manifest last.) In an object store, a part is
//! written locally (the spool), uploaded in one `PUT` (an object appears only once complete),
//! moved by a server-side copy, and `_manifest.json` is written last.

use std::path::{Path, PathBuf};

use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutPayload};

use super::manifest::{Part, Progress, MANIFEST, PROGRESS};
use crate::error::{Error, Result};
use crate::source::{describe_store_error, Remote};
use crate::spec::OptionValue;

/// The hidden directory holding an export in progress.
pub const STAGING: &str = ".pretext-partial";

/// What the output holds before an export starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputState {
    /// Nothing yet; `created` when the local directory does not exist (removed again on failure).
    Fresh { created: bool },
    /// An interrupted export to continue (`--resume`).
    Interrupted,
    /// A finished export (`--resume` on it is a no-op once its fingerprint matches).
    Finished,
}

/// An export's destination.
#[derive(Debug, Clone)]
pub enum Target {
    Local(PathBuf),
    Remote(RemoteDir),
}

/// A prefix in an object store, and the local spool that parts are written to before upload.
#[derive(Debug, Clone)]
pub struct RemoteDir {
    pub remote: Remote,
    pub prefix: StorePath,
    pub url: String,
    pub spool: PathBuf,
}

impl RemoteDir {
    fn key(&self, parts: &[&str]) -> StorePath {
        parts.iter().fold(self.prefix.clone(), |p, s| p.join(*s))
    }

    async fn put(&self, key: &StorePath, bytes: Vec<u8>) -> Result<()> {
        self.remote
            .store
            .put(key, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| describe_store_error(e, &self.remote.url_of(key)))
    }

    async fn get(&self, key: &StorePath) -> Result<Option<Vec<u8>>> {
        match self.remote.store.get(key).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(|e| describe_store_error(e, &self.remote.url_of(key)))?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(describe_store_error(e, &self.remote.url_of(key))),
        }
    }

    async fn size(&self, key: &StorePath) -> Result<Option<u64>> {
        match self.remote.store.head(key).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(describe_store_error(e, &self.remote.url_of(key))),
        }
    }
}

impl Target {
    /// The destination `path` names: an `s3://` (`gs://`, `az://`) URL configured by `options`,
    /// or a local directory.
    pub fn new(
        path: &Path,
        options: &std::collections::BTreeMap<String, OptionValue>,
        retry: &crate::spec::RetrySpec,
    ) -> Result<Target> {
        let text = path.to_string_lossy().to_string();
        if !crate::source::is_remote(&text) {
            return Ok(Target::Local(path.to_path_buf()));
        }
        let (remote, prefix) = crate::source::connect_store(&text, options, retry, "export")?;
        let tag = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
        let spool = std::env::temp_dir().join(format!("pretext-spool-{tag:016x}-{}", std::process::id()));
        Ok(Target::Remote(RemoteDir { remote, prefix, url: text.trim_end_matches('/').to_string(), spool }))
    }

    /// The destination as the user wrote it, for messages.
    pub fn name(&self) -> String {
        match self {
            Target::Local(d) => d.display().to_string(),
            Target::Remote(r) => r.url.clone(),
        }
    }

    /// Locks the destination against a second export into it: the directory itself, or for a
    /// prefix in an object store a local stand-in named by its URL (which guards against
    /// exports from this machine only; an object store has no lock to take).
    pub fn lock(&self) -> Result<crate::ground::lock::DirLock> {
        let dir = match self {
            Target::Local(d) => d.clone(),
            Target::Remote(r) => std::env::temp_dir()
                .join(format!("pretext-export-{:016x}", xxhash_rust::xxh3::xxh3_64(r.url.as_bytes()))),
        };
        crate::ground::lock::DirLock::acquire(
            &dir,
            &format!("`pretext export` into `{}`", self.name()),
            "wait for that export to finish (or stop it and continue it with `--resume`), or export elsewhere with `--out DIR`",
        )
    }

    /// The local directory parts are written into: the staging directory, or the spool.
    pub fn work_dir(&self) -> PathBuf {
        match self {
            Target::Local(d) => d.join(STAGING),
            Target::Remote(r) => r.spool.clone(),
        }
    }

    /// Where a trained tokenizer is saved (and found again on `--resume`).
    pub fn tokenizer_dir(&self) -> PathBuf {
        match self {
            Target::Local(d) => d.clone(),
            Target::Remote(r) => r.spool.clone(),
        }
    }

    /// Checks the destination before anything is built: refuses a file, a finished or
    /// interrupted export without `--resume`, and a destination holding other data.
    pub async fn state(&self, resume: bool) -> Result<OutputState> {
        let (finished, interrupted, other) = match self {
            Target::Local(dir) => {
                finish_publish(dir)?;
                if dir.is_file() {
                    return Err(Error::env_hint(
                        format!("the output `{}` is a file, not a directory", dir.display()),
                        "choose another `export.path` or `--out DIR`",
                    ));
                }
                if !dir.exists() {
                    return Ok(OutputState::Fresh { created: true });
                }
                let finished = dir.join(MANIFEST).is_file();
                let interrupted = dir.join(STAGING).join(PROGRESS).is_file();
                (finished, interrupted, !finished && !interrupted && dir_has_data(dir)?)
            }
            Target::Remote(r) => {
                let objects = crate::source::list_store(&r.remote, &r.prefix, &r.url).await?;
                let rel = |o: &object_store::ObjectMeta| {
                    o.location
                        .as_ref()
                        .strip_prefix(r.prefix.as_ref())
                        .unwrap_or("")
                        .trim_start_matches('/')
                        .to_string()
                };
                let names: Vec<String> = objects.iter().map(rel).collect();
                let finished = names.iter().any(|n| n == MANIFEST);
                let interrupted = names.iter().any(|n| *n == format!("{STAGING}/{PROGRESS}"));
                let other = names.iter().any(|n| !n.starts_with(STAGING) && n != "tokenizer.json");
                (finished, interrupted, !finished && !interrupted && other)
            }
        };
        let name = self.name();
        match (finished, interrupted, resume) {
            (true, _, true) => Ok(OutputState::Finished),
            (true, _, false) => Err(Error::env_hint(
                format!("`{name}` already holds a finished export"),
                "delete it, or export to another directory with `--out DIR`",
            )),
            (false, true, true) => Ok(OutputState::Interrupted),
            (false, true, false) => Err(Error::env_hint(
                format!("`{name}` holds an interrupted export"),
                "continue it with `--resume`, or delete it",
            )),
            (false, false, _) if other => Err(Error::env_hint(
                format!("the output `{name}` is not empty"),
                "export into a new or empty directory or prefix (`--out DIR`)",
            )),
            (false, false, _) => Ok(OutputState::Fresh { created: false }),
        }
    }

    /// The finished export's manifest.
    pub async fn manifest(&self) -> Result<serde_json::Value> {
        let bytes = match self {
            Target::Local(d) => std::fs::read(d.join(MANIFEST)).ok(),
            Target::Remote(r) => r.get(&r.key(&[MANIFEST])).await?,
        };
        Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default())
    }

    /// The interrupted export's progress. For an object store this also fetches a trained
    /// `tokenizer.json` into the spool, so the resumed run tokenizes the same way.
    pub async fn progress(&self) -> Result<Option<Progress>> {
        match self {
            Target::Local(d) => Progress::read(&d.join(STAGING)),
            Target::Remote(r) => {
                std::fs::create_dir_all(&r.spool).map_err(|e| Error::io(&r.spool, "create directory", e))?;
                if let Some(tok) = r.get(&r.key(&["tokenizer.json"])).await? {
                    let p = r.spool.join("tokenizer.json");
                    std::fs::write(&p, tok).map_err(|e| Error::io(&p, "write", e))?;
                }
                match r.get(&r.key(&[STAGING, PROGRESS])).await? {
                    None => Ok(None),
                    Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                        Error::env_hint(
                            format!("`{}/{STAGING}/{PROGRESS}` is damaged: {e}", r.url),
                            "delete the output prefix and export again",
                        )
                    }),
                }
            }
        }
    }

    /// Makes the working directory and removes leftovers of a crashed run.
    pub fn prepare_work_dir(&self) -> Result<()> {
        let dir = self.work_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "create directory", e))?;
        for e in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, "list", e))?.filter_map(|e| e.ok()) {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with('.') && n.ends_with(".tmp") {
                std::fs::remove_file(e.path()).map_err(|err| Error::io(&e.path(), "remove", err))?;
            }
        }
        Ok(())
    }

    pub async fn save_progress(&self, progress: &Progress) -> Result<()> {
        match self {
            Target::Local(d) => progress.write(&d.join(STAGING)),
            Target::Remote(r) => {
                let bytes = serde_json::to_vec_pretty(progress).map_err(Error::internal)?;
                r.put(&r.key(&[STAGING, PROGRESS]), bytes).await
            }
        }
    }

    /// Files a finished part written at `tmp` (whose bytes are `bytes`) as `name` in staging.
    pub async fn store_part(&self, name: &str, tmp: &Path) -> Result<()> {
        match self {
            Target::Local(d) => {
                let fin = d.join(STAGING).join(name);
                std::fs::rename(tmp, &fin).map_err(|e| Error::io(&fin, "rename into", e))
            }
            Target::Remote(r) => {
                let bytes = std::fs::read(tmp).map_err(|e| Error::io(tmp, "read back", e))?;
                r.put(&r.key(&[STAGING, name]), bytes).await?;
                std::fs::remove_file(tmp).map_err(|e| Error::io(tmp, "remove", e))
            }
        }
    }

    /// Checks the finished parts of an interrupted export: each in staging or, if a crash hit
    /// the final moves, already published. Local parts are hashed; object-store parts are
    /// checked by size (hashing them would mean downloading them).
    pub async fn verify_parts(&self, parts: &[Part]) -> Result<()> {
        for p in parts {
            let ok = match self {
                Target::Local(d) => {
                    let path = [d.join(STAGING).join(&p.file), d.join(&p.file)].into_iter().find(|c| c.is_file());
                    path.as_ref()
                        .and_then(|path| hash_file(path).ok())
                        .is_some_and(|(bytes, xxh3)| bytes == p.bytes && format!("{xxh3:016x}") == p.xxh3)
                }
                Target::Remote(r) => {
                    let staged = r.size(&r.key(&[STAGING, &p.file])).await?;
                    let published = match staged {
                        Some(_) => None,
                        None => r.size(&r.key(&[&p.file])).await?,
                    };
                    staged.or(published) == Some(p.bytes)
                }
            };
            if !ok {
                return Err(Error::env_hint(
                    format!("part `{}` of the interrupted export in `{}` is missing or changed", p.file, self.name()),
                    "delete the output and export again",
                ));
            }
        }
        Ok(())
    }

    /// Moves the parts out of staging, writes the manifest, then removes staging.
    pub async fn publish(&self, parts: &[Part], manifest: &[u8]) -> Result<()> {
        match self {
            Target::Local(d) => {
                if publish_by_rename(d, manifest)? {
                    return Ok(());
                }
                let staging = d.join(STAGING);
                for p in parts {
                    let from = staging.join(&p.file);
                    if from.is_file() {
                        let to = d.join(&p.file);
                        std::fs::rename(&from, &to).map_err(|e| Error::io(&to, "rename into", e))?;
                    }
                }
                crate::ground::durable::write_atomic(&d.join(MANIFEST), manifest)?;
                std::fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, "remove", e))
            }
            Target::Remote(r) => {
                let store = &r.remote.store;
                for p in parts {
                    let (from, to) = (r.key(&[STAGING, &p.file]), r.key(&[&p.file]));
                    match store.copy(&from, &to).await {
                        Ok(()) => {
                            store.delete(&from).await.map_err(|e| describe_store_error(e, &r.remote.url_of(&from)))?
                        }
                        // Published by a run that crashed after the copy.
                        Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(describe_store_error(e, &r.remote.url_of(&from))),
                    }
                }
                let tok = r.spool.join("tokenizer.json");
                if tok.is_file() {
                    let bytes = std::fs::read(&tok).map_err(|e| Error::io(&tok, "read", e))?;
                    r.put(&r.key(&["tokenizer.json"]), bytes).await?;
                }
                r.put(&r.key(&[MANIFEST]), manifest.to_vec()).await?;
                let progress = r.key(&[STAGING, PROGRESS]);
                store.delete(&progress).await.map_err(|e| describe_store_error(e, &r.remote.url_of(&progress)))?;
                let _ = std::fs::remove_dir_all(&r.spool);
                Ok(())
            }
        }
    }

    /// After a failure with nothing worth resuming: leaves the destination as it was.
    pub async fn discard(&self, state: &OutputState) {
        match self {
            Target::Local(d) => {
                let _ = std::fs::remove_dir_all(d.join(STAGING));
                if *state == (OutputState::Fresh { created: true }) {
                    let _ = std::fs::remove_dir_all(d);
                }
            }
            Target::Remote(r) => {
                let _ = r.remote.store.delete(&r.key(&[STAGING, PROGRESS])).await;
                let _ = std::fs::remove_dir_all(&r.spool);
            }
        }
    }

    /// Where the kept parts of a failed export are, for the message that says to resume.
    pub fn staging_name(&self) -> String {
        match self {
            Target::Local(d) => d.join(STAGING).display().to_string(),
            Target::Remote(r) => format!("{}/{STAGING}", r.url),
        }
    }
}

/// The output directory as `parent/name` (absolute, without a trailing `/` or `.`), and where a
/// finished local export waits, complete, for the rename that publishes it: beside it, like its
/// lock. `None` where it cannot be renamed: no name of its own (`/`), or the working directory
/// or one of its parents.
fn ready_paths(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let abs = std::path::absolute(dir).ok()?;
    let (parent, name) = (abs.parent()?, abs.file_name()?);
    if name == "." || name == ".." {
        return None;
    }
    let out = parent.join(name);
    let cwd = std::env::current_dir().ok()?;
    if std::fs::canonicalize(&out).is_ok_and(|c| cwd.starts_with(c)) {
        return None;
    }
    let ready = parent.join(format!(".{}.pretext-ready", name.to_string_lossy()));
    Some((out, ready))
}

/// The names in `dir`.
fn names_in(dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "list", e))?;
    Ok(entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).collect())
}

/// Publishes a local export in one step, so that a reader listing the directory sees nothing or
/// everything even while the parts move: staging gets the manifest and a copy of the tokenizer,
/// leaves the directory for its ready place beside it, and is renamed over the then empty
/// directory. Returns `false`, with staging as it was, where that cannot be done (the output is
/// a symbolic link, the working directory, or holds other files; a rename fails); the parts are
/// then moved one by one.
fn publish_by_rename(dir: &Path, manifest: &[u8]) -> Result<bool> {
    let staging = dir.join(STAGING);
    let Some((out, ready)) = ready_paths(dir) else { return Ok(false) };
    let linked = std::fs::symlink_metadata(&out).map(|m| m.file_type().is_symlink()).unwrap_or(true);
    if linked || ready.exists() || names_in(&out)?.iter().any(|n| n != STAGING && n != "tokenizer.json") {
        return Ok(false);
    }
    // Durable before the renames: after a crash, the manifest marks a ready export complete.
    let tok = out.join("tokenizer.json");
    if tok.is_file() {
        let bytes = std::fs::read(&tok).map_err(|e| Error::io(&tok, "read", e))?;
        crate::ground::durable::write_synced(&staging.join("tokenizer.json"), &bytes)?;
    }
    crate::ground::durable::write_synced(&staging.join(MANIFEST), manifest)?;
    crate::ground::durable::sync_dir(&staging)?;
    let undo = |why: std::io::Error| {
        let _ = std::fs::remove_file(staging.join(MANIFEST));
        let _ = std::fs::remove_file(staging.join("tokenizer.json"));
        tracing::debug!("publishing by rename is not possible: {why}");
        Ok(false)
    };
    if let Err(e) = std::fs::rename(&staging, &ready) {
        // Another file system, say.
        return undo(e);
    }
    if tok.is_file() {
        std::fs::remove_file(&tok).map_err(|e| Error::io(&tok, "remove", e))?;
    }
    if let Err(e) = std::fs::rename(&ready, &out) {
        // Put everything back as it was.
        std::fs::rename(&ready, &staging).map_err(|e| Error::io(&staging, "restore", e))?;
        if staging.join("tokenizer.json").is_file() {
            std::fs::copy(staging.join("tokenizer.json"), &tok).map_err(|e| Error::io(&tok, "restore", e))?;
        }
        return undo(e);
    }
    finish_publish(dir)?;
    Ok(true)
}

/// Completes a publish by rename that stopped half way (see [`publish_by_rename`]): the ready
/// export replaces the output directory, which holds at most the tokenizer copied into it, and
/// the published directory loses the progress file it carried.
fn finish_publish(dir: &Path) -> Result<()> {
    let Some((out, ready)) = ready_paths(dir) else { return Ok(()) };
    if ready.join(MANIFEST).is_file() {
        if out.exists() {
            for n in names_in(&out)? {
                if n != "tokenizer.json" || !ready.join(&n).is_file() {
                    return Err(Error::env_hint(
                        format!(
                            "`{}` holds a finished export ready to publish, and `{}` holds `{n}`",
                            ready.display(),
                            out.display()
                        ),
                        format!("move `{n}` away and run again, or delete `{}`", ready.display()),
                    ));
                }
                let p = out.join(&n);
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, "remove", e))?;
            }
        }
        std::fs::rename(&ready, &out).map_err(|e| Error::io(&out, "publish the export into", e))?;
        if let Some(parent) = out.parent() {
            crate::ground::durable::sync_dir(parent)?;
        }
    }
    let progress = out.join(PROGRESS);
    if out.join(MANIFEST).is_file() && progress.is_file() {
        std::fs::remove_file(&progress).map_err(|e| Error::io(&progress, "remove", e))?;
    }
    Ok(())
}

fn dir_has_data(dir: &Path) -> Result<bool> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "list", e))?;
    Ok(entries.filter_map(|e| e.ok()).any(|e| {
        let n = e.file_name().to_string_lossy().to_string();
        n != STAGING && n != "tokenizer.json" && !(n.starts_with('.') && n.ends_with(".tmp"))
    }))
}

/// Size and xxh3-64 of a file, read a mebibyte at a time.
fn hash_file(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let (mut hash, mut bytes) = (xxhash_rust::xxh3::Xxh3::new(), 0u64);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf)? {
            0 => return Ok((bytes, hash.digest())),
            n => {
                hash.update(&buf[..n]);
                bytes += n as u64;
            }
        }
    }
}
