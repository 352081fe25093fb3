//! Kubernetes' quantity grammar (`resource.Quantity`), so an invalid resource is reported as a
//! condition instead of a Deployment the apiserver refuses on every retry.
//!
//! ```text
//! <quantity> ::= <signedNumber><suffix>
//! <number>   ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
//! <suffix>   ::= Ki | Mi | Gi | Ti | Pi | Ei | m | "" | k | M | G | T | P | E | (e|E)<signedNumber>
//! ```

/// Whether `s` is a quantity a container's resources accept: well formed and not negative.
pub fn is_valid_quantity(s: &str) -> bool {
    let unsigned = s.strip_prefix('+').unwrap_or(s);
    let Some(rest) = strip_number(unsigned) else {
        return false;
    };
    match rest {
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => true,
        exponent => exponent
            .strip_prefix(['e', 'E'])
            .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
            .and_then(strip_number)
            .is_some_and(str::is_empty),
    }
}

/// Strips a `<number>` from the front of `s`, returning the rest; None if `s` does not start
/// with one.
fn strip_number(s: &str) -> Option<&str> {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let whole = digits(s);
    let rest = &s[whole..];
    let (fraction, rest) = match rest.strip_prefix('.') {
        Some(after) => {
            let n = digits(after);
            (n, &after[n..])
        }
        None => (0, rest),
    };
    (whole + fraction > 0).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_quantities_are_accepted() {
        for q in [
            "1", "64Mi", "1Gi", "250m", "0.5", ".5", "5.", "+1", "1e3", "1E-3", "2k", "1.5G", "0",
        ] {
            assert!(is_valid_quantity(q), "{q}");
        }
    }

    #[test]
    fn malformed_or_negative_quantities_are_refused() {
        for q in [
            "", "lots", "64 Mi", "64MB", "1.2.3", "-1", "Mi", ".", "1e", "1ee3", "1Ki5", "e3", " 1",
        ] {
            assert!(!is_valid_quantity(q), "{q:?}");
        }
    }
}
