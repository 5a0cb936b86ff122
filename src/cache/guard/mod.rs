//! Guards beyond the similarity threshold: checks on the two prompts' words that refuse a
//! semantic hit the embedding alone would allow. Embeddings score look-alikes that ask
//! something else (another city, number, or the opposite action) almost as high as paraphrases;
//! these rules catch the common cases at the price of some paraphrases worded differently.

mod analysis;
mod lexicon;

use serde::Deserialize;

pub use analysis::warm;
use analysis::{Analysis, Word, sides_of};

/// One rule a semantic hit must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guard {
    /// Every number (and its order) must match: "100 美元" is not "500 美元".
    Numbers,
    /// Negations and opposite actions must match: cancel/enable, 开启/关闭, not, 不.
    Negation,
    /// When each prompt holds a content word the other lacks, they ask about different things.
    Content,
}

impl Guard {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Numbers => "numbers",
            Self::Negation => "negation",
            Self::Content => "content",
        }
    }

    /// Every guard, the default for each route.
    pub fn all() -> Vec<Guard> {
        vec![Self::Numbers, Self::Negation, Self::Content]
    }
}

/// The first guard of `guards` that refuses serving `stored`'s answer to `asked`.
pub fn refuse(guards: &[Guard], asked: &str, stored: &str) -> Option<Guard> {
    if guards.is_empty() {
        return None;
    }
    let (a, b) = (Analysis::of(asked), Analysis::of(stored));
    guards.iter().copied().find(|guard| match guard {
        Guard::Numbers => a.numbers != b.numbers,
        Guard::Negation => a.negated != b.negated || opposite(&a, &b) || prefix_flip(&a, &b),
        Guard::Content => content_differs(&a, &b),
    })
}

/// Which of every guard would refuse serving `stored`'s answer to `asked`, in the order of
/// [`Guard::all`]: the verifier reads them as evidence rather than as vetoes.
pub fn signals(asked: &str, stored: &str) -> [bool; 3] {
    let (a, b) = (Analysis::of(asked), Analysis::of(stored));
    [
        a.numbers != b.numbers,
        a.negated != b.negated || opposite(&a, &b) || prefix_flip(&a, &b),
        content_differs(&a, &b),
    ]
}

/// On some axis of opposite actions the prompts stand on different sides; or one names an
/// undoing action (cancel, remove, disable) the other lacks. A doing action on one side only is
/// usually a verb the other phrased differently ("add" and "invite").
fn opposite(a: &Analysis, b: &Analysis) -> bool {
    let axes: std::collections::BTreeSet<usize> =
        a.sides.iter().chain(&b.sides).map(|s| s.0).collect();
    axes.into_iter().any(|axis| {
        let side = |x: &Analysis| -> Vec<u8> {
            x.sides
                .iter()
                .filter(|s| s.0 == axis)
                .map(|s| s.1)
                .collect()
        };
        let (sa, sb) = (side(a), side(b));
        match (sa.is_empty(), sb.is_empty()) {
            (false, false) => sa != sb,
            _ => sa.contains(&1) || sb.contains(&1),
        }
    })
}

/// "block" against "unblock", "encrypt" against "decrypt": a word on one side is the other's
/// with a negating prefix.
fn prefix_flip(a: &Analysis, b: &Analysis) -> bool {
    let flipped = |x: &str, y: &str| {
        ["un", "dis", "de"].iter().any(|p| {
            x.strip_prefix(p) == Some(y)
                || (x.starts_with(p) && y.starts_with("en") && x[p.len()..] == y[2..])
        })
    };
    a.content.iter().any(|x| {
        b.content
            .iter()
            .any(|y| flipped(&x.text, &y.text) || flipped(&y.text, &x.text))
    })
}

/// The prompts ask about different things when, after matching words (same word, synonym, or
/// for Chinese a shared character), each side keeps a word the other lacks, or either keeps a
/// specific one (a noun, a name), or they send something to different targets.
fn content_differs(a: &Analysis, b: &Analysis) -> bool {
    if let (Some(x), Some(y)) = (&a.target, &b.target)
        && x != y
        && !shares_cjk(x, y)
    {
        return true;
    }
    let mut only_a: Vec<&Word> = a
        .content
        .iter()
        .filter(|w| !b.content.iter().any(|v| v.text == w.text))
        .collect();
    let mut only_b: Vec<&Word> = b
        .content
        .iter()
        .filter(|w| !a.content.iter().any(|v| v.text == w.text))
        .collect();
    // Chinese words sharing a character (账号/账户, 头疼/头痛), and words for the same action
    // (cancel, turn off), are taken as the same word.
    only_a.retain(|w| {
        let sides = sides_of(&w.text);
        let shared = only_b.iter().position(|v| {
            shares_cjk(&w.text, &v.text) || sides_of(&v.text).iter().any(|s| sides.contains(s))
        });
        match shared {
            Some(i) => {
                only_b.remove(i);
                false
            }
            None => true,
        }
    });
    let specific = only_a.iter().chain(&only_b).any(|w| w.specific);
    (!only_a.is_empty() && !only_b.is_empty()) || specific
}

fn shares_cjk(a: &str, b: &str) -> bool {
    a.chars()
        .filter(|c| ('\u{4e00}'..='\u{9fff}').contains(c))
        .any(|c| b.contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(a: &str, b: &str) -> Option<Guard> {
        refuse(&Guard::all(), a, b)
    }

    #[test]
    fn look_alikes_are_refused() {
        assert_eq!(
            check("北京今天天气怎么样", "上海今天天气怎么样"),
            Some(Guard::Content)
        );
        assert_eq!(
            check("怎么取消自动续费", "怎么开启自动续费"),
            Some(Guard::Negation)
        );
        assert_eq!(
            check("我想取消订单", "我不想取消订单"),
            Some(Guard::Negation)
        );
        assert_eq!(
            check("100美元等于多少人民币", "500美元等于多少人民币"),
            Some(Guard::Numbers)
        );
        assert_eq!(
            check("What is 3 squared?", "What is 4 squared?"),
            Some(Guard::Numbers)
        );
        assert_eq!(
            check(
                "How do I turn on Bluetooth?",
                "How do I turn off Bluetooth?"
            ),
            Some(Guard::Negation)
        );
        assert_eq!(
            check("Can cats eat chocolate?", "Can dogs eat chocolate?"),
            Some(Guard::Content)
        );
        // Reading and writing are opposite actions.
        assert_eq!(
            check("Python怎么读取CSV文件", "Python怎么写入CSV文件"),
            Some(Guard::Negation)
        );
        let refused = [
            (
                "How do I block a user?",
                "How do I unblock a user?",
                Guard::Negation,
            ),
            ("怎么拉黑一个人？", "怎么取消拉黑一个人？", Guard::Negation),
            ("怎么显示隐藏文件？", "怎么隐藏文件？", Guard::Negation),
            (
                "How do I encrypt a file?",
                "How do I decrypt a file?",
                Guard::Negation,
            ),
            (
                "Is the office closed on May 1?",
                "Is the office closed on October 1?",
                Guard::Numbers,
            ),
            ("周一天气怎么样？", "周五天气怎么样？", Guard::Numbers),
            ("2斤等于多少克？", "5斤等于多少克？", Guard::Numbers),
            (
                "Is a 5 GB file too big to email?",
                "Is a 5 MB file too big to email?",
                Guard::Numbers,
            ),
            (
                "100美元等于多少人民币",
                "100欧元等于多少人民币",
                Guard::Numbers,
            ),
            (
                "Is shipping free over $50?",
                "Is shipping free over 50 euros?",
                Guard::Numbers,
            ),
            (
                "How do I convert a PDF to Word?",
                "How do I convert a Word document to PDF?",
                Guard::Content,
            ),
            ("怎么把PDF转成Word", "怎么把Word转成PDF", Guard::Content),
            (
                "快递一般几天能到？",
                "国际快递一般几天能到？",
                Guard::Content,
            ),
            (
                "How do I reset my password?",
                "How do I reset my Wi-Fi password?",
                Guard::Content,
            ),
        ];
        for (a, b, guard) in refused {
            assert_eq!(check(a, b), Some(guard), "{a} / {b}");
        }
    }

    #[test]
    fn negation_reads_words_not_characters() {
        for (a, b) in [
            ("可以开发票吗", "能不能开发票？"),
            ("我登录不了账号", "我的账号无法登录"),
            ("JavaScript中let和var的区别", "JS里var和let有什么区别？"),
            (
                "I can't log in to my account",
                "I'm unable to log into my account",
            ),
            ("怎么取消自动续费", "如何关闭自动续费？"),
            (
                "How do I add a team member?",
                "How can I invite a team member?",
            ),
        ] {
            assert_ne!(check(a, b), Some(Guard::Negation), "{a} / {b}");
        }
    }

    #[test]
    fn paraphrases_pass() {
        assert_eq!(check("怎么申请退款?", "如何申请退款？"), None);
        assert_eq!(
            check("What is an AI gateway?", "What's an AI gateway?"),
            None
        );
        assert_eq!(
            check(
                "How do I change my password?",
                "How can I change my password?"
            ),
            None
        );
        assert_eq!(check("What is Redis?", "what's redis"), None);
        assert_eq!(
            check(
                "How to sort a Python list?",
                "How do I sort a list in Python?"
            ),
            None
        );
    }

    #[test]
    fn only_the_configured_guards_run() {
        assert_eq!(refuse(&[Guard::Numbers], "北京天气", "上海天气"), None);
        assert_eq!(
            refuse(&[], "What is 3 squared?", "What is 4 squared?"),
            None
        );
    }
}
