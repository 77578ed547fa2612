//! The warning a server gives at start when it listens beyond loopback without
//! the protections that setting needs.
//!
//! Invariants:
//! - A server listening only on a loopback address never warns.
//! - Beyond loopback, a server without a token always warns (anyone who reaches
//!   the port can read and write), and one with a token but without TLS warns
//!   that the traffic (data, not the token) is readable on the network.

use std::net::SocketAddr;

/// What to warn about for a server listening on `addr`, with a token or not and
/// with TLS or not; `None` when nothing.
pub(crate) fn exposure_warning(addr: SocketAddr, token: bool, tls: bool) -> Option<String> {
    if addr.ip().is_loopback() {
        return None;
    }
    match (token, tls) {
        (false, false) => Some(format!(
            "listening on {addr}, beyond loopback, without a token or TLS: anyone who can \
             reach this port can read and change the whole database, and the traffic can be \
             read on the network; give a token (`--token-file FILE`) and TLS (`--tls-cert`, \
             `--tls-key`), or listen on 127.0.0.1"
        )),
        (false, true) => Some(format!(
            "listening on {addr}, beyond loopback, without a token: anyone who can reach this \
             port can read and change the whole database; give a token (`--token-file FILE`)"
        )),
        (true, false) => Some(format!(
            "listening on {addr}, beyond loopback, without TLS: the token is never sent, but \
             the data is readable on the network; use TLS (`--tls-cert`, `--tls-key`) unless \
             the network is trusted"
        )),
        (true, true) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_or_a_token_with_tls_is_quiet() {
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        for quiet in ["127.0.0.1:8100", "[::1]:8100", "127.0.0.2:1"] {
            for (token, tls) in [(false, false), (true, false), (false, true)] {
                assert_eq!(exposure_warning(at(quiet), token, tls), None, "{quiet}");
            }
        }
        let open = exposure_warning(at("0.0.0.0:8100"), false, false).unwrap();
        assert!(
            open.contains("0.0.0.0:8100") && open.contains("without a token or TLS"),
            "{open}"
        );
        assert!(open.contains("--token-file"), "{open}");
        let no_tls = exposure_warning(at("[::]:8100"), true, false).unwrap();
        assert!(no_tls.contains("without TLS"), "{no_tls}");
        let no_token = exposure_warning(at("10.1.2.3:8100"), false, true).unwrap();
        assert!(no_token.contains("without a token:"), "{no_token}");
        assert_eq!(exposure_warning(at("10.1.2.3:8100"), true, true), None);
    }
}
