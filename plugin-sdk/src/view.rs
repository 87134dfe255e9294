//! What a hook sees of a request or response.
//!
//! Inside Sluice a view reads each field from the host the first time a
//! hook asks for it, so a hook pays only for what it reads. In
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

use crate::bindings::sluice::plugin::{request as host_request, response as host_response};
use crate::headers::HeaderView;
use crate::Headers;

/// `read()` when a view reads from the host, the default when it is a test
/// view whose fields are all set.
fn read_from_host<T: Default>(from_host: bool, read: impl FnOnce() -> T) -> T {
    if from_host {
        read()
    } else {
        T::default()
    }
}

/// What a plugin sees of a request, as earlier plugins in the chain left it.
#[derive(Debug)]
pub struct RequestView {
    /// Whether the fields are read from the host, or are all set (tests).
    from_host: bool,
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
    /// A test request's headers; the host's are read one name at a time.
    pub headers: Headers,
}

impl RequestView {
    /// A view of the request of the host's call in progress: the export
    /// glue's.
    #[doc(hidden)]
    pub fn host() -> Self {
        Self {
            from_host: true,
            fields: RequestFields::default(),
        }
    }

    /// A view holding `fields` (tests).
    pub(crate) fn owned(fields: RequestFields) -> Self {
        Self {
            from_host: false,
            fields,
        }
    }

    /// `read()` from the host, or the default in a test view.
    fn read<T: Default>(&self, read: impl FnOnce() -> T) -> T {
        read_from_host(self.from_host, read)
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> &str {
        self.fields
            .method
            .get_or_init(|| self.read(host_request::method))
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.fields
            .path
            .get_or_init(|| self.read(host_request::path))
    }

    /// The raw query string, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.fields
            .query
            .get_or_init(|| self.read(host_request::query))
            .as_deref()
    }

    /// The `Host` header or `:authority`.
    pub fn authority(&self) -> &str {
        self.fields
            .authority
            .get_or_init(|| self.read(host_request::authority))
    }

    /// The client's IP address.
    pub fn client_address(&self) -> &str {
        self.fields
            .client_address
            .get_or_init(|| self.read(host_request::client_address))
    }

    /// The name of the matched route.
    pub fn route(&self) -> &str {
        self.fields
            .route
            .get_or_init(|| self.read(host_request::route))
    }

    /// The routing key, when the route uses one and the request has it.
    pub fn routing_key(&self) -> Option<&str> {
        self.fields
            .routing_key
            .get_or_init(|| self.read(host_request::routing_key))
            .as_deref()
    }

    /// The request's id (`X-Request-Id`).
    pub fn request_id(&self) -> &str {
        self.fields
            .request_id
            .get_or_init(|| self.read(host_request::request_id))
    }

    /// The request's headers.
    pub fn headers(&self) -> HeaderView<'_> {
        if self.from_host {
            HeaderView::request()
        } else {
            HeaderView::listed(&self.fields.headers)
        }
    }
}

/// What a plugin sees of a response, as earlier plugins in the chain left it.
#[derive(Debug)]
pub struct ResponseView {
    /// Whether the fields are read from the host, or are all set (tests).
    from_host: bool,
    pub(crate) fields: ResponseFields,
}

/// A response's fields, each read from the host once; a test view has
/// them all set, and an unset one reads as empty.
#[derive(Debug, Default, Clone)]
pub(crate) struct ResponseFields {
    pub status: OnceCell<u16>,
    pub placement: OnceCell<String>,
    pub endpoint: OnceCell<String>,
    /// A test response's headers; the host's are read one name at a time.
    pub headers: Headers,
}

impl ResponseView {
    /// A view of the response of the host's call in progress: the export
    /// glue's.
    #[doc(hidden)]
    pub fn host() -> Self {
        Self {
            from_host: true,
            fields: ResponseFields::default(),
        }
    }

    /// A view holding `fields` (tests).
    pub(crate) fn owned(fields: ResponseFields) -> Self {
        Self {
            from_host: false,
            fields,
        }
    }

    /// `read()` from the host, or the default in a test view.
    fn read<T: Default>(&self, read: impl FnOnce() -> T) -> T {
        read_from_host(self.from_host, read)
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        *self
            .fields
            .status
            .get_or_init(|| self.read(host_response::status))
    }

    /// The placement that served it (empty if none).
    pub fn placement(&self) -> &str {
        self.fields
            .placement
            .get_or_init(|| self.read(host_response::placement))
    }

    /// The endpoint that served it (empty if none).
    pub fn endpoint(&self) -> &str {
        self.fields
            .endpoint
            .get_or_init(|| self.read(host_response::endpoint))
    }

    /// The response's headers.
    pub fn headers(&self) -> HeaderView<'_> {
        if self.from_host {
            HeaderView::response()
        } else {
            HeaderView::listed(&self.fields.headers)
        }
    }
}
