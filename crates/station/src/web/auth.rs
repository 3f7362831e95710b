//! Who may read the page: everyone who can reach it, or, with `[web] token_file`, whoever
//! presents the token as `Authorization: Bearer …` (Prometheus, curl) or `?token=…` (a link
//! opened on a phone).

/// Whether a request may read. `expected` is the configured token; `authorization` the
/// request's header; `query` its query string.
pub fn authorized(
    expected: Option<&str>,
    authorization: Option<&str>,
    query: Option<&str>,
) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let bearer = authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    let from_query = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    bearer.is_some_and(|t| same(t, expected)) || from_query.is_some_and(|t| same(&t, expected))
}

/// Compares without stopping at the first difference, so the time taken does not tell how
/// much of a guess was right.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "0123456789abcdef0123";

    #[test]
    fn who_may_read() {
        /// Configured token, Authorization header, query string, whether it may read.
        type Row<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, bool);
        let rows: &[Row] = &[
            (None, None, None, true),
            (Some(T), None, None, false),
            (Some(T), Some("Bearer 0123456789abcdef0123"), None, true),
            (Some(T), Some("Bearer 0123456789abcdef012"), None, false),
            (Some(T), Some("Basic 0123456789abcdef0123"), None, false),
            (Some(T), Some("0123456789abcdef0123"), None, false),
            (Some(T), None, Some("token=0123456789abcdef0123"), true),
            (Some(T), None, Some("a=1&token=0123456789abcdef0123"), true),
            (Some(T), None, Some("token=0123456789abcdef0124"), false),
            (Some(T), None, Some("tok=0123456789abcdef0123"), false),
            (Some(T), None, Some("token="), false),
        ];
        for (expected, header, query, want) in rows {
            assert_eq!(
                authorized(*expected, *header, *query),
                *want,
                "{expected:?} {header:?} {query:?}"
            );
        }
    }
}
