//! Lua's conversions where Kong's plugins lean on them.

/// `tonumber(s)` on a string: decimal (with exponent) or `0x` hexadecimal, spaces
/// around allowed; `None` where Lua gives nil.
pub(crate) fn tonumber(s: &str) -> Option<f64> {
    let t = s.trim();
    let (neg, u) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t),
    };
    let n = match u.strip_prefix("0x").or_else(|| u.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok()? as f64,
        // Rust also reads `inf` and `nan`, which Lua's tonumber does not.
        None if u
            .bytes()
            .any(|b| b.is_ascii_alphabetic() && !matches!(b, b'e' | b'E')) =>
        {
            return None
        }
        None => u.parse::<f64>().ok()?,
    };
    Some(if neg { -n } else { n })
}

#[cfg(test)]
mod tests {
    #[test]
    fn tonumber_like_lua() {
        use super::tonumber;
        assert_eq!(tonumber(" 12 "), Some(12.0));
        assert_eq!(tonumber("0x10"), Some(16.0));
        assert_eq!(tonumber("-1.5e2"), Some(-150.0));
        for nil in ["", "abc", "inf", "nan", "1x", "\"10\""] {
            assert_eq!(tonumber(nil), None, "{nil}");
        }
    }
}
