//! Guards beyond the similarity threshold: checks on the two prompts' words that refuse a
//! semantic hit the embedding alone would allow. Embeddings score look-alikes that ask
//! something else (another city, number, or the opposite action) almost as high as paraphrases;
//! these rules catch the common cases at the price of some paraphrases worded differently.

use std::collections::BTreeSet;

use serde::Deserialize;

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

/// Question and filler words that do not change what is asked (removed before comparing).
const ZH_STOP: &[&str] = &[
    "怎么办",
    "怎么样",
    "时候",
    "解释",
    "介绍",
    "怎么",
    "如何",
    "怎样",
    "什么",
    "为什么",
    "多少",
    "哪些",
    "哪里",
    "吗",
    "呢",
    "吧",
    "啊",
    "请问",
    "请",
    "一下",
    "我的",
    "我们",
    "我",
    "你们",
    "你",
    "的",
    "了",
    "是",
    "能",
    "可以",
    "应该",
    "该",
    "要",
    "会",
    "都",
    "有",
    "还",
    "给",
    "把",
    "将",
    "用",
    "在",
    "和",
    "与",
    "及",
    "一般",
    "大概",
    "一个",
    "这个",
    "那个",
    "这",
    "那",
    "帮我",
    "下",
];
const EN_STOP: &[&str] = &[
    "a", "an", "the", "i", "me", "my", "we", "our", "you", "your", "it", "its", "is", "are", "was",
    "were", "be", "been", "do", "does", "did", "doing", "how", "what", "whats", "what's", "when",
    "where", "why", "which", "who", "whom", "can", "could", "should", "would", "will", "shall",
    "may", "might", "to", "of", "in", "on", "at", "for", "from", "with", "by", "about", "into",
    "as", "and", "or", "if", "then", "than", "so", "please", "tell", "give", "some", "any", "this",
    "that", "these", "those", "there", "here", "have", "has", "had", "get", "got", "make", "made",
    "just", "also", "there's", "it's", "i'm", "let's", "explain", "possible", "way", "best",
    "want", "need", "know", "help", "show",
];
/// Markers of negation or of an action's opposite; their sets must agree.
const ZH_FLIPS: &[&str] = &[
    "不", "没", "别", "无", "未", "取消", "关闭", "开启", "打开", "恢复", "删除", "解绑", "卸载",
    "降级", "升级", "下班", "上班",
];
const EN_FLIPS: &[&str] = &[
    "not",
    "no",
    "never",
    "don't",
    "doesn't",
    "didn't",
    "isn't",
    "aren't",
    "won't",
    "can't",
    "cannot",
    "without",
    "cancel",
    "disable",
    "enable",
    "turn",
    "off",
    "on",
    "uninstall",
    "install",
    "unlink",
    "link",
    "downgrade",
    "upgrade",
    "restore",
    "delete",
    "remove",
    "close",
    "open",
    "stop",
    "start",
];

/// The first guard of `guards` that refuses serving `stored`'s answer to `asked`.
pub fn refuse(guards: &[Guard], asked: &str, stored: &str) -> Option<Guard> {
    let (a, b) = (asked.to_lowercase(), stored.to_lowercase());
    guards.iter().copied().find(|guard| match guard {
        Guard::Numbers => numbers(&a) != numbers(&b),
        Guard::Negation => flips(&a) != flips(&b),
        Guard::Content => {
            let (ca, cb) = (content(&a), content(&b));
            ca.difference(&cb).next().is_some() && cb.difference(&ca).next().is_some()
        }
    })
}

fn is_cjk(c: char) -> bool {
    ('\u{4e00}'..='\u{9fff}').contains(&c)
}

fn numbers(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() || (c == '.' && !current.is_empty()) {
            current.push(c);
        } else if !current.is_empty() {
            out.push(current.trim_end_matches('.').to_owned());
            current.clear();
        }
    }
    if !current.is_empty() {
        out.push(current.trim_end_matches('.').to_owned());
    }
    out.sort();
    out
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
}

fn flips(text: &str) -> BTreeSet<&'static str> {
    let mut found: BTreeSet<&'static str> = ZH_FLIPS
        .iter()
        .copied()
        .filter(|m| text.contains(m))
        .collect();
    for w in words(text) {
        if let Some(m) = EN_FLIPS.iter().find(|m| **m == w) {
            found.insert(m);
        }
    }
    found
}

fn stem(word: &str) -> &str {
    for suffix in ["ing", "ed", "es", "s"] {
        if word.len() > suffix.len() + 3 && word.ends_with(suffix) && !word.ends_with("ss") {
            return &word[..word.len() - suffix.len()];
        }
    }
    word
}

/// Content tokens: English words minus stop words (lightly stemmed); for Chinese, the character
/// bigrams of each run left after removing question and filler words.
fn content(text: &str) -> BTreeSet<String> {
    let mut tokens = BTreeSet::new();
    let mut run = String::new();
    let flush = |run: &mut String, tokens: &mut BTreeSet<String>| {
        let mut cleaned = std::mem::take(run);
        for stop in ZH_STOP {
            cleaned = cleaned.replace(stop, " ");
        }
        for part in cleaned.split_whitespace() {
            let chars: Vec<char> = part.chars().collect();
            if chars.len() == 1 {
                tokens.insert(part.to_owned());
            }
            tokens.extend(chars.windows(2).map(|w| w.iter().collect::<String>()));
        }
    };
    for c in text.chars() {
        if is_cjk(c) {
            run.push(c);
        } else if !run.is_empty() {
            flush(&mut run, &mut tokens);
        }
    }
    flush(&mut run, &mut tokens);
    for w in words(text) {
        if !EN_STOP.contains(&w) {
            tokens.insert(stem(w).to_owned());
        }
    }
    tokens
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
        assert_eq!(
            check("Python怎么读取CSV文件", "Python怎么写入CSV文件"),
            Some(Guard::Content)
        );
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
