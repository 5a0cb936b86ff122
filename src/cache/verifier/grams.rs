//! Character n-grams of a prompt (letters, digits and Han characters, lower-cased; spaces and
//! punctuation dropped). They see a word changed inside a Chinese phrase, which has no spaces,
//! and an English word's changed ending, which whole words and single characters miss.

/// The n-gram lengths read.
const LENGTHS: [usize; 2] = [2, 3];

/// For each length: the overlap (Jaccard) of the two prompts' n-grams, and how many only
/// `asked` has and only `stored` has.
pub fn features(asked: &str, stored: &str) -> [f32; 6] {
    let (a, b) = (chars(asked), chars(stored));
    let mut out = [0f32; 6];
    for (k, n) in LENGTHS.into_iter().enumerate() {
        let (x, y) = (grams(&a, n), grams(&b, n));
        let common = common(&x, &y);
        let union = x.len() + y.len() - common;
        out[3 * k] = if union == 0 {
            1.0
        } else {
            common as f32 / union as f32
        };
        out[3 * k + 1] = (x.len() - common) as f32;
        out[3 * k + 2] = (y.len() - common) as f32;
    }
    out
}

fn chars(s: &str) -> Vec<char> {
    s.chars()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_alphanumeric())
        .collect()
}

/// The distinct n-grams, as sorted hashes (FNV-1a: a collision costs one n-gram's count).
fn grams(chars: &[char], n: usize) -> Vec<u64> {
    let mut out: Vec<u64> = chars
        .windows(n)
        .map(|w| {
            w.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
                (h ^ u64::from(u32::from(*c))).wrapping_mul(0x0100_0000_01b3)
            })
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// How many values two sorted, deduplicated lists share.
fn common(x: &[u64], y: &[u64]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < x.len() && j < y.len() {
        match x[i].cmp(&y[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::features;

    #[test]
    fn a_changed_word_inside_a_chinese_phrase_shows_in_the_bigrams() {
        // 退款多久到账 / 退货多久到账: bigrams 退款 款多 多久 久到 到账 vs 退货 货多 多久 久到 到账.
        let f = features("退款多久到账", "退货多久到账");
        assert!((f[0] - 3.0 / 7.0).abs() < 1e-6, "{f:?}");
        assert_eq!((f[1], f[2]), (2.0, 2.0));
        assert_eq!(
            features("How do I?", "how do i"),
            [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
        );
        assert_eq!(features("", "")[0], 1.0);
        assert_eq!(features("a", "b")[0], 1.0, "too short for any bigram");
    }
}
