//! Serving the docs: `GET /docs/openapi.json` (the document, made afresh on each request so that
//! services mounted later appear) and `GET /docs` (a small page of our own that renders it and
//! tries operations; no CDN, nothing fetched but the document).

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::DocsOptions;
use crate::app::App;
use crate::error::Error;
use crate::server::error_response;

/// The page at `/docs`.
const PAGE: &str = include_str!("page.html");

impl App {
    /// Serve this App's OpenAPI document at `/docs/openapi.json` and an interactive page at
    /// `/docs` (both off until this is called). Call it before [`listen`](App::listen) or
    /// [`into_router`](App::into_router).
    ///
    /// ```
    /// use plume::App;
    /// use plume::docs::DocsOptions;
    ///
    /// let app = App::new();
    /// app.enable_docs(DocsOptions::new().title("My API").version("2.1.0"));
    /// let router = app.into_router(); // now answers GET /docs and GET /docs/openapi.json
    /// # drop(router);
    /// ```
    pub fn enable_docs(&self, options: DocsOptions) {
        let app = self.downgrade();
        self.add_routes(move |router| {
            let app = app.clone();
            let options = options.clone();
            router
                .route(
                    "/docs/openapi.json",
                    get(move || {
                        let app = app.upgrade();
                        let options = options.clone();
                        async move { document(app, &options) }
                    }),
                )
                .route("/docs", get(page))
                .route("/docs/", get(page))
        });
    }
}

fn document(app: Option<App>, options: &DocsOptions) -> Response {
    match app {
        Some(app) => match serde_json::to_vec(&app.openapi(options)) {
            Ok(body) => ([(CONTENT_TYPE, "application/json")], body).into_response(),
            Err(err) => error_response(&Error::internal(err)),
        },
        None => error_response(&Error::unavailable("The app is shutting down")),
    }
}

async fn page() -> Response {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}
