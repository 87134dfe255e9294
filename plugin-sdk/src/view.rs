//! What a hook sees of a request or response.
//!
//! Inside Sluice a view wraps the host's handle and reads each field the
//! first time a hook asks for it, so a hook pays only for what it reads. In
//! native tests ([`crate::testing`]) a view holds every field itself.
//!
//! ```
//! use sluice_plugin_sdk::testing::{request, response};
//!
//! let request = request("GET", "/users/7?page=2")
//!     .authority("shop.example.com")
//!     .header("x-tenant", "acme")
//!     .routing_key("acme")
//!     .build();
//! assert_eq!(request.path(), "/users/7");
//! assert_eq!(request.query(), Some("page=2"));
//! assert_eq!(request.authority(), "shop.example.com");
//! assert_eq!(request.routing_key(), Some("acme"));
//! assert_eq!(request.headers().get("x-tenant").as_deref(), Some("acme"));
//!
//! let response = response(200).placement("eu-1").header("x-cache", "hit").build();
//! assert_eq!((response.status(), response.placement()), (200, "eu-1"));
//! ```

use std::cell::OnceCell;

use crate::bindings::sluice::plugin::types;
use crate::headers::HeaderView;
use crate::Headers;

/// What a plugin sees of a request, as earlier plugins in the chain left it.
#[derive(Debug)]
pub struct RequestView<'a> {
    host: Option<&'a types::Request>,
    pub(crate) fields: RequestFields,
}

/// A request's fields, each read from the host once; a test view has
/// them all set, and an unset one reads as empty.
#[derive(Debug, Default, Clone)]
pub(crate) struct RequestFields {
    pub method: OnceCell<String>,
    pub path: OnceCell<String>,
    pub query: OnceCell<Option<String>>,
    pub authority: OnceCell<String>,
    pub client_address: OnceCell<String>,
    pub route: OnceCell<String>,
    pub routing_key: OnceCell<Option<String>>,
    pub request_id: OnceCell<String>,
    /// A test request's headers; the host's are read through the handle.
    pub headers: Headers,
}

impl<'a> RequestView<'a> {
    /// A view of the host's request: the export glue's.
    #[doc(hidden)]
    pub fn host(request: &'a types::Request) -> Self {
        Self {
            host: Some(request),
            fields: RequestFields::default(),
        }
    }

    /// A view holding `fields` (tests).
    pub(crate) fn owned(fields: RequestFields) -> Self {
        Self { host: None, fields }
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> &str {
        self.fields
            .method
            .get_or_init(|| self.host.map(|h| h.method()).unwrap_or_default())
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.fields
            .path
            .get_or_init(|| self.host.map(|h| h.path()).unwrap_or_default())
    }

    /// The raw query string, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.fields
            .query
            .get_or_init(|| self.host.map(|h| h.query()).unwrap_or_default())
            .as_deref()
    }

    /// The `Host` header or `:authority`.
    pub fn authority(&self) -> &str {
        self.fields
            .authority
            .get_or_init(|| self.host.map(|h| h.authority()).unwrap_or_default())
    }

    /// The client's IP address.
    pub fn client_address(&self) -> &str {
        self.fields
            .client_address
            .get_or_init(|| self.host.map(|h| h.client_address()).unwrap_or_default())
    }

    /// The name of the matched route.
    pub fn route(&self) -> &str {
        self.fields
            .route
            .get_or_init(|| self.host.map(|h| h.route()).unwrap_or_default())
    }

    /// The routing key, when the route uses one and the request has it.
    pub fn routing_key(&self) -> Option<&str> {
        self.fields
            .routing_key
            .get_or_init(|| self.host.map(|h| h.routing_key()).unwrap_or_default())
            .as_deref()
    }

    /// The request's id (`X-Request-Id`).
    pub fn request_id(&self) -> &str {
        self.fields
            .request_id
            .get_or_init(|| self.host.map(|h| h.request_id()).unwrap_or_default())
    }

    /// The request's headers.
    pub fn headers(&self) -> HeaderView<'_> {
        match self.host {
            Some(request) => HeaderView::request(request),
            None => HeaderView::listed(&self.fields.headers),
        }
    }
}

/// What a plugin sees of a response, as earlier plugins in the chain left it.
#[derive(Debug)]
pub struct ResponseView<'a> {
    host: Option<&'a types::Response>,
    pub(crate) fields: ResponseFields,
}

/// A response's fields, each read from the host once; a test view has
/// them all set, and an unset one reads as empty.
#[derive(Debug, Default, Clone)]
pub(crate) struct ResponseFields {
    pub status: OnceCell<u16>,
    pub placement: OnceCell<String>,
    pub endpoint: OnceCell<String>,
    /// A test response's headers; the host's are read through the handle.
    pub headers: Headers,
}

impl<'a> ResponseView<'a> {
    /// A view of the host's response: the export glue's.
    #[doc(hidden)]
    pub fn host(response: &'a types::Response) -> Self {
        Self {
            host: Some(response),
            fields: ResponseFields::default(),
        }
    }

    /// A view holding `fields` (tests).
    pub(crate) fn owned(fields: ResponseFields) -> Self {
        Self { host: None, fields }
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        *self
            .fields
            .status
            .get_or_init(|| self.host.map(|h| h.status()).unwrap_or_default())
    }

    /// The placement that served it (empty if none).
    pub fn placement(&self) -> &str {
        self.fields
            .placement
            .get_or_init(|| self.host.map(|h| h.placement()).unwrap_or_default())
    }

    /// The endpoint that served it (empty if none).
    pub fn endpoint(&self) -> &str {
        self.fields
            .endpoint
            .get_or_init(|| self.host.map(|h| h.endpoint()).unwrap_or_default())
    }

    /// The response's headers.
    pub fn headers(&self) -> HeaderView<'_> {
        match self.host {
            Some(response) => HeaderView::response(response),
            None => HeaderView::listed(&self.fields.headers),
        }
    }
}
