//! What the guards compare, read once per prompt: its numbers and dates, whether it is negated,
//! its side on each axis of opposite actions, its content words, and where it sends something.
//! Chinese is segmented and tagged with jieba; English words are Snowball-stemmed.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use jieba_rs::Jieba;
use rust_stemmers::{Algorithm, Stemmer};

use super::lexicon::{
    AXES, DATE_WORDS, EN_DIRECTION_VERBS, EN_NEGATIONS, EN_PHRASES, EN_STOP, SYNONYMS, UNITS,
    ZH_DIRECTION_MARKERS, ZH_NEGATIONS, ZH_NOT_NEGATIONS, ZH_STOP,
};

static JIEBA: LazyLock<Jieba> = LazyLock::new(Jieba::new);
static STEMMER: LazyLock<Stemmer> = LazyLock::new(|| Stemmer::create(Algorithm::English));

/// Loads the segmenter's dictionary now rather than on the first lookup.
pub fn warm() {
    LazyLock::force(&JIEBA);
}

/// A content word and whether it names something specific (a noun, a name, a term): such a
/// word present on one side only changes the question even when the other side adds nothing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Word {
    pub text: String,
    pub specific: bool,
}

/// The axis sides a word stands for (cancel and turn off are one action).
pub fn sides_of(word: &str) -> Vec<(usize, u8)> {
    let mut out = Vec::new();
    for (axis, (on, off)) in AXES.iter().enumerate() {
        if on.contains(&word) {
            out.push((axis, 0));
        }
        if off.contains(&word) {
            out.push((axis, 1));
        }
    }
    out
}

/// One prompt, read for the guards.
#[derive(Debug, Default)]
pub struct Analysis {
    pub numbers: Vec<String>,
    pub negated: bool,
    /// (axis index, side): 0 for the first list of the axis, 1 for the second.
    pub sides: BTreeSet<(usize, u8)>,
    pub content: Vec<Word>,
    /// The content word after a direction ("to Word", "转成PDF").
    pub target: Option<String>,
}

impl Analysis {
    pub fn of(text: &str) -> Self {
        let lower = text.to_lowercase();
        let mut out = Self {
            numbers: digits(&lower),
            ..Self::default()
        };
        english(&lower, text, &mut out);
        chinese(&lower, &mut out);
        out.numbers.sort();
        out.content.sort();
        out.content.dedup();
        out
    }
}

/// Each number with the unit right after it, if one is named ("5gb", "100美元", "$50").
fn digits(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let currency = i
            .checked_sub(1)
            .and_then(|p| "$€¥£".contains(chars[p]).then_some(chars[p]));
        let mut number = String::new();
        while i < chars.len() && (chars[i].is_ascii_digit() || matches!(chars[i], '.' | ',')) {
            if chars[i] != ',' {
                number.push(chars[i]);
            }
            i += 1;
        }
        let mut number = number.trim_end_matches('.').to_owned();
        if let Some(c) = currency {
            number.insert(0, c);
        } else if let Some(unit) = unit_at(&chars, i) {
            number.push_str(&unit);
        }
        out.push(number);
    }
    out
}

/// The unit starting at `i` (after optional spaces), if it is one of [`UNITS`].
fn unit_at(chars: &[char], mut i: usize) -> Option<String> {
    while chars.get(i) == Some(&' ') {
        i += 1;
    }
    let first = *chars.get(i)?;
    let run: String = if is_cjk(first) {
        // The longest known unit of up to 3 characters.
        return (1..=3).rev().find_map(|n| {
            let word: String = chars.get(i..i + n)?.iter().collect();
            UNITS.contains(&word.as_str()).then_some(word)
        });
    } else {
        chars[i..]
            .iter()
            .take_while(|c| c.is_ascii_alphabetic() || **c == '%')
            .collect()
    };
    UNITS.contains(&run.as_str()).then_some(run)
}

fn is_cjk(c: char) -> bool {
    ('\u{4e00}'..='\u{9fff}').contains(&c)
}

/// One spelling for a word and its synonyms; `stem` (English) is tried after the word itself.
fn canonical(word: &str, stem: &str) -> String {
    SYNONYMS
        .iter()
        .find(|(words, _)| words.contains(&word) || words.contains(&stem))
        .map_or_else(|| stem.to_owned(), |(_, canon)| (*canon).to_owned())
}

fn mark_axes(word: &str, out: &mut Analysis) {
    out.sides.extend(sides_of(word));
}

fn english(lower: &str, original: &str, out: &mut Analysis) {
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty() && w.chars().any(|c| c.is_ascii_alphabetic()))
        .collect();
    // Proper names are capitalised in the original, past the first word of a sentence.
    let capitalised: BTreeSet<String> = original
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .skip(1)
        .filter(|w| w.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
        .map(str::to_lowercase)
        .collect();
    let mut directed = false;
    let mut expect_target = false;
    let mut i = 0;
    while i < words.len() {
        let word = words[i];
        let joined = words.get(i + 1).and_then(|next| {
            EN_PHRASES
                .iter()
                .find(|(a, b, _)| *a == word && b == next)
                .map(|(_, _, joined)| *joined)
        });
        let word = joined.unwrap_or(word);
        i += if joined.is_some() { 2 } else { 1 };
        if EN_NEGATIONS.contains(&word) || word.ends_with("n't") {
            out.negated = true;
            continue;
        }
        let stem = STEMMER.stem(word);
        mark_axes(word, out);
        mark_axes(&stem, out);
        if DATE_WORDS.contains(&word) {
            out.numbers.push(word.to_owned());
            continue;
        }
        if EN_DIRECTION_VERBS.contains(&word) {
            directed = true;
        }
        if directed && matches!(word, "to" | "into") {
            expect_target = true;
            continue;
        }
        if EN_STOP.contains(&word) || EN_STOP.contains(&stem.as_ref()) {
            continue;
        }
        let text = canonical(word, &stem);
        if expect_target && out.target.is_none() {
            out.target = Some(text.clone());
            expect_target = false;
        }
        out.content.push(Word {
            specific: capitalised.contains(word) || word.chars().any(|c| c.is_ascii_digit()),
            text,
        });
    }
}

fn chinese(lower: &str, out: &mut Analysis) {
    if !lower.chars().any(is_cjk) {
        return;
    }
    let tags = JIEBA.tag(lower, true);
    let mut expect_target = false;
    for (i, tag) in tags.iter().enumerate() {
        let word = tag.word;
        if !word.chars().any(is_cjk) {
            // English inside Chinese is read by `english`; a target may still follow a marker.
            if expect_target && word.chars().any(|c| c.is_ascii_alphanumeric()) {
                out.target = Some(canonical(word, &STEMMER.stem(word)));
                expect_target = false;
            }
            continue;
        }
        if is_negation(word, tags.get(i.wrapping_sub(1)).map(|t| t.word)) {
            out.negated = true;
            continue;
        }
        mark_axes(word, out);
        if DATE_WORDS.contains(&word) || (tag.tag == "m" && is_quantity(word)) {
            out.numbers.push(word.to_owned());
            continue;
        }
        let text = canonical(word, word);
        if ZH_DIRECTION_MARKERS.contains(&word) && out.target.is_none() {
            expect_target = true;
            continue;
        }
        let kind = tag.tag.chars().next().unwrap_or('x');
        // Nouns, verbs, adjectives, idioms, abbreviations, times: what a question is about.
        // A numeral that asks "how long" (几天) is read as the duration it names.
        let asks = kind == 'm' && text != word;
        if !(asks || matches!(kind, 'n' | 'v' | 'a' | 'i' | 'l' | 'j' | 't' | 's' | 'g'))
            || ZH_STOP.contains(&word)
        {
            continue;
        }
        if expect_target {
            out.target = Some(text.clone());
            expect_target = false;
        }
        out.content.push(Word {
            specific: matches!(kind, 'n' | 'j' | 's' | 't'),
            text,
        });
    }
}

/// 不/没 words negate, except A-not-A questions (能不能, 有没有) and fixed words (不同).
fn is_negation(word: &str, previous: Option<&str>) -> bool {
    if ZH_NOT_NEGATIONS.contains(&word) {
        return false;
    }
    let negation = ZH_NEGATIONS.contains(&word)
        || (word.chars().count() <= 3 && word.starts_with(['不', '没', '别', '无', '未']));
    let a_not_a = previous.is_some_and(|p| {
        let rest: String = word.chars().skip(1).collect();
        !rest.is_empty() && p.ends_with(rest.as_str())
    });
    negation && !a_not_a
}

/// A numeral that counts something (两个, 三杯, 十年), not a filler like 一下 or 几个.
fn is_quantity(word: &str) -> bool {
    word.chars()
        .any(|c| "两二三四五六七八九十百千万亿".contains(c))
        || (word.starts_with('一')
            && word
                .chars()
                .nth(1)
                .is_some_and(|c| "年月天周日季".contains(c)))
}
