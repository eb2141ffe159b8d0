//! Filters and callbacks of the distribution options.

use std::fmt;
use std::sync::Arc;

use plume::hooks::HookRegistry;

use super::wire::ServiceDescriptor;

/// Which services a filter accepts: all, none, a list of paths, or a predicate on the
/// descriptor.
///
/// Lists compare normalized paths (`/todos/` and `todos` are the same).
#[derive(Clone, Default)]
pub enum ServiceFilter {
    /// Every service (the default).
    #[default]
    All,
    /// No service.
    None,
    /// The services at these paths.
    List(Vec<String>),
    /// The services for which the predicate returns true.
    Predicate(Arc<dyn Fn(&ServiceDescriptor) -> bool + Send + Sync>),
}

impl fmt::Debug for ServiceFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("All"),
            Self::None => f.write_str("None"),
            Self::List(l) => f.debug_tuple("List").field(l).finish(),
            Self::Predicate(_) => f.write_str("Predicate(..)"),
        }
    }
}

impl ServiceFilter {
    /// A list of paths.
    pub fn list<I, S>(paths: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::List(
            paths
                .into_iter()
                .map(|p| plume::normalize_path(p.as_ref()))
                .collect(),
        )
    }

    /// A predicate on the descriptor (path, key, methods, events).
    pub fn predicate(f: impl Fn(&ServiceDescriptor) -> bool + Send + Sync + 'static) -> Self {
        Self::Predicate(Arc::new(f))
    }

    /// True when the filter accepts this service.
    pub fn matches(&self, descriptor: &ServiceDescriptor) -> bool {
        match self {
            Self::All => true,
            Self::None => false,
            Self::List(list) => list.contains(&descriptor.path),
            Self::Predicate(f) => f(descriptor),
        }
    }
}

impl<S: AsRef<str>> From<Vec<S>> for ServiceFilter {
    fn from(paths: Vec<S>) -> Self {
        Self::list(paths)
    }
}

impl<S: AsRef<str>, const N: usize> From<[S; N]> for ServiceFilter {
    fn from(paths: [S; N]) -> Self {
        Self::list(paths)
    }
}

impl From<bool> for ServiceFilter {
    /// `true` is [`All`](Self::All), `false` is [`None`](Self::None).
    fn from(all: bool) -> Self {
        if all { Self::All } else { Self::None }
    }
}

/// Which events or custom methods of a path travel: all, a list of names, or a predicate on
/// `(path, name)`.
#[derive(Clone, Default)]
pub enum NameFilter {
    /// Every name (the default).
    #[default]
    All,
    /// These names, on every path.
    List(Vec<String>),
    /// The `(path, name)` pairs for which the predicate returns true.
    Predicate(Arc<dyn Fn(&str, &str) -> bool + Send + Sync>),
}

impl fmt::Debug for NameFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("All"),
            Self::List(l) => f.debug_tuple("List").field(l).finish(),
            Self::Predicate(_) => f.write_str("Predicate(..)"),
        }
    }
}

impl NameFilter {
    /// A list of names.
    pub fn list<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::List(names.into_iter().map(Into::into).collect())
    }

    /// A predicate on `(path, name)`.
    pub fn predicate(f: impl Fn(&str, &str) -> bool + Send + Sync + 'static) -> Self {
        Self::Predicate(Arc::new(f))
    }

    /// True when `name` of `path` passes.
    pub fn matches(&self, path: &str, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::List(list) => list.iter().any(|n| n == name),
            Self::Predicate(f) => f(path, name),
        }
    }
}

impl<S: Into<String>> From<Vec<S>> for NameFilter {
    fn from(names: Vec<S>) -> Self {
        Self::list(names)
    }
}

impl<S: Into<String>, const N: usize> From<[S; N]> for NameFilter {
    fn from(names: [S; N]) -> Self {
        Self::list(names)
    }
}

/// Renames a remote path to its local path.
pub type PathRename = Arc<dyn Fn(&ServiceDescriptor) -> String + Send + Sync>;

/// Chooses which option keys of a local service travel with its descriptor.
pub type OptionKeys = Arc<dyn Fn(&str) -> Vec<String> + Send + Sync>;

/// Adds hooks to a proxy's hook registry.
pub type ProxyHooks = Arc<dyn Fn(&HookRegistry) + Send + Sync>;
