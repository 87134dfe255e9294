//! Short lists of values resolved once and found again by a linear search:
//! what a hot path asks for by the same few keys on every call (header
//! names a plugin changes, metric series), where searching a handful of
//! entries costs less than resolving again.

/// Calls `with` on the value kept in `resolved` under the key `is_key`
/// accepts, or else on the value `resolve` gives, which is kept under
/// `key()` while `resolved` holds fewer than `keep`: the first keys met
/// stay, and any past them are resolved on every call.
pub fn with_resolved<K, V, R, E>(
    resolved: &mut Vec<(K, V)>,
    keep: usize,
    is_key: impl Fn(&K) -> bool,
    key: impl FnOnce() -> K,
    resolve: impl FnOnce() -> Result<V, E>,
    with: impl FnOnce(&V) -> R,
) -> Result<R, E> {
    if let Some((_, value)) = resolved.iter().find(|(known, _)| is_key(known)) {
        return Ok(with(value));
    }
    let value = resolve()?;
    let result = with(&value);
    if resolved.len() < keep {
        resolved.push((key(), value));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_keys_are_kept_and_later_ones_resolved_each_time() {
        let mut resolved: Vec<(String, usize)> = Vec::new();
        let mut resolutions = 0;
        let mut length_of = |word: &str| {
            with_resolved::<_, _, _, ()>(
                &mut resolved,
                2,
                |known| known == word,
                || word.to_string(),
                || {
                    resolutions += 1;
                    Ok(word.len())
                },
                |length| *length,
            )
        };
        for word in ["a", "bb", "a", "ccc", "ccc", "bb"] {
            assert_eq!(length_of(word), Ok(word.len()));
        }
        assert_eq!(
            resolutions, 4,
            "a and bb once each, ccc past the two kept twice"
        );

        let failed = with_resolved(
            &mut resolved,
            4,
            |_| false,
            String::new,
            || Err("no"),
            |_: &usize| (),
        );
        assert_eq!(failed, Err("no"));
        assert_eq!(resolved.len(), 2, "a failure is not kept");
    }
}
