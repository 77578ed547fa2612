//! Store addresses as messages and logs show them: a URL's password replaced
//! by `***` (`postgres://app:secret@db/prod` → `postgres://app:***@db/prod`).
//!
//! Invariant: the text returned never contains the password of `url`; anything
//! that is not a URL with `USER:PASSWORD@` comes back unchanged.

/// `url` with the password of its user information, if any, replaced by `***`.
pub fn url_without_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    // The authority ends at the first '/', '?' or '#' after the scheme; its user
    // information is what comes before its last '@'.
    let rest = &url[scheme_end..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_string();
    };
    format!(
        "{}{}:***{}",
        &url[..scheme_end],
        &userinfo[..colon],
        &url[scheme_end + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_hidden_and_the_rest_kept() {
        let cases = [
            (
                "postgres://app:s3cret@db:5432/prod",
                "postgres://app:***@db:5432/prod",
            ),
            ("postgres://app:p@ss@db/prod", "postgres://app:***@db/prod"),
            ("postgres://app@db/prod", "postgres://app@db/prod"),
            ("postgres://db/prod?user=a", "postgres://db/prod?user=a"),
            ("postgres://db/x@y", "postgres://db/x@y"),
            ("tcp://127.0.0.1:8100", "tcp://127.0.0.1:8100"),
            ("/var/lib/app.zodiac", "/var/lib/app.zodiac"),
        ];
        for (url, shown) in cases {
            assert_eq!(url_without_password(url), shown, "{url}");
        }
    }
}
