//! Errors grouped by who must act: the user's pipeline file, the user's data, the environment
//! (files, disks, permissions), or a bug in pretext. `main` maps them to exit codes: 1 for the
//! first three, 2 for bugs.

use std::fmt;

/// Where a problem in a pipeline is: a 1-based line and column of the file, or a `--set`
/// override given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pos {
    /// A position inside the pipeline file.
    File { line: usize, col: usize },
    /// A value that came from `--set <text>`.
    Override(String),
}

/// One located problem.
#[derive(Debug, Clone)]
pub struct SpecError {
    pub file: String,
    pub pos: Pos,
    /// Dotted YAML path (`task.mlm.mask_prob`), empty for the whole file.
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pos {
            Pos::File { line, col } => write!(f, "error: {}:{line}:{col}: ", self.file)?,
            Pos::Override(text) => write!(f, "error: --set {text}: ")?,
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// Every problem found in one pipeline file.
#[derive(Debug, Clone)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        if self.0.len() > 1 {
            let file = &self.0[0].file;
            write!(f, "\n{} problems in `{file}`", self.0.len())?;
        }
        Ok(())
    }
}

impl From<SpecErrors> for Error {
    fn from(e: SpecErrors) -> Self {
        Error::Spec(e)
    }
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error pretext reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline file (or a `--set` override) is wrong: every problem found, with positions.
    #[error("{0}")]
    Spec(SpecErrors),
    /// The data the pipeline reads is wrong or unreadable (missing column, corrupt file, ...).
    #[error("{message}{}", hint_suffix(.hint))]
    Data { message: String, hint: Option<String> },
    /// The environment refused something (I/O, permissions, a file that exists already, ...).
    #[error("{message}{}", hint_suffix(.hint))]
    Env { message: String, hint: Option<String> },
    /// A signal stopped the command at a safe point (see `crate::ground::stop`).
    #[error("{message}")]
    Stopped { signal: i32, message: String },
    /// A broken invariant inside pretext.
    #[error("internal error: {0}\n  please report this at the pretext issue tracker with the pipeline file")]
    Internal(String),
}

/// An object-store request that kept failing for a passing reason (a busy server, a reset, a
/// timeout) until its retry budget ran out. It travels as the source of the `object_store`,
/// Parquet, Arrow or DataFusion error that carries it, so the reader that gave up on a file
/// does not call the file unreadable: every conversion into [`Error`] looks for it first.
#[derive(Debug, Clone)]
pub struct GaveUp {
    pub message: String,
    pub hint: String,
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for GaveUp {}

impl GaveUp {
    /// The [`GaveUp`] in `e`'s chain of sources, if any.
    pub fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a GaveUp> {
        let mut at = Some(e);
        while let Some(e) = at {
            if let Some(g) = e.downcast_ref::<GaveUp>() {
                return Some(g);
            }
            at = e.source();
        }
        None
    }
}

impl From<GaveUp> for Error {
    fn from(g: GaveUp) -> Self {
        Error::Env { message: g.message, hint: Some(g.hint) }
    }
}

/// What to do about an I/O error the user can fix.
pub fn io_hint(err: &std::io::Error) -> Option<&'static str> {
    use std::io::ErrorKind as K;
    match err.kind() {
        K::PermissionDenied => Some("check the permissions: pretext needs to read (and, for directories, enter) what it reads, and to write where it writes"),
        K::StorageFull | K::FileTooLarge | K::QuotaExceeded => Some("free space on that file system, or choose another output, then run again with `--resume` (finished parts and checkpoints are kept)"),
        K::ReadOnlyFilesystem => Some("the file system is read-only: choose another output"),
        _ => None,
    }
}

fn hint_suffix(hint: &Option<String>) -> String {
    match hint {
        Some(h) => format!("\n  hint: {h}"),
        None => String::new(),
    }
}

impl Error {
    /// A problem with the user's data.
    pub(crate) fn data(message: impl fmt::Display) -> Self {
        Error::Data { message: message.to_string(), hint: None }
    }

    /// A problem with the user's data, and what to do about it.
    pub(crate) fn data_hint(message: impl fmt::Display, hint: impl fmt::Display) -> Self {
        Error::Data { message: message.to_string(), hint: Some(hint.to_string()) }
    }

    /// A problem with the environment.
    pub(crate) fn env(message: impl fmt::Display) -> Self {
        Error::Env { message: message.to_string(), hint: None }
    }

    /// A problem with the environment, and what to do about it.
    pub(crate) fn env_hint(message: impl fmt::Display, hint: impl fmt::Display) -> Self {
        Error::Env { message: message.to_string(), hint: Some(hint.to_string()) }
    }

    /// An I/O failure on `path`, with what to do for the failures a user can fix.
    pub(crate) fn io(path: &std::path::Path, action: &str, err: std::io::Error) -> Self {
        let message = format!("cannot {action} `{}`: {err}", path.display());
        match io_hint(&err) {
            Some(hint) => Error::env_hint(message, hint),
            None => Error::env(message),
        }
    }

    /// A broken invariant.
    pub(crate) fn internal(message: impl fmt::Display) -> Self {
        Error::Internal(message.to_string())
    }

    /// Process exit code: 1 when the user must act, 2 for bugs, 128 + the signal's number after
    /// a graceful stop.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Internal(_) => 2,
            Error::Stopped { signal, .. } => 128 + signal,
            _ => 1,
        }
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(err: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as D;
        if let Some(g) = GaveUp::find(&err) {
            return g.clone().into();
        }
        match err {
            D::External(e) => match e.downcast::<Error>() {
                Ok(inner) => *inner,
                Err(e) => Error::data(e),
            },
            D::Context(ctx, inner) => match Error::from(*inner) {
                Error::Data { message, hint } => Error::Data { message: format!("{ctx}: {message}"), hint },
                other => other,
            },
            D::Internal(m) => Error::Internal(m),
            D::IoError(e) => Error::env(e),
            other => Error::data(other),
        }
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(err: arrow::error::ArrowError) -> Self {
        if let Some(g) = GaveUp::find(&err) {
            return g.clone().into();
        }
        match err {
            arrow::error::ArrowError::ExternalError(e) => match e.downcast::<Error>() {
                Ok(inner) => *inner,
                Err(e) => Error::data(e),
            },
            other => Error::data(other),
        }
    }
}

impl From<parquet::errors::ParquetError> for Error {
    /// Worded as DataFusion words a Parquet error, as every reader of a file reports it.
    fn from(err: parquet::errors::ParquetError) -> Self {
        if let Some(g) = GaveUp::find(&err) {
            return g.clone().into();
        }
        Error::data(format!("Parquet error: {err}"))
    }
}

impl From<Error> for datafusion::error::DataFusionError {
    fn from(err: Error) -> Self {
        datafusion::error::DataFusionError::External(Box::new(err))
    }
}
