//! Deterministic ids. A trigger id is a hash of what caused it, so two
//! evaluator replicas (or a replay) produce the same id and JetStream's
//! `Nats-Msg-Id` de-duplication makes the second copy harmless.

/// 64-bit FNV-1a over a sequence of parts, separated so ("ab","c") != ("a","bc").
pub fn fnv64(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for part in parts {
        for byte in part.iter().chain(std::iter::once(&0xffu8)) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    hash
}

/// An id with a readable prefix: `<prefix>-<16 hex digits>`.
pub fn derive(prefix: &str, parts: &[&[u8]]) -> String {
    format!("{prefix}-{:016x}", fnv64(parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_separated() {
        assert_eq!(derive("t", &[b"api", b"1"]), derive("t", &[b"api", b"1"]));
        assert_ne!(derive("t", &[b"ab", b"c"]), derive("t", &[b"a", b"bc"]));
        assert!(derive("d", &[b"x"]).starts_with("d-"));
        assert_eq!(derive("d", &[b"x"]).len(), 18);
    }
}
