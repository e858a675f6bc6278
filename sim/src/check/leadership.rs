//! At most one leader per term.

/// `claims` are (term, server) pairs: every time a server became leader. Two different servers
/// leading in the same term would mean two committed histories could diverge.
pub fn check_one_leader_per_term(claims: &[(u64, usize)]) -> Result<(), String> {
    let mut sorted = claims.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for pair in sorted.windows(2) {
        let ((term_a, a), (term_b, b)) = (pair[0], pair[1]);
        if term_a == term_b && a != b {
            return Err(format!("servers s{a} and s{b} both led in term {term_a}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Successive leaders in successive terms, and one server leading twice, are fine.
    #[test]
    fn distinct_terms_pass() {
        assert!(check_one_leader_per_term(&[(1, 0), (2, 1), (2, 1), (5, 0)]).is_ok());
    }

    /// Two servers in one term is reported with both names.
    #[test]
    fn two_leaders_in_a_term_fail() {
        let err = check_one_leader_per_term(&[(3, 2), (3, 0)]).unwrap_err();
        assert!(err.contains("s0") && err.contains("s2") && err.contains("term 3"), "{err}");
    }
}
