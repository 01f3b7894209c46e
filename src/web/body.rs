//! Request bodies read with a hard cap, JSON in and out. A body over the cap is refused from its
//! `Content-Length` before a byte is read, or, when it is chunked, as soon as the count passes the
//! cap: nothing past the cap is ever buffered.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Every response body the server sends: whole bytes (no allocation beyond the bytes), or any
/// other body boxed (streams).
pub enum Body {
    Full(Full<Bytes>),
    Boxed(BoxBody<Bytes, Infallible>),
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(full) => std::pin::Pin::new(full).poll_frame(cx),
            Body::Boxed(boxed) => std::pin::Pin::new(boxed).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(full) => full.is_end_stream(),
            Body::Boxed(boxed) => boxed.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Body::Full(full) => full.size_hint(),
            Body::Boxed(boxed) => boxed.size_hint(),
        }
    }
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Body::Full(Full::new(bytes.into()))
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A JSON response; serialising our own `Serialize` types cannot fail, but if it did the answer
/// is a plain 500 rather than a panic.
pub fn json_body(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    // Most answers fit in 1 KiB; starting there saves the doublings from serde_json's 128 bytes.
    let mut bytes = Vec::with_capacity(1024);
    let (status, bytes) = match serde_json::to_writer(&mut bytes, value) {
        Ok(()) => (status, bytes),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"error":{"code":"INTERNAL_ERROR","message":"Internal server error"}}"#.to_vec(),
        ),
    };
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Whether a declared `Content-Length` is over the cap (413 before reading anything).
pub fn declared_length_exceeds(headers: &http::HeaderMap, cap: usize) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|len| len > cap as u64)
}

/// Reads a whole body, refusing it as soon as more than `cap` bytes have arrived, or with 408
/// when it has not all arrived within `timeout` (a stalled body must not hold a connection).
pub async fn read_capped<B>(body: B, cap: usize, timeout: Duration) -> Result<Bytes, ApiError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match tokio::time::timeout(timeout, Limited::new(body, cap).collect()).await {
        Err(_elapsed) => Err(ApiError::RequestTimeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit: cap })
        }
        Ok(Err(e)) => Err(ApiError::InvalidJson(format!(
            "body could not be read: {e}"
        ))),
    }
}

/// Parses a JSON body into `T`; syntax errors are `INVALID_JSON`, shape errors `VALIDATION_ERROR`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::Validation {
                message: format!("Invalid request body: {e}"),
                details: serde_json::json!({ "body": e.to_string() }),
            },
            Category::Io | Category::Syntax | Category::Eof => ApiError::InvalidJson(e.to_string()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use http_body::Frame;
    use http_body_util::StreamBody;

    fn chunked(
        chunks: Vec<&'static [u8]>,
    ) -> impl http_body::Body<Data = Bytes, Error = Infallible> {
        StreamBody::new(stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, Infallible>(Frame::data(Bytes::from_static(c)))),
        ))
    }

    #[tokio::test]
    async fn reads_under_cap_and_refuses_over() {
        let ok = read_capped(chunked(vec![b"ab", b"cd"]), 4, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(&ok[..], b"abcd");
        let err = read_capped(chunked(vec![b"ab", b"cde"]), 4, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err, ApiError::PayloadTooLarge { limit: 4 });
    }

    #[test]
    fn declared_length() {
        let mut h = http::HeaderMap::new();
        assert!(!declared_length_exceeds(&h, 10));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("11"));
        assert!(declared_length_exceeds(&h, 10));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        assert!(!declared_length_exceeds(&h, 10));
    }

    #[test]
    fn json_errors_are_classified() {
        #[derive(serde::Deserialize, Debug)]
        struct T {
            #[allow(dead_code)]
            a: u8,
        }
        assert!(matches!(
            parse_json::<T>(b"{"),
            Err(ApiError::InvalidJson(_))
        ));
        assert!(matches!(
            parse_json::<T>(br#"{"a":"x"}"#),
            Err(ApiError::Validation { .. })
        ));
        assert_eq!(parse_json::<T>(br#"{"a":1}"#).unwrap().a, 1);
    }
}
