//! What the authentication plugins share.

use crate::api::{Exit, Flow, PluginError, RequestCx};

/// Kong's `validate_header_name` (`kong/tools/http.lua`), used by `typedefs.header_name`.
pub(crate) fn validate_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("no header name provided".into());
    }
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(format!(
            "bad header name '{name}', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
        ))
    }
}

/// The access skeleton every Kong auth plugin shares. Without `anonymous`, a failed
/// `authenticate` answers the client. With it, the plugins combine as a logical OR: a
/// request another auth plugin already authenticated is left alone (Kong's
/// `if conf.anonymous and kong.client.get_credential() then return end`), and a failure
/// authenticates as the anonymous consumer (`X-Anonymous-Consumer: true`) instead.
pub(crate) fn access<'a>(
    cx: &mut RequestCx<'a>,
    anonymous: Option<&str>,
    authenticate: impl FnOnce(&mut RequestCx<'a>) -> Result<(), Exit>,
) -> Result<Flow, PluginError> {
    match anonymous {
        Some(anon) => {
            if cx.credential().is_some() {
                return Ok(Flow::Continue);
            }
            if authenticate(cx).is_err() {
                set_anonymous(cx, anon)?;
            }
            Ok(Flow::Continue)
        }
        None => Ok(match authenticate(cx) {
            Ok(()) => Flow::Continue,
            Err(exit) => Flow::Exit(exit),
        }),
    }
}

/// Authenticates the request as the `anonymous` consumer (id or username). Kong's
/// `kong.client.authenticate(nil, nil)` raises when it does not exist, failing the
/// request with 500.
pub(crate) fn set_anonymous(cx: &mut RequestCx<'_>, anonymous: &str) -> Result<(), PluginError> {
    let ix = cx.consumers;
    match ix.consumer_by_id_or_username(anonymous) {
        Some(c) => {
            cx.authenticate(c, None);
            Ok(())
        }
        None => Err(PluginError::new(format!(
            "anonymous consumer '{anonymous}' is configured but does not exist"
        ))),
    }
}

/// Constant-time equality, so a hash comparison does not leak how much matched.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
