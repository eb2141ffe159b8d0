//! The embedded backend: members find each other as the providers of the endpoint
//! `plume.instances.<set>` on a Plume [`Mesh`] and talk through calls to it; a member that
//! withdraws leaves the set, a node the mesh loses stays a member (it may come back) until the
//! leader forgets it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use plume_transport::{Mesh, NodeId, Removal, Request, TableEvent};

use crate::node::LOG;
use crate::{Answer, InstanceError, InstanceManager, InstanceSet, Link, Member, Message, Settings};

/// The endpoint of set `name`.
pub fn endpoint(name: &str) -> String {
    format!("plume.instances.{name}")
}

/// The longest set name.
pub const MAX_NAME: usize = 128;

fn check_name(name: &str) -> Result<(), InstanceError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(InstanceError::Name(name.to_owned()))
    }
}

/// Calls to other members over the mesh.
#[derive(Debug, Clone)]
pub struct MeshLink {
    mesh: Mesh,
    endpoint: String,
}

#[async_trait]
impl Link for MeshLink {
    async fn call(
        &self,
        to: NodeId,
        message: &Message,
        timeout: Duration,
    ) -> Result<Answer, InstanceError> {
        let value = self
            .mesh
            .to(&self.endpoint)
            .on(to)
            .timeout(timeout)
            .send(message)
            .await
            .map_err(|e| InstanceError::Call(e.to_string()))?;
        serde_json::from_value(value)
            .map_err(|e| InstanceError::Call(format!("undecodable answer: {e}")))
    }
}

/// Take part in instance set `name` on `mesh`: every node that registers the same name (in the
/// same mesh environment) is a member. Err for a bad name or settings.
pub fn register<S: InstanceSet>(
    mesh: &Mesh,
    name: &str,
    set: S,
    settings: Settings,
) -> Result<InstanceManager, InstanceError> {
    check_name(name)?;
    settings.validate()?;
    let endpoint = endpoint(name);
    let member = Arc::new(Member::new(mesh.node_id(), settings));
    // Membership first, so that the first election counts every member already there.
    for p in mesh.providers(&endpoint) {
        member.member_up(p.node);
    }
    let mut watch = mesh.watch();
    let (m, ep) = (Arc::clone(&member), endpoint.clone());
    let watcher = tokio::spawn(async move {
        while let Some(event) = watch.next().await {
            match event {
                TableEvent::Added { name, node, .. } if name == ep => m.member_up(node),
                TableEvent::Removed { name, node, reason } if name == ep => match reason {
                    Removal::Withdrawn => m.member_left(node),
                    // Lost, or anything else: it may come back, so it still counts.
                    _ => m.member_lost(node),
                },
                _ => {}
            }
        }
    });
    let (m, ep, me) = (Arc::clone(&member), endpoint.clone(), mesh.clone());
    mesh.respond(&endpoint, move |req: Request| {
        let (m, ep, mesh) = (Arc::clone(&m), ep.clone(), me.clone());
        async move {
            // Only members speak: a vote promised to an outsider would block the set.
            let member =
                req.from == m.me() || mesh.providers(&ep).iter().any(|p| p.node == req.from);
            if !member {
                return Err(plume::Error::forbidden("not a member of this instance set"));
            }
            let message: Message = serde_json::from_value(req.body)
                .map_err(|e| plume::Error::bad_request(format!("bad instance message: {e}")))?;
            serde_json::to_value(m.handle(req.from, message)).map_err(plume::Error::internal)
        }
    });
    let link = Arc::new(MeshLink {
        mesh: mesh.clone(),
        endpoint: endpoint.clone(),
    });
    let manager = InstanceManager::start(member, link, set);
    let mesh = mesh.clone();
    manager.on_shutdown(move || {
        mesh.withdraw(&endpoint);
        watcher.abort();
        tracing::debug!(target: LOG, %endpoint, "left the instance set");
    });
    Ok(manager)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("workers").is_ok());
        assert!(check_name("a.b-c_d").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name(&"x".repeat(MAX_NAME + 1)).is_err());
    }
}
