//! A Node app's service mounted on a Plume App: each call is a feathers-distributed RPC request
//! to one responder of the app's key.

use std::time::Duration;

use plume::{Id, Method, Params, Result, Service, async_trait};
use serde_json::Value;

use crate::axon::Requester;
use crate::fd::RpcRequest;

/// The proxy of one remote service.
#[derive(Debug)]
pub(crate) struct CoteProxy {
    pub(crate) requester: Requester,
    pub(crate) key: String,
    pub(crate) path: String,
    pub(crate) methods: Vec<Method>,
    pub(crate) events: Vec<String>,
    pub(crate) timeout: Duration,
}

impl CoteProxy {
    async fn send(
        &self,
        method: &Method,
        id: Option<&Id>,
        data: Option<Value>,
        params: &Params,
    ) -> Result<Value> {
        let req = RpcRequest::call(&self.key, &self.path, method, id, data, params);
        let req = serde_json::to_value(&req)?;
        // find, get and update may run twice: they go to another replica when theirs dies.
        self.requester
            .send(&req, self.timeout, method.is_idempotent())
            .await
    }
}

#[async_trait]
impl Service for CoteProxy {
    async fn find(&self, params: Params) -> Result<Value> {
        self.send(&Method::Find, None, None, &params).await
    }

    async fn get(&self, id: Id, params: Params) -> Result<Value> {
        self.send(&Method::Get, Some(&id), None, &params).await
    }

    async fn create(&self, data: Value, params: Params) -> Result<Value> {
        self.send(&Method::Create, None, Some(data), &params).await
    }

    async fn update(&self, id: Id, data: Value, params: Params) -> Result<Value> {
        self.send(&Method::Update, Some(&id), Some(data), &params)
            .await
    }

    async fn patch(&self, id: Option<Id>, data: Value, params: Params) -> Result<Value> {
        self.send(&Method::Patch, id.as_ref(), Some(data), &params)
            .await
    }

    async fn remove(&self, id: Option<Id>, params: Params) -> Result<Value> {
        self.send(&Method::Remove, id.as_ref(), None, &params).await
    }

    async fn call(&self, method: &str, data: Value, params: Params) -> Result<Value> {
        self.send(
            &Method::Custom(method.to_owned()),
            None,
            Some(data),
            &params,
        )
        .await
    }

    fn methods(&self) -> Vec<Method> {
        self.methods.clone()
    }

    fn events(&self) -> Vec<String> {
        self.events.clone()
    }
}
