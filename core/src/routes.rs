//! The App's route table: request paths to services, by `matchit` radix trees.
//!
//! A service at `users/:userId/messages` answers `users/5/messages` (find, create…) and
//! `users/5/messages/7` (get, patch… on id `7`). The table keeps two routers: one for paths that
//! end at a service path, one for paths with one id segment after it. A path is tried on the
//! first router before the second, so the longest service path wins (`x/:a/y` beats `x/b` for
//! `x/b/y`); within a router a literal segment beats a placeholder, the first differing segment
//! deciding. Mounting and unmounting update the routers in place, so a late mount is routable
//! at once and a lookup costs one tree walk, not a scan of every service.
//!
//! Placeholders are named by their position (`{p1}`), so `users/:id` and `users/:userId/x`
//! never conflict; services whose paths differ only in placeholder names share a route, and the
//! first of them in path order answers (as a scan in path order did).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::handle::ServiceEntry;

/// Services by path, and the routers that resolve request paths to them.
#[derive(Default)]
pub(crate) struct ServiceTable {
    by_path: BTreeMap<String, Arc<ServiceEntry>>,
    exact: Router,
    with_id: Router,
}

/// What a request path resolved to.
pub(crate) struct Resolved {
    pub(crate) entry: Arc<ServiceEntry>,
    pub(crate) route: Map<String, Value>,
    pub(crate) id: Option<String>,
}

impl ServiceTable {
    /// The service at a normalized path.
    pub(crate) fn get(&self, path: &str) -> Option<&Arc<ServiceEntry>> {
        self.by_path.get(path)
    }

    /// Every service, in path order.
    pub(crate) fn paths(&self) -> impl Iterator<Item = &String> {
        self.by_path.keys()
    }

    /// Mount `entry` at its (normalized) path; returns the service it replaces.
    pub(crate) fn insert(&mut self, entry: Arc<ServiceEntry>) -> Option<Arc<ServiceEntry>> {
        let path = entry.path().to_owned();
        let previous = self.by_path.insert(path.clone(), entry.clone());
        let segments = entry.segments();
        self.exact.add(&route_of(segments, false), &path, &entry);
        self.with_id.add(&route_of(segments, true), &path, &entry);
        previous
    }

    /// Unmount the service at a normalized path.
    pub(crate) fn remove(&mut self, path: &str) -> Option<Arc<ServiceEntry>> {
        let entry = self.by_path.remove(path)?;
        let segments = entry.segments();
        self.exact.drop_path(&route_of(segments, false), path);
        self.with_id.drop_path(&route_of(segments, true), path);
        Some(entry)
    }

    /// Resolve a concrete request path (`users/5/messages/7`; empty segments are ignored).
    pub(crate) fn resolve(&self, path: &str) -> Option<Resolved> {
        // A request path is usually normal already (`/users/5`): then it is matched as it is.
        let normalized: Cow<'_, str> = if is_normal(path) {
            Cow::Borrowed(path)
        } else {
            let mut owned = String::with_capacity(path.len() + 1);
            for segment in path.split('/').filter(|s| !s.is_empty()) {
                owned.push('/');
                owned.push_str(segment);
            }
            if owned.is_empty() {
                owned.push('/');
            }
            Cow::Owned(owned)
        };
        let entry = self
            .exact
            .at(&normalized)
            .or_else(|| self.with_id.at(&normalized))?;
        let mut segments = normalized.split('/').filter(|s| !s.is_empty());
        let mut route = Map::new();
        for pattern in entry.segments() {
            let segment = segments.next()?;
            if let Some(name) = pattern.strip_prefix(':') {
                route.insert(name.to_owned(), Value::String(segment.to_owned()));
            }
        }
        let id = segments.next().map(str::to_owned);
        Some(Resolved {
            entry: entry.clone(),
            route,
            id,
        })
    }
}

/// `/`, or `/a/b` with no empty segment.
fn is_normal(path: &str) -> bool {
    path == "/" || (path.starts_with('/') && !path.ends_with('/') && !path.contains("//"))
}

/// One matchit router, and the services behind each of its routes (several when their paths
/// differ only in placeholder names; the first in path order answers).
#[derive(Default)]
struct Router {
    tree: matchit::Router<Arc<ServiceEntry>>,
    groups: HashMap<String, BTreeMap<String, Arc<ServiceEntry>>>,
}

impl Router {
    fn at(&self, path: &str) -> Option<&Arc<ServiceEntry>> {
        self.tree.at(path).ok().map(|m| m.value)
    }

    fn add(&mut self, route: &str, path: &str, entry: &Arc<ServiceEntry>) {
        let group = self.groups.entry(route.to_owned()).or_default();
        group.insert(path.to_owned(), entry.clone());
        self.refresh(route);
    }

    fn drop_path(&mut self, route: &str, path: &str) {
        if let Some(group) = self.groups.get_mut(route) {
            group.remove(path);
            if group.is_empty() {
                self.groups.remove(route);
            }
        }
        self.refresh(route);
    }

    /// Point `route` at the first service of its group, or remove it.
    fn refresh(&mut self, route: &str) {
        self.tree.remove(route);
        let Some(first) = self.groups.get(route).and_then(|g| g.values().next()) else {
            return;
        };
        if let Err(err) = self.tree.insert(route, first.clone()) {
            // Unreachable: segments are whole, placeholders named by position, literals escaped.
            tracing::error!(target: "plume::app", %route, %err, "service path cannot be routed");
        }
    }
}

/// The matchit route of a service path's segments: `/users/{p1}/messages`, plus the id's
/// `/{p3}` when `with_id`. Literal braces are escaped.
fn route_of(segments: &[String], with_id: bool) -> String {
    let mut route = String::new();
    for (i, segment) in segments.iter().enumerate() {
        route.push('/');
        if segment.starts_with(':') {
            route.push_str(&format!("{{p{i}}}"));
        } else {
            route.push_str(&segment.replace('{', "{{").replace('}', "}}"));
        }
    }
    if with_id {
        route.push_str(&format!("/{{p{}}}", segments.len()));
    }
    if route.is_empty() {
        route.push('/');
    }
    route
}

#[cfg(test)]
mod tests {
    use super::route_of;

    fn segs(path: &str) -> Vec<String> {
        path.split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn only_paths_without_empty_segments_are_normal() {
        for normal in ["/", "/a", "/a/b", "/a/%2F"] {
            assert!(super::is_normal(normal), "{normal}");
        }
        for not in ["", "a", "//", "/a/", "/a//b", "a/b"] {
            assert!(!super::is_normal(not), "{not}");
        }
    }

    #[test]
    fn routes_name_placeholders_by_position_and_escape_braces() {
        assert_eq!(route_of(&segs(""), false), "/");
        assert_eq!(route_of(&segs(""), true), "/{p0}");
        assert_eq!(
            route_of(&segs("users/:userId/messages"), true),
            "/users/{p1}/messages/{p3}"
        );
        assert_eq!(route_of(&segs("a{b}/:x"), false), "/a{{b}}/{p1}");
    }
}
