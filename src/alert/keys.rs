//! The secret behind every token a stranger must not be able to make: the delivery-report URL handed to the SMS
//! gateway (whoever holds one can mark that SMS delivered) and snapshot links in SMS (whoever guesses one sees
//! the scene). Both are HMAC-SHA256 under a 256-bit key drawn from the OS CSPRNG the first time a database is
//! opened and kept in it (`store::keys`), so tokens survive restarts, differ between installations, and cannot
//! be computed from what they name (delivery ids, incident keys, times, numbers).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of MAC in a delivery-report token (hex in the URL): 128 bits, beyond guessing online.
const DLR_TOKEN_BYTES: usize = 16;
/// Bytes of MAC in a snapshot link token: 48 bits keeps the SMS short; a guess costs a request to the link
/// server, which sees 2^48 of them coming.
const SNAPSHOT_TOKEN_BYTES: usize = 6;

/// The per-database token key. Its `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct Keys {
    secret: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(***)")
    }
}

impl Keys {
    pub(crate) fn from_secret(secret: [u8; 32]) -> Self {
        Self { secret }
    }

    /// A fresh key from the operating system's CSPRNG.
    pub(crate) fn generate() -> Result<[u8; 32], getrandom::Error> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)?;
        Ok(secret)
    }

    /// The MAC of one message in `domain`, so a token of one kind is never valid as another.
    fn mac(&self, domain: &[u8], parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(domain);
        for p in parts {
            // Length-prefixed: ("ab", "c") and ("a", "bc") differ.
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac
    }

    /// Token of the delivery-report URL of one delivery.
    pub(crate) fn dlr_token(&self, delivery: i64) -> String {
        let tag = self
            .mac(b"streetwatch-dlr", &[&delivery.to_be_bytes()])
            .finalize()
            .into_bytes();
        hex::encode(&tag[..DLR_TOKEN_BYTES])
    }

    /// Whether `token` is delivery `delivery`'s, compared in constant time.
    pub(crate) fn dlr_token_matches(&self, delivery: i64, token: &str) -> bool {
        let Ok(tag) = hex::decode(token) else {
            return false;
        };
        tag.len() == DLR_TOKEN_BYTES
            && self
                .mac(b"streetwatch-dlr", &[&delivery.to_be_bytes()])
                .verify_truncated_left(&tag)
                .is_ok()
    }

    /// Token of an incident's snapshot link.
    pub(crate) fn snapshot_token(&self, incident: &str, snapshot: &str) -> String {
        let tag = self
            .mac(
                b"streetwatch-snapshot",
                &[incident.as_bytes(), snapshot.as_bytes()],
            )
            .finalize()
            .into_bytes();
        hex::encode(&tag[..SNAPSHOT_TOKEN_BYTES])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_depend_on_the_key_and_verify_only_their_own_delivery() {
        let (a, b) = (Keys::from_secret([1; 32]), Keys::from_secret([2; 32]));
        let t = a.dlr_token(7);
        assert_eq!(t.len(), 2 * DLR_TOKEN_BYTES);
        assert_ne!(t, b.dlr_token(7));
        assert!(a.dlr_token_matches(7, &t));
        assert!(!a.dlr_token_matches(8, &t));
        assert!(!b.dlr_token_matches(7, &t));
        assert!(!a.dlr_token_matches(7, &t[..30]));
        assert!(!a.dlr_token_matches(7, ""));
        assert!(!a.dlr_token_matches(7, "zz"));
        assert_ne!(
            a.snapshot_token("cam/rule/zone/1", "/s/1.jpg"),
            b.snapshot_token("cam/rule/zone/1", "/s/1.jpg")
        );
        assert_ne!(
            a.snapshot_token("ab", "c"),
            a.snapshot_token("a", "bc"),
            "parts are delimited"
        );
        assert_ne!(Keys::generate().unwrap(), Keys::generate().unwrap());
        assert!(!format!("{a:?}").contains("1, 1"));
    }
}
