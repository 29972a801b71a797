//! What the body_filter phase sees: one response body chunk at a time (nginx's
//! `ngx.arg[1]`, `ngx.arg[2]`), plus Kong's whole-body helpers
//! (`kong.response.get_raw_body` / `set_raw_body`).

use crate::api::PluginState;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;

/// One call of a plugin's body_filter.
pub struct BodyCx<'a> {
    /// The response status and headers as the client got them (after header_filter).
    pub status: u16,
    pub response_headers: &'a HeaderMap,
    chunk: Bytes,
    eof: bool,
    /// This plugin's held-back chunks (`get_raw_body` before the last chunk).
    held: &'a mut Option<BytesMut>,
    /// `set_raw_body` was called: the body ends with this chunk.
    ended: bool,
    /// The plugin's `kong.ctx.plugin` for this request.
    state: Option<&'a mut PluginState>,
}

impl<'a> BodyCx<'a> {
    /// A call for `chunk`; `held` is the plugin's buffer, kept by the caller across calls.
    pub fn new(
        status: u16,
        response_headers: &'a HeaderMap,
        chunk: Bytes,
        eof: bool,
        held: &'a mut Option<BytesMut>,
    ) -> Self {
        BodyCx {
            status,
            response_headers,
            chunk,
            eof,
            held,
            ended: false,
            state: None,
        }
    }

    /// The plugin's per-request state ([`crate::RequestCx::set_plugin_state`]).
    pub fn with_state(mut self, state: Option<&'a mut PluginState>) -> Self {
        self.state = state;
        self
    }
    /// The state, when the plugin's access kept one of type `T`.
    pub fn state<T: 'static>(&mut self) -> Option<&mut T> {
        self.state.as_deref_mut().and_then(|s| s.downcast_mut())
    }

    /// The current chunk (`ngx.arg[1]`).
    pub fn chunk(&self) -> &Bytes {
        &self.chunk
    }
    /// Replaces the current chunk (empty drops it).
    pub fn set_chunk(&mut self, chunk: Bytes) {
        self.chunk = chunk;
    }
    /// Whether this is the last call (`ngx.arg[2]`).
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// `kong.response.get_raw_body()`: before the last chunk, holds the chunk back from
    /// the client and answers `None`; on the last call answers the whole body, which is
    /// then what the client gets unless the plugin sets another.
    pub fn raw_body(&mut self) -> Option<Bytes> {
        if self.eof && self.held.is_none() {
            return Some(self.chunk.clone());
        }
        if !self.chunk.is_empty() {
            self.held
                .get_or_insert_with(BytesMut::new)
                .extend_from_slice(&self.chunk);
        }
        if self.eof {
            let body = self.held.take().map(BytesMut::freeze).unwrap_or_default();
            self.chunk = body.clone();
            return Some(body);
        }
        self.chunk = Bytes::new();
        None
    }

    /// `kong.response.set_raw_body(body)`: this is the rest of the body; what the
    /// upstream sends after it is dropped.
    pub fn set_raw_body(&mut self, body: Bytes) {
        self.chunk = body;
        self.ended = true;
        *self.held = None;
    }

    /// The chunk to pass on, and whether the body ends with it.
    pub fn finish(self) -> (Bytes, bool) {
        (self.chunk, self.ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_body_holds_chunks_back_until_the_last() {
        let h = HeaderMap::new();
        let mut held = None;
        let mut cx = BodyCx::new(200, &h, Bytes::from_static(b"ab"), false, &mut held);
        assert_eq!(cx.raw_body(), None);
        assert_eq!(cx.finish(), (Bytes::new(), false));
        let mut cx = BodyCx::new(200, &h, Bytes::from_static(b"cd"), false, &mut held);
        assert_eq!(cx.raw_body(), None);
        let mut cx = BodyCx::new(200, &h, Bytes::new(), true, &mut held);
        assert_eq!(cx.raw_body().as_deref(), Some(&b"abcd"[..]));
        // unchanged, the whole body goes out at the end
        assert_eq!(cx.finish(), (Bytes::from_static(b"abcd"), false));
        assert!(held.is_none());
    }

    #[test]
    fn raw_body_of_a_single_last_chunk_and_set_raw_body() {
        let h = HeaderMap::new();
        let mut held = None;
        let mut cx = BodyCx::new(200, &h, Bytes::from_static(b"all"), true, &mut held);
        assert_eq!(cx.raw_body().as_deref(), Some(&b"all"[..]));
        cx.set_raw_body(Bytes::from_static(b"new"));
        assert_eq!(cx.finish(), (Bytes::from_static(b"new"), true));
    }
}
